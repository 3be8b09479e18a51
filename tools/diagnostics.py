#!/usr/bin/env python
"""The checks behind the numbers in demo/README.md and BENCHMARKS.md.

    python tools/diagnostics.py loss-curve RUN_OUTPUT_DIR [...] --output demo/loss_curve.png [--titles ...]
        Training and validation loss of train_hf.py runs (the `log_history` of each one's latest trainer_state.json),
        one panel per run, as a PNG (needs matplotlib).

    python tools/diagnostics.py join-clips demo/audio/manifest.jsonl --per 5 --output outputs/longform/joined.jsonl
        Long-form test audio: each run of --per consecutive utterances of one speaker joined end to end (--gap
        seconds of silence between them, none by default) into one FLAC, with the joined reference; the WER of these vs of the utterances one by one measures
        long-form transcription (eval_hf.py cuts audio over 30 s into windows in pauses).

    python tools/diagnostics.py longform-whisper ../shared/models/whisper-tiny.en --joined outputs/longform/joined.jsonl \
        --single demo/audio/manifest.jsonl
        The long-form windowing (pipeline_whisper_llada.split_long_audio: no overlap, cuts in pauses) measured with a
        recogniser that transcribes: Whisper tiny.en (transformers generate) on each window of the joined clips, texts
        joined, vs the same utterances one by one. Isolates what the seams cost from the decoder's own errors.

    python tools/diagnostics.py speech-use --model demo/model --data demo/audio/manifest.jsonl [more manifests]
        Does the model use the speech? The masked-diffusion loss of each utterance with its own audio vs with another
        utterance's audio (the next one in the manifest), with the same masks (same seeds), averaged over --seeds
        seeds. A model that transcribes has a much lower loss with its own audio.

    python tools/diagnostics.py speech-ctc --model M --data runs/demo-bpe/val.jsonl
        What the speech embeddings say, read as tokens the way the auxiliary CTC loss reads them (logits = speech @
        token embeddings^T, greedy: repeats merged, blanks dropped), scored with WER like eval_hf.py. Separates "the
        speech embeddings carry the words" from "the decoder reads them".

    python tools/diagnostics.py anchored-sweep --model M --data runs/demo-bpe/val.jsonl [--thresholds 0.5 0.7 0.9]
        [--slacks 0 2 4] [--steps 1 2 4]
        Decoding D's settings measured on one manifest (the validation utterances of the training speakers, never the
        test clips): WER and decoder forwards per utterance for every anchor_threshold x anchor_slack x steps, next to
        the CTC head's greedy reading alone (D's starting point). The speech side is computed once per batch.

    python tools/diagnostics.py word-times --model demo/model --whisper ../shared/models/whisper-tiny.en \
        --data demo/audio/manifest.jsonl
        Word timestamps (the pipeline's return_timestamps="word": a CTC forced alignment of the final transcript)
        against an independent reference, transformers' Whisper pipeline with return_timestamps="word": for the
        reference words both transcripts get right, the median / mean / 90th percentile of |start difference| and
        |end difference|; and a synthetic check: consecutive clips joined with 1.0 s of silence, how many words of the
        second clip start before the first clip's end.

    python tools/diagnostics.py word-coverage --train runs/demo-bpe/train.jsonl \
        --hypotheses outputs/demo_eval/hypotheses_C_demo.jsonl [...]
        Which words a model gets right, by how often the word occurs in the training transcripts (unseen, 1-4, 5-49,
        50+ times; after Whisper's English normalisation): each bucket's share of the reference words and the share
        of them the hypothesis has (aligned as in the WER). Tells a decoder that has not learnt the language apart
        from one that does not hear it: a decoder trained from scratch on a few hours of transcripts can hardly
        write a word it never saw.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import whisper_llada_data as wld  # noqa: E402
from processing_whisper_llada import load_audio  # noqa: E402


def latest_trainer_state(run_dir: Path) -> Path:
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    final = run_dir / "trainer_state.json"
    candidates = ([final] if final.exists() else []) + states[::-1]
    if not candidates:
        raise SystemExit(f"error: no trainer_state.json in {run_dir} or its checkpoint-* folders")
    return candidates[0]


def loss_curve(run_dirs: list[Path], output: Path, titles: list[str] | None = None) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(run_dirs), figsize=(5.5 * len(run_dirs), 4), squeeze=False)
    points = []
    for index, (run_dir, ax) in enumerate(zip(run_dirs, axes[0])):
        state = json.loads(latest_trainer_state(run_dir).read_text())
        history = state["log_history"]
        train = [(h["step"], h["loss"]) for h in history if "loss" in h]
        valid = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
        ax.plot(*zip(*train), label="training loss")
        if valid:
            ax.plot(*zip(*valid), "o-", label="validation loss (training speakers' held-out utterances)")
        ctc = [(h["step"], h["ctc_loss"]) for h in history if "ctc_loss" in h]
        ctc_valid = [(h["step"], h["eval_ctc_loss"]) for h in history if "eval_ctc_loss" in h]
        if ctc:
            ax.plot(*zip(*ctc), ":", label="auxiliary CTC loss (training)")
        if ctc_valid:
            ax.plot(*zip(*ctc_valid), "s:", label="auxiliary CTC loss (validation)")
        ax.set_title(titles[index] if titles and index < len(titles) else str(run_dir), fontsize=9)
        ax.set_xlabel(f"step (batch {state.get('train_batch_size', '?')})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        points.append({"run": str(run_dir), "train": train, "valid": valid})
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    return points


@torch.no_grad()
def speech_use(model_dir: str, manifest: str, seeds: int, limit: int | None) -> dict:
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    model.config.update_recipe(ctc_weight=0.0)  # the decoder's loss alone (the auxiliary CTC loss is not counted)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    records = wld.read_manifest(manifest)[:limit]
    rate = processor.feature_extractor.sampling_rate
    features = processor(audio=[load_audio(r["audio"], rate) for r in records], sampling_rate=rate)
    own, other = [], []
    for i, record in enumerate(records):
        labels = processor(text=[wld.normalize_transcript(record["text"])])["labels"]
        j = (i + 1) % len(records)
        losses = {"own": 0.0, "other": 0.0}
        for seed in range(seeds):
            for name, k in (("own", i), ("other", j)):
                torch.manual_seed(seed)  # the same masks (t and positions) for both audios
                out = model(input_features=features["input_features"][k : k + 1],
                            attention_mask=features["attention_mask"][k : k + 1], labels=labels)
                losses[name] += out.loss.item() / seeds
        own.append(losses["own"])
        other.append(losses["other"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"utterances": len(records), "seeds": seeds, "own_audio_loss": mean(own), "other_audio_loss": mean(other),
            "ratio": mean(other) / mean(own)}


@torch.no_grad()
def speech_ctc(model_dir: str, manifest: str, limit: int | None, batch_size: int = 8) -> dict:
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from processing_whisper_llada import WhisperLladaProcessor
    from text_normalization import wer_percent

    # this repository's classes, not the checkpoint's copy of the remote code (older copies lack ctc_hypotheses)
    model = WhisperLladaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = WhisperLladaProcessor.from_pretrained(model_dir)
    if model.config.ctc_blank_id is None:
        raise SystemExit(f"error: {model_dir} has no CTC head (config.ctc_blank_id is None)")
    records = wld.read_manifest(manifest)[:limit]
    rate = processor.feature_extractor.sampling_rate
    hypotheses = []
    for first in range(0, len(records), batch_size):
        part = records[first : first + batch_size]
        features = processor(audio=[load_audio(r["audio"], rate) for r in part], sampling_rate=rate)
        tokens, _ = model.ctc_hypotheses(*model.project_speech(features["input_features"], features["attention_mask"]))
        hypotheses.extend(processor.tokenizer.decode(ids, skip_special_tokens=True) for ids in tokens)
    references = [r["text"] for r in records]
    return {"utterances": len(records), "wer": wer_percent(references, hypotheses),
            "examples": [{"reference": r, "hypothesis": h} for r, h in list(zip(references, hypotheses))[:2]]}


@torch.no_grad()
def anchored_sweep(model_dir: str, manifest: str, thresholds: list[float], slacks: list[int], steps: list[int],
                   batch_size: int = 8, settings: list[str] | None = None, dtype: str = "float32") -> list[dict]:
    """WER of decoding D per (anchor_threshold, anchor_slack, steps), or per decoding string in `settings` (e.g.
    "D,anchor_threshold=0.7,ctc_fusion=0.5"), on `manifest`, and of the CTC head alone; the mean number of decoder
    forwards per utterance (D's history: one state per sampler step). The encoder runs once per batch."""
    import itertools

    import torch

    from build_whisper_llada import DTYPES
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from processing_whisper_llada import WhisperLladaProcessor
    from text_normalization import wer_percent

    model = WhisperLladaForConditionalGeneration.from_pretrained(model_dir, dtype=DTYPES[dtype]).eval()
    processor = WhisperLladaProcessor.from_pretrained(model_dir)
    records = wld.read_manifest(manifest)
    rate = processor.feature_extractor.sampling_rate
    grid = settings or [f"D,anchor_threshold={t},anchor_slack={s},steps={n}"
                        for t, s, n in itertools.product(thresholds, slacks, steps)]
    configs = {spec: model.resolve_decoding(spec) for spec in grid}
    texts: dict[str, list[str]] = {spec: [] for spec in grid}
    forwards: dict[str, int] = dict.fromkeys(grid, 0)
    ctc_texts: list[str] = []
    for first in range(0, len(records), batch_size):
        part = records[first : first + batch_size]
        features = processor(audio=[load_audio(r["audio"], rate) for r in part], sampling_rate=rate)
        with torch.no_grad():
            frames = model.encoder(features["input_features"].to(model.encoder.dtype)).last_hidden_state
        inputs = {"encoder_outputs": frames, "attention_mask": features["attention_mask"]}
        ctc = model.generate(**inputs, decoding="CTC")
        ctc_texts.extend(processor.batch_decode(ctc))
        for spec, config in configs.items():
            out = model.generate(**inputs, generation_config=config, return_dict_in_generate=True, output_history=True)
            texts[spec].extend(processor.batch_decode(out.sequences))
            forwards[spec] += (out.history.shape[1] - 1) * len(part)
    references = [r["text"] for r in records]
    rows = [{"decoding": "CTC head alone (greedy)", "wer": wer_percent(references, ctc_texts), "forwards": 0.0}]
    for spec, hypotheses in texts.items():
        rows.append({**configs[spec].settings(), "decoding": spec, "wer": wer_percent(references, hypotheses),
                     "forwards": forwards[spec] / len(records)})
    return rows


COVERAGE_BUCKETS = ((0, 0, "unseen"), (1, 4, "1-4"), (5, 49, "5-49"), (50, None, "50+"))


def word_coverage(train_texts: list[str], references: list[str], hypotheses: list[str]) -> dict[str, dict]:
    """Reference words bucketed by their count in `train_texts` (all texts normalised): per bucket, how many there
    are, their share of all reference words and the share the hypotheses get right (the aligned "equal" words of
    jiwer's alignment, the one the WER counts)."""
    import collections

    import jiwer

    from text_normalization import normalize_text

    seen = collections.Counter(word for text in train_texts for word in normalize_text(text).split())
    words = {name: [0, 0] for _, _, name in COVERAGE_BUCKETS}  # name -> [reference words, correct]
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
        if not reference.split():
            continue
        correct = set()
        for chunk in jiwer.process_words(reference, hypothesis).alignments[0]:
            if chunk.type == "equal":
                correct.update(range(chunk.ref_start_idx, chunk.ref_end_idx))
        for index, word in enumerate(reference.split()):
            count = seen[word]
            name = next(n for low, high, n in COVERAGE_BUCKETS if low <= count and (high is None or count <= high))
            words[name][0] += 1
            words[name][1] += index in correct
    total = sum(n for n, _ in words.values())
    return {name: {"words": n, "share": round(100.0 * n / total, 2) if total else 0.0,
                   "correct": round(100.0 * c / n, 2) if n else None} for name, (n, c) in words.items()}


def read_hypotheses(path: str) -> list[dict]:
    """The rows of an eval_hf.py hypotheses file; one clear error for a missing file or a bad line."""
    if not Path(path).is_file():
        raise SystemExit(f"error: {path}: no such hypotheses file (eval_hf.py writes OUTPUT_DIR/hypotheses_*.jsonl)")
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: {path}:{number}: not a JSON line ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("reference"), str) or not isinstance(
                row.get("hypothesis"), str):
            raise SystemExit(f"error: {path}:{number}: expected an object with string fields reference and hypothesis")
        rows.append(row)
    return rows


