"""One way to build a whisper-llada model: a `ModelSpec` in, `(model, processor)` out.

    spec = ModelSpec(encoder="openai/whisper-large-v3", decoder=DecoderSpec("GSAI-ML/LLaDA-8B-Instruct"))
    model, processor = build_model(spec)                    # projector new; base weights pulled from the ids
    model, processor = continue_training("runs/x/model", lora_r=16)   # a saved model, to train further

Training (train_hf.py), the benchmarks (bench_hf.py), the AR -> diffusion conversion (tools/convert_ar_to_diffusion.py)
and the tests build models here and nowhere else. The decoder comes from one of these sources (`DecoderSpec`): a
diffusion LLM checkpoint of a registered family (decoder_families.py: LLaDA, Dream, LLaDA2, DiffusionGemma; the family
read off its config.json), a Llama-architecture causal LM converted into LLaDA's layout (`from_causal_lm`), a causal
LM kept causal (`kind="causal"`, the AR-LLM baseline), or a config for a LLaDA decoder trained from scratch. The model's
config records what is needed to rebuild it (`checkpoint_weights`: which base weights are pulled by id when it is
loaded), so `from_pretrained` never replays build options.

Not remote code: it may use anything installed (LoRA needs no peft: adapters are part of the model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, WhisperFeatureExtractor, WhisperModel

from configuration_whisper_llada import CHECKPOINT_WEIGHTS, DEFAULT_PROMPT, LladaConfig, WhisperLladaConfig
from decoder_families import FAMILIES, detect_family, family
from modeling_causal_decoder import CausalLMDecoder, keep_first_layers
from modeling_llada import (LLAMA_TO_LLADA_NAMES, LladaForMaskedDiffusion, llada_config_from_llama,
                            llada_from_causal_lm, load_causal_lm, resolve_model_path)
from modeling_lora import LoraLinear, add_lora
from modeling_whisper_llada import WhisperLladaForConditionalGeneration
from processing_whisper_llada import (CHATML_TEMPLATE, WhisperLladaProcessor, build_llada_style_tokenizer,
                                      mask_predictor_tokenizer)

# The remote-code files `save_pretrained` copies beside every checkpoint (the model's module and what it imports).
REMOTE_CODE_FILES = ("configuration_whisper_llada.py", "configuration_llada_generation.py", "decoder_families.py",
                     "modeling_whisper_llada.py", "modeling_dream.py", "generation_dream.py", "modeling_llada2.py",
                     "generation_llada2.py", "modeling_diffusion_gemma_decoder.py",
                     "modeling_projector.py", "modeling_lora.py", "modeling_loading.py", "modeling_llada.py",
                     "modeling_causal_decoder.py", "generation_llada.py", "generation_whisper_llada.py",
                     "generation_deliberation.py", "modeling_first_pass.py", "alignment_whisper_llada.py",
                     "processing_whisper_llada.py", "processing_ctc_units.py",
                     "pipeline_whisper_llada.py", "modelcard_whisper_llada.py")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "fp32": torch.float32,
          "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DecoderSpec:
    """Where the decoder comes from.

    name_or_path: base weights (Hub id, local dir, `package:NAME`); None with `config` = from scratch.
    kind: the decoder family (decoder_families.py): "llada", "dream", "llada2", "diffusion_gemma" or "causal" (an
        AutoModelForCausalLM: the AR-LLM baseline); None = read off the checkpoint's config.json (`model_type`), "llada"
        for a decoder converted from a causal LM or trained from scratch.
    config: a LLaDA decoder trained from scratch: a LladaConfig dict (or, for "causal", a config dict with a
        `model_type`); vocabulary and special ids come from the tokenizer (`tokenizer_file`).
    from_causal_lm: convert a Llama-architecture causal LM into a LLaDA-layout, bidirectional decoder.
    gguf_file: the GGUF file inside `name_or_path` (dequantized on load; needs gguf).
    num_layers: keep only the first N layers of a pretrained causal LM (converted or not).
    mask_token_id: the unused special token of a causal LM's tokenizer renamed <|mdm_mask|>.
    chat_template: "chatml" (no system message) or a Jinja template replacing the tokenizer's.
    tokenizer: the tokenizer's id/dir (default: the decoder's); tokenizer_file: a tokenizer.json for a decoder from
        scratch (default: the encoder's), made LLaDA-style (`build_llada_style_tokenizer`).
    """

    name_or_path: str | None = "GSAI-ML/LLaDA-8B-Instruct"
    kind: str | None = None
    config: dict | None = None
    from_causal_lm: bool = False
    gguf_file: str | None = None
    num_layers: int | None = None
    mask_token_id: int | None = None
    chat_template: str | None = None
    tokenizer: str | None = None
    tokenizer_file: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in FAMILIES:
            raise ValueError(f"decoder kind must be one of {sorted(FAMILIES)} (or None: read off the checkpoint), got "
                             f"{self.kind!r}.")
        if self.config is None and not self.name_or_path:
            raise ValueError("A decoder needs base weights (name_or_path) or a config to train from scratch.")
        if self.from_causal_lm and self.mask_token_id is None:
            raise ValueError("A decoder converted from a causal LM needs mask_token_id: an unused special token id "
                             "of its tokenizer to use as [MASK].")
        if self.from_causal_lm and self.kind not in (None, "llada"):
            raise ValueError(f"from_causal_lm converts a causal LM into LLaDA's layout: kind 'llada', not "
                             f"{self.kind!r}.")
        if self.num_layers is not None and not (self.from_causal_lm or self.kind == "causal"):
            raise ValueError("num_layers applies to a decoder made from a causal LM (from_causal_lm or kind causal).")
        if self.kind is None and (self.config is not None or self.from_causal_lm):
            self.kind = "llada"

    def family(self):
        """The decoder's family: `kind`, or the one its checkpoint's config.json names (read once)."""
        if self.kind is None:
            self.kind = detected_kind(self.name_or_path, self.gguf_file)
        return family(self.kind)


def detected_kind(name_or_path: str, gguf_file: str | None = None) -> str:
    """The decoder family of a checkpoint, read off its config.json's `model_type`; one clear error when no
    registered family reads it (a causal LM: kind="causal", or from_causal_lm=True to convert it)."""
    import json

    from transformers.utils import cached_file

    source = resolve_model_path(check_local_path(name_or_path, "decoder"))
    model_type = None
    if not gguf_file:
        try:
            path = cached_file(source, "config.json")
            model_type = json.loads(open(path, encoding="utf-8").read()).get("model_type")
        except (OSError, ValueError) as error:
            raise ValueError(f"decoder {name_or_path}: cannot read its config.json to tell its family "
                             f"({str(error).splitlines()[0]}); pass DecoderSpec(kind=...).") from None
    found = detect_family({"model_type": model_type}) if model_type else None
    if found is None:
        what = f"model_type {model_type!r}" if model_type else f"a GGUF file ({gguf_file})"
        raise ValueError(f"decoder {name_or_path}: {what} is none of the diffusion families {sorted(FAMILIES)}; "
                         "pass kind='causal' (the AR-LLM baseline) or from_causal_lm=True with a mask_token_id (a "
                         "LLaDA-layout decoder converted from it).")
    return found.name


@dataclass
class ModelSpec:
    """Everything that defines a new model: the encoder, the decoder's source, the speech side, what trains and what
    the checkpoint stores (`checkpoint_weights`: default "trainable" for pretrained decoders, "full" for a decoder
    from scratch)."""

    encoder: str = "openai/whisper-large-v3"
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    prompt: str = DEFAULT_PROMPT
    stack_factor: int = 5
    downsample_method: str = "stack"
    projector_hidden_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 2048])
    projector_activation: str = "silu"
    speech_embeddings: str = "projector"
    ctc_blank_id: int | None = None
    lora: dict | None = None  # {"r", "lora_alpha", "lora_dropout", "target_modules" (default: the decoder's)}
    train_decoder: bool = False
    freeze_decoder_embeddings: bool = False
    checkpoint_weights: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.checkpoint_weights is not None and self.checkpoint_weights not in CHECKPOINT_WEIGHTS:
            raise ValueError(f"checkpoint_weights must be one of {CHECKPOINT_WEIGHTS}, got {self.checkpoint_weights!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------------------


def check_local_path(name: str, what: str) -> str:
    """`name` unchanged, unless it looks like a local path (`./x`, `../x`, `/x`, `~/x`, `a/b/c`) that does not exist:
    then one clear error naming it, instead of a Hub error about repo ids."""
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
    if looks_local and not os.path.exists(os.path.expanduser(name)):
        raise FileNotFoundError(f"{what} {name} does not exist (a local path; a Hub id looks like owner/name).")
    return name


def build_processor(spec: ModelSpec) -> WhisperLladaProcessor:
    """Whisper's feature extractor and the decoder's tokenizer with its family's special tokens: a causal LM's made fit
    for masked diffusion (its mask token renamed, `mask_predictor_tokenizer`), or a LLaDA-style one built from a
    tokenizer.json (scratch)."""
    decoder = spec.decoder
    feature_extractor = WhisperFeatureExtractor.from_pretrained(check_local_path(spec.encoder, "encoder"))
    tokens = decoder.family()
    if decoder.config is not None:
        tokenizer = build_llada_style_tokenizer(decoder.tokenizer_file or os.path.join(spec.encoder, "tokenizer.json"))
    else:
        source = resolve_model_path(check_local_path(decoder.tokenizer or decoder.name_or_path, "decoder"))
        gguf = {"gguf_file": decoder.gguf_file} if decoder.gguf_file and not decoder.tokenizer else {}
        tokenizer = load_tokenizer(source, **gguf)
        template = CHATML_TEMPLATE if decoder.chat_template == "chatml" else decoder.chat_template
        if decoder.mask_token_id is not None:  # a causal decoder keeps it too: it converts with the same tokenizer
            tokenizer = mask_predictor_tokenizer(tokenizer, decoder.mask_token_id, chat_template=template)
            tokens = family("llada")
        elif template:
            tokenizer.chat_template = template
        missing = [t for t in (tokens.mask_token,) if t and tokens.name != "causal" and
                   tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            raise ValueError(f"decoder {decoder.name_or_path}: its tokenizer has no {missing[0]} token, the "
                             f"{tokens.name} family's mask token.")
    return WhisperLladaProcessor(feature_extractor, tokenizer, prompt=spec.prompt, mask_token=tokens.mask_token,
                                 end_of_turn_token=tokens.end_of_turn)


def load_tokenizer(source: str, **kwargs):
    """The tokenizer of a decoder checkpoint: AutoTokenizer, or, for a checkpoint whose tokenizer class is remote code
    (e.g. Dream's), its tokenizer.json with the special tokens and chat template of its tokenizer_config.json."""
    import json

    from transformers import PreTrainedTokenizerFast
    from transformers.utils import cached_file

    try:  # never the checkpoint's own code (nor a prompt asking whether to run it)
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False, **kwargs)
    except (ValueError, OSError) as error:
        if kwargs:
            raise
        try:
            tokenizer_file = cached_file(source, "tokenizer.json")
            settings = json.loads(open(cached_file(source, "tokenizer_config.json"), encoding="utf-8").read())
        except (OSError, ValueError):
            raise error from None
    special = {k: v for k, v in settings.items() if k.endswith("_token") and isinstance(v, str)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, **special)
    template = settings.get("chat_template")
    if template is None:
        try:
            template = open(cached_file(source, "chat_template.jinja"), encoding="utf-8").read()
        except (OSError, ValueError):
            template = None
    tokenizer.chat_template = template
    return tokenizer


def build_decoder(decoder: DecoderSpec, processor: WhisperLladaProcessor, dtype: torch.dtype):
    """The decoder module from its source (see `DecoderSpec`)."""
    if decoder.config is not None:
        values = dict(decoder.config)
        tokenizer = processor.tokenizer
        values.setdefault("vocab_size", len(tokenizer))
        values.setdefault("eos_token_id", processor.eos_token_id)
        values.setdefault("pad_token_id", tokenizer.pad_token_id)
        values.setdefault("bos_token_id", tokenizer.bos_token_id)
        if decoder.kind == "causal":
            if "model_type" not in values:
                raise ValueError("A causal decoder from scratch needs a `model_type` in its config (e.g. llama).")
            return CausalLMDecoder.from_config(AutoConfig.for_model(**values)).to(dtype)
        values.setdefault("embedding_size", values["vocab_size"])
        values.setdefault("mask_token_id", processor.mask_token_id)
        return LladaForMaskedDiffusion(LladaConfig(**values)).to(dtype)
    source = check_local_path(decoder.name_or_path, "decoder")
    if decoder.family().name == "causal":
        lm = load_causal_lm(source, decoder.gguf_file, dtype)
        return CausalLMDecoder(keep_first_layers(lm, decoder.num_layers) if decoder.num_layers else lm)
    if decoder.from_causal_lm:
        causal = load_causal_lm(source, decoder.gguf_file, dtype)
        return llada_from_causal_lm(causal, llada_config_from_llama(causal.config, processor.mask_token_id,
                                                                    decoder.num_layers))
    return decoder.family().decoder_class().from_pretrained(resolve_model_path(source), dtype=dtype)


def compose(spec: ModelSpec, processor: WhisperLladaProcessor, encoder, decoder,
            **config_values: Any) -> WhisperLladaForConditionalGeneration:
    """The speech model around an encoder and a decoder module: its config (weight sources, prompt ids, special ids,
    projector, CTC head), a new projector, LoRA adapters and what trains. `config_values` override config fields."""
    pretrained_decoder = spec.decoder.config is None
    prefix_ids, suffix_ids = processor.prompt_ids()
    # the special ids are the tokenizer's (an official checkpoint's config says the same); those it lacks, the config's
    special = {"eos_token_id": processor.eos_token_id, "eot_token_id": processor.eot_token_id,
               "pad_token_id": processor.tokenizer.pad_token_id or processor.eos_token_id}
    values = dict(
        encoder_config=encoder.config, decoder_config=decoder.config, decoder_type=spec.decoder.kind,
        encoder_name_or_path=spec.encoder, decoder_name_or_path=spec.decoder.name_or_path if pretrained_decoder else None,
        decoder_gguf_file=spec.decoder.gguf_file, decoder_from_causal_lm=spec.decoder.from_causal_lm,
        checkpoint_weights=spec.checkpoint_weights or ("trainable" if pretrained_decoder else "full"),
        stack_factor=spec.stack_factor, downsample_method=spec.downsample_method,
        projector_hidden_sizes=list(spec.projector_hidden_sizes), projector_activation=spec.projector_activation,
        speech_embeddings=spec.speech_embeddings, ctc_blank_id=spec.ctc_blank_id, prompt=spec.prompt,
        prompt_prefix_ids=prefix_ids, prompt_suffix_ids=suffix_ids, mask_token_id=processor.mask_token_id,
        **{name: value for name, value in special.items() if value is not None},
    )
    values.update(config_values)
    model = WhisperLladaForConditionalGeneration(WhisperLladaConfig(**values), encoder=encoder, decoder=decoder)
    model.projector.to(DTYPES[spec.dtype])
    if spec.lora:
        apply_lora(model, spec.lora)
    set_trainable(model, spec.train_decoder, spec.freeze_decoder_embeddings)
    model.attach_processor(processor)
    return model


def build_model(spec: ModelSpec, **config_values: Any) -> tuple[WhisperLladaForConditionalGeneration, WhisperLladaProcessor]:
    """A new model (fresh projector) and its processor from `spec`."""
    dtype = DTYPES[spec.dtype]
    processor = build_processor(spec)
    encoder = WhisperModel.from_pretrained(check_local_path(spec.encoder, "encoder"), dtype=dtype).get_encoder()
    decoder = build_decoder(spec.decoder, processor, dtype)
    return compose(spec, processor, encoder, decoder, **config_values), processor


def continue_training(path: str, dtype: str = "float32", lora_r: int = 0, train_decoder: bool = False,
                      freeze_decoder_embeddings: bool = False, reset_projector: bool = False):
    """A saved model and its processor, set up to train further: LoRA adapters it has train on with `lora_r` equal
    to their rank (0: they stay as they are, frozen), `train_decoder` unfreezes the decoder, `reset_projector`
    starts from a fresh projector."""
    model = WhisperLladaForConditionalGeneration.from_pretrained(check_local_path(path, "model"), dtype=DTYPES[dtype])
    processor = WhisperLladaProcessor.from_pretrained(path)
    saved = model.config.lora
    if lora_r and saved and int(saved["r"]) != lora_r:
        raise ValueError(f"--lora_r {lora_r}: {path} has LoRA adapters of rank {saved['r']}; pass --lora_r "
                         f"{saved['r']} to train them further, or 0 to keep them frozen.")
    if reset_projector:
        from modeling_projector import WhisperLladaProjector

        model.projector = WhisperLladaProjector(model.config).to(DTYPES[dtype])
    set_trainable(model, train_decoder, freeze_decoder_embeddings, lora=bool(lora_r and saved))
    model.attach_processor(processor)
    return model.train(), processor


def causal_to_diffusion(model: WhisperLladaForConditionalGeneration, processor: WhisperLladaProcessor,
                        residual_dropout: float = 0.0) -> WhisperLladaForConditionalGeneration:
    """A model with a causal (Llama) decoder turned into one with a masked-diffusion, LLaDA-layout decoder (the
    DiffuLLaMA / Dream starting point): encoder, projector, prompt, special ids and recipe kept; the decoder's tensors
    under LLaDA's names, attending bidirectionally; LoRA adapters carried to the LLaDA modules they adapt. A decoder
    whose base the checkpoint pulled is pulled and converted on load (`decoder_from_causal_lm`). Attention dropout
    carries over; `residual_dropout` sets LLaDA's own (a Llama has no such field)."""
    if model.config.decoder_type != "causal":
        raise ValueError(f"the model has no causal decoder (decoder_type {model.config.decoder_type!r}).")
    if processor.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: train the causal model with --mask_token_id.")
    decoder_config = llada_config_from_llama(model.decoder.config, processor.mask_token_id)
    decoder_config.residual_dropout = float(residual_dropout)
    decoder = llada_from_causal_lm(model.decoder.lm, decoder_config)
    values = {k: v for k, v in model.config.to_dict().items()
              if k not in ("model_type", "transformers_version", "architectures", "auto_map", "custom_pipelines", "lora",
                           "encoder_config", "decoder_config")}
    values.update(decoder_type="llada", mask_token_id=processor.mask_token_id,
                  decoder_from_causal_lm=model.config.checkpoint_weights != "full")
    converted = WhisperLladaForConditionalGeneration(
        WhisperLladaConfig(encoder_config=model.config.encoder_config, decoder_config=decoder_config, **values),
        encoder=model.encoder, decoder=decoder)
    converted.projector.load_state_dict(model.projector.state_dict())
    if model.config.lora:  # Llama's module names -> LLaDA's (o_proj -> attn_out, gate_proj -> ff_proj, ...)
        names = {key.split(".")[-2]: value.split(".")[0] for key, value in LLAMA_TO_LLADA_NAMES.items()}
        lora = model.config.lora
        apply_lora(converted, {**lora, "target_modules": [names[t] for t in lora["target_modules"]]})
        adapters = {_llada_name(name): tensor for name, tensor in model.decoder.state_dict().items() if ".lora_" in name}
        missing, unexpected = converted.decoder.load_state_dict(adapters, strict=False)
        if unexpected or any(".lora_" in name for name in missing):
            raise ValueError(f"LoRA adapters do not map onto the LLaDA decoder: {unexpected[:4] or missing[:4]}")
    set_trainable(converted)
    return converted


def _llada_name(name: str) -> str:
    """A causal decoder's parameter name (inside `CausalLMDecoder`) -> the LLaDA decoder's:
    lm.model.layers.3.self_attn.o_proj.lora_A.default.weight -> model.transformer.blocks.3.attn_out.lora_A..."""
    modules = {key[: -len(".weight")]: value[: -len(".weight")] for key, value in LLAMA_TO_LLADA_NAMES.items()}
    match = re.match(r"^lm\.model\.layers\.(\d+)\.(\w+\.\w+)\.(.*)$", name)
    if not match or match.group(2) not in modules:
        raise ValueError(f"cannot map the causal decoder's weight {name!r} to a LLaDA module")
    return f"model.transformer.blocks.{match.group(1)}.{modules[match.group(2)]}.{match.group(3)}"


def apply_lora(model: WhisperLladaForConditionalGeneration, lora: dict) -> None:
    """Adds LoRA adapters to the decoder (target modules default to the decoder's `lora_targets`) and records them in
    `config.lora`, so that a saved model rebuilds them."""
    settings = {"r": int(lora["r"]), "lora_alpha": float(lora.get("lora_alpha", lora["r"])),
                "lora_dropout": float(lora.get("lora_dropout", 0.0)),
                "target_modules": list(lora.get("target_modules") or model.decoder.lora_targets)}
    add_lora(model.decoder, settings)
    model.config.lora = settings


def set_trainable(model: WhisperLladaForConditionalGeneration, train_decoder: bool = False,
                  freeze_decoder_embeddings: bool = False, lora: bool = True) -> None:
    """The projector trains; the encoder stays frozen; the decoder trains with `train_decoder` (its embeddings
    frozen with `freeze_decoder_embeddings`); LoRA adapters train unless `lora=False`."""
    model.freeze_base_models(encoder=True, decoder=not train_decoder)
    if train_decoder and freeze_decoder_embeddings:
        model.decoder.get_input_embeddings().requires_grad_(False)
    for module in model.decoder.modules():
        if isinstance(module, LoraLinear):
            module.lora_A.requires_grad_(lora)
            module.lora_B.requires_grad_(lora)
    model.projector.requires_grad_(True)
    # float32 master weights for the projector when the base models are bf16/fp16 (autocast runs its matmuls in bf16)
    model.projector.float()


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints saved by whisper-llada 0.1
# ----------------------------------------------------------------------------------------------------------------------

RECIPE_KEYS = ("ctc_weight", "mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length",
               "block_mask_prob", "block_mask_length")
OLD_DECODING_KEYS = ("gen_length", "steps", "block_length", "remasking", "temperature")  # now generation_config.json


def upgrade_checkpoint(directory: str) -> list[str]:
    """Brings a checkpoint saved by whisper-llada 0.1 (e.g. an old `demo/model` or a `runs/` model) to this version's
    layout without touching its weights: the training-recipe fields of config.json move under `training`, decoding
    fields left in config.json are dropped, and the remote-code files are replaced by this package's. Returns what
    changed. The weights load as they are (LoRA adapters keep peft's names)."""
    import json
    import shutil
    from pathlib import Path

    folder = Path(directory)
    path = folder / "config.json"
    config = json.loads(path.read_text())
    changes = []
    recipe = {key: config.pop(key) for key in RECIPE_KEYS if key in config}
    if recipe:
        config["training"] = {**recipe, **config.get("training", {})}
        changes.append(f"config.json: {sorted(recipe)} -> training")
    dropped = [key for key in OLD_DECODING_KEYS if config.pop(key, None) is not None]
    if dropped:
        changes.append(f"config.json: dropped {dropped} (decoding defaults live in generation_config.json)")
    WhisperLladaConfig(**{k: v for k, v in config.items() if k != "model_type"})  # still a valid config
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    root = Path(__file__).resolve().parent
    for name in REMOTE_CODE_FILES:
        if not (folder / name).exists() or (folder / name).read_bytes() != (root / name).read_bytes():
            shutil.copyfile(root / name, folder / name)
            changes.append(f"{name}: this package's")
    return changes


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Upgrade checkpoints saved by whisper-llada 0.1 in place (weights "
                                                 "untouched).")
    parser.add_argument("command", choices=["upgrade"])
    parser.add_argument("directories", nargs="+")
    for directory in parser.parse_args().directories:
        for change in upgrade_checkpoint(directory) or ["nothing to change"]:
            print(f"{directory}: {change}")


__all__ = ["ModelSpec", "DecoderSpec", "build_model", "build_processor", "build_decoder", "compose",
           "continue_training", "causal_to_diffusion", "apply_lora", "set_trainable", "check_local_path",
           "upgrade_checkpoint", "DTYPES", "REMOTE_CODE_FILES"]
