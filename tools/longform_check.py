#!/usr/bin/env python
"""Long audio against the same utterances one by one, per decoding and window length (the demo's README and
BENCHMARKS.md report it).

    python tools/diagnostics.py join-clips demo/audio/manifest.jsonl --per 5 --gap 0.3 --output outputs/longform/joined.jsonl
    python tools/longform_check.py --model demo/model --joined outputs/longform/joined.jsonl \
        --single demo/audio/manifest.jsonl --decodings CTC D B --chunks 30 20 15 [--dtype float32]

For each decoding: WER and word counts (hypothesis against reference words) one by one, then on the joined audio
cut into windows as the pipeline cuts them with each `chunk_length_s` (`split_long_audio`), each window transcribed,
and the words each window wrote against the reference words it covers (by its share of the audio): where a long
window loses words shows there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from build_whisper_llada import DTYPES  # noqa: E402
from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from pipeline_whisper_llada import split_long_audio, transcribe  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor, load_audio  # noqa: E402
from text_normalization import normalize_text, word_error_counts  # noqa: E402
from whisper_llada_data import read_manifest  # noqa: E402


def score(references: list[str], hypotheses: list[str]) -> dict:
    counts = word_error_counts([normalize_text(r) for r in references], [normalize_text(h) for h in hypotheses])
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return {"wer": round(100.0 * errors / max(1, counts["reference_words"]), 2),
            "reference_words": counts["reference_words"],
            "hypothesis_words": sum(len(normalize_text(h).split()) for h in hypotheses),
            "deletions": counts["deletions"], "insertions": counts["insertions"]}


@torch.no_grad()
def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--joined", required=True)
    parser.add_argument("--single", required=True)
    parser.add_argument("--decodings", nargs="+", default=["CTC", "D", "B"])
    parser.add_argument("--chunks", type=float, nargs="+", default=[30.0, 20.0])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)

    model = WhisperLladaForConditionalGeneration.from_pretrained(args.model, dtype=DTYPES[args.dtype]).eval()
    processor = WhisperLladaProcessor.from_pretrained(args.model)
    model.attach_processor(processor)
    single, joined = read_manifest(args.single), read_manifest(args.joined)
    single_waves = [load_audio(r["audio"], 16000) for r in single]
    joined_waves = [load_audio(r["audio"], 16000) for r in joined]
    rows = []
    for decoding in args.decodings:
        texts = transcribe(model, processor, single_waves, batch_size=8, generation_config=decoding)
        row = {"decoding": decoding, "audio": "one by one", **score([r["text"] for r in single], texts)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        for chunk in args.chunks:
            texts, windows = [], []
            for record, wave in zip(joined, joined_waves):
                ranges = split_long_audio(wave, 16000, chunk or None)
                parts = transcribe(model, processor, [wave[a:b] for a, b in ranges], batch_size=8,
                                   generation_config=decoding)
                texts.append(" ".join(parts))
                words = normalize_text(record["text"]).split()
                total = len(wave)
                for (a, b), part in zip(ranges, parts):  # reference words of a window: its share of the audio
                    expected = round(len(words) * (b - a) / total)
                    windows.append({"seconds": round((b - a) / 16000, 1), "reference_words": expected,
                                    "hypothesis_words": len(normalize_text(part).split())})
            row = {"decoding": decoding, "audio": f"joined, chunk_length_s {chunk:g}",
                   **score([r["text"] for r in joined], texts), "windows": windows}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
