#!/usr/bin/env python
"""Evaluate a whisper-llada checkpoint: WER and RTFx per split and decoding configuration.

    python eval_hf.py --model PATH_OR_ID [PATH_OR_ID ...] --data DIR_OR_MANIFEST_OR_HUB [...] --decoding A B C AR \\
        --output_dir OUT [--batch_size N] [--device cpu|cuda] [--dtype float32|bfloat16|float16] \\
        [--max_utterances N] [--steps S --gen_length G --block_length L] [--threshold X] [--kv_cache prefix|dual] \\
        [--early_stop] [--long_audio chunk|truncate|error] [--on_bad_data skip|error] [--overwrite] \\
        [--model_card DIR] [--plot]

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
  Every record's duration is read from its audio header (a manifest's `duration` is not trusted). Records whose audio
  is missing or unreadable (0 bytes, corrupt, not audio), or whose transcript is empty, are skipped, counted and named
  (printed at the end; `skipped` in results.json), whether that shows when the split is read or when the audio is
  decoded; `--on_bad_data error` stops at the first one instead, naming it.

Long audio (over the encoder's 30 s window): `--long_audio chunk` (default) transcribes it through the same long-form
path as the pipeline (`pipeline_whisper_llada.transcribe`: windows cut at pauses, texts joined); `truncate` keeps the
first 30 s only; `error` refuses to start. Each hypothesis line says `chunked` (with its number of `windows`) or
`truncated`; results.json counts them per split.

Models (`--model`, one or more): each decoding runs on every model it applies to, and all rows go into one table
(e.g. a LLaDA model with A B C and its autoregressive baseline with AR: `--model demo/model runs/demo_ar/model
--decoding A B C AR`). Masked-diffusion decodings apply to LLaDA-decoder models, `AR` ones to causal-decoder models
(`decoder_type: causal`); a decoding that applies to none of the models, or a model left with none, is an error.
A path-like `--model` (`./x`, `/x`, `a/b/c`) that does not exist is an error; so is an `owner/name` that is neither a
local folder nor a loadable Hub model.

Decoding (`--decoding`, one entry per configuration/row):
  * a preset name of `model.generate(decoding=...)`: A (1 step), B (8 steps), C (8 steps x 16 blocks);
  * explicit settings `steps=16,gen_length=128,block_length=32` (the row is named by that string), optionally after a
    preset (`B,gen_length=64`) and with per-row approximations (`B,kv_cache=dual,threshold=0.9,early_stop=1`); parsed
    by `LladaGenerationConfig.parse`, resolved and validated by the model's `generation_config.resolved(...)`;
  * `AR` for a causal (autoregressive) decoder: transformers' greedy decoding with a KV cache up to the model's
    `max_new_tokens`; `AR,num_beams=4` beam search, `AR,max_new_tokens=64` (or `AR,gen_length=64`) another length;
  * `--steps/--gen_length/--block_length` add one explicit configuration (alone, unless `--decoding` is also given).
  `--threshold`, `--kv_cache` and `--early_stop` (Fast-dLLM-style approximations) apply to every masked-diffusion
  configuration that does not set them itself; the row name records them, e.g. `B+dual+thr0.9` (`+es`: early stop).

Metrics:
  * WER (percent, corpus level: edits / reference words) with jiwer after Whisper's English text normaliser and its
    spelling map (`assets/normalizer.json`); references that normalise to nothing are left out. The average WER of a
    row is the mean of its per-split WERs in this run (as in the reference table: dev/test clean/other).
  * RTFx = audio seconds / processing seconds, where processing = feature extraction + encoder + decoding +
    detokenisation of each batch (reading the audio files is not counted), with `torch.cuda.synchronize()` around the
    timings on GPU. Utterances are sorted by duration (longest first) and decoded in batches of `--batch_size`;
    `--warmup_batches` untimed batches run first in each process. Each hypothesis line keeps its batch's id and
    seconds, so the RTFx of a split covers all its utterances, also across a resumed run. The row's "avg RTFx" is
    the total audio seconds over the total processing seconds of all its splits.

Resuming: the hypotheses of each (model, decoding, split) are appended batch by batch, and a killed or interrupted
(Ctrl-C: one line, exit code 130) run resumes where it stopped when the same command is run again. A run signature
next to each hypotheses file (`<file>.meta.json`: the model's resolved path and a fingerprint of its files, dtype,
device type, the resolved decoding settings, the data (split spec, number and hash of the utterance keys), the
long-audio mode, batch size and, when sampling, the seed) must match the new run's: otherwise the run refuses to
start and says what differs. `--overwrite` deletes this run's hypotheses and decodes (and times) everything afresh.

Outputs (in `--output_dir`):
  * `hypotheses_<decoding>_<split>.jsonl` (`hypotheses_<model>_<decoding>_<split>.jsonl` with several models): one
    JSON line per scored utterance (key, audio, reference, hypothesis, normalised texts, duration, chunked, windows,
    truncated, batch_id, batch_seconds, batch_size), and its `.meta.json` run signature.
  * `results.json`: this run only: `{"status": "running"|"complete"|"interrupted"|"failed", "results": [{"model",
    "decoding", "split", "num_utterances", "wer", "rtfx", "audio_seconds", "processing_seconds", "timed_utterances",
    "resumed_utterances", "chunked_utterances", "truncated_utterances", "skipped_utterances", "steps", "gen_length",
    "block_length", ..., "run_signature"}], "skipped": {split: [{key, audio, reason, detail}]}, "model", "device",
    "dtype", "date", ...}`, rewritten after each split.
  * `results.md`: this run's table, shaped like the reference one (rows: model/decoding; columns: WER per split, avg
    WER, avg RTFx). `--plot` also writes `wer_vs_rtfx.png`.
  Both describe this run only: rows of earlier runs into the same directory are not carried over (their hypotheses
  files stay; list all decodings and splits in one run for one table, finished ones resume without decoding).
  * `--model_card DIR` writes (or updates) the model card `DIR/README.md` from this run's results
    (`modelcard_whisper_llada.write_model_card`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation_llada import APPROXIMATE_SETTINGS, LLADA_SETTINGS, LladaGenerationConfig  # noqa: E402
from pipeline_whisper_llada import split_long_audio, transcribe  # noqa: E402
from text_normalization import normalize_text, word_error_counts  # noqa: E402
from whisper_llada_data import (  # noqa: E402
    DataError,
    audio_duration,
    describe_source,
    load_audio,
    load_records,
    parse_hub_spec,
    source_path,
    write_atomic,
)

logger = logging.getLogger("eval_hf")

DEMO_MODEL = ROOT / "demo" / "model"
DEMO_MANIFEST = ROOT / "demo" / "audio" / "manifest.jsonl"
DEMO_OUTPUT = Path("outputs") / "demo_eval"
DEFAULT_DECODINGS = ["A", "B", "C", "AR"]  # each applied to the models it fits (AR: causal decoders only)
AR_PRESET = "AR"
AR_SETTINGS = {"max_new_tokens": int, "gen_length": int, "num_beams": int}  # gen_length: alias of max_new_tokens
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LIBRISPEECH_HUB_SPLITS = {"validation": "dev", "test": "test"}
FULL_HASH_BYTES = 256 * 2**20  # model files up to this size are hashed whole; larger ones by size, mtime, ends
AUDIO_ERRORS = (ValueError, OSError, RuntimeError)  # DataError / AudioInputError are ValueErrors; soundfile raises all


class EvalError(Exception):
    """A problem with the user's input or data: the run ends with one message `error: ...` (exit code 1)."""


