"""LLaDA2.0 (inclusionAI/LLaDA2.0-mini, LLaDA2.0-flash): a Ling-2.0 MoE transformer trained as a block-diffusion LM.

The checkpoints ship remote code written for transformers 4 (`modeling_llada2_moe.py`); this module is an independent
implementation under the official parameter names (`model.layers.{i}.attention.query_key_value.weight`,
`model.layers.{i}.mlp.experts.{j}.gate_proj.weight`, `model.layers.{i}.mlp.gate.expert_bias`, ...), so that an official
checkpoint directory loads with `Llada2MoeForMaskedDiffusion.from_pretrained` and its official config.json with
`Llada2MoeConfig`. What the official model computes:

* attention: one fused query/key/value projection, grouped-query heads, RMSNorm on each query and key head (QK-norm),
  rotary embedding on the first half of each head (`partial_rotary_factor`), no causal mask of its own: a forward
  without a mask is bidirectional, and generation passes a block-causal mask (a block sees itself and earlier blocks);
* MoE feed-forward after `first_k_dense_replace` dense layers: a sigmoid router in float32 whose choice adds the
  load-balancing `expert_bias` but whose weights do not, group-limited top-k (the best `topk_group` of `n_group` expert
  groups, a group scored by its two best experts), weights renormalised and scaled by `routed_scaling_factor`, plus
  always-on shared experts; no auxiliary loss.

Beyond a plain forward the model supports what the speech model needs: left padding (positions count real tokens),
block-causal attention on the grid of each row's real tokens (`block_length`), prepared boolean masks (the training
objective's), the LM head on a slice (`logits_positions`), its sampler (`generation_llada2.Llada2GenerationMixin`) and
its objective, LLaDA2's block-diffusion SFT loss (`prefix_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

try:
    from .configuration_whisper_llada import TrainingRecipe
    from .generation_llada2 import Llada2GenerationConfig, Llada2GenerationMixin
    from .modeling_llada import resolve_model_path
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import TrainingRecipe
    from generation_llada2 import Llada2GenerationConfig, Llada2GenerationMixin
    from modeling_llada import resolve_model_path

# Special ids of LLaDA2.0's tokenizer (the defaults of the official `generate`): <|mask|> and <|endoftext|> (also the
# padding id of its config.json). The chat turn ends with <|role_end|>.
LLADA2_MASK_TOKEN_ID = 156895
LLADA2_EOS_TOKEN_ID = 156892

# config.json of inclusionAI/LLaDA2.0-mini (16B total, 1.4B active). Architecture fields as in dFactory's
# configs/model_configs/llada2_mini/config.json (the authors' fine-tuning recipe, whose copy renames model_type to
# "llada2_moe_veomni") and the Hub's LLaDA2.x-mini config.json; max_position_embeddings as on the Hub (32k context).
LLADA2_MINI_CONFIG: dict[str, Any] = {
    "architectures": ["LLaDA2MoeModelLM"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
        "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
        "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
    },
    "embedding_dropout": 0.0,
    "first_k_dense_replace": 1,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "llada2_moe",
    "moe_intermediate_size": 512,
    "moe_router_enable_expert_bias": True,
    "n_group": 8,
    "norm_head": False,
    "norm_softmax": False,
    "norm_topk_prob": True,
    "num_attention_heads": 16,
    "num_experts": 256,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 20,
    "num_key_value_heads": 4,
    "num_shared_experts": 1,
    "output_dropout": 0.0,
    "output_router_logits": False,
    "pad_token_id": 156892,
    "partial_rotary_factor": 0.5,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 600000,
    "rotary_dim": 64,
    "routed_scaling_factor": 2.5,
    "router_dtype": "fp32",
    "score_function": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "torch_dtype": "bfloat16",
    "use_bias": False,
    "use_cache": False,
    "use_qkv_bias": False,
    "use_rmsnorm": True,
    "vocab_size": 157184,
}


# ----------------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------------


class Llada2MoeConfig(PretrainedConfig):
    """Configuration of LLaDA2.0 under the official config.json field names, with the official class's defaults (so
    that a config.json that leaves a field out means what it means to the official code: e.g. `use_qk_norm` True).

    Fields the official modeling code reads but never varies (`score_function` sigmoid, `router_dtype` fp32,
    `norm_topk_prob`, ...) are kept as plain attributes. Added: `mask_token_id` and `eos_token_id`, the official
    `generate`'s defaults. The official `auto_map` is dropped: this class, not the checkpoint's remote code, reads it.
    """

    model_type = "llada2_moe"

    def __init__(
        self,
        vocab_size: int = 30592,
        hidden_size: int = 1024,
        intermediate_size: int | None = None,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 0,
        hidden_act: str = "silu",
        use_qkv_bias: bool = False,
        use_qk_norm: bool = True,
        use_bias: bool = True,
        rms_norm_eps: float = 1e-05,
        norm_head: bool = False,
        tie_word_embeddings: bool = False,
        embedding_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        output_dropout: float = 0.1,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 16384,
        rope_theta: float = 10000.0,
        use_cache: bool = True,
        use_sliding_window: bool = False,
        sliding_window: int = 4096,
        max_window_layers: int = 28,
        rope_scaling: dict | None = None,
        pad_token_id: int = 126081,
        num_experts: int = 16,
        num_shared_experts: int | None = 0,
        num_experts_per_tok: int = 2,
        n_group: int = 8,
        topk_group: int = 4,
        routed_scaling_factor: float = 2.5,
        moe_intermediate_size: int | None = None,
        first_k_dense_replace: int = 0,
        head_dim: int | None = None,
        output_router_logits: bool = False,
        partial_rotary_factor: float = 0.5,
        mask_token_id: int = LLADA2_MASK_TOKEN_ID,
        eos_token_id: int = LLADA2_EOS_TOKEN_ID,
        **kwargs: Any,
    ):
        kwargs.pop("auto_map", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.use_qkv_bias = use_qkv_bias
        self.use_qk_norm = use_qk_norm
        self.use_bias = use_bias
        self.rms_norm_eps = rms_norm_eps
        self.norm_head = norm_head
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.use_cache = use_cache
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.max_window_layers = max_window_layers
        if rope_scaling is not None:  # (transformers turns it into `rope_parameters`; the model refuses non-default)
            self.rope_scaling = rope_scaling
        self.num_experts = num_experts
        self.num_shared_experts = num_shared_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.n_group = n_group
        self.topk_group = topk_group
        self.routed_scaling_factor = routed_scaling_factor
        self.moe_intermediate_size = moe_intermediate_size
        self.first_k_dense_replace = first_k_dense_replace
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.output_router_logits = output_router_logits
        self.partial_rotary_factor = partial_rotary_factor
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    def is_moe_layer(self, layer_index: int) -> bool:
        """Layers from `first_k_dense_replace` on are MoE (as the official decoder layer decides)."""
        return self.num_experts is not None and layer_index >= self.first_k_dense_replace


def check_supported(config: Llada2MoeConfig) -> None:
    """One clear error for a config the official code would fail on (or that needs RoPE scaling we do not have)."""
    problems = []
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        problems.append(f"rope type {rope.get('rope_type', rope.get('type'))!r} (only the default RoPE)")
    if config.hidden_act not in ACT2FN:
        problems.append(f"hidden_act {config.hidden_act!r}")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if not kv_heads or kv_heads < 1 or heads % kv_heads:
        problems.append(f"num_key_value_heads {kv_heads!r} must divide num_attention_heads {heads}")
    if int(config.head_dim * config.partial_rotary_factor) % 2:
        problems.append("rotary dimension head_dim * partial_rotary_factor must be even")
    if config.num_experts is not None:
        experts, groups = config.num_experts, config.n_group
        if experts % groups or experts // groups < 2:
            problems.append(f"n_group {groups} must split num_experts {experts} into groups of >= 2 experts")
        elif not 1 <= config.topk_group <= groups:
            problems.append(f"topk_group {config.topk_group} must be in [1, n_group={groups}]")
        elif not 1 <= config.num_experts_per_tok <= config.topk_group * experts // groups:
            problems.append(f"num_experts_per_tok {config.num_experts_per_tok} exceeds the experts of "
                            f"topk_group={config.topk_group} groups")
        if config.moe_intermediate_size is None:
            problems.append("moe_intermediate_size is needed for MoE layers")
    if config.intermediate_size is None and any(not config.is_moe_layer(i) for i in range(config.num_hidden_layers)):
        problems.append("intermediate_size is needed for the dense layers")
    if problems:
        raise ValueError(f"Llada2MoeConfig: unsupported or inconsistent settings: {'; '.join(problems)}.")


# ----------------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------------


class Llada2MoeRMSNorm(nn.Module):
    """RMSNorm as the official code has it: normalised in float32, cast back, then scaled by the weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class Llada2MoeRotaryEmbedding(nn.Module):
    """cos/sin of the rotary embedding over the first `head_dim * partial_rotary_factor` dimensions of a head.

    Computed in float32 for any position ids and cast to the hidden states' dtype, as the official module does; the
    inverse frequencies are recomputed per call (no buffer, so meta-device loading cannot leave them unset)."""

    def __init__(self, config: Llada2MoeConfig):
        super().__init__()
        self.rotary_dim = int(config.head_dim * config.partial_rotary_factor)
        self.theta = float(config.rope_theta)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (B, T) -> cos, sin: (B, 1, T, rotary_dim)
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32, device=position_ids.device)
        inv_freq = 1.0 / (self.theta ** (exponents / self.rotary_dim))
        freqs = position_ids.to(torch.float32)[..., None] * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_partial_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotates the first cos.shape[-1] dimensions of q and k (B, H, T, D); the rest passes unchanged."""
    rotary_dim = cos.shape[-1]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
        return torch.cat((rotated * cos + rotate_half(rotated) * sin, passed), dim=-1)

    return rotate(q), rotate(k)


class Llada2MoeAttention(nn.Module):
    """Grouped-query attention with one fused QKV projection (`query_key_value`), per-head QK RMSNorm, partial RoPE
    and the output projection `dense`. No mask of its own: the caller's boolean mask (True = attend) decides."""

    def __init__(self, config: Llada2MoeConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
                                         bias=config.use_qkv_bias)
        if config.use_qk_norm:
            self.query_layernorm = Llada2MoeRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.key_layernorm = Llada2MoeRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.use_bias)
        self.attention_dropout = config.attention_dropout

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(batch, length, -1, self.head_dim)
        sizes = [self.num_heads, self.num_kv_heads, self.num_kv_heads]
        q, k, v = (part.transpose(1, 2) for part in qkv.split(sizes, dim=2))  # (B, heads, T, head_dim)
        if hasattr(self, "query_layernorm"):
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        q, k = apply_partial_rotary(q, k, cos, sin)
        groups = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.head_dim**-0.5,
                                              dropout_p=self.attention_dropout if self.training else 0.0)
        return self.dense(attn.transpose(1, 2).reshape(batch, length, -1))


