#!/usr/bin/env python
"""Turns a whisper-llada model with a causal (Llama) decoder into one with a masked-diffusion (LLaDA-layout) decoder:
the encoder, projector, tokenizer and prompt are kept, the decoder's tensors are copied under LLaDA's names
(`modeling_llada.llada_config_from_llama` + `llada_from_causal_lm`) and attend bidirectionally from then on. Train the
result with the masked-diffusion loss (train_hf.py --model_name_or_path OUT), as DiffuLLaMA / Dream do with AR LLMs.

    python demo/convert_ar_to_diffusion.py runs/demo-bpe-ar/model runs/demo-ar2diff/init [--residual-dropout P]

The attention dropout carries over from the causal decoder's config; `--residual-dropout` sets LLaDA's
`residual_dropout` (on the attention and MLP outputs, training only), which a Llama has no field for.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from configuration_whisper_llada import WhisperLladaConfig  # noqa: E402
from modeling_llada import llada_config_from_llama, llada_from_causal_lm  # noqa: E402
from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor  # noqa: E402


def convert(source: str, output: str, residual_dropout: float = 0.0) -> WhisperLladaForConditionalGeneration:
    ar = WhisperLladaForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    if ar.config.decoder_type != "causal":
        raise SystemExit(f"error: {source} has no causal decoder (decoder_type {ar.config.decoder_type!r})")
    processor = WhisperLladaProcessor.from_pretrained(source)
    decoder_config = llada_config_from_llama(ar.config.decoder_config, processor.mask_token_id)
    decoder_config.residual_dropout = float(residual_dropout)
    values = ar.config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "auto_map"):
        values.pop(key, None)
    values.update(decoder_type="llada", decoder_config=decoder_config.to_dict())
    model = WhisperLladaForConditionalGeneration(WhisperLladaConfig(**values))
    model.encoder.load_state_dict(ar.encoder.state_dict())
    model.projector.load_state_dict(ar.projector.state_dict())
    model.decoder = llada_from_causal_lm(ar.decoder, decoder_config)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="whisper-llada model with a causal decoder")
    parser.add_argument("output", help="directory for the converted model")
    parser.add_argument("--residual-dropout", type=float, default=0.0, help="LLaDA residual_dropout (training only)")
    args = parser.parse_args()
    convert(args.source, args.output, args.residual_dropout)