# ----------------------------------------------------------------------------------------------------------------------
# Decoding configurations
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Decoding:
    """One row of the table: its name and the `generate()` keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    autoregressive: bool = False

    @property
    def preset(self) -> str | None:
        return AR_PRESET if self.autoregressive else self.kwargs.get("decoding")

    def generate_kwargs(self) -> dict[str, Any]:
        return dict(self.kwargs)

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
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if parts and parts[0] == AR_PRESET:
        return _parse_ar_decoding(text, parts)
    if any(part.partition("=")[0].strip() == "num_beams" for part in parts):
        raise ValueError(f"decoding {text!r}: num_beams applies to AR (autoregressive) decoding only")
    kwargs = LladaGenerationConfig.parse(text)
    base = [kwargs["decoding"]] if "decoding" in kwargs else []
    base += [f"{k}={_format_value(v)}" for k, v in kwargs.items() if k != "decoding" and k not in APPROXIMATE_SETTINGS]
    for key, value in (("threshold", threshold), ("kv_cache", kv_cache), ("early_stop", early_stop or None)):
        if value is not None:
            kwargs.setdefault(key, value)
    kwargs = {k: v for k, v in kwargs.items() if v is not None and not (k == "early_stop" and not v)}
    name = ",".join(base) if base else "default"
    if kwargs.get("kv_cache"):
        name += f"+{kwargs['kv_cache']}"
    if kwargs.get("threshold") is not None:
        name += f"+thr{_format_value(kwargs['threshold'])}"
    if kwargs.get("early_stop"):
        name += "+es"
    return Decoding(name=name, kwargs=kwargs)


def _parse_ar_decoding(text: str, parts: list[str]) -> Decoding:
    kwargs: dict[str, Any] = {}
    for part in parts[1:]:
        key, _, value = (s.strip() for s in part.partition("="))
        if key not in AR_SETTINGS or not value:
            raise ValueError(f"decoding {text!r}: AR decoding takes only max_new_tokens (or gen_length) and "
                             f"num_beams, as key=value; got {part!r}")
        try:
            kwargs["max_new_tokens" if key == "gen_length" else key] = AR_SETTINGS[key](value)
        except ValueError as error:
            raise ValueError(f"decoding {text!r}: bad value for {key}: {value!r}") from error
    return Decoding(name=",".join(parts), kwargs=kwargs, autoregressive=True)


def resolve_settings(model, decoding: Decoding) -> dict[str, Any]:
    """The row's resolved decoding settings (recorded in results.json and the run signature); raises ValueError or
    TypeError for invalid ones."""
    if decoding.autoregressive:
        max_new = decoding.kwargs.get("max_new_tokens") or getattr(model.generation_config, "max_new_tokens", None)
        num_beams = decoding.kwargs.get("num_beams", 1)
        if not isinstance(max_new, int) or max_new < 1 or num_beams < 1:
            raise ValueError(f"max_new_tokens and num_beams must be >= 1, got {max_new}, {num_beams}")
        return {"steps": None, "gen_length": max_new, "block_length": None, "num_blocks": None, "num_beams": num_beams,
                "temperature": 0.0, "remasking": None, "threshold": None, "kv_cache": None, "early_stop": False}
    c = generation_defaults(model).resolved(**decoding.kwargs)
    return {"steps": c.steps, "gen_length": c.gen_length, "block_length": c.block_length, "num_blocks": c.num_blocks,
            "num_beams": 1, "temperature": c.temperature or 0.0, "remasking": c.remasking, "threshold": c.threshold,
            "kv_cache": c.kv_cache, "early_stop": bool(c.early_stop)}


def generation_defaults(model) -> LladaGenerationConfig:
    """The model's decoding defaults. A checkpoint saved by older remote code carries a plain `GenerationConfig` (and
    its defaults partly in config.json): read into the current `LladaGenerationConfig`."""
    if hasattr(model.generation_config, "resolved"):
        return model.generation_config
    values = {k: getattr(model.config, k) for k in LLADA_SETTINGS if getattr(model.config, k, None) is not None}
    values.update({k: v for k, v in model.generation_config.to_dict().items() if k in LLADA_SETTINGS and v is not None})
    ids = {k: getattr(model.config, k, None) for k in ("mask_token_id", "eos_token_id", "pad_token_id")}
    return LladaGenerationConfig(**values, **ids)


# ----------------------------------------------------------------------------------------------------------------------
# Splits: records, durations and bad data
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Split:
    name: str
    spec: str


@dataclass
class SplitData:
    """A split's usable records (duration read from the audio header) and the records skipped, with reasons."""

    split: Split
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)

    def skip(self, record: dict, reason: str, detail: str, on_bad_data: str) -> None:
        item = {"key": str(record.get("key")), "audio": describe_source(record.get("audio")), "reason": reason,
                "detail": detail}
        if on_bad_data == "error":
            raise EvalError(f"split {self.split.name}: {item['audio']} (key {item['key']}): {reason}: {detail} "
                            "(--on_bad_data error; the default, skip, leaves such files out and names them)")
        if item["key"] not in {s["key"] for s in self.skipped}:
            logger.warning("split %s: skipping %s (key %s): %s: %s", self.split.name, item["audio"], item["key"],
                           reason, detail)
            self.skipped.append(item)

    @property
    def skipped_keys(self) -> set[str]:
        return {s["key"] for s in self.skipped}


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