class Llada2MoeMLP(nn.Module):
    """SwiGLU feed-forward: the dense layers' MLP, each routed expert and the shared experts."""

    def __init__(self, config: Llada2MoeConfig, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Llada2MoeRouter(nn.Module):
    """The router (`mlp.gate`): sigmoid scores in float32; the choice adds `expert_bias` (auxiliary-loss-free load
    balancing, stored in the checkpoint) and is group-limited; the weights are the chosen experts' unbiased scores,
    renormalised (top-k > 1) and scaled by `routed_scaling_factor`."""

    def __init__(self, config: Llada2MoeConfig):
        super().__init__()
        self.top_k, self.num_experts = config.num_experts_per_tok, config.num_experts
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(config.num_experts))

    def group_limited_top_k(self, scores: torch.Tensor) -> torch.LongTensor:
        """(N, E) routing scores -> (N, top_k) experts, chosen only among the `topk_group` best groups."""
        tokens = scores.shape[0]
        group_scores = scores.view(tokens, self.n_group, -1).topk(2, dim=-1).values.sum(-1)  # (N, n_group)
        best_groups = group_scores.topk(self.topk_group, dim=-1, sorted=False).indices
        group_mask = torch.zeros_like(group_scores).scatter_(1, best_groups, 1.0).bool()
        expert_mask = group_mask.repeat_interleave(self.num_experts // self.n_group, dim=1)  # (N, E)
        return scores.masked_fill(~expert_mask, float("-inf")).topk(self.top_k, dim=-1).indices

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.LongTensor, torch.Tensor]:
        # hidden_states: (N, d) -> experts (N, top_k), weights (N, top_k) float32
        scores = F.linear(hidden_states.float(), self.weight.float()).sigmoid()
        experts = self.group_limited_top_k(scores + self.expert_bias)
        weights = scores.gather(1, experts)
        if self.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return experts, weights * self.routed_scaling_factor


