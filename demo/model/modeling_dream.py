"""Dream (Dream-org/Dream-v0-Instruct-7B, Dream-v0-Base-7B): a masked-diffusion LM initialised from Qwen2.5-7B, as a
decoder of the speech model.

Dream is Qwen2's architecture (RMSNorm, SwiGLU, RoPE, grouped-query attention with q/k/v biases) run with
bidirectional attention, plus a mask token (151666) and the *shift*: the logits at position i predict the token at
i + 1, i.e. the model's logits shifted right by one position are the predictions for each position. Its official
remote code does not load under transformers 5, so the model is built here from transformers' Qwen2 blocks under the
official parameter names (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, ...,
`lm_head.weight`): an official checkpoint directory loads with `DreamForMaskedDiffusion.from_pretrained`, and its
logits equal the official forward (tested against an independent plain implementation of it).

Besides a plain forward (`logits_positions`: the LM head on a slice only) the model owns Dream's sampler
(`generation_dream.DreamGenerationMixin`, the official `diffusion_generate`) and its SFT objective (`prefix_loss`), and
offers the speech model the decoder interface of `modeling_llada.LladaForMaskedDiffusion` and
`modeling_causal_decoder.CausalLMDecoder` (docs/extending.md): `pull`, `prefix_loss`, `resolve_generation_config`,
`generate`, `answer_logits`, `lora_scope` / `lora_targets`, `tie_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel
from transformers.utils import ModelOutput

try:
    from .configuration_whisper_llada import TrainingRecipe
    from .generation_dream import DreamGenerateOutput, DreamGenerationConfig, DreamGenerationMixin
    from .modeling_llada import answer_mask_probs, resolve_model_path
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import TrainingRecipe
    from generation_dream import DreamGenerateOutput, DreamGenerationConfig, DreamGenerationMixin
    from modeling_llada import answer_mask_probs, resolve_model_path

# Dream-v0's special ids (its tokenizer is Qwen2.5's plus <|mask|>): [MASK], end of text (also the padding), and the
# chat template's end of turn <|im_end|>.
DREAM_MASK_TOKEN_ID = 151666
DREAM_EOS_TOKEN_ID = 151643
DREAM_EOT_TOKEN_ID = 151645

# Context-adaptive reweighting (CART) of Dream's SFT loss: a masked token's weight is the clean context around it,
# sum over clean positions j of 0.5 p (1 - p)^(|i - j| - 1) (geometric in the distance, both sides). p = 0.3: the dLLM
# library's Dream trainer default (loss_weight_type "cart[geo_p:0.3]", after Dream's sft_trainer.yaml).
CART_P = 0.3

# The published config.json of Dream-org/Dream-v0-Instruct-7B (Dream-v0-Base-7B has the same architecture).
DREAM_V0_7B_CONFIG: dict[str, Any] = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}


class DreamConfig(Qwen2Config):
    """Configuration of Dream's mask predictor: Qwen2's fields (an official Dream config.json loads as it is; its
    `rope_theta` / `rope_scaling` become `rope_parameters`) plus `mask_token_id`, with the official defaults (padding
    = end of text, no cache). Sliding-window settings are accepted and ignored, as the official SDPA attention does."""

    model_type = "Dream"
    mask_token_id: int = DREAM_MASK_TOKEN_ID
    pad_token_id: int | None = DREAM_EOS_TOKEN_ID
    use_cache: bool = False


# ----------------------------------------------------------------------------------------------------------------------
# The mask predictor
# ----------------------------------------------------------------------------------------------------------------------


def attention_bias(attention_mask: torch.Tensor | str | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive attention bias (B, 1, 1, L) from a key mask (B, L) (1 = real token, 0 = padding), or (B, 1, L, L) from
    the official code's 4-D boolean mask (True = attend): 0 where attended, the dtype's lowest value elsewhere. None
    (attend everywhere) for None, the official "full", or a mask without padding."""
    if attention_mask is None or isinstance(attention_mask, str):
        return None
    attend = attention_mask.bool()
    if bool(attend.all()):
        return None
    if attend.dim() == 2:
        attend = attend[:, None, None, :]
    return torch.zeros(attend.shape, dtype=dtype, device=attend.device).masked_fill(~attend, torch.finfo(dtype).min)


