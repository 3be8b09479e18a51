"""First-pass transcripts for eval_hf.py `--first_pass`: D refines another recogniser's transcript (Whisper-LLaDA's
deliberation mode) instead of the CTC head's reading. Two sources:

    whisper:PATH_OR_ID   a Whisper checkpoint decoded in the same run (transformers' generate, greedy; long audio
                         long-form), which also gives the table a row of its own (the first pass alone)
    FILE.jsonl           a hypotheses file: one {"key", "hypothesis"} per line (e.g. eval_hf.py's hypotheses_*.jsonl
                         of another model), keys as in the evaluated splits

`first_pass_rows` returns {split name: {key: text}} and, for Whisper, one results row per split (WER after Whisper's
English normaliser, RTFx from the timed batches).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from processing_whisper_llada import load_audio
from text_normalization import normalize_text, word_error_counts
from whisper_llada_data import normalize_transcript
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
                       batch_size: int) -> tuple[dict[str, dict[str, str]], list[dict]]:
    """Whisper's greedy transcripts of every split (long-form beyond 30 s) and a results row per split."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        model = WhisperForConditionalGeneration.from_pretrained(name, dtype=dtype).to(device).eval()
        processor = WhisperProcessor.from_pretrained(name)
    except OSError as error:
        raise EvalError(f"--first_pass whisper:{name}: cannot load it ({str(error).splitlines()[0]})") from None
    texts, rows = {}, []
    for data in splits:
        records = sorted(data.records, key=lambda r: r["duration"], reverse=True)
        found, seconds, audio_seconds = {}, 0.0, 0.0
        for start in range(0, len(records), batch_size):
            batch, waves = [], []
            for record in records[start : start + batch_size]:
                try:
                    waves.append(load_audio(record["audio"], 16000))
                    batch.append(record)
                except AUDIO_ERRORS:
                    continue
            if not batch:
                continue
            began = time.perf_counter()
            long = max(len(w) for w in waves) > 30 * 16000
            inputs = processor(waves, sampling_rate=16000, return_tensors="pt", return_attention_mask=True,
                               **({"truncation": False, "padding": "longest"} if long else {}))
            with torch.inference_mode():
                ids = model.generate(inputs.input_features.to(device, dtype), attention_mask=inputs.attention_mask.to(
                    device), return_timestamps=long)
            decoded = processor.batch_decode(ids, skip_special_tokens=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - began
            audio_seconds += sum(len(w) for w in waves) / 16000
            found.update({r["key"]: t.strip() for r, t in zip(batch, decoded)})
        texts[data.split.name] = found
        rows.append(first_pass_row(f"whisper:{name}", data, found, audio_seconds, seconds))
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
                     batch_size: int) -> tuple[dict[str, dict[str, str]], list[dict]]:
    """{split: {key: first-pass text}} and the first pass's own rows (Whisper only)."""
    if source.startswith("whisper:"):
        return whisper_first_pass(source[len("whisper:"):], splits, device, dtype, batch_size)
    everything = read_first_pass_file(source)
    texts = {d.split.name: {r["key"]: everything[r["key"]] for r in d.records if r["key"] in everything}
             for d in splits}
    missing = sum(len(d.records) - len(texts[d.split.name]) for d in splits)
    if missing:
        logger.warning("--first_pass %s has no hypothesis for %d utterance(s): D starts from its CTC reading there",
                       source, missing)
    return texts, []


def transcript_form(text: str) -> str:
    """A first pass in the form of the transcripts the model was trained on, as D's start: training targets are
    `whisper_llada_data.normalize_transcript(text)` of LibriSpeech-style references (lower case, no punctuation), so
    a recogniser's casing and punctuation ("After Mister Crow, ...") would be tokens the model never wrote and its CTC
    head never scored. Lower case; letters, digits, apostrophes and spaces kept; other characters become spaces.

    >>> transcript_form(" After Mister Crow flew back, he said: Don't!")
    "after mister crow flew back he said don't"
    """
    kept = "".join(c if c.isalnum() or c in "' " else " " for c in text.lower())
    return normalize_transcript(kept)


def write_first_pass(out_dir: Path, texts: dict[str, dict[str, str]]) -> None:
    """out_dir/first_pass.json: {key: first-pass text} of every split (reusable as a --first_pass file's content)."""
    from whisper_llada_io import write_atomic

    merged = {key: text for split in texts.values() for key, text in split.items()}
    write_atomic(Path(out_dir) / "first_pass.json", json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


__all__ = ["check_first_pass", "first_pass_texts", "read_first_pass_file", "transcript_form", "write_first_pass"]