class Llada2MoeSparseMoeBlock(nn.Module):
    """Routed experts (`experts.{j}`), their router (`gate`) and the always-on `shared_experts` (one SwiGLU of
    `num_shared_experts` x `moe_intermediate_size`)."""

    def __init__(self, config: Llada2MoeConfig):
        super().__init__()
        self.experts = nn.ModuleList(Llada2MoeMLP(config, config.moe_intermediate_size)
                                     for _ in range(config.num_experts))
        self.gate = Llada2MoeRouter(config)
        if config.num_shared_experts is not None:
            self.shared_experts = Llada2MoeMLP(config, config.moe_intermediate_size * config.num_shared_experts)

    def routed(self, hidden_states: torch.Tensor, experts: torch.LongTensor, weights: torch.Tensor) -> torch.Tensor:
        """Sum over each token's experts of weight x expert(token), accumulated in float32: tokens are sorted by expert
        so that each expert runs once on its tokens (one host sync for the counts)."""
        flat_experts = experts.reshape(-1)  # (N * top_k,)
        order = flat_experts.argsort()
        counts = torch.bincount(flat_experts, minlength=len(self.experts)).tolist()
        tokens = order // experts.shape[1]
        inputs = hidden_states[tokens].split(counts)
        outputs = torch.cat([self.experts[e](chunk) for e, chunk in enumerate(inputs) if counts[e]])
        combined = torch.zeros(hidden_states.shape, dtype=torch.float32, device=hidden_states.device)
        combined.index_add_(0, tokens, outputs.float() * weights.reshape(-1)[order, None])
        return combined.to(hidden_states.dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])  # (N, d)
        output = self.routed(flat, *self.gate(flat)).view_as(hidden_states)
        if hasattr(self, "shared_experts"):
            output = output + self.shared_experts(hidden_states)
        return output


