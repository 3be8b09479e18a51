"""Data helpers for training and evaluating whisper-llada.

This module is used by the training / evaluation scripts. It is *not* part of
the remote-code package that ships with a checkpoint, so it may depend on
``soundfile``, ``soxr`` and (lazily) ``datasets``.

Everything revolves around one record type, a plain ``dict``::

    {"key": "118-47824-0000",          # utterance id
     "audio": <audio source>,          # see ``load_audio``
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

``filter_records`` drops (or rejects) unusable records, ``write_manifest`` /
``create_manifest`` write NeMo-style manifests, and the command line::

    python whisper_llada_data.py create-manifest DIR [DIR ...] --output OUT.jsonl \\
        [--include-speakers ID ...] [--exclude-speakers ID ...] [--speakers-out FILE]

builds one from LibriSpeech directories, optionally holding out whole speakers;

    python whisper_llada_data.py train-tokenizer TRAIN.jsonl [...] --vocab-size 1024 -o tokenizer.json

trains a small byte-level BPE on their transcripts for a decoder trained from scratch (``train_bpe_tokenizer``).

Errors are raised as subclasses of ``DataError`` (itself a ``ValueError``) with
one message that names the offending file (or ``<bytes>``) and the problem.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, TypedDict, Union

import numpy as np
import soundfile as sf

from processing_whisper_llada import AudioInputError
from processing_whisper_llada import load_audio as _load_audio

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

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Mapping[str, Any]]
PathLike = Union[str, os.PathLike]


class Record(TypedDict):
    """One utterance. Records are plain dicts; this type only documents them."""

    key: str
    audio: AudioSource
    text: str
    duration: Optional[float]


# --------------------------------------------------------------------------- errors


class DataError(ValueError):
    """Base class for the data errors raised by this module."""


# An audio source could not be turned into a usable waveform: the one audio error type of the package (a ValueError),
# raised by `processing_whisper_llada.load_audio` and by `audio_duration` here.
AudioLoadError = AudioInputError


class ManifestError(DataError):
    """A manifest file (or a line in it) is malformed."""


class BadRecordError(DataError):
    """A record failed a check in ``filter_records(on_bad="error")``."""


# --------------------------------------------------------------------------- audio


def describe_source(source: Any) -> str:
    """Return a short human-readable name for an audio source, for messages.

    Paths give the path, raw bytes give ``"<bytes>"``, a ``{"bytes", "path"}``
    dict gives its path (or ``"<bytes>"``), an array dict gives ``"<array>"``.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Mapping):
        if source.get("array") is not None or source.get("raw") is not None:
            return "<array>"
        if source.get("path"):
            return str(source["path"])
        if source.get("bytes") is not None:
            return "<bytes>"
        return "<audio dict>"
    return f"<{type(source).__name__}>"


def source_path(source: Any) -> Optional[str]:
    """Return the file path an audio source must be read from, or ``None``.

    Only sources that are *read from disk* have a path: a plain path, or a
    ``{"bytes": None, "path": ...}`` dict. A dict with bytes is decoded from the
    bytes (its ``path`` is only a name, as in Hub parquet data).
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Mapping) and source.get("array") is None and source.get("raw") is None:
        if source.get("bytes") is None and source.get("path"):
            return str(source["path"])
    return None


def _source_bytes(source: Any) -> Optional[bytes]:
    """Return the encoded bytes of a bytes-like or ``{"bytes": ...}`` source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, Mapping) and source.get("bytes") is not None:
        return bytes(source["bytes"])
    return None


def _source_array(source: Any) -> Optional[tuple[np.ndarray, int]]:
    """Return ``(array, sampling_rate)`` for an ``{"array"|"raw", "sampling_rate"}`` dict."""
    if not isinstance(source, Mapping):
        return None
    array = source.get("array")
    if array is None:
        array = source.get("raw")
    if array is None:
        return None
    rate = source.get("sampling_rate")
    if rate is None:
        raise AudioLoadError("<array>: audio array given without a 'sampling_rate'")
    return np.asarray(array), int(rate)


