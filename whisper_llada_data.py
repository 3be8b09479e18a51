"""Data helpers for training and evaluating whisper-llada.

This module is used by the training / evaluation scripts. It is *not* part of
the remote-code package that ships with a checkpoint, so it may depend on
``soundfile``, ``soxr`` and (lazily) ``datasets``.

Everything revolves around one record type, a plain ``dict``::

    {"key": "118-47824-0000",          # utterance id
     "audio": <audio source>,          # see ``whisper_llada_io``
     "text": "CHAPTER SEVEN ...",      # reference transcript (raw)
     "duration": 17.1}                 # seconds, or None when unknown

Records come from three kinds of places, all reachable through
``load_records(spec)``:

* a JSON-lines manifest (``read_manifest``): NeMo style
  ``{"audio_filepath", "duration", "text"}`` or the reference implementation's
  ``{"key", "source", "target", "processed_target"}``;
* a local LibriSpeech split directory (``scan_librispeech``);
* a dataset on the Hugging Face Hub, streamed (``hf_librispeech``), written as
  ``hub:NAME[:CONFIG[:SPLIT]]``.

``filter_records`` drops (or rejects) unusable records. Audio sources (names,
paths, durations, decoding) and safe file writes live in ``whisper_llada_io``;
``whisper_llada_data_prep`` writes NeMo-style manifests (``write_manifest`` /
``create_manifest``) and tokenizers, and runs this module's command line::

    python whisper_llada_data_prep.py create-manifest DIR [DIR ...] --output OUT.jsonl \\
        [--include-speakers ID ...] [--exclude-speakers ID ...] [--speakers-out FILE]

builds one from LibriSpeech directories, optionally holding out whole speakers;

    python whisper_llada_data_prep.py train-tokenizer TRAIN.jsonl [...] --vocab-size 1024 -o tokenizer.json

trains a small byte-level BPE on their transcripts for a decoder trained from scratch (``train_bpe_tokenizer``).

Errors are raised as subclasses of ``DataError`` (itself a ``ValueError``) with
one message that names the offending file (or ``<bytes>``) and the problem.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional, TypedDict

import soundfile as sf

from whisper_llada_io import (AudioLoadError, AudioSource, PathLike, audio_duration, describe_source, soundfile_detail,
                              source_path)

logger = logging.getLogger("whisper_llada_data")

#: Sampling rate expected by the Whisper feature extractor.
DEFAULT_SAMPLING_RATE = 16000

#: Default Hub dataset used by ``hf_librispeech`` / ``load_records("hub:...")``.
DEFAULT_HUB_NAME = "openslr/librispeech_asr"
DEFAULT_HUB_CONFIG = "clean"
DEFAULT_HUB_SPLIT = "train.100"

#: Reason keys used by ``filter_records`` in its ``stats`` counter.
REASON_MISSING_AUDIO = "missing_audio"
REASON_UNREADABLE_AUDIO = "unreadable_audio"
REASON_EMPTY_AUDIO = "empty_audio"
REASON_EMPTY_TEXT = "empty_text"
REASON_TEXT_TOO_LONG = "text_too_long"
REASON_AUDIO_TOO_LONG = "audio_too_long"


class Record(TypedDict):
    """One utterance. Records are plain dicts; this type only documents them."""

    key: str
    audio: AudioSource
    text: str
    duration: Optional[float]


# --------------------------------------------------------------------------- errors


class DataError(ValueError):
    """Base class for the data errors raised by this module."""


class ManifestError(DataError):
    """A manifest file (or a line in it) is malformed."""


class BadRecordError(DataError):
    """A record failed a check in ``filter_records(on_bad="error")``."""


# --------------------------------------------------------------------------- text


def normalize_transcript(text: str) -> str:
    """Turn a LibriSpeech transcript into a training target.

    LibriSpeech references are upper case without punctuation. The target is
    simply ``text.lower()`` with runs of whitespace collapsed to one space and
    the ends stripped; apostrophes and everything else are kept as they are.

    >>> normalize_transcript("  I DON'T  DARE\\n")
    "i don't dare"
    """
    return " ".join(text.lower().split())


def speaker_of(key: str) -> str:
    """Return the speaker id of a LibriSpeech key: its first ``-``-separated field."""
    return str(key).split("-", 1)[0]


# --------------------------------------------------------------------------- manifests

_MANIFEST_FORMATS = (
    'expected a JSON object with either NeMo fields {"audio_filepath", "text", "duration" (optional)} '
    'or reference fields {"key", "source", "target" or "processed_target"}'
)


def _parse_manifest_entry(entry: Any, manifest: Path, lineno: int) -> Record:
    """Turn one decoded manifest line into a record (see ``read_manifest``)."""

    def fail(problem: str) -> ManifestError:
        return ManifestError(f"{manifest}:{lineno}: {problem}; {_MANIFEST_FORMATS}")

    if not isinstance(entry, dict):
        raise fail(f"line is a JSON {type(entry).__name__}, not an object")

    if "audio_filepath" in entry:
        audio_field = "audio_filepath"
        text = entry.get("text")
        text_fields = '"text"'
    elif "source" in entry:
        audio_field = "source"
        text = entry.get("target")
        if text is None:
            text = entry.get("processed_target")
        text_fields = '"target" or "processed_target"'
    else:
        raise fail('no audio field ("audio_filepath" or "source")')

    audio = entry[audio_field]
    if not isinstance(audio, str) or not audio:
        raise fail(f'"{audio_field}" must be a non-empty string, got {audio!r}')
    if text is None:
        raise fail(f"no transcript field ({text_fields})")
    if not isinstance(text, str):
        raise fail(f"transcript must be a string, got {type(text).__name__}")

    duration = entry.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise fail(f'"duration" must be a number, got {duration!r}')
        duration = float(duration)

    audio_path = Path(audio).expanduser()
    if not audio_path.is_absolute():
        audio_path = manifest.parent / audio_path

    key = entry.get("key")
    if key is None:
        key = audio_path.stem
    return {"key": str(key), "audio": str(audio_path), "text": text, "duration": duration}


def _text_lines(path: Path, error: type[DataError] = DataError) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for the lines of a UTF-8 text file (a leading BOM is dropped).

    Raises:
        error: a line is not valid UTF-8; the message gives ``file:line``, the
            column and the offending byte (the file's encoding must be UTF-8).
    """
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise error(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "save the file as UTF-8"
                ) from None