class Llada2MoeDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: attention, then the MoE block (or a dense MLP in the first `first_k_dense_replace` layers)."""

    def __init__(self, config: Llada2MoeConfig, layer_index: int):
        super().__init__()
        self.input_layernorm = Llada2MoeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = Llada2MoeAttention(config)
        self.post_attention_layernorm = Llada2MoeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = (Llada2MoeSparseMoeBlock(config) if config.is_moe_layer(layer_index)
                    else Llada2MoeMLP(config, config.intermediate_size))

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = hidden_states + self.attention(self.input_layernorm(hidden_states), cos, sin, attention_mask)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Llada2MoeOutput(ModelOutput):
    """logits: (B, T', vocab) float32 for the requested positions (as the official head returns them)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def attention_mask_4d(key_mask: torch.Tensor | None, positions: torch.Tensor, block_length: int | None,
                      ) -> torch.Tensor | None:
    """(B, 1, T, T) boolean mask, True = attend: the real keys (`key_mask` (B, T)), and with `block_length` only the
    keys whose block (position // block_length) is not after the query's: the block-causal attention of LLaDA2's
    generation, on each row's own grid (positions count real tokens). Every query also sees itself, so that a padding
    row is never empty (its output is never read). None: plain bidirectional attention, no padding."""
    if key_mask is None and block_length is None:
        return None
    length = positions.shape[1]
    allowed = torch.ones(positions.shape[0], length, length, dtype=torch.bool, device=positions.device)
    if block_length is not None:
        blocks = positions // block_length
        allowed = blocks[:, None, :] <= blocks[:, :, None]
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, :]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=positions.device)
    return allowed[:, None]