def check_record(record: dict) -> tuple[str | None, str, float | None]:
    """(reason or None, detail, duration from the audio header) for one record."""
    audio = record.get("audio")
    path = source_path(audio)
    if path is not None and not os.path.isfile(path):
        return "missing_audio", "audio file not found", None
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        return "empty_text", "empty transcript", None
    try:
        duration = audio_duration(audio)
    except AUDIO_ERRORS as error:
        return "unreadable_audio", str(error), None
    if not duration > 0:
        return "empty_audio", "audio has no samples", duration
    return None, "", duration


def load_split(split: Split, max_utterances: int | None, on_bad_data: str) -> SplitData:
    """The split's first `max_utterances` usable records, each with its header duration; bad ones are skipped (or
    stop the run with `on_bad_data="error"`)."""
    data = SplitData(split, [])
    seen: set[str] = set()
    for record in load_records(split.spec):
        if max_utterances is not None and len(data.records) >= max_utterances:
            break
        reason, detail, duration = check_record(record)
        if reason is not None:
            data.skip(record, reason, detail, on_bad_data)
            continue
        if record["key"] in seen:
            raise DataError(f"{split.spec}: duplicate utterance key {record['key']!r}")
        seen.add(record["key"])
        data.records.append({**record, "key": str(record["key"]), "duration": duration})
    if not data.records:
        raise DataError(f"{split.spec}: no usable utterances ({len(data.skipped)} skipped)")
    return data


