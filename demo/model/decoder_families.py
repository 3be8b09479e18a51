"""The decoder families a whisper-llada model can be built on, registered in one place.

A family is one module behind the decoder interface (docs/extending.md): `pull`, `from_pretrained`, construction from
its config, `get_input_embeddings`, `prefix_loss`, `answer_logits`, `generation_config` + `resolve_generation_config`,
`generate`, `lora_scope` / `lora_targets`, `tie_weights`. This file says, for each, what the rest of the package needs
to know and nothing else: which config.json `model_type`s it reads, where its decoder class and config class live
(imported when first needed, so that a model never imports another family's code; the imports are relative, so that
transformers copies the family's files beside every saved checkpoint), its tokenizer's special tokens (the mask token
D and the training masks use, the end-of-turn token that closes the user turn and ends a transcript), its presets and
the model card's words for it. The builder, the speech model, the processor, the pipeline, eval_hf.py, train_hf.py
and the model card ask `family(name)` and have no per-family branches.

| family | checkpoints | decoder | tested against |
|---|---|---|---|
| llada | GSAI-ML/LLaDA-8B-Instruct, LLaDA-1.5; a Llama causal LM converted | modeling_llada.py | LLaDA's official code |
| dream | Dream-org/Dream-v0-Instruct-7B / -Base-7B (Qwen2-based, shifted) | modeling_dream.py | Dream's official code |
| llada2 | inclusionAI/LLaDA2.0-mini / -flash (MoE) | modeling_llada2.py | LLaDA2.0's official code |
| diffusion_gemma | google/diffusiongemma-26B-A4B-it | modeling_diffusion_gemma_decoder.py | transformers' native class |
| causal | any AutoModelForCausalLM: the AR-LLM baseline | modeling_causal_decoder.py | transformers' generate |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class DecoderFamily:
    """What the package needs to know about a decoder family.

    name: `WhisperLladaConfig.decoder_type` and `DecoderSpec.kind`.
    model_types: the `model_type`s of the checkpoints' config.json that mean this family (detection).
    load: () -> (decoder class, decoder config class or None for transformers' AutoConfig, generation-config class),
        imported on first use.
    mask_token: the tokenizer's mask token (None: the family has none: DiffusionGemma denoises uniform noise).
    end_of_turn: the chat template's end-of-turn token (closes the user turn, ends a transcript).
    presets: the decoding presets its generation config reads (`generate(decoding=...)`, eval_hf.py rows), the
        model's default first where the family has its own; D and CTC need a CTC head (or, D, a given hypothesis).
    title: what the model card and README call the decoder; writes: how it writes a transcript (the card's words).
    tags: the model card's Hub tags for it.
    masked: the family denoises [MASK] positions: a token D's start keeps is never changed. False for
        DiffusionGemma (uniform noise: its start is where the sampler begins, any token may change) and the causal
        baseline.
    """

    name: str
    model_types: tuple[str, ...]
    load: Callable[[], tuple[type, type | None, type]]
    mask_token: str | None
    end_of_turn: str | None
    presets: tuple[str, ...] = ()
    title: str = ""
    writes: str = ""
    tags: tuple[str, ...] = ()
    masked: bool = True

    def decoder_class(self) -> type:
        return self.load()[0]

    def config_class(self) -> type | None:
        return self.load()[1]

    def generation_config_class(self) -> type:
        return self.load()[2]

    def make_config(self, values: dict) -> Any:
        """The decoder's config from a dict (e.g. a checkpoint's config.json, or a saved speech model's
        `decoder_config`)."""
        config_class = self.config_class()
        values = dict(values)
        if config_class is None:
            from transformers import AutoConfig

            if "model_type" not in values:
                raise ValueError(f"a {self.name} decoder_config needs a `model_type` (e.g. a Llama config.json).")
            return AutoConfig.for_model(**values)
        values.pop("model_type", None)
        return config_class(**values)


def _llada():
    try:
        from .configuration_llada_generation import LladaGenerationConfig
        from .configuration_whisper_llada import LladaConfig
        from .modeling_llada import LladaForMaskedDiffusion
    except ImportError:  # imported as a plain top-level module (tests, scripts)
        from configuration_llada_generation import LladaGenerationConfig
        from configuration_whisper_llada import LladaConfig
        from modeling_llada import LladaForMaskedDiffusion
    return LladaForMaskedDiffusion, LladaConfig, LladaGenerationConfig


def _causal():
    try:
        from .modeling_causal_decoder import ARGenerationConfig, CausalLMDecoder
    except ImportError:
        from modeling_causal_decoder import ARGenerationConfig, CausalLMDecoder
    return CausalLMDecoder, None, ARGenerationConfig


def _dream():
    try:
        from .generation_dream import DreamGenerationConfig
        from .modeling_dream import DreamConfig, DreamForMaskedDiffusion
    except ImportError:
        from generation_dream import DreamGenerationConfig
        from modeling_dream import DreamConfig, DreamForMaskedDiffusion
    return DreamForMaskedDiffusion, DreamConfig, DreamGenerationConfig


def _llada2():
    try:
        from .generation_llada2 import Llada2GenerationConfig
        from .modeling_llada2 import Llada2MoeConfig, Llada2MoeForMaskedDiffusion
    except ImportError:
        from generation_llada2 import Llada2GenerationConfig
        from modeling_llada2 import Llada2MoeConfig, Llada2MoeForMaskedDiffusion
    return Llada2MoeForMaskedDiffusion, Llada2MoeConfig, Llada2GenerationConfig


def _diffusion_gemma():
    from transformers import DiffusionGemmaConfig

    try:
        from .modeling_diffusion_gemma_decoder import DiffusionGemmaDecoder, DiffusionGemmaSpeechGenerationConfig
    except ImportError:
        from modeling_diffusion_gemma_decoder import DiffusionGemmaDecoder, DiffusionGemmaSpeechGenerationConfig
    return DiffusionGemmaDecoder, DiffusionGemmaConfig, DiffusionGemmaSpeechGenerationConfig


FAMILIES: dict[str, DecoderFamily] = {family.name: family for family in (
    DecoderFamily("llada", ("llada",), _llada, "<|mdm_mask|>", "<|eot_id|>",
                  presets=("A", "B", "C", "D", "CTC", "deliberation", "first_pass"), title="LLaDA mask predictor",
                  writes="by iterative unmasking (LLaDA's low-confidence remasking)",
                  tags=("masked-diffusion", "llada")),
    DecoderFamily("dream", ("Dream", "dream"), _dream, "<|mask|>", "<|im_end|>", presets=("A", "B", "C", "D", "CTC"),
                  title="Dream mask predictor (Qwen2.5-based, logits shifted)",
                  writes="by iterative unmasking (Dream's entropy-ordered sampler)",
                  tags=("masked-diffusion", "dream")),
    DecoderFamily("llada2", ("llada2_moe",), _llada2, "<|mask|>", "<|role_end|>",
                  presets=("L2", "A", "B", "C", "D", "CTC"), title="LLaDA2.0 block-diffusion MoE",
                  writes="block by block, each block by iterative unmasking (LLaDA2.0's sampler)",
                  tags=("masked-diffusion", "block-diffusion", "llada2")),
    DecoderFamily("diffusion_gemma", ("diffusion_gemma",), _diffusion_gemma, None, "<turn|>",
                  presets=("DG", "D", "CTC"), title="DiffusionGemma block-diffusion MoE (transformers' native)",
                  writes="canvas by canvas, each denoised from uniform random tokens (DiffusionGemma's "
                         "entropy-bounded sampler)", tags=("block-diffusion", "diffusion-gemma"), masked=False),
    DecoderFamily("causal", (), _causal, "<|mdm_mask|>", "<|eot_id|>", presets=("AR",), title="causal LM",
                  writes="token by token", tags=("causal-lm",), masked=False),
)}


def family(name: str) -> DecoderFamily:
    """The registered family `name`; one clear error naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"decoder family must be one of {sorted(FAMILIES)}, got {name!r}.")
    return FAMILIES[name]


def detect_family(config: dict) -> DecoderFamily | None:
    """The family a checkpoint's config.json (a dict) belongs to, by its `model_type`; None for a model type no
    diffusion family reads (e.g. a causal LM: kind "causal", or converted to LLaDA's layout with from_causal_lm)."""
    model_type = str(config.get("model_type", ""))
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def generation_config_classes() -> list[type]:
    """Every family's typed generation-config class (their `handles(spec)` / `parse(spec)` read decoding strings),
    leaving out the families whose code this transformers lacks (DiffusionGemma needs a transformers that ships it)."""
    found = []
    for entry in FAMILIES.values():
        try:
            found.append(entry.generation_config_class())
        except ImportError:
            continue
    return found


def hidden_size(config) -> int:
    """The width of a decoder config's token embeddings (a nested text config for multimodal ones)."""
    size = getattr(config, "hidden_size", None)
    if size is None and hasattr(config, "get_text_config"):
        size = getattr(config.get_text_config(), "hidden_size", None)
    if size is None:
        raise ValueError(f"cannot tell the hidden size of decoder config {type(config).__name__}.")
    return int(size)


__all__ = ["DecoderFamily", "FAMILIES", "family", "detect_family", "hidden_size", "generation_config_classes"]