def block_diffusion_training_mask(key_mask: torch.Tensor, positions: torch.Tensor, block_length: int) -> torch.Tensor:
    """(B, 1, 2T, 2T) boolean mask of LLaDA2's block-diffusion training input [noisy sequence ; clean sequence] (both of
    T positions, the same `positions`): a noisy token sees the noisy tokens of its own block and the clean tokens of
    earlier blocks; a clean token sees the clean tokens of its own and earlier blocks (never noisy ones). Only real
    keys (`key_mask` (B, T)); every query also sees itself."""
    blocks = positions // block_length
    same = blocks[:, :, None] == blocks[:, None, :]  # (B, Tq, Tk)
    earlier = blocks[:, None, :] < blocks[:, :, None]
    keys = key_mask.bool()[:, None, :]
    top = torch.cat((same & keys, earlier & keys), dim=2)  # noisy queries: [noisy keys | clean keys]
    bottom = torch.cat((torch.zeros_like(same), (same | earlier) & keys), dim=2)  # clean queries
    allowed = torch.cat((top, bottom), dim=1)
    return (allowed | torch.eye(allowed.shape[-1], dtype=torch.bool, device=allowed.device))[:, None]


class Llada2MoeModel(nn.Module):
    """Holds the weights under the official names: word_embeddings, layers.{i}, norm."""

    def __init__(self, config: Llada2MoeConfig):
        super().__init__()
        pad = config.pad_token_id
        padding_idx = pad if pad is not None and 0 <= pad < config.vocab_size else None
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx)
        self.layers = nn.ModuleList(Llada2MoeDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Llada2MoeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class Llada2MoePreTrainedModel(PreTrainedModel):
    config_class = Llada2MoeConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Llada2MoeDecoderLayer"]
    _supports_sdpa = True
    _tied_weights_keys = {"lm_head.weight": "model.word_embeddings.weight"}  # only when config.tie_word_embeddings

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Llada2MoeRouter):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.expert_bias)