def load_splits(args: argparse.Namespace) -> list[SplitData]:
    splits = []
    for split in parse_splits(args.data):
        try:
            data = load_split(split, args.max_utterances, args.on_bad_data)
        except (DataError, OSError) as error:  # OSError: the Hub unreachable
            raise EvalError(f"split {split.name} ({split.spec}): {error}") from error
        seconds = sum(r["duration"] for r in data.records)
        logger.info("split %s (%s): %d utterances, %.1f min%s", split.name, split.spec, len(data.records), seconds / 60,
                    f", {len(data.skipped)} skipped" if data.skipped else "")
        splits.append(data)
    return splits


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalError("--device cuda was asked for but CUDA is not available")
    return device


def looks_like_path(name: str) -> bool:
    """`./x`, `../x`, `/x`, `~/x`, `x/`, `a/b/c`: a local path, never a Hub id (`owner/name`)."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or name.endswith(("/", "\\"))
            or name.count("/") > 1 or "\\" in name)


def check_model_argument(name: str) -> None:
    """A clear error for a local model folder that does not exist (instead of a Hub traceback)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EvalError(f"model path {name} is not a folder")
        if not (path / "config.json").is_file():
            raise EvalError(f"model folder {name} has no config.json (not a saved whisper-llada model)")
    elif looks_like_path(name):
        raise EvalError(f"model path {name} does not exist")


def load_model_and_processor(model_name_or_path: str, dtype: torch.dtype, device: torch.device):
    """`AutoModel` + `AutoProcessor` with `trust_remote_code=True`."""
    from transformers import AutoModel, AutoProcessor

    check_model_argument(model_name_or_path)
    try:
        model = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=True, dtype=dtype)
        processor = AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=True)
    except (OSError, ValueError) as error:
        if Path(model_name_or_path).expanduser().exists():
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvalError(f"model path {model_name_or_path} does not exist, and it could not be loaded as a Hub model "
                        f"id either ({first})") from error
    return model.to(device).eval(), processor