def read_manifest(path: PathLike) -> list[Record]:
    """Read a JSON-lines manifest into a list of records.

    Two line formats are accepted (and may be mixed):

    * NeMo: ``{"audio_filepath": ..., "text": ..., "duration": ...}`` (duration
      optional; an optional ``"key"`` is kept, else the file stem is the key);
    * the reference implementation: ``{"key": ..., "source": <audio path>,
      "target": ..., "processed_target": ...}``; ``"target"`` is the text, or
      ``"processed_target"`` when ``"target"`` is absent.

    Relative audio paths are resolved against the manifest's directory. Blank
    lines are ignored. Audio files are not opened here (see ``filter_records``).

    Raises:
        ManifestError: the file is missing or empty, or a line is not valid UTF-8
            or not valid JSON, or lacks the audio or text field; the message gives ``file:line`` and
            the expected fields.
    """
    manifest = Path(path).expanduser().absolute()
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest file not found")
    records: list[Record] = []
    for lineno, line in _text_lines(manifest, ManifestError):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(
                f"{manifest}:{lineno}: invalid JSON ({err.msg} at column {err.colno}); "
                f"{_MANIFEST_FORMATS}"
            ) from err
        records.append(_parse_manifest_entry(entry, manifest, lineno))
    if not records:
        raise ManifestError(f"{manifest}: manifest has no records")
    return records



# --------------------------------------------------------------------------- LibriSpeech


def _read_transcripts(trans_file: Path) -> list[tuple[str, str]]:
    """Parse a LibriSpeech ``*.trans.txt`` file into ``(key, text)`` pairs."""
    pairs = []
    for lineno, line in _text_lines(trans_file):
        if not line.strip():
            continue
        key, _, text = line.strip().partition(" ")
        if not text.strip():
            raise DataError(f"{trans_file}:{lineno}: expected 'UTTERANCE-ID TRANSCRIPT', got {line.strip()!r}")
        pairs.append((key, text.strip()))
    return pairs


LIBRISPEECH_AUDIO_EXTENSIONS = (".flac", ".opus", ".ogg", ".wav")