class Llada2MoeForMaskedDiffusion(Llada2GenerationMixin, Llada2MoePreTrainedModel):
    """The LLaDA2.0 mask predictor: MoE transformer + LM head; `forward` returns `.logits`, `generate` runs LLaDA2's
    block-diffusion sampler (`generation_llada2.py`) on a prompt given as `inputs_embeds` or `input_ids`, and
    `prefix_loss` is its block-diffusion SFT loss of an answer after a prefix.

    Beyond the official forward it takes a left-padded `attention_mask` (B, T) (positions count real tokens), a
    `block_length` for block-causal attention on each row's grid of real tokens, a prepared (B, 1, T, T) boolean mask,
    and `logits_positions` to apply the LM head on a slice.
    """

    # LoRA goes on the attention projections and the dense / shared-expert MLPs of each layer, not on the routed
    # experts (256 per layer in LLaDA2.0-mini: `mlp.experts.{j}.*` lie outside the scope) nor the LM head
    lora_scope = r"model\.layers\.\d+\.(?:attention|mlp|mlp\.shared_experts)\."
    lora_targets = ("query_key_value", "dense", "gate_proj", "up_proj", "down_proj")
    # LLaDA2's SFT (dFactory, configs/sft/llada2_*_bd_sft.yaml): t ~ U(0.3, 0.8), blocks of 32
    sft_noise_range = (0.3, 0.8)
    sft_block_length = 32

    def __init__(self, config: Llada2MoeConfig):
        check_supported(config)
        super().__init__(config)
        self.model = Llada2MoeModel(config)
        self.rotary_emb = Llada2MoeRotaryEmbedding(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self.generation_config = Llada2GenerationConfig(
            mask_token_id=config.mask_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
            decoding="L2")

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        inputs_embeds: torch.Tensor | None = None,  # (B, T, d)
        attention_mask: torch.Tensor | None = None,  # (B, T) 1 = real token, or (B, 1, T, T) bool, True = attend
        position_ids: torch.LongTensor | None = None,  # (B, T)
        block_length: int | None = None,  # block-causal attention on the grid of positions (with a (B, T) mask)
        logits_positions: slice | None = None,
        **kwargs: Any,
    ) -> Llada2MoeOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Llada2MoeForMaskedDiffusion.forward: pass exactly one of `input_ids` or `inputs_embeds`.")
        hidden_states = self.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = hidden_states.shape[:2]
        padding = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        if position_ids is None:
            position_ids = self.real_positions(padding, batch, length, hidden_states.device)
        if padding is not None and bool(padding.all()) and block_length is None:
            padding = None  # no padding: SDPA's fastest path
        mask = attention_mask if attention_mask is not None and attention_mask.dim() == 4 else \
            attention_mask_4d(padding, position_ids, block_length)
        cos, sin = self.rotary_emb(position_ids, hidden_states.dtype)
        for layer in self.model.layers:
            hidden_states = layer(hidden_states, cos, sin, mask)
        if logits_positions is not None:
            hidden_states = hidden_states[:, logits_positions]
        logits = self.lm_head(self.model.norm(hidden_states)).float()
        return Llada2MoeOutput(logits=logits)

    @staticmethod
    def real_positions(padding: torch.Tensor | None, batch: int, length: int, device) -> torch.LongTensor:
        """(B, T) positions: real tokens numbered from 0 under left padding (padding slots get 0)."""
        if padding is None:
            return torch.arange(length, device=device).expand(batch, -1)
        return (padding.long().cumsum(-1) - 1).clamp(min=0)

    # -- the decoder interface of the speech model ---------------------------------------------------------------

    @classmethod
    def pull(cls, config) -> "Llada2MoeForMaskedDiffusion":
        """The base decoder a speech model's config (`WhisperLladaConfig`) names (`decoder_name_or_path`: an official
        LLaDA2.0 checkpoint directory, Hub id or `package:NAME`), in the current default dtype."""
        return cls.from_pretrained(resolve_model_path(config.decoder_name_or_path), dtype=torch.get_default_dtype())

    def prefix_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor,
                    recipe: TrainingRecipe | None = None, anchored: torch.LongTensor | None = None) -> Llada2MoeOutput:
        """LLaDA2's block-diffusion SFT loss (its authors' dFactory `tasks/train_llada2_bd.py` with
        `block_diffusion_mode` and `same_token_labels`, micro-batches of one sample) of the answer `labels` (B, A; EOS
        padding included, -100 = not in the answer) after `prefix` (B, P, d), left-padded with `prefix_mask` (B, P):

        * noise: per sample t ~ U(0.3, 0.8), each answer token masked with probability t (the prefix never);
        * input: [prefix + noisy answer ; prefix + clean answer], both halves numbered from 0 over the real tokens,
          under `block_diffusion_training_mask` with blocks of 32 on that grid;
        * loss: cross-entropy of the noisy half's logits at the masked positions (no 1/t weight), averaged over each
          sample's masked tokens, then over the batch; no MoE auxiliary loss (the authors' SFT has none).

        Rows of `anchored` (B, A; -1 rows = not anchored) replace the random masking by a given corrupted answer
        (preset D's start): their loss is the mean cross-entropy at its [MASK] positions. The recipe's LLaDA settings
        (mask_eps, block_mask_*) do not apply. Returns `.loss` and `.logits` (B, A, vocab) of the noisy answer."""
        low, high = self.sft_noise_range
        batch, answer_len = labels.shape
        in_answer = labels != -100  # (B, A)
        clean = labels.clamp(min=0)
        t = low + (high - low) * torch.rand(batch, 1, device=prefix.device)  # (B, 1)
        masked = (torch.rand(batch, answer_len, device=prefix.device) < t) & in_answer
        noisy = torch.where(masked, torch.full_like(clean, self.config.mask_token_id), clean)
        if anchored is not None:
            rows = (anchored >= 0).all(-1, keepdim=True)  # (B, 1)
            masked = torch.where(rows, (anchored == self.config.mask_token_id) & in_answer, masked)
            noisy = torch.where(rows, anchored.clamp(min=0), noisy)
        key_mask = torch.cat((prefix_mask.bool(), in_answer), dim=1)  # (B, T), T = P + A
        positions = self.real_positions(key_mask, batch, key_mask.shape[1], prefix.device)
        embed = self.get_input_embeddings()
        inputs = torch.cat((prefix, embed(noisy), prefix, embed(clean)), dim=1)  # (B, 2T, d)
        out = self(inputs_embeds=inputs, attention_mask=block_diffusion_training_mask(
            key_mask, positions, self.sft_block_length), position_ids=positions.repeat(1, 2),
            logits_positions=slice(prefix.shape[1], prefix.shape[1] + answer_len))
        token_loss = F.cross_entropy(out.logits.transpose(1, 2), clean, reduction="none")  # (B, A)
        per_row = (token_loss * masked).sum(-1) / masked.sum(-1).clamp(min=1)
        return Llada2MoeOutput(loss=per_row.sum() / batch, logits=out.logits)

    def answer_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer: torch.LongTensor,
                      answer_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A, vocab) the logits of each answer position when the model reads the left-padded prefix embeddings
        (B, P, d) and the whole answer (B, A) under the block-causal attention it decodes with (blocks of
        `generation_config.block_length` on each row's grid of real tokens); `answer_mask` (B, A): the answer's real
        positions (default: all)."""
        answer_mask = torch.ones_like(answer) if answer_mask is None else answer_mask
        full_mask = torch.cat((prefix_mask.long(), answer_mask.long().to(prefix_mask.device)), dim=1)
        width = prefix.shape[1]
        return self(inputs_embeds=torch.cat((prefix, self.get_input_embeddings()(answer)), dim=1),
                    attention_mask=full_mask, block_length=self.generation_config.block_length,
                    logits_positions=slice(width, width + answer.shape[1])).logits

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads an official LLaDA2.0 checkpoint (or one saved by this class) and fails clearly on missing or
        mis-shaped weights instead of silently initialising them at random. The checkpoint's generation_config.json
        contributes only the sampler settings this class knows."""
        wants_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("ignore_mismatched_sizes", True)  # report mis-shaped tensors by name below
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing weights {sorted(info['missing_keys'])[:8]}")
        if info.get("mismatched_keys"):
            shapes = [f"{m[0]} {tuple(m[1])} vs {tuple(m[2])}" if isinstance(m, tuple) else str(m)
                      for m in info["mismatched_keys"]]
            problems.append(f"mis-shaped weights (checkpoint vs config) {shapes[:8]}")
        if problems:
            raise ValueError(
                f"LLaDA2 checkpoint {pretrained_model_name_or_path}: {'; '.join(problems)}. Expected the official key "
                "names model.word_embeddings.weight, "
                "model.layers.{i}.{input_layernorm,post_attention_layernorm}.weight, "
                "model.layers.{i}.attention.{query_key_value,query_layernorm,key_layernorm,dense}.weight, "
                "model.layers.{i}.mlp.{gate.weight,gate.expert_bias,experts.{j}.*,shared_experts.*} (dense layers: "
                "mlp.{gate,up,down}_proj.weight), model.norm.weight and lm_head.weight, with the shapes of config.json."
            )
        model.generation_config = Llada2GenerationConfig.from_loaded(model.generation_config, model.config)
        return (model, info) if wants_info else model


# ----------------------------------------------------------------------------------------------------------------------
# Size
# ----------------------------------------------------------------------------------------------------------------------


def count_parameters(config: Llada2MoeConfig | dict) -> tuple[int, int]:
    """(total, active per token) parameters of a meta-device build (no memory): active counts every weight except the
    routed experts a token does not use (num_experts - num_experts_per_tok per MoE layer); embeddings and LM head
    included (LLaDA2.0-mini: about 16.3B total, 1.4B active)."""
    if isinstance(config, dict):
        config = Llada2MoeConfig(**config)
    with torch.device("meta"):
        model = Llada2MoeForMaskedDiffusion(config)
    total = sum(p.numel() for p in model.parameters())
    unused = 0
    for layer in model.model.layers:
        if isinstance(layer.mlp, Llada2MoeSparseMoeBlock):
            per_expert = sum(p.numel() for p in layer.mlp.experts[0].parameters())
            unused += per_expert * (config.num_experts - config.num_experts_per_tok)
    return total, total - unused


__all__ = ["LLADA2_MINI_CONFIG", "Llada2MoeConfig", "Llada2MoeForMaskedDiffusion", "Llada2GenerationConfig",
           "attention_mask_4d", "block_diffusion_training_mask", "count_parameters"]