def join_clips(manifest: str, per: int, output: Path, gap: float = 0.0) -> list[dict]:
    import numpy as np
    import soundfile

    records = wld.read_manifest(manifest)
    output.parent.mkdir(parents=True, exist_ok=True)
    joined, groups = [], {}
    for record in records:
        groups.setdefault(wld.speaker_of(record["key"]), []).append(record)
    for speaker, items in groups.items():
        for first in range(0, len(items) - per + 1, per):
            part = items[first : first + per]
            audio = [load_audio(r["audio"], 16000) for r in part]
            silence = np.zeros(int(gap * 16000), dtype=np.float32)
            audio = [piece for wave in audio for piece in (wave, silence)][:-1] if gap else audio
            key = f"{part[0]['key']}..{part[-1]['key'].rsplit('-', 1)[-1]}"
            path = output.parent / f"{key}.flac"
            soundfile.write(str(path), np.concatenate(audio), 16000)
            joined.append({"audio_filepath": path.name, "duration": sum(len(a) for a in audio) / 16000,
                           "text": " ".join(r["text"] for r in part), "key": key})
    output.write_text("".join(json.dumps(r) + "\n" for r in joined))
    return joined


@torch.no_grad()
def longform_whisper(whisper_dir: str, joined: str, single: str, chunk_length_s: float) -> dict:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from pipeline_whisper_llada import join_texts, split_long_audio
    from text_normalization import normalize_text, word_error_counts

    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir, dtype=torch.float32).eval()
    processor = WhisperProcessor.from_pretrained(whisper_dir)

    def recognise(waves):
        features = processor.feature_extractor(waves, sampling_rate=16000, return_tensors="pt")
        return processor.batch_decode(model.generate(features.input_features, max_new_tokens=440),
                                      skip_special_tokens=True)

    def wer(refs, hyps):
        counts = word_error_counts([normalize_text(r) for r in refs], [normalize_text(h) for h in hyps])
        errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
        return 100.0 * errors / counts["reference_words"]

    long_records, windows = wld.read_manifest(joined), []
    hypotheses = []
    for record in long_records:
        wave = load_audio(record["audio"], 16000)
        ranges = split_long_audio(wave, 16000, chunk_length_s)
        windows.append(len(ranges))
        hypotheses.append(join_texts(recognise([wave[a:b] for a, b in ranges])))
    short_records = wld.read_manifest(single)
    short_hyps = recognise([load_audio(r["audio"], 16000) for r in short_records])
    return {"chunk_length_s": chunk_length_s, "joined_clips": len(long_records), "windows": windows,
            "wer_joined": wer([r["text"] for r in long_records], hypotheses),
            "wer_one_by_one": wer([r["text"] for r in short_records], short_hyps)}