def model_directory(name_or_path: str) -> Path | None:
    """The local folder the model was loaded from (a Hub id: its snapshot in the cache), or None."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from transformers.utils import cached_file

        return Path(cached_file(name_or_path, "config.json")).parent.resolve()
    except Exception:  # noqa: BLE001 - no local copy: the id alone identifies it
        return None


def model_identity(name_or_path: str) -> dict[str, Any]:
    """The resolved model folder and a fingerprint of its files (everything but README.md; files up to 256 MB by
    content, larger ones by size, modification time and their first and last MB)."""
    folder = model_directory(name_or_path)
    if folder is None:
        return {"path": name_or_path, "fingerprint": None}
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name == "README.md" or path.suffix == ".tmp":
            continue
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0".encode())
        with open(path, "rb") as handle:
            if stat.st_size <= FULL_HASH_BYTES:
                for chunk in iter(lambda: handle.read(2**20), b""):
                    digest.update(chunk)
            else:
                digest.update(f"{stat.st_mtime_ns}\0".encode())
                digest.update(handle.read(2**20))
                handle.seek(-(2**20), os.SEEK_END)
                digest.update(handle.read(2**20))
    return {"path": str(folder), "fingerprint": digest.hexdigest()[:20]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class LoadedModel:
    path: str  # as given
    label: str  # in the table
    model: Any
    processor: Any
    identity: dict[str, Any]
    tag: str | None  # file-name prefix of its hypotheses files when several models are evaluated
    warmups_left: int = 0


def load_models(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> list[LoadedModel]:
    several = len(args.models) > 1
    loaded = []
    for path, label in zip(args.models, args.model_labels):
        model, processor = load_model_and_processor(path, dtype, device)
        loaded.append(LoadedModel(path, label, model, processor, model_identity(path),
                                  safe_name(label) if several else None, args.warmup_batches))
    return loaded


# ----------------------------------------------------------------------------------------------------------------------
# Files: atomic writes, hypotheses and their run signatures
# ----------------------------------------------------------------------------------------------------------------------


def read_hypotheses(path: Path) -> dict[str, dict]:
    """The finished utterances of an earlier (possibly killed) run, by key. A partly written last line is cut off and
    unreadable lines are dropped, so that appending continues a clean file."""
    if not path.exists():
        return {}
    *lines, tail = path.read_bytes().split(b"\n")  # after the last newline: nothing, or a line cut short by a kill
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
        write_atomic(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in done.values()))
    return done


def run_signature(loaded: LoadedModel, settings: dict, data: SplitData, args, dtype_name: str, device) -> dict:
    """Everything that affects a hypotheses file's content or timing."""
    keys = sorted(r["key"] for r in data.records)
    spec = data.split.spec
    if not spec.startswith("hub:") and Path(spec).expanduser().exists():
        spec = str(Path(spec).expanduser().resolve())
    signature = {
        "model": loaded.identity,
        "dtype": dtype_name,
        "device_type": device.type,
        "decoding": settings,
        "data": {"spec": spec, "utterances": len(keys),
                 "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]},
        "long_audio": args.long_audio,
        "batch_size": args.batch_size,
    }
    if settings.get("temperature"):
        signature["seed"] = args.seed
    return signature


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


def signature_differences(old: dict, new: dict) -> list[str]:
    """`["dtype: float32 -> float16", ...]` for the settings that differ."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    return [f"{key}: {old_flat.get(key, '(not recorded)')} -> {new_flat.get(key, '(not recorded)')}"
            for key in sorted(set(old_flat) | set(new_flat)) if old_flat.get(key) != new_flat.get(key)]


def meta_path(hypotheses: Path) -> Path:
    return hypotheses.with_name(hypotheses.name[: -len(".jsonl")] + ".meta.json")


def check_resumable(path: Path, signature: dict, overwrite: bool) -> str | None:
    """None if the hypotheses file can be resumed (or there is none); with `overwrite` the old files are deleted.
    Otherwise the reason it cannot."""
    meta = meta_path(path)
    if overwrite or (path.exists() and path.stat().st_size == 0):
        path.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        return None
    if not path.exists():
        return None
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))["run_signature"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name}: no readable run signature ({meta.name}): written by an older eval_hf.py or edited"
    differences = signature_differences(old, signature)
    return f"{path.name}: written by a different run: {'; '.join(differences)}" if differences else None


# ----------------------------------------------------------------------------------------------------------------------
# Jobs: one (model, decoding, split) each, planned and checked before anything is decoded
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    loaded: LoadedModel
    decoding: Decoding
    settings: dict
    data: SplitData
    signature: dict
    path: Path  # hypotheses file


def plan_jobs(args, models: list[LoadedModel], splits: list[SplitData], out_dir: Path, dtype_name, device) -> list[Job]:
    """Every (model, decoding) pair validated, long audio checked, and every hypotheses file checked for resuming."""
    jobs: list[Job] = []
    used = set()
    for loaded in models:
        pairs = []
        for decoding in args.decodings:
            if decoding.applies_to(loaded.model):
                try:
                    pairs.append((decoding, resolve_settings(loaded.model, decoding)))
                except (ValueError, TypeError) as error:
                    raise EvalError(f"model {loaded.label}, decoding {decoding.name}: {error}") from error
                used.add(decoding.name)
        if not pairs:
            kind = getattr(loaded.model.config, "decoder_type", "llada")
            raise EvalError(f"none of the decodings {[d.name for d in args.decodings]} applies to model {loaded.label} "
                            f"({kind} decoder: {'AR' if kind == 'causal' else 'A, B, C or explicit steps'})")
        for decoding, settings in pairs:
            for data in splits:
                stem = f"{safe_name(decoding.name)}_{safe_name(data.split.name)}"
                name = f"hypotheses_{loaded.tag}_{stem}.jsonl" if loaded.tag else f"hypotheses_{stem}.jsonl"
                signature = run_signature(loaded, settings, data, args, dtype_name, device)
                jobs.append(Job(loaded, decoding, settings, data, signature, out_dir / name))
    paths = [job.path.name for job in jobs]
    if len(set(paths)) != len(paths):
        raise EvalError(f"two models would write the same hypotheses files ({paths}); give them distinct names")
    unused = [d.name for d in args.decodings if d.name not in used]
    if unused and not args.default_decodings:
        raise EvalError(f"decodings {unused} apply to none of the models (AR needs a causal-decoder model, the others "
                        "a LLaDA-decoder model)")
    if args.long_audio == "error":
        window = min(m.processor.feature_extractor.chunk_length for m in models)
        long = [f"{r['audio'] if isinstance(r['audio'], str) else r['key']} ({r['duration']:.1f} s)"
                for data in splits for r in data.records if r["duration"] > window]
        if long:
            raise EvalError(f"{len(long)} utterance(s) longer than the encoder's {window} s window (--long_audio "
                            f"error): {', '.join(long[:10])}{' ...' if len(long) > 10 else ''}")
    problems = [p for job in jobs if (p := check_resumable(job.path, job.signature, args.overwrite))]
    if problems:
        raise EvalError(
            f"{args.output_dir} holds hypotheses this run cannot resume:\n  " + "\n  ".join(problems)
            + "\nRerun with --overwrite to decode afresh (this run's hypotheses files are replaced), or choose another "
            "--output_dir."
        )
    return jobs


# ----------------------------------------------------------------------------------------------------------------------
# Decoding with timing
# ----------------------------------------------------------------------------------------------------------------------


def read_batch_audio(job: Job, batch: list[dict], args) -> tuple[list[dict], list[np.ndarray], list[dict]]:
    """The batch's waveforms (`--long_audio truncate`: cut to the encoder's window); unreadable ones are skipped."""
    rate = job.loaded.processor.feature_extractor.sampling_rate
    max_samples = job.loaded.processor.feature_extractor.n_samples
    kept, waves, info = [], [], []
    for record in batch:
        try:
            wave = load_audio(record["audio"], rate)
        except AUDIO_ERRORS as error:
            job.data.skip(record, "unreadable_audio", str(error), args.on_bad_data)
            continue
        long = len(wave) > max_samples
        if long and args.long_audio == "error":
            raise EvalError(f"{describe_source(record['audio'])} (key {record['key']}): {len(wave) / rate:.1f} s of "
                            f"audio is longer than the encoder's {max_samples / rate:.0f} s window "
                            "(--long_audio error)")
        truncated = long and args.long_audio == "truncate"
        wave = wave[:max_samples] if truncated else wave
        windows = len(split_long_audio(wave, rate)) if long and not truncated else 1
        kept.append(record)
        waves.append(wave)
        info.append({"duration": round(len(wave) / rate, 4), "chunked": windows > 1, "windows": windows,
                     "truncated": truncated})
    return kept, waves, info


def decode_job(job: Job, args, run_id: str) -> tuple[dict[str, dict], int, int]:
    """Decodes the job's utterances not yet in its hypotheses file, appending each batch; returns the file's entries
    by key, and how many utterances were resumed and timed in this run."""
    loaded, device = job.loaded, job.loaded.model.device
    done = read_hypotheses(job.path)
    pending = [r for r in job.data.records if r["key"] not in done and r["key"] not in job.data.skipped_keys]
    pending.sort(key=lambda r: r["duration"], reverse=True)
    resumed = sum(r["key"] in done for r in job.data.records)
    if resumed:
        logger.info("%s / %s: resuming, %d of %d utterances already in %s", job.decoding.name, job.data.split.name,
                    resumed, len(job.data.records), job.path.name)
    kwargs = dict(job.decoding.generate_kwargs(), batch_size=args.batch_size)
    timed = 0
    from tqdm.auto import tqdm

    with tqdm(total=len(job.data.records), initial=resumed, desc=f"{job.decoding.name} {job.data.split.name}",
              unit="utt", disable=args.no_progress) as bar:
        for number, start in enumerate(range(0, len(pending), args.batch_size)):
            batch, waves, info = read_batch_audio(job, pending[start : start + args.batch_size], args)
            bar.update(len(pending[start : start + args.batch_size]) - len(batch))
            if not batch:
                continue
            while loaded.warmups_left > 0:  # untimed: first-call costs (CUDA context, kernels, allocator)
                transcribe(loaded.model, loaded.processor, waves, **kwargs)
                loaded.warmups_left -= 1
            synchronize(device)
            begin = time.perf_counter()
            hypotheses = transcribe(loaded.model, loaded.processor, waves, **kwargs)
            synchronize(device)
            elapsed = time.perf_counter() - begin
            entries = [{
                "key": record["key"],
                "audio": describe_source(record["audio"]),
                "reference": record["text"],
                "hypothesis": hypothesis,
                "reference_normalized": normalize_text(record["text"]),
                "hypothesis_normalized": normalize_text(hypothesis),
                **extra,
                "batch_id": f"{run_id}-{number}",
                "batch_seconds": round(elapsed, 6),
                "batch_size": len(batch),
            } for record, hypothesis, extra in zip(batch, hypotheses, info)]
            append_hypotheses(job, entries)
            done.update((e["key"], e) for e in entries)
            timed += len(batch)
            bar.update(len(batch))
    return done, resumed, timed


def append_hypotheses(job: Job, entries: list[dict]) -> None:
    """One write per batch; the run signature is written with the first batch (no empty files on a crash)."""
    if not job.path.exists():
        write_atomic(meta_path(job.path), json.dumps({"run_signature": job.signature}, indent=2) + "\n")
    with open(job.path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        handle.flush()


# ----------------------------------------------------------------------------------------------------------------------
# Scoring and writing
# ----------------------------------------------------------------------------------------------------------------------


def score_job(job: Job, done: dict[str, dict], resumed: int, timed: int) -> dict:
    """WER, RTFx (all utterances of the split, from the per-batch timings) and counts: one results.json entry."""
    entries = [done[r["key"]] for r in job.data.records if r["key"] in done]
    counts = word_error_counts([normalize_text(e["reference"]) for e in entries],
                               [normalize_text(e["hypothesis"]) for e in entries])
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    batches = {e.get("batch_id"): e.get("batch_seconds") or 0.0 for e in entries}
    audio_seconds = sum(e["duration"] for e in entries)
    processing_seconds = sum(batches.values())
    return {
        "model": job.loaded.path,
        "model_label": job.loaded.label,
        "decoding": job.decoding.name,
        "split": job.data.split.name,
        "num_utterances": len(entries),
        "wer": 100.0 * errors / counts["reference_words"] if counts["reference_words"] else None,
        "rtfx": audio_seconds / processing_seconds if processing_seconds > 0 else None,
        "audio_seconds": audio_seconds,
        "processing_seconds": processing_seconds,
        "timed_utterances": timed,
        "resumed_utterances": resumed,
        "resumed": resumed > 0,
        "chunked_utterances": sum(bool(e.get("chunked")) for e in entries),
        "truncated_utterances": sum(bool(e.get("truncated")) for e in entries),
        "skipped_utterances": len(job.data.skipped),
        "reference_words": counts["reference_words"],
        "substitutions": counts["substitutions"],
        "deletions": counts["deletions"],
        "insertions": counts["insertions"],
        "empty_references": counts["empty_references"],
        "preset": job.decoding.preset,
        **job.settings,
        "batch_size": job.signature["batch_size"],
        "hypotheses_file": job.path.name,
        "run_signature": job.signature,
    }


def row_summaries(results: list[dict], split_names: list[str]) -> list[dict]:
    """Per model and decoding: mean WER over its splits and RTFx over all splits (total audio / total processing
    seconds)."""
    rows: dict[tuple[str, str], dict] = {}
    for result in results:
        model = result.get("model_label") or result.get("model", "")
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


def markdown_table(report: dict) -> str:
    split_names = list(report["splits"])
    header = ["model", "decoding", "steps / gen / block", *split_names, "avg WER", "avg RTFx"]
    lines = [
        f"WER (%) after Whisper's English normaliser; RTFx = audio seconds / processing seconds. "
        f"Device {report['device']}, {report['dtype']}, batch size {report['batch_size']}, {report['date']}"
        f"{'' if report['status'] == 'complete' else ' (' + report['status'] + ')'}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---"] + ["---:"] * (len(split_names) + 2)) + "|",
    ]
    for row in row_summaries(report["results"], split_names):
        s = row["settings"]
        steps = " / ".join("–" if s.get(k) is None else str(s[k]) for k in ("steps", "gen_length", "block_length"))
        cells = [row["model"], row["decoding"], steps]
        cells += [_cell(row["wer"][name], 2) for name in split_names]
        cells += [_cell(row["avg_wer"], 2), _cell(row["avg_rtfx"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = sum(len(items) for items in report["skipped"].values())
    long = {}  # per split: utterances over 30 s (the same in every row of the split)
    for r in report["results"]:
        long[r["split"]] = max(long.get(r["split"], 0), r["chunked_utterances"] + r["truncated_utterances"])
    how = {"chunk": "transcribed long-form (chunked)", "truncate": "truncated to the first 30 s"}
    lines += [
        "",
        "avg WER: mean of the row's per-split WERs in this run. avg RTFx: total audio seconds / total processing "
        "seconds over the splits (feature extraction + encoder + decoding + detokenisation)."
        + (" AR rows: autoregressive decoding (greedy, or beam search with num_beams) of a causal-decoder model."
           if any(r.get("preset") == AR_PRESET for r in report["results"]) else "")
        + (f" {skipped} unreadable or unusable utterance(s) were skipped (results.json: skipped)." if skipped else "")
        + (f" {sum(long.values())} utterance(s) over 30 s {how.get(report['long_audio'], '')}." if any(long.values())
           else ""),
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict) -> None:
    write_atomic(out_dir / "results.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomic(out_dir / "results.md", markdown_table(report))


def plot_wer_rtfx(report: dict, path: Path) -> bool:
    rows = [r for r in row_summaries(report["results"], list(report["splits"]))
            if r["avg_wer"] is not None and r["avg_rtfx"]]
    if not rows:
        logger.warning("--plot: no row has both a WER and an RTFx; no plot written")
        return False
    several = len({r["model"] for r in rows}) > 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        axes.scatter(row["avg_rtfx"], row["avg_wer"])
        text = f"{row['model']}: {row['decoding']}" if several else row["decoding"]
        axes.annotate(text, (row["avg_rtfx"], row["avg_wer"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    rtfx = [r["avg_rtfx"] for r in rows]
    if max(rtfx) / min(rtfx) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("RTFx (higher is faster)")
    axes.set_ylabel(f"average WER (%) over {len(report['splits'])} split(s)")
    axes.set_title(f"{report['model_label']} ({report['device']}, {report['dtype']})", fontsize=9)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_model_card(directory: str, report: dict, models: list[LoadedModel]) -> Path:
    """DIR/README.md from this run's results: the rows of the model loaded from DIR, or all rows."""
    from modelcard_whisper_llada import is_generated_card
    from modelcard_whisper_llada import write_model_card as write_card

    resolved = str(Path(directory).expanduser().resolve())
    own = [m.path for m in models if m.identity["path"] == resolved]
    rows = [r for r in report["results"] if r["model"] in own] if own else report["results"]
    path = write_card(directory, results={**report, "results": rows})
    if not is_generated_card(path):
        logger.warning("%s was not written by whisper-llada: left as is (modelcard_whisper_llada.py --overwrite)", path)
    return path