def left_padded_positions(attention_mask: torch.Tensor | None, batch: int, length: int,
                          device: torch.device) -> torch.LongTensor:
    """(B, L) position ids: real tokens numbered from 0 after left padding (as Dream's sampler numbers them), or
    0..L-1 without a 2-D key mask."""
    if attention_mask is None or isinstance(attention_mask, str) or attention_mask.dim() != 2:
        return torch.arange(length, device=device).expand(batch, -1)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class DreamModel(Qwen2Model):
    """Qwen2's transformer stack (`embed_tokens`, `layers`, `norm`: Dream's official parameter names) with
    bidirectional attention: every position attends to every non-padding position, as Dream's SDPA attention with
    `is_causal=False`."""

    config_class = DreamConfig

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        for layer in self.layers:
            layer.self_attn.is_causal = False
            layer.self_attn.sliding_window = None  # Dream's attention ignores the sliding window

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, L)
        attention_mask: torch.Tensor | str | None = None,  # (B, L) 1 = real token (left padding), or official 4-D
        position_ids: torch.LongTensor | None = None,  # (B, L); default: real tokens numbered from 0
        inputs_embeds: torch.Tensor | None = None,  # (B, L, d)
        **kwargs: Any,
    ):
        """The final hidden states (`last_hidden_state`, (B, L, d)); the argument order is the official model's."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("DreamModel.forward: pass exactly one of `input_ids` or `inputs_embeds`.")
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = left_padded_positions(attention_mask, embeds.shape[0], embeds.shape[1], embeds.device)
        bias = attention_bias(attention_mask, embeds.dtype)  # one bidirectional mask for every layer
        return super().forward(inputs_embeds=embeds, position_ids=position_ids, use_cache=False,
                               attention_mask={"full_attention": bias, "sliding_attention": bias}, **kwargs)


@dataclass
class DreamOutput(ModelOutput):
    """loss: `prefix_loss`'s; logits: (B, T', vocab) of the requested positions, unshifted (position i's logits
    predict the token at i + 1)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class DreamPreTrainedModel(Qwen2PreTrainedModel):
    config: DreamConfig
    config_class = DreamConfig
    base_model_prefix = "model"
    _supports_flash_attn = False  # padding is an additive 4-D bias, which flash attention does not take
    _supports_flex_attn = False


def cart_weights(clean: torch.Tensor, start: int, p: float = CART_P) -> torch.Tensor:
    """(B, A) Dream's context-adaptive weights of the positions from `start` on, given which positions hold clean
    (unmasked, non-padding) tokens, `clean` (B, L): sum_j clean[j] 0.5 p (1 - p)^(|i - j| - 1), j != i."""
    index = torch.arange(clean.shape[1], device=clean.device)
    distance = (index[start:, None] - index[None, :]).abs()  # (A, L)
    kernel = 0.5 * p * (1 - p) ** (distance - 1).clamp(min=0).float()
    kernel = kernel.masked_fill(distance == 0, 0.0)
    return clean.float() @ kernel.T