def scan_librispeech(*dirs: PathLike) -> list[Record]:
    """Collect the utterances of one or more LibriSpeech split directories.

    Each directory must have the OpenSLR layout
    ``DIR/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` with the audio next to it as
    ``SPEAKER-CHAPTER-UTT.flac`` (or ``.opus``, ``.ogg``, ``.wav``: the first that exists, in that order) (pass a split such as ``.../train-clean-100``,
    not the ``LibriSpeech`` root). Durations come from ``soundfile.info``.
    Records are returned sorted by key; the text is the raw upper-case transcript.

    Raises:
        DataError: no directory given; a directory is missing or has no
            transcript files; a transcript line is malformed; a listed audio
            file is missing or unreadable; a key occurs twice.
    """
    if not dirs:
        raise DataError("scan_librispeech: no directory given")
    records: dict[str, Record] = {}
    for directory in dirs:
        root = Path(directory).expanduser().absolute()
        if not root.is_dir():
            raise DataError(f"{root}: LibriSpeech directory not found")
        trans_files = sorted(root.glob("*/*/*.trans.txt"))
        if not trans_files:
            hint = ""
            nested = sorted(p.parent.parent.parent.name for p in root.glob("*/*/*/*.trans.txt"))
            if nested:
                hint = f" (it looks like a LibriSpeech root; pass split directories such as {root / nested[0]})"
            raise DataError(
                f"{root}: no transcript files found; expected DIR/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt{hint}"
            )
        for trans_file in trans_files:
            for key, text in _read_transcripts(trans_file):
                candidates = [trans_file.parent / f"{key}{ext}" for ext in LIBRISPEECH_AUDIO_EXTENSIONS]
                audio_path = next((c for c in candidates if c.is_file()), None)
                if audio_path is None:
                    raise DataError(
                        f"{candidates[0].with_suffix('')}: listed in {trans_file.name} but no audio file "
                        f"({'/'.join(LIBRISPEECH_AUDIO_EXTENSIONS)}) is there"
                    )
                if key in records:
                    raise DataError(f"{audio_path}: duplicate utterance key {key} (also at {records[key]['audio']})")
                try:
                    duration = sf.info(str(audio_path)).duration
                except (sf.LibsndfileError, RuntimeError) as err:
                    raise DataError(f"{audio_path}: unreadable audio header ({soundfile_detail(err)})") from err
                records[key] = {"key": key, "audio": str(audio_path), "text": text, "duration": float(duration)}
    return [records[key] for key in sorted(records)]

# --------------------------------------------------------------------------- Hub


def hf_librispeech(
    name: str = DEFAULT_HUB_NAME,
    config: Optional[str] = DEFAULT_HUB_CONFIG,
    split: str = DEFAULT_HUB_SPLIT,
    streaming: bool = True,
    **load_kwargs: Any,
) -> Iterator[Record]:
    """Yield records from a LibriSpeech-style dataset on the Hugging Face Hub.

    The dataset is opened with ``datasets.load_dataset(name, config, split=split,
    streaming=streaming, **load_kwargs)`` (``load_kwargs`` e.g. ``cache_dir``,
    ``revision``) and its ``audio`` column cast to ``Audio(decode=False)``, so no
    torchcodec is needed: records carry the encoded ``{"bytes", "path"}`` dict,
    which ``processing_whisper_llada.load_audio`` decodes. The dataset must have ``id`` and ``text``
    columns, as ``openslr/librispeech_asr`` does (its ``clean`` config has the
    splits ``train.100``, ``train.360``, ``validation`` and ``test``).

    The dataset is opened when this function is called (so a wrong name fails
    early); the records are produced lazily. ``duration`` is ``None``.
    """
    dataset = hub_dataset(name, config, split, streaming, **load_kwargs)

    def records() -> Iterator[Record]:
        for example in dataset:
            yield hub_record(example)

    return records()


def hub_dataset(name: str, config: Optional[str], split: str, streaming: bool = True, **load_kwargs: Any):
    """The Hub dataset itself (a `datasets.IterableDataset` when streamed), its audio left encoded
    (``Audio(decode=False)``: no torchcodec); ``hub_record`` turns an example into a record."""
    from datasets import Audio, load_dataset  # slow import, only needed here

    dataset = load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)
    return dataset.cast_column("audio", Audio(decode=False))


def hub_record(example: Mapping[str, Any]) -> Record:
    """A LibriSpeech-style Hub example (``id``, ``audio`` as ``{"bytes", "path"}``, ``text``) as a record."""
    audio = example["audio"]
    return {"key": str(example["id"]), "audio": {"bytes": audio.get("bytes"), "path": audio.get("path")},
            "text": example["text"], "duration": None}


# --------------------------------------------------------------------------- entry points


def parse_hub_spec(spec: str) -> tuple[str, Optional[str], str]:
    """Parse ``hub:NAME[:CONFIG[:SPLIT]]`` into ``(name, config, split)``.

    Omitted parts take the ``hf_librispeech`` defaults; an explicitly empty
    config (``hub:NAME::SPLIT``) means "no config name".

    >>> parse_hub_spec("hub:openslr/librispeech_asr:clean:validation")
    ('openslr/librispeech_asr', 'clean', 'validation')
    """
    if not spec.startswith("hub:"):
        raise ValueError(f"{spec!r}: a Hub spec starts with 'hub:'")
    parts = spec[len("hub:"):].split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"{spec!r}: expected hub:NAME[:CONFIG[:SPLIT]], e.g. hub:openslr/librispeech_asr:clean:validation")
    name = parts[0]
    config: Optional[str] = parts[1] if len(parts) > 1 else DEFAULT_HUB_CONFIG
    split = parts[2] if len(parts) > 2 else DEFAULT_HUB_SPLIT
    if config == "":
        config = None
    if not split:
        raise ValueError(f"{spec!r}: empty split name")
    return name, config, split


