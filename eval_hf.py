#!/usr/bin/env python
"""Evaluate a whisper-llada checkpoint: WER and RTFx per split and decoding configuration.

    python eval_hf.py --model PATH_OR_ID [PATH_OR_ID ...] --data DIR_OR_MANIFEST_OR_HUB [...] --decoding A B C AR \\
        --output_dir OUT \\
        [--batch_size N] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--max_utterances N] \\
        [--steps S --gen_length G --block_length L] [--threshold X] [--kv_cache prefix|dual] [--early_stop] [--plot]

With no arguments it evaluates the bundled demo model (`demo/model`) on the bundled clips
(`demo/audio/manifest.jsonl`) with decodings A, B and C and writes to `outputs/demo_eval` (offline).

Data (`--data`, one entry per split; the split's name in the table in brackets):
  * a local LibriSpeech split directory, e.g. `.../LibriSpeech/test-clean`            [directory name]
  * a JSON-lines manifest (NeMo `audio_filepath`/`text`/`duration`, or `key`/`source`/`target`)  [file stem]
  * a Hub dataset `hub:NAME[:CONFIG[:SPLIT]]`, e.g. `hub:openslr/librispeech_asr:clean:validation`
    [the split; LibriSpeech clean/other validation/test are named dev-clean, dev-other, test-clean, test-other].
    Hub splits are streamed, but the selected records (with their encoded audio) are kept in memory to sort them by
    duration: a LibriSpeech dev/test split is about 350 MB.
  * any of these as `NAME=SPEC` to choose the name yourself, e.g. `demo=demo/audio/manifest.jsonl`.

Models (`--model`, one or more): each decoding runs on every model it applies to, and all rows go into one table
(e.g. a LLaDA model with A B C and its autoregressive baseline with AR: `--model demo/model runs/demo_ar/model
--decoding A B C AR`). Masked-diffusion decodings apply to LLaDA-decoder models, `AR` ones to causal-decoder models
(`decoder_type: causal`); a decoding that applies to none of the models, or a model left with none, is an error.

Decoding (`--decoding`, one entry per configuration/row):
  * a preset name of `model.generate(decoding=...)`: A (1 step), B (8 steps), C (8 steps x 16 blocks);
  * `AR` for a causal (autoregressive) decoder: transformers' greedy decoding with a KV cache up to the model's
    gen_length new tokens; `AR,num_beams=4` beam search, `AR,gen_length=64` another length;
  * explicit settings `steps=16,gen_length=128,block_length=32` (the row is named by that string), optionally after a
    preset (`B,gen_length=64`) and with per-row approximations (`B,kv_cache=dual,threshold=0.9,early_stop=1`);
  * `--steps/--gen_length/--block_length` add one explicit configuration (alone, unless `--decoding` is also given).
  `--threshold`, `--kv_cache` and `--early_stop` (Fast-dLLM-style approximations) apply to every configuration; the
  row name records them, e.g. `B+dual+thr0.9` (`+es` for early stop).

Metrics:
  * WER (percent, corpus level: edits / reference words) with jiwer after Whisper's English text normaliser and its
    spelling map (`assets/normalizer.json`); references that normalise to nothing are left out. The average WER of a
    row is the mean of its per-split WERs (as in the reference table: dev/test clean/other).
  * RTFx = audio seconds / processing seconds, where processing = feature extraction + encoder + decoding +
    detokenisation of each batch (reading/decoding the audio files is not counted), with `torch.cuda.synchronize()`
    around the timings on GPU. Utterances are sorted by duration (longest first) and decoded in batches of
    `--batch_size`; `--warmup_batches` untimed batches run first in each process. The row's RTFx ("avg RTFx") is the
    total audio seconds over the total processing seconds of all its splits.

Outputs (in `--output_dir`):
  * `hypotheses_<decoding>_<split>.jsonl`: one JSON line per utterance (key, reference, hypothesis, normalised
    texts, duration, ...), appended and flushed batch by batch. A killed run resumes: utterances whose key is already
    in the file are not decoded again. RTFx of a resumed run counts only the utterances timed in that run
    (`timed_utterances`); when nothing was left to decode, the timing of an earlier `results.json` entry for the same
    model/decoding/split is kept. Delete the files to start afresh (they are not checked against the model).
  * with several models, the hypotheses files are named `hypotheses_<model>_<decoding>_<split>.jsonl`.
  * `results.json`: `{"results": [{"model", "decoding", "split", "num_utterances", "wer", "rtfx", "audio_seconds",
    "processing_seconds", "steps", "gen_length", "block_length", "batch_size", ...}], "model", "device", "dtype",
    "date", ...}`, rewritten after each split.
  * `results.md`: a table shaped like the reference one (rows: model/decoding; columns: WER per split, avg WER,
    avg RTFx). `--plot` also writes `wer_vs_rtfx.png`.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from text_normalization import normalize_text, word_error_counts  # noqa: E402
from whisper_llada_data import (  # noqa: E402
    DataError,
    audio_duration,
    filter_records,
    load_audio,
    load_records,
    parse_hub_spec,
)

logger = logging.getLogger("eval_hf")

DEMO_MODEL = ROOT / "demo" / "model"
DEMO_MANIFEST = ROOT / "demo" / "audio" / "manifest.jsonl"
DEMO_OUTPUT = Path("outputs") / "demo_eval"
DEFAULT_DECODINGS = ["A", "B", "C", "AR"]  # each applied to the models it fits (AR: causal decoders only)
AR_PRESET = "AR"
AR_KEYS = ("gen_length", "num_beams")  # the settings an AR decoding may set
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The settings an explicit decoding string may set, with their parsers.
DECODING_KEYS = {
    "steps": int,
    "gen_length": int,
    "block_length": int,
    "temperature": float,
    "remasking": str,
    "threshold": float,
    "kv_cache": str,
    "early_stop": lambda v: v.lower() in ("1", "true", "yes", "on"),
    "num_beams": int,
}
APPROXIMATE_KEYS = ("kv_cache", "threshold", "early_stop")
LIBRISPEECH_HUB_SPLITS = {"validation": "dev", "test": "test"}


# ----------------------------------------------------------------------------------------------------------------------
# Decoding configurations and splits
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Decoding:
    """One row of the table: a preset name and/or explicit `generate()` settings."""

    name: str
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def autoregressive(self) -> bool:
        return self.preset == AR_PRESET

    def generate_kwargs(self) -> dict[str, Any]:
        if self.autoregressive:
            return dict(self.overrides)
        return {"decoding": self.preset, **self.overrides}

    def applies_to(self, model) -> bool:
        """AR decodings for causal-decoder models, masked-diffusion ones for LLaDA-decoder models."""
        return self.autoregressive == (getattr(model.config, "decoder_type", "llada") == "causal")


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_decoding(
    text: str, threshold: float | None = None, kv_cache: str | None = None, early_stop: bool = False
) -> Decoding:
    """`"B"`, `"steps=16,gen_length=128,block_length=32"`, `"B,kv_cache=dual"`, `"AR,num_beams=4"` -> a `Decoding`;
    the global approximation flags are added to masked-diffusion decodings unless the string sets them itself."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"empty decoding configuration {text!r}")
    preset = None
    settings: dict[str, Any] = {}
    for index, part in enumerate(parts):
        if "=" not in part:
            if index != 0:
                raise ValueError(f"decoding {text!r}: only the first item may be a preset name, got {part!r}")
            preset = part
            continue
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in DECODING_KEYS:
            raise ValueError(f"decoding {text!r}: unknown setting {key!r}; expected one of {sorted(DECODING_KEYS)}")
        try:
            settings[key] = DECODING_KEYS[key](value)
        except ValueError as error:
            raise ValueError(f"decoding {text!r}: bad value for {key}: {value!r}") from error
    if preset == AR_PRESET:
        extra = sorted(set(settings) - set(AR_KEYS))
        if extra:
            raise ValueError(f"decoding {text!r}: AR decoding takes only {', '.join(AR_KEYS)}, got {extra}")
        name = ",".join([preset] + [f"{key}={value}" for key, value in settings.items()])
        return Decoding(name=name, preset=preset, overrides=settings)
    if "num_beams" in settings:
        raise ValueError(f"decoding {text!r}: num_beams applies to AR (autoregressive) decoding only")
    base = [preset] if preset else []
    base += [f"{key}={_format_value(value)}" for key, value in settings.items() if key not in APPROXIMATE_KEYS]
    for key, value in (("threshold", threshold), ("kv_cache", kv_cache), ("early_stop", early_stop or None)):
        if value is not None:
            settings.setdefault(key, value)
    name = ",".join(base) if base else "default"
    if settings.get("kv_cache"):
        name += f"+{settings['kv_cache']}"
    if settings.get("threshold") is not None:
        name += f"+thr{_format_value(settings['threshold'])}"
    if settings.get("early_stop"):
        name += "+es"
    if not settings.get("early_stop"):
        settings.pop("early_stop", None)
    return Decoding(name=name, preset=preset, overrides=settings)