class DreamForMaskedDiffusion(DreamGenerationMixin, DreamPreTrainedModel):
    """Dream's mask predictor: bidirectional Qwen2 transformer + LM head; `forward` returns `.logits` (unshifted, as
    the official model), `generate` runs Dream's sampler (`generation_dream.py`) on a prompt given as `inputs_embeds`
    or `input_ids`, `prefix_loss` is Dream's SFT loss of an answer after a prefix. `logits_positions` computes the LM
    head only for a slice of positions (the answer's shifted slots)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # tied only when the config says so
    # LoRA adapters go on these linear layers of the transformer layers (not on the LM head)
    lora_scope = r"model\.layers\.\d+\.(?:\w+\.)*"
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self.generation_config = self.default_generation_config(config)

    @staticmethod
    def default_generation_config(config: DreamConfig) -> DreamGenerationConfig:
        """The class's decoding defaults (`DreamGenerationConfig`) with the config's special ids."""
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
        return DreamGenerationConfig(mask_token_id=config.mask_token_id, eos_token_id=eos,
                                     pad_token_id=config.pad_token_id if config.pad_token_id is not None else eos)

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, L)
        attention_mask: torch.Tensor | str | None = None,  # (B, L) 1 = real token (left padding), or official 4-D
        position_ids: torch.LongTensor | None = None,  # (B, L); default: real tokens numbered from 0
        inputs_embeds: torch.Tensor | None = None,  # (B, L, d)
        logits_positions: slice | None = None,
        **kwargs: Any,
    ) -> DreamOutput:
        """Logits (B, L', vocab) of every position, or of `logits_positions`. The argument order is the official
        model's (`model(x, attention_mask, position_ids)`, as its sampler calls it)."""
        hidden_states = self.model(input_ids, attention_mask, position_ids, inputs_embeds).last_hidden_state
        if logits_positions is not None:
            hidden_states = hidden_states[:, logits_positions]
        return DreamOutput(logits=self.lm_head(hidden_states))

    # -- the decoder interface of the speech model ---------------------------------------------------------------

    @classmethod
    def pull(cls, config) -> "DreamForMaskedDiffusion":
        """The base decoder a speech model's config (`WhisperLladaConfig`) names (`decoder_name_or_path`: a Hub id, a
        directory or `package:NAME`), in the current default dtype; with a `DreamConfig` as its decoder config, the
        checkpoint is read in those shapes (e.g. its first layers only)."""
        decoder_config = getattr(config, "decoder_config", None)
        return cls.from_pretrained(resolve_model_path(config.decoder_name_or_path), dtype=torch.get_default_dtype(),
                                   **({"config": decoder_config} if isinstance(decoder_config, DreamConfig) else {}))

    def prefix_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor,
                    recipe: TrainingRecipe | None = None, anchored: torch.LongTensor | None = None) -> DreamOutput:
        """Dream's SFT loss of the answer `labels` (B, A; EOS padding included, -100 = not part of the answer) after
        `prefix` (B, P, d; left-padded, `prefix_mask` (B, P)), which is never masked, as the dLLM library's Dream
        trainer computes it: per sample t ~ U(eps, 1) (`recipe.mask_eps`), each answer token masked with probability
        t; the shifted logits (answer slot j read at position P - 1 + j); cross-entropy at the masked tokens weighted
        by CART (`cart_weights`: the clean prefix and answer tokens around each, p = 0.3); the sum divided by the
        number of answer tokens in the batch. In training (`recipe` given) `block_mask_prob` of the samples are
        masked as block decoding sees them (`answer_mask_probs`), and rows of `anchored` (B, A; -1 = not anchored)
        replace the masked answer with a corrupted one: those rows score only its [MASK] slots, their mean
        cross-entropy counted for the row's answer length."""
        recipe = recipe or TrainingRecipe()
        batch, answer_len = labels.shape
        width = prefix.shape[1]
        in_answer = labels != -100
        p_mask = answer_mask_probs(in_answer, recipe.mask_eps, recipe.block_mask_prob, recipe.block_mask_length)
        masked = (torch.rand(batch, answer_len, device=prefix.device) < p_mask) & in_answer  # (B, A)
        noisy = torch.where(masked, torch.full_like(labels, self.config.mask_token_id), labels.clamp(min=0))
        rows = None
        if anchored is not None:
            rows = (anchored >= 0).all(-1, keepdim=True)  # (B, 1)
            masked = torch.where(rows, (anchored == self.config.mask_token_id) & in_answer, masked)
            noisy = torch.where(rows, anchored.clamp(min=0), noisy)
        full_mask = torch.cat((prefix_mask.to(labels.device).long(), in_answer.long()), dim=1)  # (B, P + A)
        out = self(inputs_embeds=torch.cat((prefix, self.get_input_embeddings()(noisy)), dim=1),
                   attention_mask=full_mask, logits_positions=slice(width - 1, width - 1 + answer_len))
        in_prefix = torch.zeros(prefix_mask.shape, dtype=torch.bool, device=labels.device)  # the prefix is never masked
        clean = full_mask.bool() & ~torch.cat((in_prefix, masked), dim=1)  # (B, P + A) real, unmasked tokens
        weights = cart_weights(clean, width)  # (B, A)
        if rows is not None:
            per_row = in_answer.sum(-1, keepdim=True) / masked.sum(-1, keepdim=True).clamp(min=1)
            weights = torch.where(rows, per_row.float().expand_as(weights), weights)
        token_loss = F.cross_entropy(out.logits[masked].float(), labels[masked], reduction="none")
        loss = (token_loss * weights[masked]).sum() / in_answer.sum().clamp(min=1)
        return DreamOutput(loss=loss, logits=out.logits)

    def answer_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer: torch.LongTensor,
                      answer_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A, vocab) the logits of each answer slot when the model reads the left-padded prefix embeddings (B, P, d)
        and the whole answer (B, A), with Dream's shift: slot j is read at position P - 1 + j. `answer_mask` (B, A):
        the answer's real positions (default: all)."""
        answer_mask = torch.ones_like(answer) if answer_mask is None else answer_mask
        full_mask = torch.cat((prefix_mask.long(), answer_mask.long().to(prefix_mask.device)), dim=1)
        width = prefix.shape[1]
        return self(inputs_embeds=torch.cat((prefix, self.get_input_embeddings()(answer)), dim=1),
                    attention_mask=full_mask, logits_positions=slice(width - 1, width - 1 + answer.shape[1])).logits

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads an official Dream checkpoint (or one saved by this class) and fails clearly on missing or mis-shaped
        weights instead of silently initialising them at random. The decoding defaults are this class's (with the
        checkpoint's special ids): the official generation_config.json holds chat settings (512 steps)."""
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
                f"Dream checkpoint {pretrained_model_name_or_path}: {'; '.join(problems)}. Expected the official key "
                "names model.embed_tokens.weight, model.layers.{i}.{input_layernorm,post_attention_layernorm}.weight, "
                "model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}, model.layers.{i}.self_attn.o_proj.weight, "
                "model.layers.{i}.mlp.{gate,up,down}_proj.weight, model.norm.weight and lm_head.weight with the shapes "
                "its config.json implies.")
        model.generation_config = cls.default_generation_config(model.config)
        return (model, info) if wants_info else model


def count_parameters(config: DreamConfig | dict[str, Any] = DREAM_V0_7B_CONFIG) -> int:
    """Parameters of a Dream model with `config` (a DreamConfig or a config.json dict), built on the meta device (no
    memory is allocated): 7,615,616,512 for Dream-v0-7B."""
    config = DreamConfig.from_dict(config) if isinstance(config, dict) else config
    with torch.device("meta"):
        model = DreamForMaskedDiffusion(config)
    return sum(parameter.numel() for parameter in model.parameters())


__all__ = ["DreamConfig", "DreamForMaskedDiffusion", "DreamModel", "DreamOutput", "DreamGenerationConfig",
           "DreamGenerateOutput", "DREAM_V0_7B_CONFIG", "DREAM_MASK_TOKEN_ID", "DREAM_EOS_TOKEN_ID",
           "DREAM_EOT_TOKEN_ID", "cart_weights", "count_parameters"]