def matched_words(reference: str, chunks: list[dict]) -> dict[int, tuple]:
    """{reference word index: (start, end)} for the chunks' words that a minimum-edit alignment pairs with an equal
    reference word (after lower-casing and dropping punctuation)."""
    import re

    from generation_llada import align

    def clean(word):
        return re.sub(r"[^a-z0-9']", "", word.lower())

    ref = [clean(w) for w in reference.split()]
    hyp = [clean(c["text"]) for c in chunks]
    pairs = align(hyp, ref)
    return {r: chunks[h]["timestamp"] for r, h in enumerate(pairs) if h is not None and hyp[h] == ref[r]
            and chunks[h]["timestamp"][0] is not None and chunks[h]["timestamp"][1] is not None}


def word_times(model_dir: str, whisper_dir: str, manifest: str, gap_s: float = 1.0) -> dict:
    """Word-timestamp agreement with Whisper's (words both get right) and the joined-clips check (docstring above)."""
    import numpy as np
    from transformers import pipeline as hf_pipeline

    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from pipeline_whisper_llada import transcribe
    from processing_whisper_llada import WhisperLladaProcessor

    model = WhisperLladaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = WhisperLladaProcessor.from_pretrained(model_dir)
    whisper = hf_pipeline("automatic-speech-recognition", model=whisper_dir, dtype=torch.float32)
    records = wld.read_manifest(manifest)
    starts, ends, counted = [], [], 0
    waves = [load_audio(r["audio"], 16000) for r in records]
    ours = transcribe(model, processor, waves, return_timestamps="word")
    for record, wave, mine in zip(records, waves, ours):
        theirs = whisper({"raw": wave, "sampling_rate": 16000}, return_timestamps="word")["chunks"]
        reference = wld.normalize_transcript(record["text"])
        a, b = matched_words(reference, mine["chunks"]), matched_words(reference, theirs)
        for index in a.keys() & b.keys():
            starts.append(abs(a[index][0] - b[index][0]))
            ends.append(abs(a[index][1] - b[index][1]))
        counted += len(reference.split())
    early, second_words, in_gap = 0, 0, 0
    for first, second, alone_first in zip(waves[:-1], waves[1:], ours[:-1]):
        joined = np.concatenate([first, np.zeros(int(gap_s * 16000), np.float32), second])
        chunks = transcribe(model, processor, [joined], return_timestamps="word")[0]["chunks"]
        end_of_first = len(first) / 16000
        # the words after as many as the first clip has alone: when the joined reading of the first clip has a word
        # more than its reading alone, that word is counted here too (an upper bound)
        later = chunks[len(alone_first["chunks"]):]
        second_words += len(later)
        early += sum(c["timestamp"][0] is not None and c["timestamp"][0] < end_of_first for c in later)
        in_gap += sum(c["timestamp"][0] is not None and end_of_first <= c["timestamp"][0] < end_of_first + gap_s
                      for c in chunks)  # no word should start in the silence

    def stats(values):
        values = sorted(values)
        return {"median": round(float(np.median(values)), 3), "mean": round(float(np.mean(values)), 3),
                "p90": round(float(values[int(0.9 * (len(values) - 1))]), 3)} if values else {}

    return {"data": manifest, "reference_words": counted, "words_both_right": len(starts),
            "start_abs_diff_s": stats(starts), "end_abs_diff_s": stats(ends),
            "joined_pairs": len(waves) - 1, "second_clip_words": second_words,
            "second_clip_words_starting_before_first_clip_end": early, "words_starting_in_the_silence": in_gap}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    curve = commands.add_parser("loss-curve")
    curve.add_argument("run_dir", type=Path, nargs="+")
    curve.add_argument("--output", type=Path, required=True)
    curve.add_argument("--titles", nargs="+", default=None)
    join = commands.add_parser("join-clips")
    join.add_argument("manifest")
    join.add_argument("--per", type=int, default=5)
    join.add_argument("--output", type=Path, required=True)
    join.add_argument("--gap", type=float, default=0.0, help="seconds of silence between the utterances")
    longform = commands.add_parser("longform-whisper")
    longform.add_argument("whisper_dir")
    longform.add_argument("--joined", required=True)
    longform.add_argument("--single", required=True)
    longform.add_argument("--chunk_length_s", type=float, default=20.0)
    check = commands.add_parser("speech-use")
    check.add_argument("--model", required=True)
    check.add_argument("--data", nargs="+", required=True, help="one or more manifests, each reported on its own")
    check.add_argument("--seeds", type=int, default=6)
    check.add_argument("--limit", type=int, default=None, help="only the first N utterances of each manifest")
    reading = commands.add_parser("speech-ctc")
    reading.add_argument("--model", required=True)
    reading.add_argument("--data", nargs="+", required=True)
    reading.add_argument("--limit", type=int, default=None)
    sweep = commands.add_parser("anchored-sweep")
    sweep.add_argument("--model", required=True)
    sweep.add_argument("--data", required=True)
    sweep.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    sweep.add_argument("--slacks", type=int, nargs="+", default=[0, 2, 4])
    sweep.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    sweep.add_argument("--settings", nargs="+", default=None,
                       help='decoding strings instead of the grid, e.g. "D,anchor_threshold=0.7,ctc_fusion=0.5"')
    sweep.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    times = commands.add_parser("word-times")
    times.add_argument("--model", required=True)
    times.add_argument("--whisper", required=True, help="a Whisper checkpoint (transformers format)")
    times.add_argument("--data", required=True)
    coverage = commands.add_parser("word-coverage")
    coverage.add_argument("--train", nargs="+", required=True, help="the training manifests (their transcripts)")
    coverage.add_argument("--hypotheses", nargs="+", required=True, help="eval_hf.py hypotheses_*.jsonl files")
    args = parser.parse_args(argv)
    if args.command == "word-coverage":
        train_texts = [r["text"] for manifest in args.train for r in wld.read_manifest(manifest)]
        for path in args.hypotheses:
            rows = read_hypotheses(path)
            result = word_coverage(train_texts, [r["reference"] for r in rows], [r["hypothesis"] for r in rows])
            print(json.dumps({"hypotheses": path, **result}))
    elif args.command == "word-times":
        print(json.dumps(word_times(args.model, args.whisper, args.data)))
    elif args.command == "anchored-sweep":
        for row in anchored_sweep(args.model, args.data, args.thresholds, args.slacks, args.steps,
                                  settings=args.settings, dtype=args.dtype):
            print(json.dumps(row))
    elif args.command == "speech-ctc":
        for manifest in args.data:
            print(json.dumps({"data": manifest, **speech_ctc(args.model, manifest, args.limit)}))
    elif args.command == "loss-curve":
        for run in loss_curve(args.run_dir, args.output, args.titles):
            print(json.dumps({"run": run["run"], "first_train": run["train"][0], "last_train": run["train"][-1],
                              "valid": run["valid"]}))
    elif args.command == "longform-whisper":
        print(json.dumps(longform_whisper(args.whisper_dir, args.joined, args.single, args.chunk_length_s)))
    elif args.command == "join-clips":
        for record in join_clips(args.manifest, args.per, args.output, args.gap):
            print(json.dumps({"key": record["key"], "duration": round(record["duration"], 2)}))
    else:
        for manifest in args.data:
            print(json.dumps({"data": manifest, **speech_use(args.model, manifest, args.seeds, args.limit)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
