#!/usr/bin/env python
"""Gives a whisper-llada model another model's projector: everything of MODEL (encoder, decoder and its LoRA
adapters, tokenizer, prompt, decoding defaults) with the projector of DONOR, saved to OUTPUT (atomically, as
train_hf.py saves a final model). Both must read the speech the same way: same encoder width, stacking, projector
shape, speech-embedding kind and CTC head.

The bundled demo model is made this way (demo/README.md, the 2026-12-03 section): joint training of the decoder and the
projector made the projector's CTC reading worse than after its CTC-only warm-up, and D starts from that reading, so
the decoder of the joint run is paired with the warm-up's projector.

    python tools/swap_projector.py runs/demo-d/armP runs/demo-d/ctc runs/demo-d/hybrid [--dtype float16]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor  # noqa: E402
from whisper_llada_training import save_final  # noqa: E402

# what the projector's outputs mean: a donor that differs in any of these would hand the decoder something else
SPEECH_FIELDS = ("stack_factor", "projector_hidden_sizes", "speech_embeddings", "ctc_blank_id", "ctc_token_ids")


def swap_projector(model_dir: str, donor_dir: str, output: str, dtype: str | None = None):
    processor = WhisperLladaProcessor.from_pretrained(model_dir)
    model = WhisperLladaForConditionalGeneration.from_pretrained(model_dir)
    donor = WhisperLladaForConditionalGeneration.from_pretrained(donor_dir)
    for name in SPEECH_FIELDS:
        mine, theirs = getattr(model.config, name), getattr(donor.config, name)
        if mine != theirs:
            raise SystemExit(f"error: {donor_dir}: config.{name} is {theirs!r}, {model_dir} has {mine!r}; the "
                             "projector can only move between models that read the speech the same way")
    try:
        model.projector.load_state_dict(donor.projector.state_dict())
    except RuntimeError as error:  # shapes: e.g. another encoder width
        raise SystemExit(f"error: {donor_dir}: its projector does not fit {model_dir}'s: {error}") from None
    save_final(model, processor, output, dtype)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="whisper-llada model that keeps everything but its projector")
    parser.add_argument("donor", help="whisper-llada model whose projector it gets")
    parser.add_argument("output", help="directory for the result (new or empty, or a final model to replace)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="cast the saved weights")
    args = parser.parse_args()
    swap_projector(args.model, args.donor, args.output, args.dtype)