@dataclass
class Split:
    name: str
    spec: str


def default_split_name(spec: str) -> str:
    if spec.startswith("hub:"):
        dataset, config, split = parse_hub_spec(spec)
        if "librispeech" in dataset.lower() and config in ("clean", "other") and split in LIBRISPEECH_HUB_SPLITS:
            return f"{LIBRISPEECH_HUB_SPLITS[split]}-{config}"
        return split
    path = Path(spec).expanduser()
    return path.resolve().name if path.is_dir() else path.stem


def parse_splits(entries: list[str]) -> list[Split]:
    splits: list[Split] = []
    for entry in entries:
        match = re.fullmatch(r"([A-Za-z0-9_.+-]+)=(.+)", entry)
        if match and not os.path.exists(entry):
            name, spec = match.groups()
        else:
            name, spec = default_split_name(entry), entry
        taken = {s.name for s in splits}
        unique, counter = name, 2
        while unique in taken:
            unique, counter = f"{name}-{counter}", counter + 1
        splits.append(Split(unique, spec))
    return splits


def safe_name(name: str) -> str:
    """A file-name-safe version of a decoding/split name."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "x"


def load_split_records(split: Split, max_utterances: int | None, skipped: collections.Counter) -> list[dict]:
    """The split's records (the first `max_utterances`), with a duration each; unusable ones are skipped."""
    records = load_records(split.spec)
    records = filter_records(records, on_bad="skip", stats=skipped)
    if max_utterances is not None:
        records = itertools.islice(records, max_utterances)
    out, seen = [], set()
    for record in records:
        if record["key"] in seen:
            raise DataError(f"{split.spec}: duplicate utterance key {record['key']!r}")
        seen.add(record["key"])
        record = dict(record)
        if record.get("duration") is None:
            record["duration"] = audio_duration(record["audio"])
        out.append(record)
    if not out:
        raise DataError(f"{split.spec}: no usable utterances")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was asked for but CUDA is not available")
    return device