def _soundfile_detail(err: Exception) -> str:
    """One-line reason from a soundfile error, without its "Error opening <file>:" prefix."""
    detail = getattr(err, "error_string", None) or str(err)
    return " ".join(str(detail).split())


load_audio = _load_audio  # path, bytes, array or audio dict -> mono float32 at the given rate (processing module)


def audio_duration(source: AudioSource) -> float:
    """Return the duration of an audio source in seconds, without decoding it.

    Uses ``soundfile.info`` for paths and encoded bytes (header only), and
    ``len / sampling_rate`` for array dicts.

    Raises:
        AudioLoadError: the file is missing or its header is unreadable.
    """
    name = describe_source(source)
    array_and_rate = _source_array(source)
    if array_and_rate is not None:
        samples, rate = array_and_rate
        frames = samples.shape[-1] if samples.ndim == 1 else max(samples.shape)
        return frames / rate
    encoded = _source_bytes(source)
    path = source_path(source)
    if encoded is None and path is None:
        raise AudioLoadError(f"{name}: cannot determine the duration of this audio source")
    if encoded is None and not os.path.isfile(path):
        raise AudioLoadError(f"{name}: audio file not found")
    try:
        info = sf.info(io.BytesIO(encoded) if encoded is not None else path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioLoadError(f"{name}: unreadable or corrupt audio ({_soundfile_detail(err)})") from err
    return info.frames / info.samplerate


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


def write_manifest(records: Iterable[Mapping[str, Any]], path: PathLike) -> int:
    """Write records as a NeMo-style JSON-lines manifest, atomically.

    Each line is ``{"audio_filepath", "duration", "text", "key"}`` (NeMo ignores
    the extra ``"key"``; ``read_manifest`` keeps it). Only records whose audio is
    a file path can be written. The file is first written to a temporary file
    in the same directory and then moved over ``path`` with ``os.replace``, so a
    reader never sees a half-written manifest. Missing parent directories are
    created. Returns the number of records written.

    Raises:
        ValueError: a record's audio is not a file path.
    """
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                audio_path = source_path(record["audio"])
                if audio_path is None:
                    raise ValueError(
                        f"record {record.get('key')!r}: audio source {describe_source(record['audio'])} "
                        "is not a file path; only path records can be written to a manifest"
                    )
                line = {
                    "audio_filepath": audio_path,
                    "duration": record.get("duration"),
                    "text": record["text"],
                    "key": record["key"],
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return count


def make_readable(directory: PathLike, recursive: bool = False) -> None:
    """Gives the files in `directory` (and the directory itself) the permissions a plain `open()` would have given
    them: `0o666 & ~umask` for files, `0o777 & ~umask` for directories (bits are only added, never removed).

    safetensors (and `tempfile`) write through private temporary files, so e.g. `model.safetensors` ends up mode 0600
    while the files next to it are 0644; a checkpoint that is shared or uploaded must be readable like the rest.
    Symbolic links are left alone; `recursive` descends into sub-directories."""
    umask = os.umask(0)
    os.umask(umask)
    file_bits, dir_bits = 0o666 & ~umask, 0o777 & ~umask

    def fix(path: str, bits: int) -> None:
        mode = os.lstat(path).st_mode & 0o7777
        if mode | bits != mode:
            os.chmod(path, mode | bits)

    root = os.fspath(directory)
    fix(root, dir_bits)
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_file():
                fix(entry.path, file_bits)
            elif entry.is_dir() and recursive:
                make_readable(entry.path, recursive=True)


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same folder: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
                    raise DataError(f"{audio_path}: unreadable audio header ({_soundfile_detail(err)})") from err
                records[key] = {"key": key, "audio": str(audio_path), "text": text, "duration": float(duration)}
    return [records[key] for key in sorted(records)]


def _speaker_set(speakers: Optional[Iterable[Union[str, int]]]) -> Optional[set[str]]:
    return None if speakers is None else {str(s).strip() for s in speakers if str(s).strip()}


def create_manifest(
    dirs: Union[PathLike, Iterable[PathLike]],
    output: PathLike,
    exclude_speakers: Optional[Iterable[Union[str, int]]] = None,
    include_speakers: Optional[Iterable[Union[str, int]]] = None,
    holdout_every: Optional[int] = None,
    holdout_output: Optional[PathLike] = None,
) -> list[Record]:
    """Scan LibriSpeech directories and write a NeMo manifest, filtering speakers.

    ``include_speakers`` keeps only those speakers, ``exclude_speakers`` drops
    those (both may be given; exclusion wins). With ``holdout_every=N`` and
    ``holdout_output``, every N-th kept utterance (by key) goes to that second
    manifest instead (a validation set from the training speakers). Speaker ids are compared as
    strings (speaker = first ``-`` field of the key). Requested ids that do not
    occur in the data are logged as a warning, since they are likely typos.
    Returns the records written.

    Raises:
        DataError: from ``scan_librispeech``, or when no record is left.
    """
    dir_list = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    records = scan_librispeech(*dir_list)
    present = {speaker_of(r["key"]) for r in records}
    include = _speaker_set(include_speakers)
    exclude = _speaker_set(exclude_speakers)
    for label, wanted in (("include", include), ("exclude", exclude)):
        unknown = sorted(wanted - present) if wanted else []
        if unknown:
            logger.warning("%s_speakers not found in %s: %s", label, ", ".join(map(str, dir_list)), ", ".join(unknown))
    kept = [
        r
        for r in records
        if (include is None or speaker_of(r["key"]) in include)
        and (exclude is None or speaker_of(r["key"]) not in exclude)
    ]
    if not kept:
        raise DataError(f"no utterances left in {', '.join(map(str, dir_list))} after speaker filtering")
    if (holdout_every is None) != (holdout_output is None):
        raise DataError("holdout_every and holdout_output go together")
    if holdout_every is not None:
        if int(holdout_every) < 2:
            raise DataError(f"holdout_every must be >= 2, got {holdout_every}")
        held = [r for i, r in enumerate(kept) if i % holdout_every == holdout_every - 1]
        kept = [r for i, r in enumerate(kept) if i % holdout_every != holdout_every - 1]
        write_manifest(held, holdout_output)
    write_manifest(kept, output)
    return kept


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
    which ``load_audio`` decodes. The dataset must have ``id`` and ``text``
    columns, as ``openslr/librispeech_asr`` does (its ``clean`` config has the
    splits ``train.100``, ``train.360``, ``validation`` and ``test``).

    The dataset is opened when this function is called (so a wrong name fails
    early); the records are produced lazily. ``duration`` is ``None``.
    """
    from datasets import Audio, load_dataset  # slow import, only needed here

    dataset = load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)
    dataset = dataset.cast_column("audio", Audio(decode=False))

    def records() -> Iterator[Record]:
        for example in dataset:
            audio = example["audio"]
            yield {
                "key": str(example["id"]),
                "audio": {"bytes": audio.get("bytes"), "path": audio.get("path")},
                "text": example["text"],
                "duration": None,
            }

    return records()


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
        """Return ``(reason or None, detail, duration)`` for one record."""
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


# --------------------------------------------------------------------------- tokenizer


def train_bpe_tokenizer(manifests: Sequence[str], output: str, vocab_size: int = 1024) -> int:
    """Train a small byte-level BPE tokenizer on the training targets of NeMo manifests and write its
    ``tokenizer.json`` to ``output`` (atomically). Returns the vocabulary size.

    The targets are the manifests' transcripts as training uses them (``normalize_transcript``). Byte-level BPE
    covers any text, so words the manifests never saw still tokenize. The vocabulary holds ``<|endoftext|>`` (EOS
    and padding for ``processing_whisper_llada.build_llada_style_tokenizer``) and ``<|ctc_blank|>`` (a token no text
    produces: the blank of the auxiliary CTC loss, ``--ctc_blank_id``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise DataError(f"vocab_size must be at least 300 (256 bytes + specials + merges), got {vocab_size}")
    texts: list[str] = []
    for manifest in manifests:
        for record in read_manifest(manifest):
            texts.append(normalize_transcript(record["text"]))
    if not texts:
        raise DataError(f"{', '.join(manifests)}: no transcripts to train a tokenizer on")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|ctc_blank|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    out = Path(output).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, tokenizer.to_str(pretty=True))
    return tokenizer.get_vocab_size()


# --------------------------------------------------------------------------- CLI


def _read_speaker_args(values: Optional[list[str]]) -> Optional[list[str]]:
    """Expand CLI speaker arguments: ids, comma-separated ids, or ``@FILE`` lists."""
    if values is None:
        return None
    speakers: list[str] = []
    for value in values:
        if value.startswith("@"):
            list_file = Path(value[1:]).expanduser()
            if not list_file.is_file():
                raise DataError(f"{list_file}: speaker list file not found")
            content = list_file.read_text(encoding="utf-8")
            lines = [line.split("#", 1)[0] for line in content.splitlines()]
            speakers.extend(s for line in lines for s in line.replace(",", " ").split())
        else:
            speakers.extend(s for s in value.split(",") if s.strip())
    return speakers


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="whisper_llada_data.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser(
        "create-manifest",
        help="write a NeMo-style manifest from LibriSpeech split directories",
        description="Scan LibriSpeech split directories (SPEAKER/CHAPTER/*.flac + *.trans.txt) and write a "
        "NeMo-style JSON-lines manifest. Speaker arguments accept ids, comma-separated ids, or @FILE "
        "(one id per line, e.g. a file written by --speakers-out).",
    )
    create.add_argument("dirs", nargs="+", metavar="DIR", help="LibriSpeech split directory, e.g. .../train-clean-100")
    create.add_argument("--output", "-o", required=True, metavar="OUT.jsonl", help="manifest to write")
    create.add_argument("--include-speakers", nargs="+", metavar="ID", help="keep only these speakers")
    create.add_argument("--exclude-speakers", nargs="+", metavar="ID", help="drop these speakers (held out)")
    create.add_argument(
        "--speakers-out", metavar="FILE", help="also write the sorted speaker ids of the manifest, one per line"
    )
    create.add_argument("--holdout-every", type=int, metavar="N",
                        help="put every N-th utterance (by key) in --holdout-output instead (a validation set)")
    create.add_argument("--holdout-output", metavar="VAL.jsonl", help="manifest of the held-out utterances")
    train_tok = commands.add_parser(
        "train-tokenizer",
        help="train a small byte-level BPE tokenizer (tokenizer.json) on manifests' transcripts",
        description="Train a byte-level BPE tokenizer on the lower-cased transcripts of NeMo manifests, for a "
        "decoder trained from scratch (train_hf.py --tokenizer_file).",
    )
    train_tok.add_argument("manifests", nargs="+", metavar="MANIFEST.jsonl")
    train_tok.add_argument("--output", "-o", required=True, metavar="tokenizer.json")
    train_tok.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train-tokenizer":
        try:
            size = train_bpe_tokenizer(args.manifests, args.output, args.vocab_size)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        logger.info("wrote %s: %d tokens", args.output, size)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        records = create_manifest(
            args.dirs,
            args.output,
            exclude_speakers=_read_speaker_args(args.exclude_speakers),
            include_speakers=_read_speaker_args(args.include_speakers),
            holdout_every=args.holdout_every,
            holdout_output=args.holdout_output,
        )
    except (DataError, AudioLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    speakers = sorted({speaker_of(r["key"]) for r in records}, key=lambda s: (len(s), s))
    hours = sum(r["duration"] or 0.0 for r in records) / 3600
    if args.speakers_out:
        out = Path(args.speakers_out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{s}\n" for s in speakers), encoding="utf-8")
    logger.info(
        "wrote %s: %d utterances, %d speakers, %.2f hours", args.output, len(records), len(speakers), hours
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
