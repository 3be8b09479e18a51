"""A deliberately plain, independent reference of the official Dream model, sampler and SFT loss, for tests.

Nothing here imports the project's own code. It is written from the semantics of:

* ``modeling_dream.py`` of Dream-org/Dream-v0-Instruct-7B (``DreamRMSNorm``, ``DreamRotaryEmbedding``,
  ``DreamSdpaAttention`` with ``is_causal=False``, ``DreamDecoderLayer``, ``DreamBaseModel.forward``,
  ``DreamModel.forward``): Qwen2's layers, bidirectional, with q/k/v biases;
* ``generation_utils.py`` of the same repository (``top_p_logits``, ``top_k_logits``, ``sample_tokens``,
  ``DreamGenerationMixin._sample``): ``diffusion_generate``, whose logits are shifted right by one position;
* the Dream trainer of the dLLM library (github ZHZisZZ/dllm, ``dllm/pipelines/dream/trainer.py`` on
  ``dllm/core/trainers/mdlm.py``): masked diffusion with t ~ U(eps, 1), the shift, CART loss weights
  (``cart_weight``, geometric p = 0.3), normalised by the number of answer tokens.

It favours obviousness over speed: explicit loops over layers, attention written as matmul + softmax, no caching.
Random numbers are drawn with the official calls and shapes (``torch.rand`` over all masked slots, a Categorical
draw, ``torch.topk`` / ``torch.multinomial`` over full rows), so ``torch.manual_seed`` gives the official tokens.
Use it only with tiny models.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
import torch.distributions as dists

__all__ = ["official_dream_logits", "reference_diffusion_generate", "reference_sft_loss", "reference_cart_weights"]


# --------------------------------------------------------------------------------------------------------------------
# Forward pass
# --------------------------------------------------------------------------------------------------------------------


def _linear(x: torch.Tensor, state_dict: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    y = x @ state_dict[name + ".weight"].t()
    if name + ".bias" in state_dict:
        y = y + state_dict[name + ".bias"]
    return y


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalised in float32, cast back to the input dtype, then scaled (DreamRMSNorm)."""
    xf = x.float()
    xf = xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rope(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin (B, 1, T, head_dim): angle = position * theta^(-2i / head_dim) in float32, the half-size block twice,
    cast to the activations' dtype (DreamRotaryEmbedding, default rope)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) where allowed) v, every position to every allowed key (no causal mask). A query row with
    no allowed key (a padding position under the official 4-D mask) gives zeros, as torch's SDPA does."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights @ v.float()).to(q.dtype)


def _cfg(config: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = config.get(name, default)
    return default if value is None else value


@torch.no_grad()
def official_dream_logits(
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (B, T, vocab) of the official Dream model, unshifted, from a state dict with the official key names
    (``model.embed_tokens.weight``, ``model.layers.{i}.{input_layernorm,post_attention_layernorm}.weight``,
    ``model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}``, ``model.layers.{i}.self_attn.o_proj.weight``,
    ``model.layers.{i}.mlp.{gate,up,down}_proj.weight``, ``model.norm.weight``, ``lm_head.weight``) and a dict with the
    official config.json field names.

    ``attention_mask`` (B, T) 1/0 as the official sampler uses it: with any 0 the attention mask is the outer AND of
    it with itself and the positions are cumsum - 1 (1 at padding); without padding all positions attend, numbered
    0..T-1.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids / inputs_embeds")
    x = state_dict["model.embed_tokens.weight"][input_ids] if inputs_embeds is None else inputs_embeds
    batch, length, hidden = x.shape
    n_heads = int(config["num_attention_heads"])
    n_kv = int(_cfg(config, "num_key_value_heads", n_heads))
    head_dim = hidden // n_heads
    eps = float(_cfg(config, "rms_norm_eps", 1e-6))
    theta = float(_cfg(config, "rope_theta", 10000.0))

    if attention_mask is not None and bool((attention_mask == 0).any()):
        keep = attention_mask.bool()
        allowed = keep[:, None, None, :] & keep[:, None, :, None]  # (B, 1, T, T)
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(~keep, 1)
    else:
        allowed = None
        positions = torch.arange(length).expand(batch, -1)
    cos, sin = _rope(positions, head_dim, theta, x.dtype)
    kv_of_head = torch.arange(n_heads) // (n_heads // n_kv)

    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        h = _rms_norm(x, state_dict[p + "input_layernorm.weight"], eps)
        q = _linear(h, state_dict, p + "self_attn.q_proj").view(batch, length, n_heads, head_dim).transpose(1, 2)
        k = _linear(h, state_dict, p + "self_attn.k_proj").view(batch, length, n_kv, head_dim).transpose(1, 2)
        v = _linear(h, state_dict, p + "self_attn.v_proj").view(batch, length, n_kv, head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        att = _attention(q, k[:, kv_of_head], v[:, kv_of_head], allowed)
        x = x + _linear(att.transpose(1, 2).reshape(batch, length, hidden), state_dict, p + "self_attn.o_proj")
        h = _rms_norm(x, state_dict[p + "post_attention_layernorm.weight"], eps)
        gate = _linear(h, state_dict, p + "mlp.gate_proj")
        x = x + _linear(gate * torch.sigmoid(gate) * _linear(h, state_dict, p + "mlp.up_proj"), state_dict,
                        p + "mlp.down_proj")
    x = _rms_norm(x, state_dict["model.norm.weight"], eps)
    tied = config.get("tie_word_embeddings")
    return x @ state_dict["model.embed_tokens.weight" if tied else "lm_head.weight"].t()


def shift_right(logits: torch.Tensor) -> torch.Tensor:
    """Dream's shift: the prediction for position i is the logits at i - 1 (position 0 keeps its own)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


# --------------------------------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------------------------------


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, sorted_index = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    remove_sorted = cumulative > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 0] = False
    remove = torch.zeros_like(logits, dtype=torch.bool)
    for row in range(logits.shape[0]):
        remove[row, sorted_index[row]] = remove_sorted[row]
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def _sample_tokens(logits: torch.Tensor, temperature: float, top_p, top_k, margin: bool = False,
                   neg_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, x0) of each row of ``logits`` (n, V), as the official ``sample_tokens``."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = _top_p(logits, top_p)
    if top_k is not None:
        logits = _top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        try:
            x0 = dists.Categorical(probs=probs).sample()
            confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
        except Exception:  # the official fallback when Categorical rejects the probabilities
            confidence, x0 = probs.max(dim=-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin:
        ordered = torch.sort(probs, dim=-1, descending=True)[0]
        confidence = ordered[:, 0] - ordered[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


@torch.no_grad()
def reference_diffusion_generate(
    logits_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    max_new_tokens: int,
    steps: int,
    mask_id: int,
    alg: str = "origin",
    alg_temp: float | None = None,
    temperature: float = 0.0,
    top_p: float | None = None,
    top_k: int | None = None,
    eps: float = 1e-3,
) -> torch.LongTensor:
    """The official ``diffusion_generate`` (its ``_sample`` loop) around ``logits_fn(x, attention_mask)`` returning the
    unshifted logits (B, T, V) of x (B, T) (``attention_mask`` (B, T) 1/0, or None without padding). Returns x
    (B, P + max_new_tokens): the prompt and the answer. Uses the global RNG (``torch.manual_seed`` controls it)."""
    batch, prompt_len = input_ids.shape
    x = torch.full((batch, prompt_len + max_new_tokens), mask_id, dtype=torch.long)
    x[:, :prompt_len] = input_ids
    if attention_mask is not None and bool((attention_mask == 0).any()):
        full_mask = torch.cat([attention_mask.long(), torch.ones(batch, max_new_tokens, dtype=torch.long)], dim=1)
    else:
        full_mask = None
    timesteps = torch.linspace(1, eps, steps + 1)

    for i in range(steps):
        mask_index = x == mask_id
        logits = shift_right(logits_fn(x, full_mask))
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index]) + mask_id
            transfer = torch.rand(*x0.shape) < p_transfer
            _, x0[transfer] = _sample_tokens(mask_logits[transfer], temperature, top_p, top_k)
            x[mask_index] = x0.clone()
            continue
        confidence, x0 = _sample_tokens(mask_logits, temperature, top_p, top_k, margin=alg == "topk_margin",
                                        neg_entropy=alg == "entropy")
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        n_transfer = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
        full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full_confidence[mask_index] = confidence
        if n_transfer > 0:
            if alg_temp is None or alg_temp == 0:
                _, transfer_index = torch.topk(full_confidence, n_transfer)
            else:
                transfer_index = torch.multinomial(torch.softmax(full_confidence / alg_temp, dim=-1),
                                                   num_samples=n_transfer)
            candidates = torch.zeros_like(x) + mask_id
            candidates[mask_index] = x0.clone()
            for row in range(batch):
                x[row, transfer_index[row]] = candidates[row, transfer_index[row]]
    return x


# --------------------------------------------------------------------------------------------------------------------
# SFT loss
# --------------------------------------------------------------------------------------------------------------------


def reference_cart_weights(clean: torch.Tensor, p: float = 0.3) -> torch.Tensor:
    """(B, L) CART weight of every position: sum over clean positions j != i of 0.5 p (1 - p)^(|i - j| - 1)."""
    batch, length = clean.shape
    weights = torch.zeros(batch, length)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                if j != i and bool(clean[b, j]):
                    weights[b, i] += 0.5 * p * (1 - p) ** (abs(i - j) - 1)
    return weights


def reference_sft_loss(logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], prefix: torch.Tensor,
                       prefix_mask: torch.Tensor, labels: torch.Tensor, embed: torch.Tensor, mask_id: int,
                       eps: float = 1e-3, p: float = 0.3) -> torch.Tensor:
    """Dream's SFT loss as the dLLM trainer computes it, on a prefix of embeddings (never masked) and an answer:
    t = eps + (1 - eps) u per sample, answer tokens masked where u' < t, the model run on prefix + noisy answer, the
    logits shifted, cross-entropy at masked tokens times their CART weight (clean = real and unmasked positions), the
    sum over the number of answer tokens. ``logits_fn(embeds, mask)`` -> unshifted logits."""
    batch, answer_len = labels.shape
    in_answer = labels != -100
    t = eps + (1 - eps) * torch.rand(batch)
    masked = (torch.rand(batch, answer_len) < t[:, None]) & in_answer
    noisy = torch.where(masked, torch.full_like(labels, mask_id), labels.clamp(min=0))
    embeds = torch.cat([prefix, embed[noisy]], dim=1)
    mask = torch.cat([prefix_mask.long(), in_answer.long()], dim=1)
    logits = shift_right(logits_fn(embeds, mask))[:, prefix.shape[1]:]
    clean = mask.bool() & ~torch.cat([torch.zeros_like(prefix_mask, dtype=torch.bool), masked], dim=1)
    weights = reference_cart_weights(clean, p)[:, prefix.shape[1]:]
    total = torch.zeros(())
    for b in range(batch):
        for j in range(answer_len):
            if bool(masked[b, j]):
                nll = -torch.log_softmax(logits[b, j].float(), dim=-1)[labels[b, j]]
                total = total + weights[b, j] * nll
    return total / in_answer.sum()
