"""What an evaluation (eval_hf.py, `whisper_llada_eval`) reads: its splits and its models.

    parse_splits / load_splits   `SPEC` or `NAME=SPEC` entries (LibriSpeech directory, JSON-lines manifest,
                                 hub:NAME[:CONFIG[:SPLIT]]) -> `SplitData`: the usable records, each with its duration
                                 read from the audio header, and the records skipped (missing, unreadable or empty
                                 audio, empty transcript) with their reasons; `on_bad_data="error"` stops at the first
    load_models                  paths or Hub ids -> `LoadedModel`: model and processor (remote code), and the
                                 identity a run signature records (`model_identity`: resolved folder + fingerprint)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from whisper_llada_data import DataError, load_records, parse_hub_spec
from whisper_llada_io import audio_duration, describe_source, source_path

logger = logging.getLogger("eval_hf")

LIBRISPEECH_HUB_SPLITS = {"validation": "dev", "test": "test"}
FULL_HASH_BYTES = 256 * 2**20  # model files up to this size are hashed whole; larger ones by size, mtime, ends
AUDIO_ERRORS = (ValueError, OSError, RuntimeError)  # DataError / AudioInputError are ValueErrors; soundfile raises all


class EvalError(Exception):
    """A problem with the user's input or data: eval_hf.py ends with one message `error: ...` (exit code 1)."""


# ----------------------------------------------------------------------------------------------------------------------
# Splits: records, durations and bad data
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Split:
    name: str  # in the table and the file names
    spec: str  # directory, manifest or hub:NAME[:CONFIG[:SPLIT]]


@dataclass
class SplitData:
    """A split's usable records (each with its `duration` from the audio header) and the records skipped."""

    split: Split
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)  # {key, audio, reason, detail}

    def skip(self, record: dict, reason: str, detail: str, on_bad_data: str) -> None:
        """Records a bad record (once per key) with a warning; `on_bad_data="error"` raises EvalError instead."""
        item = {"key": str(record.get("key")), "audio": describe_source(record.get("audio")), "reason": reason,
                "detail": detail}
        if on_bad_data == "error":
            raise EvalError(f"split {self.split.name}: {item['audio']} (key {item['key']}): {reason}: {detail} "
                            "(--on_bad_data error; the default, skip, leaves such files out and names them)")
        if item["key"] not in self.skipped_keys:
            logger.warning("split %s: skipping %s (key %s): %s: %s", self.split.name, item["audio"], item["key"],
                           reason, detail)
            self.skipped.append(item)

    @property
    def skipped_keys(self) -> set[str]:
        return {s["key"] for s in self.skipped}


def default_split_name(spec: str) -> str:
    """A directory's or manifest's name; a Hub split's name (LibriSpeech: dev-clean, test-other, ...)."""
    if spec.startswith("hub:"):
        dataset, config, split = parse_hub_spec(spec)
        if "librispeech" in dataset.lower() and config in ("clean", "other") and split in LIBRISPEECH_HUB_SPLITS:
            return f"{LIBRISPEECH_HUB_SPLITS[split]}-{config}"
        return split
    path = Path(spec).expanduser()
    return path.resolve().name if path.is_dir() else path.stem


def parse_splits(entries: list[str]) -> list[Split]:
    """`SPEC` or `NAME=SPEC` entries -> named splits (a repeated name gets -2, -3, ...)."""
    splits: list[Split] = []
    for entry in entries:
        match = re.fullmatch(r"([A-Za-z0-9_.+-]+)=(.+)", entry)
        name, spec = match.groups() if match and not os.path.exists(entry) else (default_split_name(entry), entry)
        taken = {s.name for s in splits}
        unique, counter = name, 2
        while unique in taken:
            unique, counter = f"{name}-{counter}", counter + 1
        splits.append(Split(unique, spec))
    return splits


def safe_name(name: str) -> str:
    """A file-name-safe version of a model/decoding/split name."""
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
    """The split's first `max_utterances` usable records; bad ones are skipped (`on_bad_data="skip"`) or stop the
    run (`"error"`)."""
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


def load_splits(entries: list[str], max_utterances: int | None, on_bad_data: str) -> list[SplitData]:
    """`load_split` of each `SPEC` / `NAME=SPEC` entry; a split that cannot be read is an EvalError."""
    splits = []
    for split in parse_splits(entries):
        try:
            data = load_split(split, max_utterances, on_bad_data)
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX): there bf16 decodes the demo clips
    about 2.2x faster than float32 (230 s vs 503 s for A-D) with WER within five words of 455 (docs/evaluation.md);
    elsewhere it is slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def spread_subset(data: SplitData, count: int | None) -> SplitData:
    """`data` itself, or `count` of its records spread evenly over it (every len/count-th: e.g. one clip per speaker
    of the demo clips), for a decoding limited with --limit."""
    if not count or count >= len(data.records):
        return data
    step = len(data.records) / count
    return SplitData(data.split, [data.records[int(i * step)] for i in range(count)], data.skipped)


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
    """`AutoModel` + `AutoProcessor` with `trust_remote_code=True`, on `device` in eval mode."""
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
    if not hasattr(model, "resolve_decoding"):
        raise EvalError(f"model {model_name_or_path}: its modeling_whisper_llada.py predates the typed decoding "
                        "settings (no resolve_decoding); re-save it with this package's code")
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


@dataclass
class LoadedModel:
    """A model under evaluation, with what names it and what identifies it."""

    path: str  # as given
    label: str  # in the table
    model: Any
    processor: Any
    identity: dict[str, Any]  # model_identity(path)
    tag: str | None  # file-name prefix of its hypotheses files when several models are evaluated
    warmups_left: int = 0


def load_models(paths: list[str], labels: list[str], dtype: torch.dtype, device: torch.device,
                warmup_batches: int) -> list[LoadedModel]:
    """Each model with its processor and identity; with several, each gets a file-name tag from its label."""
    several = len(paths) > 1
    loaded = []
    for path, label in zip(paths, labels):
        model, processor = load_model_and_processor(path, dtype, device)
        loaded.append(LoadedModel(path, label, model, processor, model_identity(path),
                                  safe_name(label) if several else None, warmup_batches))
    return loaded


__all__ = ["EvalError", "Split", "SplitData", "cpu_has_native_bf16", "spread_subset", "parse_splits", "load_splits", "safe_name", "resolve_device",
           "check_model_argument", "load_model_and_processor", "model_identity", "LoadedModel", "load_models"]