def skipped_summary(report: dict) -> str:
    items = [(split, item) for split, skipped in report["skipped"].items() for item in skipped]
    if not items:
        return ""
    lines = [f"Skipped {len(items)} utterance(s) (not scored; results.json: skipped):"]
    lines += [f"  {split}: {item['audio']} (key {item['key']}): {item['reason']}: {item['detail']}"
              for split, item in items]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval_hf.py",
        description="WER and RTFx of a whisper-llada model per split and decoding configuration. Without arguments: "
        "the bundled demo model on the bundled clips, decodings A B C, into outputs/demo_eval.",
        epilog="See the module docstring (or README) for the data, decoding, resume and output formats.",
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
    parser.add_argument("--long_audio", choices=["chunk", "truncate", "error"], default="chunk",
                        help="audio over the encoder's 30 s window: chunk (default: long-form transcription, windows "
                        "cut at pauses), truncate (first 30 s only) or error (refuse)")
    parser.add_argument("--on_bad_data", choices=["skip", "error"], default="skip",
                        help="missing/unreadable audio or empty transcripts: skip (default; counted and named) or "
                        "error (stop at the first one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="decode and time everything afresh, replacing this run's hypotheses files")
    parser.add_argument("--model_card", default=None, metavar="DIR",
                        help="write/update the model card DIR/README.md from this run's results")
    parser.add_argument("--warmup_batches", type=int, default=1,
                        help="untimed batches before the first timing (default: 1)")
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
    explicit = [f"{k}={v}" for k in ("steps", "gen_length", "block_length") if (v := getattr(args, k)) is not None]
    specs = list(args.decoding or ([] if explicit else DEFAULT_DECODINGS))
    if explicit:
        specs.append(",".join(explicit))
    try:
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
    if args.model_card is not None and not (Path(args.model_card).expanduser() / "config.json").is_file():
        parser.error(f"--model_card {args.model_card}: not a model folder (no config.json)")
    args.data = args.data or [f"demo={DEMO_MANIFEST}"]
    args.output_dir = args.output_dir or str(DEMO_OUTPUT)
    return args


def new_report(args, splits: list[SplitData], device: torch.device, dtype_name: str) -> dict:
    device_name = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)")
    return {
        "status": "running",
        "results": [],
        "skipped": {d.split.name: d.skipped for d in splits},
        "model": args.model,
        "model_label": args.model_label,
        "models": args.models,
        "device": device_name,
        "dtype": dtype_name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "batch_size": args.batch_size,
        "long_audio": args.long_audio,
        "splits": {d.split.name: d.split.spec for d in splits},
        "max_utterances": args.max_utterances,
        "resumed": False,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "rtfx_note": "RTFx = audio_seconds / processing_seconds over all scored utterances; each batch's seconds are "
        "kept with its hypotheses, so a resumed run counts the batches timed before the interruption too.",
    }


