"""First-pass transcripts for eval_hf.py `--first_pass`: D refines another recogniser's transcript (Whisper-LLaDA's
deliberation mode) instead of the CTC head's reading. Two sources:

    whisper:SOURCE       a Whisper checkpoint (a Hub id, a folder in Hugging Face or CTranslate2 format, or
                         package:NAME/SUBDIR; modeling_first_pass.FirstPass) decoded greedily in the same run, each
                         word with its confidence (audio over 30 s in windows cut in pauses), which also gives the
                         table a row of its own (the first pass alone)
    FILE.jsonl           a hypotheses file: one {"key", "hypothesis"} per line (e.g. eval_hf.py's hypotheses_*.jsonl
                         of another model), keys as in the evaluated splits; without confidences (D reads them off
                         the audio)

`first_pass_texts` returns {split name: {key: FirstPassHypothesis}} and, for Whisper, one results row per split (WER
after Whisper's English normaliser, RTFx from the timed batches).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from modeling_first_pass import FirstPass, FirstPassHypothesis, transcript_form
from processing_whisper_llada import load_audio
from text_normalization import normalize_text, word_error_counts
from whisper_llada_eval_inputs import AUDIO_ERRORS, EvalError, SplitData

logger = logging.getLogger("eval_hf")


def check_first_pass(source: str) -> None:
    """Raises EvalError for a source that is neither `whisper:...` nor an existing .jsonl file (before loading)."""
    if source.startswith("whisper:"):
        if not source[len("whisper:"):]:
            raise EvalError("--first_pass whisper: needs a Whisper checkpoint (whisper:PATH_OR_ID)")
        return
    if not Path(source).expanduser().is_file():
        raise EvalError(f"--first_pass {source}: not a hypotheses .jsonl file (or whisper:PATH_OR_ID)")


def read_first_pass_file(path: str) -> dict[str, str]:
    """{key: hypothesis} from a JSON-lines file; one clear error naming the line otherwise."""
    texts = {}
    for number, line in enumerate(Path(path).expanduser().read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            texts[str(entry["key"])] = str(entry["hypothesis"])
        except (ValueError, KeyError, TypeError):
            raise EvalError(f"--first_pass {path}, line {number}: expected a JSON object with \"key\" and "
                            "\"hypothesis\"") from None
    return texts


def whisper_first_pass(name: str, splits: list[SplitData], device: torch.device, dtype: torch.dtype,
                       batch_size: int) -> tuple[dict[str, dict[str, FirstPassHypothesis]], list[dict]]:
    """Whisper's greedy hypotheses of every split (words with confidences; audio over 30 s decoded window by window)
    and a results row per split."""
    from transformers import WhisperFeatureExtractor

    from pipeline_whisper_llada import split_long_audio

    try:
        first = FirstPass.load(name).to(device, dtype)
    except (OSError, ValueError) as error:
        raise EvalError(f"--first_pass whisper:{name}: cannot load it ({str(error).splitlines()[0]})") from None
    features = WhisperFeatureExtractor(feature_size=first.model.config.num_mel_bins)
    texts, rows = {}, []
    for data in splits:
        records = sorted(data.records, key=lambda r: r["duration"], reverse=True)
        found, seconds, audio_seconds = {}, 0.0, 0.0
        for start in range(0, len(records), batch_size):
            batch, windows, owners = [], [], []
            for record in records[start : start + batch_size]:
                try:
                    wave = load_audio(record["audio"], 16000)
                except AUDIO_ERRORS:
                    continue
                batch.append(record)
                audio_seconds += len(wave) / 16000
                for begin, end in split_long_audio(wave, 16000):
                    windows.append(wave[begin:end])
                    owners.append(record["key"])
            if not batch:
                continue
            began = time.perf_counter()
            mel = features(windows, sampling_rate=16000, return_tensors="pt").input_features
            with torch.inference_mode():
                hypotheses = [h[0] for h in first.hypotheses(first.encode(mel))]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - began
            for record in batch:
                parts = [h for h, key in zip(hypotheses, owners) if key == record["key"]]
                found[record["key"]] = FirstPassHypothesis(" ".join(p.text for p in parts),
                                                           [w for p in parts for w in p.words],
                                                           [c for p in parts for c in p.confidences],
                                                           sum(p.score for p in parts))
        texts[data.split.name] = found
        rows.append(first_pass_row(f"whisper:{name}", data, {k: h.text for k, h in found.items()}, audio_seconds,
                                   seconds))
    return texts, rows


def first_pass_row(label: str, data: SplitData, texts: dict[str, str], audio_seconds: float, seconds: float) -> dict:
    """A results.json row for a first pass alone."""
    scored = [r for r in data.records if r["key"] in texts]
    counts = word_error_counts([normalize_text(r["text"]) for r in scored],
                               [normalize_text(texts[r["key"]]) for r in scored])
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return {"model": label, "model_label": label, "decoding": "first pass", "split": data.split.name,
            "partial": False, "num_utterances": len(scored), "planned_utterances": len(data.records),
            "wer": 100.0 * errors / counts["reference_words"] if counts["reference_words"] else None,
            "rtfx": audio_seconds / seconds if seconds else None, "audio_seconds": audio_seconds,
            "processing_seconds": seconds, "preset": "first pass", "steps": None, "gen_length": None,
            "block_length": None, "chunked_utterances": 0, "truncated_utterances": 0, "skipped_utterances": 0,
            "resumed": False, **{k: counts[k] for k in ("reference_words", "substitutions", "deletions", "insertions",
                                                        "empty_references")}}


def first_pass_texts(source: str, splits: list[SplitData], device: torch.device, dtype: torch.dtype,
                     batch_size: int) -> tuple[dict[str, dict[str, FirstPassHypothesis]], list[dict]]:
    """{split: {key: first-pass hypothesis}} and the first pass's own rows (Whisper only). A file's transcripts come
    without confidences (D reads them off the audio)."""
    if source.startswith("whisper:"):
        return whisper_first_pass(source[len("whisper:"):], splits, device, dtype, batch_size)
    everything = read_first_pass_file(source)
    texts = {d.split.name: {r["key"]: FirstPassHypothesis(everything[r["key"]], [], [])
                            for r in d.records if r["key"] in everything} for d in splits}
    missing = sum(len(d.records) - len(texts[d.split.name]) for d in splits)
    if missing:
        logger.warning("--first_pass %s has no hypothesis for %d utterance(s): D starts from its CTC reading there",
                       source, missing)
    return texts, []


def write_first_pass(out_dir: Path, texts: dict[str, dict[str, FirstPassHypothesis]]) -> None:
    """out_dir/first_pass.json: {key: first-pass text} of every split (reusable as a --first_pass file's content)."""
    from whisper_llada_io import write_atomic

    merged = {key: hypothesis.text for split in texts.values() for key, hypothesis in split.items()}
    write_atomic(Path(out_dir) / "first_pass.json", json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


__all__ = ["check_first_pass", "first_pass_texts", "read_first_pass_file", "transcript_form", "write_first_pass"]