def load_model_and_processor(model_name_or_path: str, dtype: torch.dtype, device: torch.device):
    """`AutoModel` + `AutoProcessor` with `trust_remote_code=True`."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=True, dtype=dtype)
    processor = AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=True)
    return model.to(device).eval(), processor


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_settings(model, decoding: Decoding) -> dict[str, Any]:
    """The row's decoding settings as recorded in results.json; raises ValueError for invalid ones."""
    if decoding.autoregressive:
        gen_length = decoding.overrides.get("gen_length") or getattr(model.generation_config, "gen_length", None) \
            or model.config.gen_length
        num_beams = decoding.overrides.get("num_beams", 1)
        if gen_length < 1 or num_beams < 1:
            raise ValueError(f"gen_length and num_beams must be >= 1, got {gen_length}, {num_beams}")
        return {"steps": None, "gen_length": gen_length, "block_length": None, "num_beams": num_beams,
                "temperature": 0.0, "remasking": None, "threshold": None, "kv_cache": None, "early_stop": False}
    s = model.decoding_settings(decoding.preset, **decoding.overrides)
    return {"steps": s.steps, "gen_length": s.gen_length, "block_length": s.block_length, "num_beams": 1,
            "temperature": s.temperature, "remasking": s.remasking, "threshold": s.threshold, "kv_cache": s.kv_cache,
            "early_stop": s.early_stop}


