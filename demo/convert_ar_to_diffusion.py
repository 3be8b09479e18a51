#!/usr/bin/env python
"""Turns a whisper-llada model with a causal (Llama) decoder into one with a masked-diffusion (LLaDA-layout) decoder:
the encoder, projector, tokenizer and prompt are kept, the decoder's tensors are copied under LLaDA's names
(`modeling_llada.llada_config_from_llama` + `llada_from_causal_lm`) and attend bidirectionally from then on. Train the
result with the masked-diffusion loss (train_hf.py --model_name_or_path OUT), as DiffuLLaMA / Dream do with AR LLMs.

    python demo/convert_ar_to_diffusion.py runs/demo-bpe-ar/model runs/demo-ar2diff/init [--residual-dropout P]

The attention dropout carries over from the causal decoder's config; `--residual-dropout` sets LLaDA's
`residual_dropout` (on the attention and MLP outputs, training only), which a Llama has no field for.

A causal decoder trained with LoRA on frozen pretrained weights (`checkpoint_weights` "trainable" or
"trainable+encoder", e.g. configs/demo/whisper-tiny_smollm2-ar-lora.yaml) keeps its adapters as adapters: they are
renamed to the LLaDA modules they adapt, the base weights are still pulled from the decoder's source (converted on
load, `decoder_from_causal_lm`), and `train_hf.py --model_name_or_path OUT --lora_r R` trains the same adapters
further with the masked-diffusion loss.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import re  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from configuration_whisper_llada import WhisperLladaConfig  # noqa: E402
from modeling_llada import LLAMA_TO_LLADA_NAMES, llada_config_from_llama, llada_from_causal_lm  # noqa: E402
from modeling_whisper_llada import WhisperLladaForConditionalGeneration, inject_lora  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor  # noqa: E402


def convert(source: str, output: str, residual_dropout: float = 0.0) -> WhisperLladaForConditionalGeneration:
    source_config = WhisperLladaConfig.from_pretrained(source)
    if source_config.decoder_type != "causal":
        raise SystemExit(f"error: {source} has no causal decoder (decoder_type {source_config.decoder_type!r})")
    processor = WhisperLladaProcessor.from_pretrained(source)
    if processor.mask_token_id is None:
        raise SystemExit(f"error: {source}'s tokenizer has no mask token (train it with --mask_token_id)")
    decoder_config = llada_config_from_llama(source_config.decoder_config, processor.mask_token_id)
    decoder_config.residual_dropout = float(residual_dropout)
    values = source_config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "auto_map", "lora"):
        values.pop(key, None)
    values.update(decoder_type="llada", decoder_config=decoder_config.to_dict(), mask_token_id=processor.mask_token_id)
    lora = getattr(source_config, "lora", None)
    if lora:
        model = convert_lora(source, WhisperLladaConfig(**{**values, "decoder_from_causal_lm": True}), lora)
    else:
        ar = WhisperLladaForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
        model = WhisperLladaForConditionalGeneration(WhisperLladaConfig(**values))
        model.encoder.load_state_dict(ar.encoder.state_dict())
        model.projector.load_state_dict(ar.projector.state_dict())
        model.decoder = llada_from_causal_lm(ar.decoder, decoder_config)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return model


def llada_module_name(name: str) -> str:
    """A causal decoder's parameter name -> the LLaDA decoder's (LoRA adapters included):
    decoder.model.layers.3.self_attn.o_proj.lora_A.default.weight -> decoder.model.transformer.blocks.3.attn_out.lora_A..."""
    match = re.match(r"^decoder\.model\.layers\.(\d+)\.(\w+\.\w+)\.(.*)$", name)
    modules = {key[: -len(".weight")]: value[: -len(".weight")] for key, value in LLAMA_TO_LLADA_NAMES.items()}
    if not match or match.group(2) not in modules:
        raise SystemExit(f"error: cannot map the causal decoder's weight {name!r} to a LLaDA module")
    return f"decoder.model.transformer.blocks.{match.group(1)}.{modules[match.group(2)]}.{match.group(3)}"


def convert_lora(source: str, config: WhisperLladaConfig, lora: dict) -> WhisperLladaForConditionalGeneration:
    """The LLaDA-layout model of a causal model whose decoder trained only LoRA adapters: base decoder from the
    decoder's source (converted), the source's encoder, projector and adapters (renamed)."""
    weights = load_file(str(Path(source) / "model.safetensors"))
    decoder_weights = {name: t for name, t in weights.items() if name.startswith("decoder.")}
    not_lora = [name for name in decoder_weights if ".lora_" not in name]
    if not_lora:
        raise SystemExit(f"error: {source} trained decoder weights other than LoRA adapters ({not_lora[:4]}); "
                         "merge them into a full checkpoint first")
    with_encoder = config.checkpoint_weights == "trainable+encoder"
    model = WhisperLladaForConditionalGeneration.from_encoder_decoder_pretrained(
        None if with_encoder else config.encoder_name_or_path, config.decoder_name_or_path, config=config)
    # target module names: Llama's (o_proj, gate_proj, ...) -> LLaDA's (attn_out, ff_proj, ...)
    names = {key.split(".")[-2]: value.split(".")[0] for key, value in LLAMA_TO_LLADA_NAMES.items()}
    inject_lora(model, {**lora, "target_modules": [names[t] for t in lora["target_modules"]]})
    state = {name: t for name, t in weights.items() if not name.startswith("decoder.")}
    state.update({llada_module_name(name): t for name, t in decoder_weights.items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    trained = set(model.trainable_state_dict()) | ({f"encoder.{n}" for n in model.encoder.state_dict()} if with_encoder else set())
    absent = sorted(trained - set(state))
    if unexpected or absent:
        raise SystemExit(f"error: converting {source}: unexpected {unexpected[:4]}, missing {absent[:4]}")
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="whisper-llada model with a causal decoder")
    parser.add_argument("output", help="directory for the converted model")
    parser.add_argument("--residual-dropout", type=float, default=0.0, help="LLaDA residual_dropout (training only)")
    args = parser.parse_args()
    convert(args.source, args.output, args.residual_dropout)
