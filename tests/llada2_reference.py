"""A deliberately plain, independent reference of the official LLaDA2.0 model and sampler, for tests.

Nothing here imports the project's own modelling code. It is written from the semantics of the official remote code
of inclusionAI/LLaDA2.0-mini (``modeling_llada2_moe.py``: ``LLaDA2MoeRMSNorm``, ``LLaDA2MoeRotaryEmbedding`` /
``apply_rotary_pos_emb`` (partial rotary), ``LLaDA2MoeAttention``, ``LLaDA2MoeGate`` / ``LLaDA2MoeSparseMoeBlock``,
``LLaDA2MoeModelLM.generate``) and of the authors' block-diffusion SFT attention mask (dFactory
``tasks/train_llada2_bd.py``, ``block_diffusion_mask``).

It favours obviousness over speed: explicit loops over layers, heads, tokens and experts, attention as matmul +
softmax, no caching. Use it only with tiny models.

* :func:`official_llada2_logits` -- the forward pass from a state dict with the official key names and a dict with the
  official ``config.json`` fields, under an optional explicit attention mask (True = attend) and position ids.
* :func:`block_mask` / :func:`bd_training_mask` -- the masks the official generate and SFT pass.
* :func:`reference_generate` -- the official ``generate()`` loop (one prompt, no padding) around a logits function.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

__all__ = ["official_llada2_logits", "block_mask", "bd_training_mask", "reference_generate"]


# --------------------------------------------------------------------------------------------------------------------
# Forward pass
# --------------------------------------------------------------------------------------------------------------------


def _cfg(config: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = config.get(name, default)
    return default if value is None else value


def _linear(x: torch.Tensor, state_dict: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    y = x @ state_dict[name + ".weight"].t()
    bias = state_dict.get(name + ".bias")
    return y if bias is None else y + bias


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise in float32, cast back to the input dtype, multiply by the weight."""
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt((xf * xf).mean(dim=-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _swiglu(x: torch.Tensor, state_dict: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    gate = _linear(x, state_dict, prefix + "gate_proj")
    up = _linear(x, state_dict, prefix + "up_proj")
    return _linear(_silu(gate) * up, state_dict, prefix + "down_proj")


def _rope(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, theta: float) -> torch.Tensor:
    """x: (T, head_dim). Rotates the first `rotary_dim` dims as rotate_half does (pairs i and i + rotary_dim / 2);
    the angles are computed in float32 and cast to x's dtype before use, as the official module returns cos/sin."""
    half = rotary_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second, rest = x[:, :half], x[:, half:rotary_dim], x[:, rotary_dim:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin, rest], dim=-1)


def _route(hidden: torch.Tensor, state_dict: Mapping[str, torch.Tensor], prefix: str,
           config: Mapping[str, Any]) -> list[tuple[int, float]]:
    """The official gate for one token (hidden: (d,)): [(expert, weight)] in the order the official top-k gives."""
    n_experts, n_group = int(config["num_experts"]), int(_cfg(config, "n_group", 8))
    topk_group, top_k = int(_cfg(config, "topk_group", 4)), int(config["num_experts_per_tok"])
    scale = float(_cfg(config, "routed_scaling_factor", 2.5))
    logits = state_dict[prefix + "gate.weight"].float() @ hidden.float()  # (E,)
    scores = [1.0 / (1.0 + math.exp(-float(v))) for v in logits]
    bias = state_dict.get(prefix + "gate.expert_bias", torch.zeros(n_experts)).float().tolist()
    routing = [s + b for s, b in zip(scores, bias)]
    per_group = n_experts // n_group
    group_score = []
    for g in range(n_group):
        members = sorted(routing[g * per_group:(g + 1) * per_group], reverse=True)
        group_score.append(members[0] + members[1])
    chosen_groups = sorted(range(n_group), key=lambda g: -group_score[g])[:topk_group]
    candidates = [e for e in range(n_experts) if e // per_group in chosen_groups]
    chosen = sorted(candidates, key=lambda e: -routing[e])[:top_k]
    weights = [scores[e] for e in chosen]
    if top_k > 1:
        total = sum(weights) + 1e-20
        weights = [w / total for w in weights]
    return [(e, w * scale) for e, w in zip(chosen, weights)]


def _moe(x: torch.Tensor, state_dict: Mapping[str, torch.Tensor], prefix: str,
         config: Mapping[str, Any]) -> torch.Tensor:
    """x: (T, d). Each token: the weighted sum of its routed experts (float32), plus the shared experts."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        acc = torch.zeros(x.shape[1], dtype=torch.float32)
        for expert, weight in _route(x[t], state_dict, prefix, config):
            acc = acc + weight * _swiglu(x[t], state_dict, f"{prefix}experts.{expert}.").float()
        out[t] = acc.to(x.dtype)
    if _cfg(config, "num_shared_experts", 0) is not None and prefix + "shared_experts.gate_proj.weight" in state_dict:
        out = out + _swiglu(x, state_dict, prefix + "shared_experts.")
    return out


def _attention(x: torch.Tensor, state_dict: Mapping[str, torch.Tensor], prefix: str, config: Mapping[str, Any],
               allowed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x: (T, d); allowed: (T, T) bool (True = attend). One head at a time, matmul + softmax."""
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_dim = int(_cfg(config, "head_dim", int(config["hidden_size"]) // heads))
    rotary_dim = int(head_dim * float(_cfg(config, "partial_rotary_factor", 0.5)))
    eps, theta = float(_cfg(config, "rms_norm_eps", 1e-5)), float(_cfg(config, "rope_theta", 10000.0))
    qkv = _linear(x, state_dict, prefix + "query_key_value").view(x.shape[0], heads + 2 * kv_heads, head_dim)
    outputs = []
    for h in range(heads):
        kv = h // (heads // kv_heads)
        q, k, v = qkv[:, h], qkv[:, heads + kv], qkv[:, heads + kv_heads + kv]
        if _cfg(config, "use_qk_norm", True):
            q = _rms_norm(q, state_dict[prefix + "query_layernorm.weight"], eps)
            k = _rms_norm(k, state_dict[prefix + "key_layernorm.weight"], eps)
        q, k = _rope(q, positions, rotary_dim, theta), _rope(k, positions, rotary_dim, theta)
        scores = (q @ k.t()) * head_dim**-0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        outputs.append(torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v)
    return _linear(torch.cat(outputs, dim=-1), state_dict, prefix + "dense")


@torch.no_grad()
def official_llada2_logits(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                           input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                           allowed: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                           ) -> torch.Tensor:
    """Logits (T, vocab) float32 of ONE sequence (input_ids (T,) or inputs_embeds (T, d)) under the official model.

    `allowed` (T, T) bool, True = the query may attend the key (None: everything, the official forward without a mask);
    `position_ids` (T,) (None: 0..T-1)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids / inputs_embeds")
    x = state_dict["model.word_embeddings.weight"][input_ids] if inputs_embeds is None else inputs_embeds
    length = x.shape[0]
    allowed = torch.ones(length, length, dtype=torch.bool) if allowed is None else allowed
    positions = torch.arange(length) if position_ids is None else position_ids
    eps = float(_cfg(config, "rms_norm_eps", 1e-5))
    first_dense = int(_cfg(config, "first_k_dense_replace", 0))
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        h = _rms_norm(x, state_dict[p + "input_layernorm.weight"], eps)
        x = x + _attention(h, state_dict, p + "attention.", config, allowed, positions)
        h = _rms_norm(x, state_dict[p + "post_attention_layernorm.weight"], eps)
        dense = config.get("num_experts") is None or i < first_dense
        x = x + (_swiglu(h, state_dict, p + "mlp.") if dense else _moe(h, state_dict, p + "mlp.", config))
    x = _rms_norm(x, state_dict["model.norm.weight"], eps)
    return _linear(x, state_dict, "lm_head").float()


# --------------------------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------------------------


def block_mask(length: int, block_length: int) -> torch.Tensor:
    """(T, T) the official generate's mask: tril over blocks, repeated block_length x block_length."""
    blocks = math.ceil(length / block_length)
    tril = torch.tril(torch.ones(blocks, blocks))
    full = tril.repeat_interleave(block_length, dim=0).repeat_interleave(block_length, dim=1)
    return full[:length, :length].bool()


def bd_training_mask(n: int, block_size: int) -> torch.Tensor:
    """(2n, 2n) dFactory's block-diffusion training mask over [x_t ; x_0] (block diagonal within x_t, offset
    block-causal x_t -> x_0, block-causal within x_0)."""
    q = torch.arange(2 * n)[:, None]
    kv = torch.arange(2 * n)[None, :]
    x0_q, x0_kv = q >= n, kv >= n
    block_q = torch.where(x0_q, (q - n) // block_size, q // block_size)
    block_kv = torch.where(x0_kv, (kv - n) // block_size, kv // block_size)
    diagonal = (block_q == block_kv) & (x0_q == x0_kv)
    offset_causal = (block_q > block_kv) & x0_kv & ~x0_q
    causal = (block_q >= block_kv) & x0_kv & x0_q
    return diagonal | offset_causal | causal


# --------------------------------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------------------------------


def _transfer_schedule(block_length: int, steps: int) -> list[int]:
    base, remainder = divmod(block_length, steps)
    return [base + 1 if i < remainder else base for i in range(steps)]


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (L, V) -> ids (L,), their probabilities (L,): the official `_sample_with_temperature_topk_topp`."""
    if temperature == 0.0:
        probs = torch.softmax(logits, dim=-1)
        ids = torch.argmax(probs, dim=-1)
        return ids, probs[torch.arange(len(ids)), ids]
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        drop = torch.zeros_like(remove)
        for row in range(logits.shape[0]):
            drop[row, order[row]] = remove[row]
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    ids = torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
    return ids, probs[torch.arange(len(ids)), ids]


@torch.no_grad()
def reference_generate(
    logits_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    prompt_embeds: torch.Tensor,
    gen_length: int,
    block_length: int,
    steps: int,
    mask_id: int,
    eos_id: int,
    threshold: float = 0.95,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_early_stop: bool = False,
    minimal_topk: int = 1,
    answer_start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The official LLaDA2 ``generate()`` for one prompt (prompt_embeds (P, d)); returns the answer ids as the official
    code does: up to and including the first EOS within gen_length (all gen_length ids without one).

    logits_fn(embeds (T, d), allowed (T, T), positions (T,)) -> logits (T, V); embed_fn(ids (n,)) -> (n, d).
    `answer_start` (gen_length,) replaces the all-[MASK] start of the answer (the canvas beyond stays [MASK])."""
    steps = min(steps, gen_length // minimal_topk)
    prompt_length = prompt_embeds.shape[0]
    num_blocks = (prompt_length + gen_length + block_length - 1) // block_length
    total_length = num_blocks * block_length
    answer = [mask_id] * (total_length - prompt_length)  # the canvas after the prompt
    if answer_start is not None:
        answer[:gen_length] = [int(v) for v in answer_start]
    allowed_full = block_mask(total_length, block_length)
    schedule = _transfer_schedule(block_length, steps)

    for block in range(prompt_length // block_length, num_blocks):
        window_end = (block + 1) * block_length
        block_positions = list(range(window_end - block_length, window_end))
        for step in range(steps):
            active = [pos >= prompt_length and answer[pos - prompt_length] == mask_id for pos in block_positions]
            if not any(active):
                break
            embeds = torch.cat([prompt_embeds, embed_fn(torch.tensor(answer[: window_end - prompt_length]))])
            logits = logits_fn(embeds, allowed_full[:window_end, :window_end], torch.arange(window_end))
            ids, probs = _sample(logits[window_end - block_length:], temperature, top_k, top_p, generator)
            confidence = [float(probs[i]) if active[i] else float("-inf") for i in range(block_length)]
            above = [i for i in range(block_length) if confidence[i] > threshold]
            if len(above) >= schedule[step]:
                chosen = above
            else:
                k = min(schedule[step], sum(active))
                chosen = torch.topk(torch.tensor(confidence), k=k).indices.tolist() if k > 0 else []
            for i in chosen:
                answer[block_positions[i] - prompt_length] = int(ids[i])
            if eos_early_stop and any(int(ids[i]) == eos_id for i in chosen):
                seen = answer[: window_end - prompt_length]
                first_eos = seen.index(eos_id)
                if mask_id not in seen[:first_eos]:
                    return torch.tensor(seen[: first_eos + 1])
        if eos_id in answer[: window_end - prompt_length]:
            break

    answer = answer[:gen_length]
    end = answer.index(eos_id) + 1 if eos_id in answer else gen_length
    return torch.tensor(answer[:end])