def transcribe(model, processor, waves: list[np.ndarray], generate_kwargs: dict, device: torch.device) -> list[str]:
    """Feature extraction + encoder + diffusion decoding + detokenisation of one batch."""
    features = processor(audio=waves, sampling_rate=processor.feature_extractor.sampling_rate)
    ids = model.generate(
        input_features=features["input_features"].to(device),
        attention_mask=features["attention_mask"].to(device),
        **generate_kwargs,
    )
    return processor.batch_decode(ids)


# ----------------------------------------------------------------------------------------------------------------------
# Hypotheses files (resume)
# ----------------------------------------------------------------------------------------------------------------------


def read_hypotheses(path: Path) -> dict[str, dict]:
    """The finished utterances of an earlier (possibly killed) run, by key. A partly written last line is cut off and
    unreadable lines are dropped, so that appending continues a clean file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    # After the last newline: nothing, or a line cut short by a kill (dropped).
    *lines, tail = data.split(b"\n")
    done: dict[str, dict] = {}
    dirty = bool(tail)
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            done[str(entry["key"])] = entry
        except (ValueError, KeyError, TypeError):
            dirty = True
    if dirty:
        logger.warning("%s: dropping a partly written or unreadable line", path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in done.values()), encoding="utf-8")
        os.replace(tmp, path)
    return done


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


class Evaluator:
    def __init__(self, args: argparse.Namespace, model, processor, device: torch.device, tag: str | None = None):
        self.args, self.model, self.processor, self.device = args, model, processor, device
        self.tag = tag  # file-name prefix of the hypotheses files when several models are evaluated
        self.sampling_rate = processor.feature_extractor.sampling_rate
        self.max_samples = processor.feature_extractor.n_samples
        self.warmups_left = args.warmup_batches

    def _load_batch(self, batch: list[dict]) -> tuple[list[np.ndarray], list[bool]]:
        waves, truncated = [], []
        for record in batch:
            wave = load_audio(record["audio"], self.sampling_rate)
            cut = len(wave) > self.max_samples
            if cut:
                if self.args.long_audio == "error":
                    raise DataError(
                        f"{record['key']}: {len(wave) / self.sampling_rate:.1f} s of audio is longer than the "
                        f"encoder's {self.max_samples / self.sampling_rate:.0f} s window"
                    )
                wave = wave[: self.max_samples]
            waves.append(wave)
            truncated.append(cut)
        return waves, truncated

    def run(self, decoding: Decoding, split: Split, records: list[dict], out_dir: Path) -> dict:
        stem = f"{safe_name(decoding.name)}_{safe_name(split.name)}"
        path = out_dir / (f"hypotheses_{self.tag}_{stem}.jsonl" if self.tag else f"hypotheses_{stem}.jsonl")
        done = read_hypotheses(path)
        keys = {r["key"] for r in records}
        pending = sorted((r for r in records if r["key"] not in done), key=lambda r: r["duration"], reverse=True)
        resumed = len(records) - len(pending)
        if resumed:
            logger.info("%s / %s: resuming, %d of %d utterances already in %s", decoding.name, split.name, resumed,
                        len(records), path.name)
        generate_kwargs = decoding.generate_kwargs()
        audio_seconds = processing_seconds = 0.0
        timed = 0
        batch_size = self.args.batch_size
        from tqdm.auto import tqdm

        with open(path, "a", encoding="utf-8") as handle, tqdm(
            total=len(records), initial=resumed, desc=f"{decoding.name} {split.name}", unit="utt",
            disable=self.args.no_progress,
        ) as bar:
            for start in range(0, len(pending), batch_size):
                batch = pending[start : start + batch_size]
                waves, truncated = self._load_batch(batch)
                while self.warmups_left > 0:  # untimed: first-call costs (CUDA context, kernels, allocator)
                    transcribe(self.model, self.processor, waves, generate_kwargs, self.device)
                    self.warmups_left -= 1
                synchronize(self.device)
                begin = time.perf_counter()
                hypotheses = transcribe(self.model, self.processor, waves, generate_kwargs, self.device)
                synchronize(self.device)
                elapsed = time.perf_counter() - begin
                batch_audio = sum(len(w) for w in waves) / self.sampling_rate
                audio_seconds += batch_audio
                processing_seconds += elapsed
                timed += len(batch)
                for record, wave, cut, hypothesis in zip(batch, waves, truncated, hypotheses):
                    entry = {
                        "key": record["key"],
                        "reference": record["text"],
                        "hypothesis": hypothesis,
                        "reference_normalized": normalize_text(record["text"]),
                        "hypothesis_normalized": normalize_text(hypothesis),
                        "duration": round(len(wave) / self.sampling_rate, 4),
                        "truncated": cut,
                        "batch_seconds": round(elapsed, 6),
                        "batch_size": len(batch),
                    }
                    handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    done[record["key"]] = entry
                handle.flush()
                bar.update(len(batch))
                bar.set_postfix(rtfx=f"{audio_seconds / processing_seconds:.1f}" if processing_seconds else "-")

        entries = [done[r["key"]] for r in records]
        counts = word_error_counts(
            [normalize_text(e["reference"]) for e in entries], [normalize_text(e["hypothesis"]) for e in entries]
        )
        errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
        wer = 100.0 * errors / counts["reference_words"] if counts["reference_words"] else None
        extra_in_file = len(set(done) - keys)
        if extra_in_file:
            logger.info("%s: %d utterances not in this selection are ignored", path.name, extra_in_file)
        return {
            "num_utterances": len(entries),
            "wer": wer,
            "rtfx": audio_seconds / processing_seconds if processing_seconds > 0 else None,
            "audio_seconds": audio_seconds,
            "processing_seconds": processing_seconds,
            "timed_utterances": timed,
            "resumed_utterances": resumed,
            "truncated_utterances": sum(bool(e.get("truncated")) for e in entries),
            "reference_words": counts["reference_words"],
            "substitutions": counts["substitutions"],
            "deletions": counts["deletions"],
            "insertions": counts["insertions"],
            "empty_references": counts["empty_references"],
            "hypotheses_file": path.name,
        }


# ----------------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------------


def row_summaries(results: list[dict], split_names: list[str], default_model: str = "") -> list[dict]:
    """Per model and decoding: mean WER over splits and RTFx over all splits (total audio / total processing
    seconds)."""
    rows: dict[tuple[str, str], dict] = {}
    for result in results:
        model = result.get("model_label") or default_model
        row = rows.setdefault((model, result["decoding"]), {"model": model, "decoding": result["decoding"], "wer": {},
                                                           "audio": 0.0, "processing": 0.0, "settings": result})
        row["wer"][result["split"]] = result["wer"]
        if result.get("rtfx") is not None:
            row["audio"] += result["audio_seconds"]
            row["processing"] += result["processing_seconds"]
    summaries = []
    for row in rows.values():
        wers = [w for s in split_names if (w := row["wer"].get(s)) is not None]
        summaries.append({
            "model": row["model"],
            "decoding": row["decoding"],
            "wer": {s: row["wer"].get(s) for s in split_names},
            "avg_wer": sum(wers) / len(wers) if wers else None,
            "avg_rtfx": row["audio"] / row["processing"] if row["processing"] > 0 else None,
            "settings": row["settings"],
        })
    return summaries


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(report: dict, split_names: list[str]) -> str:
    model = report.get("model_label") or report["model"]
    header = ["model", "decoding", "steps / gen / block", *split_names, "avg WER", "avg RTFx"]
    lines = [
        f"WER (%) after Whisper's English normaliser; RTFx = audio seconds / processing seconds. "
        f"Device {report['device']}, {report['dtype']}, batch size {report['batch_size']}, {report['date']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---"] + ["---:"] * (len(split_names) + 2)) + "|",
    ]
    for row in row_summaries(report["results"], split_names, model):
        s = row["settings"]
        steps = " / ".join("–" if s.get(key) is None else str(s[key]) for key in ("steps", "gen_length", "block_length"))
        cells = [row["model"], row["decoding"], steps]
        cells += [_cell(row["wer"][name], 2) for name in split_names]
        cells += [_cell(row["avg_wer"], 2), _cell(row["avg_rtfx"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "avg WER: mean of the per-split WERs. avg RTFx: total audio seconds / total processing seconds over the "
        "splits (feature extraction + encoder + decoding + detokenisation; utterances timed in this run only). "
        "AR rows: autoregressive decoding (greedy, or beam search with num_beams) of a causal-decoder model.",
        "",
    ]
    return "\n".join(lines)


def plot_wer_rtfx(report: dict, split_names: list[str], path: Path) -> bool:
    label = report.get("model_label") or report["model"]
    rows = [r for r in row_summaries(report["results"], split_names, label) if r["avg_wer"] is not None and r["avg_rtfx"]]
    several = len({r["model"] for r in rows}) > 1
    if not rows:
        logger.warning("--plot: no row has both a WER and an RTFx; no plot written")
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        axes.scatter(row["avg_rtfx"], row["avg_wer"])
        text = f"{row['model']}: {row['decoding']}" if several else row["decoding"]
        axes.annotate(text, (row["avg_rtfx"], row["avg_wer"]), textcoords="offset points", xytext=(5, 4),
                      fontsize=8)
    rtfx = [r["avg_rtfx"] for r in rows]
    if max(rtfx) / min(rtfx) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("RTFx (higher is faster)")
    axes.set_ylabel(f"average WER (%) over {len(split_names)} split(s)")
    axes.set_title(f"{report.get('model_label') or report['model']} ({report['device']}, {report['dtype']})", fontsize=9)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _previous_results(path: Path, models: list[str]) -> dict[tuple[str, str, str], dict]:
    """Entries of an earlier results.json for the same models, by (model, decoding, split)."""
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    entries = {}
    for r in report.get("results", []):
        model = r.get("model", report.get("model"))
        if "decoding" in r and "split" in r and model in models:
            entries[(model, r["decoding"], r["split"])] = r
    return entries


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval_hf.py",
        description="WER and RTFx of a whisper-llada model per split and decoding configuration. Without arguments: "
        "the bundled demo model on the bundled clips, decodings A B C, into outputs/demo_eval.",
        epilog="See the module docstring (or README) for the data, decoding and output formats.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", nargs="+", default=None, metavar="PATH_OR_ID",
                        help="model directories or Hub ids, all in one table (default: demo/model)")
    parser.add_argument("--data", nargs="+", default=None, metavar="SPEC",
                        help="splits: LibriSpeech dir, .jsonl manifest, hub:NAME[:CONFIG[:SPLIT]], or NAME=SPEC "
                        "(default: the bundled demo clips)")
    parser.add_argument("--decoding", nargs="+", default=None, metavar="CONFIG",
                        help="presets (A B C), explicit 'steps=16,gen_length=128,block_length=32', or AR / "
                        "'AR,num_beams=4' for causal-decoder models (default: A B C AR, each where it applies)")
    parser.add_argument("--output_dir", default=None, help=f"where results go (default: {DEMO_OUTPUT})")
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per generate() call (default: 8)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="model dtype (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--max_utterances", type=int, default=None, help="evaluate only the first N of each split")
    parser.add_argument("--steps", type=int, default=None, help="explicit extra decoding: total steps")
    parser.add_argument("--gen_length", type=int, default=None, help="explicit extra decoding: answer length")
    parser.add_argument("--block_length", type=int, default=None, help="explicit extra decoding: block length")
    parser.add_argument("--threshold", type=float, default=None,
                        help="approximate: also commit every masked token at least this confident (all rows)")
    parser.add_argument("--kv_cache", choices=["prefix", "dual"], default=None, help="approximate: KV caching")
    parser.add_argument("--early_stop", action="store_true", help="approximate: stop a row after its EOS")
    parser.add_argument("--long_audio", choices=["truncate", "error"], default="truncate",
                        help="audio over the encoder's 30 s window: truncate (default; counted in results) or fail")
    parser.add_argument("--warmup_batches", type=int, default=1, help="untimed batches before the first timing (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed, matters only for temperature > 0 (default: 0)")
    parser.add_argument("--plot", action="store_true", help="also write wer_vs_rtfx.png")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max_utterances must be >= 1")
    if args.warmup_batches < 0:
        parser.error("--warmup_batches must be >= 0")
    try:
        explicit = [f"{k}={v}" for k in ("steps", "gen_length", "block_length") if (v := getattr(args, k)) is not None]
        specs = list(args.decoding or ([] if explicit else DEFAULT_DECODINGS))
        if explicit:
            specs.append(",".join(explicit))
        args.decodings = [parse_decoding(s, args.threshold, args.kv_cache, args.early_stop) for s in specs]
    except ValueError as error:
        parser.error(str(error))
    args.default_decodings = args.decoding is None and not explicit
    names = [d.name for d in args.decodings]
    if len(set(names)) != len(names):
        parser.error(f"duplicate decoding configurations: {names}")
    if args.model is None:
        if not DEMO_MODEL.exists():
            parser.error(f"the bundled demo model {DEMO_MODEL} is missing; pass --model")
        args.models, args.model_labels = [str(DEMO_MODEL)], ["demo/model"]
    else:
        if len(set(args.model)) != len(args.model):
            parser.error(f"duplicate models: {args.model}")
        args.models, args.model_labels = list(args.model), list(args.model)
    args.model = " + ".join(args.models)
    args.model_label = " + ".join(args.model_labels)
    if args.data is None:
        args.data = [f"demo={DEMO_MANIFEST}"]
    if args.output_dir is None:
        args.output_dir = str(DEMO_OUTPUT)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("whisper_llada_data").setLevel(logging.WARNING)
    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.manual_seed(args.seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    splits = parse_splits(args.data)
    records: dict[str, list[dict]] = {}
    skipped: dict[str, int] = {}
    for split in splits:
        counter: collections.Counter = collections.Counter()
        try:
            records[split.name] = load_split_records(split, args.max_utterances, counter)
        except (DataError, OSError) as error:  # OSError: missing files, the Hub unreachable
            raise SystemExit(f"error: split {split.name} ({split.spec}): {error}") from error
        skipped[split.name] = sum(counter.values())
        seconds = sum(r["duration"] for r in records[split.name])
        logger.info("split %s (%s): %d utterances, %.1f min%s", split.name, split.spec, len(records[split.name]),
                    seconds / 60, f", {skipped[split.name]} skipped ({dict(counter)})" if counter else "")

    # Every model is loaded and every (model, decoding) pair validated before the first decoding.
    several = len(args.models) > 1
    jobs = []  # (path, label, evaluator, [(decoding, settings)])
    used = set()
    for path, label in zip(args.models, args.model_labels):
        model, processor = load_model_and_processor(path, DTYPES[dtype_name], device)
        pairs = []
        for decoding in args.decodings:
            if not decoding.applies_to(model):
                continue
            try:
                pairs.append((decoding, resolve_settings(model, decoding)))
            except (ValueError, TypeError) as error:
                raise SystemExit(f"error: model {label}, decoding {decoding.name}: {error}") from error
            used.add(decoding.name)
        if not pairs:
            kind = getattr(model.config, "decoder_type", "llada")
            raise SystemExit(f"error: none of the decodings {[d.name for d in args.decodings]} applies to model {label} "
                             f"({kind} decoder: {'AR' if kind == 'causal' else 'A, B, C or explicit steps'})")
        tag = safe_name(label) if several else None
        jobs.append((path, label, Evaluator(args, model, processor, device, tag), pairs))
    unused = [d.name for d in args.decodings if d.name not in used]
    if unused and not args.default_decodings:
        raise SystemExit(f"error: decodings {unused} apply to none of the models (AR needs a causal-decoder model, "
                         "the others a LLaDA-decoder model)")

    device_name = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)")
    previous = _previous_results(out_dir / "results.json", args.models)
    report = {
        "results": [],
        "model": args.model,
        "model_label": args.model_label,
        "models": args.models,
        "device": device_name,
        "dtype": dtype_name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "batch_size": args.batch_size,
        "splits": {s.name: s.spec for s in splits},
        "max_utterances": args.max_utterances,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "rtfx_note": "RTFx = audio_seconds / processing_seconds of the utterances timed in the run that wrote the "
        "entry (timed_utterances); resumed utterances are not timed again.",
    }
    # Earlier entries of the same models that this run does not recompute stay in the report.
    computed = {(path, d.name, s.name) for path, _, _, pairs in jobs for d, _ in pairs for s in splits}
    kept = [r for key, r in previous.items() if key not in computed]
    split_names = [s.name for s in splits] + sorted({r["split"] for r in kept} - {s.name for s in splits})

    for path, label, evaluator, pairs in jobs:
        for decoding, s in pairs:
            for split in splits:
                result = evaluator.run(decoding, split, records[split.name], out_dir)
                old = previous.get((path, decoding.name, split.name))
                if result["timed_utterances"] == 0 and old and old.get("rtfx") is not None:
                    for key in ("rtfx", "audio_seconds", "processing_seconds", "timed_utterances"):
                        result[key] = old.get(key)
                    result["timing_from_earlier_run"] = True
                entry = {
                    "decoding": decoding.name,
                    "split": split.name,
                    "model": path,
                    "model_label": label,
                    **result,
                    "skipped_utterances": skipped[split.name],
                    "preset": decoding.preset,
                    **s,
                    "batch_size": args.batch_size,
                }
                report["results"].append(entry)
                full = {**report, "results": kept + report["results"]}
                _write_atomic(out_dir / "results.json", json.dumps(full, indent=2, ensure_ascii=False) + "\n")
                _write_atomic(out_dir / "results.md", markdown_table(full, split_names))
                wer_text = "–" if entry["wer"] is None else f"{entry['wer']:.2f} %"
                rtfx_text = "–" if entry["rtfx"] is None else f"{entry['rtfx']:.1f}"
                logger.info("%s%s / %s: WER %s, RTFx %s (%d utterances)", f"{label}: " if several else "",
                            decoding.name, split.name, wer_text, rtfx_text, entry["num_utterances"])

    full = {**report, "results": kept + report["results"]}
    if args.plot and plot_wer_rtfx(full, split_names, out_dir / "wer_vs_rtfx.png"):
        logger.info("wrote %s", out_dir / "wer_vs_rtfx.png")
    print(markdown_table(full, split_names))
    logger.info("wrote %s and %s", out_dir / "results.json", out_dir / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