def load_records(spec: PathLike, streaming: bool = True) -> Iterable[Record]:
    """Load records from a manifest, a LibriSpeech directory or the Hub.

    ``spec`` is one of:

    * a ``.jsonl`` / ``.json`` JSON-lines manifest (``read_manifest``) -> list;
    * a local LibriSpeech split directory (``scan_librispeech``) -> list;
    * ``hub:NAME[:CONFIG[:SPLIT]]``, e.g. ``hub:openslr/librispeech_asr:clean:validation``
      (``hf_librispeech``) -> generator (streamed unless ``streaming=False``).

    Raises:
        DataError: ``spec`` is none of these (e.g. a path that does not exist).
    """
    text = os.fspath(spec)
    if text.startswith("hub:"):
        name, config, split = parse_hub_spec(text)
        return hf_librispeech(name=name, config=config, split=split, streaming=streaming)
    path = Path(text).expanduser()
    if path.is_dir():
        return scan_librispeech(path)
    if path.suffix in (".jsonl", ".json"):
        return read_manifest(path)
    if not path.exists():
        raise DataError(
            f"{text}: not found; expected a .jsonl/.json manifest, a LibriSpeech directory, "
            "or hub:NAME[:CONFIG[:SPLIT]]"
        )
    raise DataError(f"{text}: unsupported file type; manifests must end in .jsonl or .json")


def record_problem(record: Mapping[str, Any], max_seconds: Optional[float] = None,
                   max_chars: Optional[int] = None) -> tuple[Optional[str], str, Optional[float]]:
    """``(reason or None, detail, duration)`` for one record (the checks of ``filter_records``)."""
    source = record.get("audio")
    path = source_path(source)
    if path is not None and not os.path.isfile(path):
        return REASON_MISSING_AUDIO, "audio file not found", None
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        return REASON_EMPTY_TEXT, "empty transcript", None
    if max_chars is not None and len(text.strip()) > max_chars:
        return REASON_TEXT_TOO_LONG, f"transcript has {len(text.strip())} characters > max_chars={max_chars}", None
    duration = record.get("duration")
    if max_seconds is not None:
        if duration is None:
            try:
                duration = audio_duration(source)
            except AudioLoadError as err:
                return REASON_UNREADABLE_AUDIO, str(err), None
        if duration <= 0:
            return REASON_EMPTY_AUDIO, "audio has zero length", duration
        if duration > max_seconds:
            return REASON_AUDIO_TOO_LONG, f"audio lasts {duration:.2f} s > max_seconds={max_seconds}", duration
    return None, "", duration


def filter_records(
    records: Iterable[Mapping[str, Any]],
    max_seconds: Optional[float] = None,
    max_chars: Optional[int] = None,
    on_bad: str = "skip",
    stats: Optional[collections.Counter] = None,
) -> Iterator[Record]:
    """Yield the usable records, skipping or rejecting the others.

    Checks, in order: the audio file exists (sources read from a path); the
    text is non-empty after ``strip()``; the stripped text has at most
    ``max_chars`` characters; the duration is at most ``max_seconds``. When a
    record's duration is ``None`` and ``max_seconds`` is set, it is measured with
    ``audio_duration`` (header only) and the yielded record is a copy carrying
    it; audio whose header cannot be read, or of zero length, is bad too.

    Bad records either raise ``BadRecordError`` (``on_bad="error"``) naming the
    audio path and the reason, or (``on_bad="skip"``) are logged as a warning
    with path and reason and counted in ``stats``, a ``collections.Counter``
    keyed by the ``REASON_*`` constants, when given. Good records are not counted.

    ``on_bad`` is validated when this function is called; the filtering itself
    is lazy, so it also works on streamed Hub records.
    """
    if on_bad not in ("skip", "error"):
        raise ValueError(f"on_bad must be 'skip' or 'error', got {on_bad!r}")

    def check(record: Mapping[str, Any]) -> tuple[Optional[str], str, Optional[float]]:
        return record_problem(record, max_seconds, max_chars)

    def generate() -> Iterator[Record]:
        for record in records:
            reason, detail, duration = check(record)
            if reason is None:
                if duration is not None and record.get("duration") is None:
                    record = {**record, "duration": duration}
                yield record  # type: ignore[misc]
                continue
            where = describe_source(record.get("audio"))
            message = f"{where} (key {record.get('key')!r}): {reason}: {detail}"
            if on_bad == "error":
                raise BadRecordError(message)
            logger.warning("skipping record %s", message)
            if stats is not None:
                stats[reason] += 1

    return generate()

