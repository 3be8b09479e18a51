#!/usr/bin/env python
"""Turns a whisper-llada model with a causal (Llama) decoder into one with a masked-diffusion (LLaDA-layout) decoder
(`build_whisper_llada.causal_to_diffusion`): encoder, projector, tokenizer and prompt are kept, the decoder's tensors
are copied under LLaDA's names and attend bidirectionally from then on; LoRA adapters are carried to the LLaDA modules
they adapt, and a decoder base the checkpoint pulls is pulled and converted on load. Train the result with the
masked-diffusion loss (`train_hf.py --model_name_or_path OUT`, with `--lora_r R` to train carried adapters further),
as DiffuLLaMA / Dream do with AR LLMs.

    python tools/convert_ar_to_diffusion.py runs/demo-bpe-ar/model runs/demo-ar2diff/init [--residual-dropout P]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_whisper_llada import causal_to_diffusion  # noqa: E402
from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor  # noqa: E402


def convert(source: str, output: str, residual_dropout: float = 0.0) -> WhisperLladaForConditionalGeneration:
    processor = WhisperLladaProcessor.from_pretrained(source)
    try:
        model = causal_to_diffusion(WhisperLladaForConditionalGeneration.from_pretrained(source), processor,
                                    residual_dropout)
    except ValueError as error:
        raise SystemExit(f"error: {source}: {error}") from None
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
