#!/usr/bin/env python
"""Deliberation's settings measured on one manifest (validation, never the test clips), from first-pass hypotheses
computed once (tools/first_pass_hypotheses.py), so that each setting costs only the decoder's work.

    python tools/deliberation_sweep.py --model M --data runs/demo-bpe/val.jsonl \
        --first_pass runs/first-pass/val.jsonl --settings "deliberation,anchor_threshold=0.5" \
        "deliberation,anchor_threshold=0.7,anchor_slack=1,steps=2" "deliberation,first_pass_beams=8,rescore_weight=0.3,
        anchor_threshold=0" [--dtype float32] [--batch_size 8]

Prints, per setting, the WER (Whisper's English normaliser, corpus level) next to the first pass alone (greedy, and
the best of its beam N-best), the words changed against the first pass, and the decoding seconds. A setting with
first_pass_beams > 1 rescores the file's beam N-best (as many as it holds, up to first_pass_beams); otherwise the
greedy hypothesis is refined. `--clean_model` loads the model with this repository's classes (default), so that
settings the checkpoint's own remote code predates can be measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from build_whisper_llada import DTYPES  # noqa: E402
from modeling_first_pass import FirstPassHypothesis  # noqa: E402
from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor, load_audio  # noqa: E402
from text_normalization import normalize_text, word_error_counts  # noqa: E402
from whisper_llada_data import load_records  # noqa: E402


def wer(references: list[str], hypotheses: list[str]) -> tuple[float, dict]:
    counts = word_error_counts([normalize_text(r) for r in references], [normalize_text(h) for h in hypotheses])
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return 100.0 * errors / max(1, counts["reference_words"]), counts


def changed_words(before: list[str], after: list[str]) -> int:
    """Words of `after` that are not where the first pass had them (a word-level edit distance)."""
    counts = word_error_counts([b or "<empty>" for b in before], [a or "<empty>" for a in after])
    return counts["substitutions"] + counts["deletions"] + counts["insertions"]


def remember_pseudo_log_likelihoods(model) -> None:
    """The decoder's pseudo-log-likelihood of a hypothesis does not depend on the rescoring weight: computed once per
    (utterance, hypothesis, passes) for all the settings measured (keyed by the utterance's prefix)."""
    compute, memo = model.pseudo_log_likelihood, {}

    def remembered(prefix, prefix_mask, owners, answers, passes, **kwargs):
        keys = [(hash(prefix[o][prefix_mask[o].bool()].float().sum().item()), tuple(a), passes)
                for o, a in zip(owners, answers)]
        todo = [i for i, key in enumerate(keys) if key not in memo]
        if todo:
            scores = compute(prefix, prefix_mask, [owners[i] for i in todo], [answers[i] for i in todo], passes,
                             **kwargs)
            memo.update({keys[i]: score for i, score in zip(todo, scores)})
        return [memo[key] for key in keys]

    model.pseudo_log_likelihood = remembered


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--first_pass", required=True, help="tools/first_pass_hypotheses.py output for --data")
    parser.add_argument("--settings", nargs="+", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = WhisperLladaForConditionalGeneration.from_pretrained(args.model, dtype=DTYPES[args.dtype]).eval()
    processor = WhisperLladaProcessor.from_pretrained(args.model)
    model.attach_processor(processor)
    remember_pseudo_log_likelihoods(model)
    records = sorted(load_records(args.data), key=lambda r: r["duration"] or 0.0)
    found = {}
    for line in Path(args.first_pass).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        found[entry["key"]] = entry
    missing = [r["key"] for r in records if r["key"] not in found]
    if missing:
        sys.exit(f"{args.first_pass} has no hypotheses for {len(missing)} utterances of {args.data} ({missing[:3]})")
    references = [r["text"] for r in records]
    greedy = [" ".join(found[r["key"]]["greedy"]["words"]) for r in records]
    rows = [{"setting": "first pass alone (greedy)", "wer": wer(references, greedy)[0], "changed": 0, "seconds": 0.0}]
    if all(found[r["key"]].get("beam") for r in records):
        best = [" ".join(found[r["key"]]["beam"][0]["words"]) for r in records]
        rows.append({"setting": "first pass alone (beam best)", "wer": wer(references, best)[0],
                     "changed": changed_words(greedy, best), "seconds": 0.0})
    print(f"{rows[0]['setting']}: WER {rows[0]['wer']:.2f}", flush=True)
    for setting in args.settings:
        config = model.resolve_decoding(setting)
        beams = getattr(config, "first_pass_beams", 1)
        texts, seconds = [], 0.0
        for start in range(0, len(records), args.batch_size):
            batch = records[start: start + args.batch_size]
            features = processor(audio=[load_audio(r["audio"]) for r in batch], sampling_rate=16000)
            if beams > 1:
                hypotheses = [[FirstPassHypothesis.from_dict(h) for h in found[r["key"]]["beam"][:beams]] for r in batch]
            else:
                hypotheses = [FirstPassHypothesis.from_dict(found[r["key"]]["greedy"]) for r in batch]
            began = time.perf_counter()
            with torch.inference_mode():
                ids = model.generate(**features, generation_config=config, hypotheses=hypotheses)
            seconds += time.perf_counter() - began
            texts += processor.batch_decode(ids)
        score, counts = wer(references, texts)
        row = {"setting": config.name, "wer": score, "changed": changed_words(greedy, texts), "seconds": seconds,
               **{k: counts[k] for k in ("substitutions", "deletions", "insertions")}}
        rows.append(row)
        print(f"{row['setting']}: WER {score:.2f} (S {row['substitutions']} D {row['deletions']} I "
              f"{row['insertions']}), {row['changed']} words changed from the first pass, {seconds:.1f} s", flush=True)
    return rows


if __name__ == "__main__":
    main()