def evaluate(args: argparse.Namespace, out_dir: Path) -> dict:
    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.manual_seed(args.seed)
    for model in args.models:  # a mistyped folder fails at once, before the data is read
        check_model_argument(model)
    splits = load_splits(args)
    models = load_models(args, DTYPES[dtype_name], device)
    jobs = plan_jobs(args, models, splits, out_dir, dtype_name, device)
    report = new_report(args, splits, device, dtype_name)
    run_id = f"{datetime.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"  # batch ids: unique across runs
    try:
        for job in jobs:
            done, resumed, timed = decode_job(job, args, run_id)
            entry = score_job(job, done, resumed, timed)
            report["results"].append(entry)
            report["resumed"] |= entry["resumed"]
            write_report(out_dir, report)
            logger.info("%s%s / %s: WER %s, RTFx %s (%d utterances%s)",
                        f"{job.loaded.label}: " if job.loaded.tag else "", entry["decoding"], entry["split"],
                        _cell(entry["wer"], 2), _cell(entry["rtfx"], 1), entry["num_utterances"],
                        f", {resumed} resumed" if resumed else "")
    except BaseException as error:
        report["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        write_report(out_dir, report)
        raise
    report["status"] = "complete"
    write_report(out_dir, report)
    if args.plot and plot_wer_rtfx(report, out_dir / "wer_vs_rtfx.png"):
        logger.info("wrote %s", out_dir / "wer_vs_rtfx.png")
    if args.model_card:
        logger.info("wrote %s", write_model_card(args.model_card, report, models))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("whisper_llada_data").setLevel(logging.WARNING)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = evaluate(args, out_dir)
    except KeyboardInterrupt:
        print(f"\ninterrupted: results so far are in {out_dir} (hypotheses_*.jsonl, results.json); rerun the same "
              "command to resume", file=sys.stderr, flush=True)
        return 130
    except EvalError as error:
        raise SystemExit(f"error: {error}") from None
    print(markdown_table(report))
    summary = skipped_summary(report)
    if summary:
        print(summary)
    logger.info("wrote %s and %s", out_dir / "results.json", out_dir / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
