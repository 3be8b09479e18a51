"""Audio sources and files for whisper-llada's data, training and evaluation tools (not remote code).

An audio source is what a record's ``"audio"`` holds: a path, encoded bytes, a ``{"bytes", "path"}`` dict (Hub
parquet data) or an ``{"array", "sampling_rate"}`` dict. ``describe_source`` names one for messages, ``source_path``
gives the file it is read from and ``audio_duration`` its length from the header; ``processing_whisper_llada.load_audio``
decodes it. ``write_atomic`` and ``make_readable`` write files that readers and other users can rely on.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import soundfile as sf

from modeling_loading import make_readable as readable
from processing_whisper_llada import AudioInputError

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Mapping[str, Any]]
PathLike = Union[str, os.PathLike]

# An audio source could not be turned into a usable waveform: the one audio error type of the package (a ValueError),
# raised by `processing_whisper_llada.load_audio` and by `audio_duration` here.
AudioLoadError = AudioInputError


# --------------------------------------------------------------------------- audio sources


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


def soundfile_detail(err: Exception) -> str:
    """One-line reason from a soundfile error, without its "Error opening <file>:" prefix."""
    detail = getattr(err, "error_string", None) or str(err)
    return " ".join(str(detail).split())


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
        raise AudioLoadError(f"{name}: unreadable or corrupt audio ({soundfile_detail(err)})") from err
    return info.frames / info.samplerate


# --------------------------------------------------------------------------- files


def make_readable(directory: PathLike, recursive: bool = False) -> None:
    """Gives the files in `directory` (and the directory itself) the permissions a plain `open()` would have given
    them (`modeling_loading.make_readable`: safetensors and `tempfile` write private 0600 files); `recursive`
    descends into sub-directories. Symbolic links are left alone."""
    readable(directory)
    if recursive:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    make_readable(entry.path, recursive=True)


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same folder: readers see the old or the new file. A
    failed write (a full disk, a read-only folder, Ctrl-C) removes the temporary file and raises: the old file stays,
    and the caller hears of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["AudioSource", "PathLike", "AudioLoadError", "describe_source", "source_path", "soundfile_detail",
           "audio_duration", "make_readable", "write_atomic"]
