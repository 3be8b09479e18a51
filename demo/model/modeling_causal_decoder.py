"""The autoregressive decoder of the AR-LLM baseline, behind the same small interface as the LLaDA decoder.

`CausalLMDecoder` wraps any transformers `AutoModelForCausalLM` (e.g. Meta-Llama-3-8B-Instruct) so that the speech
model treats both decoders alike: `pull` (the base weights a config names), `prefix_loss` (next-token cross-entropy of
the answer after the speech prefix), `resolve_generation_config` ("AR" decoding settings, typed) and `generate`
(transformers' own: greedy or beam search with a KV cache).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, PretrainedConfig, PreTrainedModel

try:
    from .modeling_llada import LladaOutput, load_causal_lm
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from modeling_llada import LladaOutput, load_causal_lm

AR_PRESET = "AR"
AR_SETTINGS = {"max_new_tokens": int, "gen_length": int, "num_beams": int}  # gen_length: alias of max_new_tokens


class ARGenerationConfig(GenerationConfig):
    """transformers' GenerationConfig for the causal decoder, named and recorded like the masked-diffusion presets:
    "AR" (greedy), "AR,num_beams=4", "AR,max_new_tokens=64"."""

    @property
    def name(self) -> str:
        extra = [f"{k}={getattr(self, k)}" for k in ("max_new_tokens", "num_beams") if k in getattr(self, "explicit", [])]
        return ",".join([AR_PRESET] + extra)

    def settings(self) -> dict[str, Any]:
        return {"decoding": AR_PRESET, "steps": None, "gen_length": self.max_new_tokens, "block_length": None,
                "num_blocks": None, "num_beams": self.num_beams, "temperature": 0.0, "remasking": None,
                "threshold": None, "kv_cache": None, "early_stop": False}

    def set_length(self, length: int) -> None:
        """The default answer length (train_hf.py --gen_length)."""
        self.max_new_tokens = int(length)

    @staticmethod
    def handles(spec: str) -> bool:
        """Whether a decoding string is for a causal decoder ("AR...")."""
        return str(spec).split(",")[0].strip() == AR_PRESET

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        """"AR", "AR,num_beams=4", "AR,gen_length=64" -> settings; anything else raises ValueError naming it."""
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts or parts[0] != AR_PRESET:
            raise ValueError(f"decoding {text!r}: a causal decoder decodes with {AR_PRESET} (e.g. 'AR,num_beams=4')")
        settings: dict[str, Any] = {}
        for part in parts[1:]:
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in AR_SETTINGS or not value:
                raise ValueError(f"decoding {text!r}: AR decoding takes only max_new_tokens (or gen_length) and "
                                 f"num_beams, as key=value; got {part!r}")
            try:
                settings["max_new_tokens" if key == "gen_length" else key] = AR_SETTINGS[key](value)
            except ValueError as error:
                raise ValueError(f"decoding {text!r}: bad value for {key}: {value!r}") from error
        return settings


def keep_first_layers(causal_lm: PreTrainedModel, n_layers: int) -> PreTrainedModel:
    """Truncates a causal LM (transformers' `model.layers` layout, e.g. Llama) in place to its first `n_layers`
    layers; its final norm and LM head stay. The same layers `llada_config_from_llama(n_layers=...)` keeps."""
    layers = causal_lm.get_decoder().layers
    if not 1 <= int(n_layers) <= len(layers):
        raise ValueError(f"decoder_num_layers must be in [1, {len(layers)}] for this decoder, got {n_layers}.")
    causal_lm.get_decoder().layers = layers[: int(n_layers)]
    config = causal_lm.config
    config.num_hidden_layers = int(n_layers)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[: int(n_layers)]
    return causal_lm


class CausalLMDecoder(nn.Module):
    """A causal LM as the speech model's decoder (`lm`): next-token loss on the answer, transformers' `generate`."""

    lora_scope = r"lm\.model\.layers\.\d+\.(?:\w+\.)*"
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm
        self.generation_config = ARGenerationConfig(max_new_tokens=128, num_beams=1, do_sample=False)

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "CausalLMDecoder":
        return cls(AutoModelForCausalLM.from_config(config))

    @classmethod
    def pull(cls, config) -> "CausalLMDecoder":
        """The base causal LM a speech model's config (`WhisperLladaConfig`) names, cut to the layers its decoder
        config keeps, in the current default dtype."""
        lm = load_causal_lm(config.decoder_name_or_path, config.decoder_gguf_file, torch.get_default_dtype())
        return cls(keep_first_layers(lm, config.decoder_config.num_hidden_layers))

    @property
    def config(self) -> PretrainedConfig:
        return self.lm.config

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.lm.get_input_embeddings()

    def tie_weights(self) -> None:
        """Ties the LM head to the embeddings when the LM's config says so (a checkpoint stores the tensor once)."""
        if getattr(self.lm.config, "tie_word_embeddings", False):
            self.lm.lm_head.weight = self.lm.get_input_embeddings().weight

    def set_stop_ids(self, eos_token_id: int, eot_token_id: int | None) -> None:
        """Generation stops at EOS or the end-of-turn token and pads with EOS."""
        stop = [eos_token_id] + [i for i in (eot_token_id,) if i is not None and i != eos_token_id]
        self.generation_config.update(eos_token_id=stop, pad_token_id=eos_token_id)

    def prefix_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor,
                    recipe=None, anchored=None) -> LladaOutput:
        """Next-token cross-entropy (mean over answer tokens), teacher-forced on [prefix] + answer[:-1]. Targets are
        the transcript and its first EOS; the prefix, the EOS padding after the first EOS and -100 positions are not
        in the loss. Positions count real tokens only (as `generate` does). The training recipe's masking settings
        are for masked-diffusion decoders and do not apply here."""
        if anchored is not None:
            raise ValueError("anchored training (training.anchor_prob) is for masked-diffusion decoders.")
        eos = self.generation_config.pad_token_id
        in_answer = labels != -100
        answer = labels.masked_fill(~in_answer, eos)
        is_eos = answer == eos
        after_first_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        targets = labels.masked_fill(after_first_eos | ~in_answer, -100)
        inputs = torch.cat((prefix, self.get_input_embeddings()(answer[:, :-1])), dim=1)
        full_mask = torch.cat((prefix_mask, torch.ones_like(answer[:, :-1])), dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.lm(inputs_embeds=inputs, attention_mask=full_mask, position_ids=positions,
                      logits_to_keep=answer.shape[1], use_cache=False)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        return LladaOutput(loss=loss, logits=out.logits)

    def resolve_generation_config(self, generation_config: GenerationConfig | None = None, decoding: str | None = None,
                                  **settings: Any) -> ARGenerationConfig:
        """A validated copy of the decoding settings: "AR" strings and keyword settings on top of
        `generation_config` (default: the decoder's). Settings transformers' generate does not know raise an error
        naming them."""
        base = generation_config if generation_config is not None else self.generation_config
        if decoding is None and not settings and getattr(base, "_resolved", False):
            return base
        if decoding is not None:
            settings = {**ARGenerationConfig.parse(decoding), **settings}
        config = ARGenerationConfig.from_dict(base.to_dict())
        known = config.to_dict()
        unused = [k for k in settings if k not in known and k != "gen_length"]
        if unused:
            raise ValueError(f"The following generation arguments are not used by the model: {unused} (a causal "
                             "decoder decodes with transformers' generate: max_new_tokens, num_beams, ...)")
        if "gen_length" in settings:
            settings["max_new_tokens"] = settings.pop("gen_length")
        config.update(**settings)
        config.explicit = list(settings)
        config.validate()
        config._resolved = True
        return config

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 generation_config: GenerationConfig | None = None, **settings: Any) -> torch.LongTensor:
        """transformers' generate from the prefix embeddings (left-padded); returns the new tokens only."""
        config = self.resolve_generation_config(generation_config, **settings)
        config = copy.deepcopy(config)
        for name in ("explicit", "_resolved"):
            config.__dict__.pop(name, None)
        return self.lm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, generation_config=config)


__all__ = ["CausalLMDecoder", "ARGenerationConfig", "keep_first_layers", "AR_PRESET"]
