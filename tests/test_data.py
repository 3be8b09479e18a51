"""Tests for whisper_llada_data, whisper_llada_io and whisper_llada_data_prep (audio loading, manifests, LibriSpeech
scanning, filtering, the command line)."""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import whisper_llada_data as wd  # noqa: E402
import whisper_llada_data_prep as prep  # noqa: E402
import whisper_llada_io as wio  # noqa: E402
from conftest import synthetic_speech  # noqa: E402
from processing_whisper_llada import load_audio  # noqa: E402

SHARED = REPO.parent / "shared"
LIBRI = SHARED / "data" / "LibriSpeech" / "train-clean-5"


@pytest.fixture(scope="module")
def libri() -> Path:
    if not LIBRI.is_dir():
        pytest.skip(f"LibriSpeech test data not available at {LIBRI}")
    return LIBRI


@pytest.fixture(scope="module")
def libri_flac(libri: Path) -> Path:
    return sorted(libri.glob("*/*/*.flac"))[0]


def count_transcript_lines(trans_files) -> int:
    return sum(1 for f in trans_files for line in f.read_text().splitlines() if line.strip())


# A steady 440 Hz tone of amplitude 0.8: sine(seconds, rate=16000).
sine = partial(synthetic_speech, freq=440.0, amplitude=0.8, tremolo=None, noise=0.0)


# --------------------------------------------------------------------------- load_audio


def test_load_real_flac_all_source_forms(libri_flac: Path):
    info = sf.info(str(libri_flac))
    assert info.samplerate == 16000
    wave = load_audio(libri_flac)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == info.frames
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0

    data = libri_flac.read_bytes()
    np.testing.assert_array_equal(load_audio(str(libri_flac)), wave)
    np.testing.assert_array_equal(load_audio(data), wave)
    np.testing.assert_array_equal(load_audio({"bytes": data, "path": "name-only.flac"}), wave)
    np.testing.assert_array_equal(load_audio({"bytes": None, "path": str(libri_flac)}), wave)
    np.testing.assert_array_equal(load_audio({"array": wave, "sampling_rate": 16000}), wave)


def test_stereo_downmix_and_resample(tmp_path: Path):
    rate, seconds = 44100, 0.5
    left = sine(seconds, rate)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # (frames, 2)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, rate, subtype="FLOAT")

    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - round(len(left) * 16000 / rate)) <= 1
    # mean of (sine, silence) is a half-amplitude sine
    assert np.abs(wave[100:-100]).max() == pytest.approx(0.4, abs=0.02)

    native = load_audio(path, sampling_rate=rate)
    np.testing.assert_allclose(native, stereo.mean(axis=1), atol=1e-7)


def test_array_sources_channels_first_int_pcm_and_resampling():
    mono = sine(0.25, 8000)
    channels_first = np.stack([mono, mono])  # (2, frames), datasets-style layout
    wave = load_audio({"raw": channels_first, "sampling_rate": 8000})
    assert wave.shape == (len(mono) * 2,)

    pcm = (mono * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio({"array": pcm, "sampling_rate": 16000}), mono, atol=1e-4)

    with pytest.raises(wio.AudioLoadError, match="sampling_rate"):
        load_audio({"array": mono})
    with pytest.raises(TypeError):
        load_audio(12345)
    with pytest.raises(wio.AudioLoadError, match="<audio dict>"):
        load_audio({"bytes": None, "path": None})


def test_missing_file_error_names_path(tmp_path: Path):
    missing = tmp_path / "nope.flac"
    with pytest.raises(wio.AudioLoadError, match="not found") as info:
        load_audio(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_corrupt_audio_errors(tmp_path: Path):
    garbage = b"this is not audio at all" * 10
    bad_file = tmp_path / "corrupt.flac"
    bad_file.write_bytes(garbage)
    with pytest.raises(wio.AudioLoadError, match="corrupt") as info:
        load_audio(bad_file)
    assert str(bad_file) in str(info.value)
    assert "\n" not in str(info.value)

    with pytest.raises(wio.AudioLoadError, match="<bytes>.*corrupt") as info:
        load_audio(garbage)
    assert "BytesIO" not in str(info.value)
    with pytest.raises(wio.AudioLoadError, match="hub-name.flac.*corrupt"):
        load_audio({"bytes": garbage, "path": "hub-name.flac"})


def test_empty_audio_errors(tmp_path: Path):
    empty_wav = tmp_path / "empty.wav"
    sf.write(str(empty_wav), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(wio.AudioLoadError, match="empty") as info:
        load_audio(empty_wav)
    assert str(empty_wav) in str(info.value)

    with pytest.raises(wio.AudioLoadError, match="<bytes>.*empty"):
        load_audio(b"")
    zero_byte_file = tmp_path / "zero.flac"
    zero_byte_file.write_bytes(b"")
    with pytest.raises(wio.AudioLoadError, match="is empty") as info:
        load_audio(zero_byte_file)
    assert str(zero_byte_file) in str(info.value)


def test_nan_audio_errors(tmp_path: Path):
    nan_wav = tmp_path / "nan.wav"
    sf.write(str(nan_wav), np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(wio.AudioLoadError, match="all 1600 samples are NaN") as info:
        load_audio(nan_wav)
    assert str(nan_wav) in str(info.value)

    partly = sine(0.1)
    partly[5] = np.inf
    with pytest.raises(wio.AudioLoadError, match="1 of 1600 samples"):
        load_audio({"array": partly, "sampling_rate": 16000})


# --------------------------------------------------------------------------- manifests


def write_lines(path: Path, entries) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def test_read_nemo_manifest_resolves_relative_paths(tmp_path: Path):
    (tmp_path / "audio").mkdir()
    manifest = write_lines(
        tmp_path / "nemo.jsonl",
        [
            {"audio_filepath": "audio/a-1-0001.flac", "duration": 1.5, "text": "HELLO"},
            "",
            {"audio_filepath": "/abs/b.flac", "text": "WORLD", "key": "custom"},
        ],
    )
    records = wd.read_manifest(manifest)
    assert records == [
        {"key": "a-1-0001", "audio": str(tmp_path / "audio" / "a-1-0001.flac"), "text": "HELLO", "duration": 1.5},
        {"key": "custom", "audio": "/abs/b.flac", "text": "WORLD", "duration": None},
    ]


def test_read_reference_manifest_target_and_fallback(tmp_path: Path):
    sub = tmp_path / "sub"
    sub.mkdir()
    manifest = write_lines(
        sub / "ref.jsonl",
        [
            {"key": "k1", "source": "x.flac", "target": "Raw Target", "processed_target": "raw target"},
            {"key": "k2", "source": "../y.flac", "processed_target": "only processed"},
        ],
    )
    records = wd.read_manifest(manifest)
    assert [r["key"] for r in records] == ["k1", "k2"]
    assert records[0]["text"] == "Raw Target"
    assert records[1]["text"] == "only processed"
    assert records[0]["audio"] == str(sub / "x.flac")
    assert Path(records[1]["audio"]).resolve() == tmp_path / "y.flac"
    assert all(r["duration"] is None for r in records)


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ('{"audio_filepath": "a.flac", "text": ', "invalid JSON"),
        ({"text": "NO AUDIO"}, "no audio field"),
        ({"audio_filepath": "a.flac", "duration": 1.0}, "no transcript field"),
        ({"key": "k", "source": "a.flac"}, "no transcript field"),
        ({"audio_filepath": "a.flac", "text": "X", "duration": "long"}, "duration"),
        (["not", "an", "object"], "not an object"),
    ],
)
def test_bad_manifest_line_names_file_and_line(tmp_path: Path, bad_line, problem):
    manifest = write_lines(tmp_path / "bad.jsonl", [{"audio_filepath": "ok.flac", "text": "FINE"}, bad_line])
    with pytest.raises(wd.ManifestError) as info:
        wd.read_manifest(manifest)
    message = str(info.value)
    assert f"{manifest}:2:" in message
    assert problem in message
    assert "audio_filepath" in message and "processed_target" in message  # expected fields


def test_manifest_line_not_utf8_names_file_and_line(tmp_path: Path):
    manifest = tmp_path / "latin1.jsonl"
    good = json.dumps({"audio_filepath": "a.flac", "text": "FINE"}).encode()
    bad = '{"audio_filepath": "b.flac", "text": "CAFÉ"}'.encode("latin-1")  # É as one latin-1 byte, 0xc9
    manifest.write_bytes(good + b"\n\n" + bad + b"\n")
    for read in (wd.read_manifest, wd.load_records):
        with pytest.raises(wd.ManifestError) as info:
            read(manifest)
        message = str(info.value)
        assert message.startswith(f"{manifest.absolute()}:3: not valid UTF-8"), message
        assert "0xc9" in message and "column 42" in message, message
    # a UTF-8 byte-order mark is fine
    manifest.write_bytes(b"\xef\xbb\xbf" + good + b"\n")
    assert wd.read_manifest(manifest)[0]["text"] == "FINE"


def test_make_readable_gives_files_the_umask_default(tmp_path: Path):
    import os

    private = tmp_path / "model.safetensors"
    private.write_bytes(b"x")
    private.chmod(0o600)  # as safetensors leaves it
    (tmp_path / "sub").mkdir(mode=0o700)
    old_umask = os.umask(0o022)
    try:
        wio.make_readable(tmp_path)
    finally:
        os.umask(old_umask)
    assert private.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "sub").stat().st_mode & 0o777 == 0o700  # not recursive by default
    assert tmp_path.stat().st_mode & 0o755 == 0o755


def test_empty_or_missing_manifest(tmp_path: Path):
    with pytest.raises(wd.ManifestError, match="not found"):
        wd.read_manifest(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(wd.ManifestError, match="no records"):
        wd.read_manifest(empty)


def test_write_manifest_roundtrip_and_atomic(tmp_path: Path):
    records = [
        {"key": "s-c-0001", "audio": str(tmp_path / "s-c-0001.flac"), "text": "ÉTÉ ONE", "duration": 1.25},
        {"key": "s-c-0002", "audio": {"bytes": None, "path": str(tmp_path / "two.flac")}, "text": "TWO", "duration": None},
    ]
    out = tmp_path / "nested" / "out.jsonl"
    out.parent.mkdir()
    out.write_text("old content\n")
    assert prep.write_manifest(iter(records), out) == 2
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"audio_filepath": records[0]["audio"], "duration": 1.25, "text": "ÉTÉ ONE", "key": "s-c-0001"}
    back = wd.read_manifest(out)
    assert back[0] == records[0]
    assert back[1]["audio"] == str(tmp_path / "two.flac")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]  # no temp file left

    # a failure leaves the old file untouched and no temp file behind
    with pytest.raises(ValueError, match="not a file path"):
        prep.write_manifest([records[0], {"key": "b", "audio": b"RIFF", "text": "X", "duration": None}], out)
    assert len(wd.read_manifest(out)) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]


# --------------------------------------------------------------------------- LibriSpeech


def test_scan_librispeech_counts(libri: Path):
    speaker = sorted(p.name for p in libri.iterdir() if p.is_dir())[0]
    expected_speaker = count_transcript_lines((libri / speaker).glob("*/*.trans.txt"))
    expected_total = count_transcript_lines(libri.glob("*/*/*.trans.txt"))

    records = wd.scan_librispeech(libri)
    assert len(records) == expected_total
    assert sum(1 for r in records if wd.speaker_of(r["key"]) == speaker) == expected_speaker
    keys = [r["key"] for r in records]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    first = records[0]
    assert Path(first["audio"]).is_file() and Path(first["audio"]).stem == first["key"]
    assert first["text"] == first["text"].upper() and first["text"].strip()
    assert all(r["duration"] > 0 for r in records)


def test_scan_librispeech_errors(tmp_path: Path, libri: Path):
    with pytest.raises(wd.DataError, match="no transcript files") as info:
        wd.scan_librispeech(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(wd.DataError, match="LibriSpeech root") as info:
        wd.scan_librispeech(libri.parent)  # the root, not a split
    with pytest.raises(wd.DataError, match="not found"):
        wd.scan_librispeech(tmp_path / "missing")
    with pytest.raises(wd.DataError, match="duplicate"):
        wd.scan_librispeech(libri, libri)


def test_create_manifest_cli_excludes_speakers(tmp_path: Path, libri: Path):
    all_speakers = sorted(p.name for p in libri.iterdir() if p.is_dir())
    held_out = all_speakers[0]
    n_total = count_transcript_lines(libri.glob("*/*/*.trans.txt"))
    n_held = count_transcript_lines((libri / held_out).glob("*/*.trans.txt"))
    out = tmp_path / "train.jsonl"
    speakers_out = tmp_path / "train_speakers.txt"
    result = subprocess.run(
        [sys.executable, str(REPO / "whisper_llada_data_prep.py"), "create-manifest", str(libri),
         "--output", str(out), "--exclude-speakers", held_out, "--speakers-out", str(speakers_out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = wd.read_manifest(out)
    assert len(records) == n_total - n_held
    assert held_out not in {wd.speaker_of(r["key"]) for r in records}
    assert all(Path(r["audio"]).is_file() and r["duration"] > 0 for r in records)
    assert sorted(speakers_out.read_text().split()) == sorted(set(all_speakers) - {held_out})

    # the speakers file feeds the held-out (eval) manifest
    eval_out = tmp_path / "eval.jsonl"
    result = subprocess.run(
        [sys.executable, str(REPO / "whisper_llada_data_prep.py"), "create-manifest", str(libri),
         "--output", str(eval_out), "--exclude-speakers", f"@{speakers_out}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert {wd.speaker_of(r["key"]) for r in wd.read_manifest(eval_out)} == {held_out}


def test_create_manifest_function_include_and_errors(tmp_path: Path, libri: Path, caplog):
    speaker = sorted(p.name for p in libri.iterdir() if p.is_dir())[-1]
    out = tmp_path / "one.jsonl"
    kept = prep.create_manifest([libri], out, include_speakers=[int(speaker), "99999999"])
    assert {wd.speaker_of(r["key"]) for r in kept} == {speaker}
    assert len(wd.read_manifest(out)) == len(kept)
    assert "99999999" in caplog.text  # unknown ids are reported
    with pytest.raises(wd.DataError, match="no utterances left"):
        prep.create_manifest(libri, tmp_path / "none.jsonl", include_speakers=[speaker], exclude_speakers=[speaker])
    assert not (tmp_path / "none.jsonl").exists()


def test_cli_error_exit_code(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(REPO / "whisper_llada_data_prep.py"), "create-manifest", str(tmp_path), "-o", str(tmp_path / "x.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert str(tmp_path) in result.stderr and "no transcript files" in result.stderr


# --------------------------------------------------------------------------- load_records / Hub


def test_load_records_local_specs(tmp_path: Path, libri: Path):
    records = wd.load_records(str(libri))
    assert isinstance(records, list) and len(records) == count_transcript_lines(libri.glob("*/*/*.trans.txt"))
    manifest = tmp_path / "m.jsonl"
    prep.write_manifest(records[:3], manifest)
    assert wd.load_records(manifest) == records[:3]
    with pytest.raises(wd.DataError, match="not found"):
        wd.load_records(tmp_path / "nothing.jsonl")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(wd.DataError, match="unsupported"):
        wd.load_records(tmp_path / "notes.txt")


def test_load_records_hub_spec_parsing(monkeypatch):
    calls = []

    def fake_hub(**kwargs):
        calls.append(kwargs)
        return iter(())

    monkeypatch.setattr(wd, "hf_librispeech", fake_hub)
    wd.load_records("hub:openslr/librispeech_asr:clean:validation")
    wd.load_records("hub:openslr/librispeech_asr")
    wd.load_records("hub:someone/data::test", streaming=False)
    assert calls == [
        {"name": "openslr/librispeech_asr", "config": "clean", "split": "validation", "streaming": True},
        {"name": "openslr/librispeech_asr", "config": "clean", "split": "train.100", "streaming": True},
        {"name": "someone/data", "config": None, "split": "test", "streaming": False},
    ]
    with pytest.raises(ValueError, match="hub:NAME"):
        wd.load_records("hub:")


def test_hf_librispeech_on_local_parquet_repo(tmp_path: Path, libri_flac: Path):
    """Same code path as the Hub: a parquet dataset repo with a 'clean' config and FLAC bytes."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    repo = tmp_path / "librispeech_asr"
    (repo / "clean").mkdir(parents=True)
    data = libri_flac.read_bytes()
    table = pa.table({
        "file": [libri_flac.name],
        "audio": [{"bytes": data, "path": libri_flac.name}],
        "text": ["SOME TEXT"],
        "id": [libri_flac.stem],
    })
    pq.write_table(table, str(repo / "clean" / "validation-00000-of-00001.parquet"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: clean\n  data_files:\n  - split: validation\n    path: clean/validation-*\n---\n"
    )
    records = list(wd.hf_librispeech(str(repo), "clean", "validation", cache_dir=str(tmp_path / "cache")))
    assert records == [
        {"key": libri_flac.stem, "audio": {"bytes": data, "path": libri_flac.name}, "text": "SOME TEXT", "duration": None}
    ]
    np.testing.assert_array_equal(load_audio(records[0]["audio"]), load_audio(libri_flac))
    assert wio.audio_duration(records[0]["audio"]) == pytest.approx(sf.info(str(libri_flac)).duration)


# --------------------------------------------------------------------------- filter_records / text


@pytest.fixture()
def mixed_records(tmp_path: Path):
    good = tmp_path / "good.wav"
    sf.write(str(good), sine(1.0), 16000)
    long = tmp_path / "long.wav"
    sf.write(str(long), sine(3.0), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"garbage" * 20)
    return [
        {"key": "good", "audio": str(good), "text": "FINE", "duration": None},
        {"key": "missing", "audio": str(tmp_path / "missing.wav"), "text": "GONE", "duration": 1.0},
        {"key": "blank", "audio": str(good), "text": "   ", "duration": 1.0},
        {"key": "long", "audio": str(long), "text": "TOO LONG", "duration": None},
        {"key": "wordy", "audio": str(good), "text": "X" * 50, "duration": 1.0},
        {"key": "corrupt", "audio": str(corrupt), "text": "BROKEN", "duration": None},
        {"key": "bytes", "audio": {"bytes": good.read_bytes(), "path": "good.wav"}, "text": "BYTES", "duration": None},
    ]


def test_filter_records_skip_counts_and_logs(mixed_records, caplog):
    stats = collections.Counter()
    with caplog.at_level(logging.WARNING, logger="whisper_llada_data"):
        kept = list(wd.filter_records(mixed_records, max_seconds=2.0, max_chars=20, on_bad="skip", stats=stats))
    assert [r["key"] for r in kept] == ["good", "bytes"]
    assert kept[0]["duration"] == pytest.approx(1.0) and kept[1]["duration"] == pytest.approx(1.0)
    assert mixed_records[0]["duration"] is None  # input not mutated
    assert stats == collections.Counter({
        wd.REASON_MISSING_AUDIO: 1, wd.REASON_EMPTY_TEXT: 1, wd.REASON_AUDIO_TOO_LONG: 1,
        wd.REASON_TEXT_TOO_LONG: 1, wd.REASON_UNREADABLE_AUDIO: 1,
    })
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert any(mixed_records[1]["audio"] in w and wd.REASON_MISSING_AUDIO in w for w in warnings)
    assert any(mixed_records[3]["audio"] in w and "3.00 s" in w for w in warnings)


def test_filter_records_without_limits_keeps_unknown_durations(mixed_records):
    kept = list(wd.filter_records(mixed_records))
    assert [r["key"] for r in kept] == ["good", "long", "wordy", "corrupt", "bytes"]
    assert kept[0]["duration"] is None


def test_filter_records_error_mode(mixed_records):
    gen = wd.filter_records(mixed_records, max_seconds=2.0, on_bad="error")
    assert next(gen)["key"] == "good"
    with pytest.raises(wd.BadRecordError) as info:
        next(gen)
    assert mixed_records[1]["audio"] in str(info.value) and wd.REASON_MISSING_AUDIO in str(info.value)

    with pytest.raises(wd.BadRecordError, match=wd.REASON_EMPTY_TEXT):
        list(wd.filter_records(mixed_records[2:3], on_bad="error"))
    with pytest.raises(ValueError, match="on_bad"):
        wd.filter_records(mixed_records, on_bad="ignore")


def test_filter_records_on_real_data(libri: Path):
    records = wd.scan_librispeech(libri)
    stats = collections.Counter()
    kept = list(wd.filter_records(records, max_seconds=10.0, stats=stats))
    n_long = sum(1 for r in records if r["duration"] > 10.0)
    assert len(kept) == len(records) - n_long
    assert stats[wd.REASON_AUDIO_TOO_LONG] == n_long and sum(stats.values()) == n_long


def test_normalize_transcript():
    assert wd.normalize_transcript("  I DON'T  DARE\tHE ECHOED\n") == "i don't dare he echoed"
    assert wd.normalize_transcript("") == ""


def test_librispeech_scanner_reads_opus_ogg_and_wav(tmp_path):
    """The LibriSpeech layout with .opus / .ogg / .wav audio next to the transcripts (not only .flac)."""
    import soundfile

    chapter = tmp_path / "split" / "19" / "198"
    chapter.mkdir(parents=True)
    tone = (0.1 * np.sin(np.arange(16000) / 8.0)).astype(np.float32)
    formats = {"19-198-0000": ("flac", "FLAC", None), "19-198-0001": ("wav", "WAV", None),
               "19-198-0002": ("ogg", "OGG", "VORBIS"), "19-198-0003": ("opus", "OGG", "OPUS")}
    for key, (ext, container, codec) in formats.items():
        soundfile.write(str(chapter / f"{key}.{ext}"), tone, 16000, format=container, subtype=codec)
    (chapter / "19-198.trans.txt").write_text("".join(f"{key} WORDS OF {key[-1]}\n" for key in formats))
    records = wd.scan_librispeech(tmp_path / "split")
    assert [Path(r["audio"]).suffix for r in records] == [".flac", ".wav", ".ogg", ".opus"]
    assert all(abs(r["duration"] - 1.0) < 0.01 for r in records)
    assert len(load_audio(records[3]["audio"], 16000)) == pytest.approx(16000, abs=400)
    (chapter / "19-198-0001.wav").unlink()
    with pytest.raises(wd.DataError, match=r"19-198-0001: listed in 19-198.trans.txt but no audio file"):
        wd.scan_librispeech(tmp_path / "split")


@pytest.mark.skipif(not (SHARED / "data" / "LibriSpeech-opus").exists(),
                    reason="../shared/data/LibriSpeech-opus not available")
def test_scanner_reads_the_shared_opus_training_audio():
    opus = SHARED / "data" / "LibriSpeech-opus" / "train-clean-100"
    records = wd.scan_librispeech(opus)
    assert len(records) == 329 and all(r["audio"].endswith(".opus") for r in records)


# --------------------------------------------------------------------------- train-tokenizer


def test_train_tokenizer_cli_writes_a_byte_level_bpe_for_the_llada_style_tokenizer(tmp_path: Path):
    from processing_whisper_llada import build_llada_style_tokenizer

    words = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex the jovial king".split()
    rng = np.random.default_rng(0)
    manifest = tmp_path / "train.jsonl"
    prep.write_manifest([{"key": f"1-2-{i:04d}", "audio": f"/nowhere/{i}.flac", "duration": 1.0,
                        "text": " ".join(rng.choice(words, 12)).upper()} for i in range(200)], manifest)
    out = tmp_path / "tok" / "tokenizer.json"
    command = [sys.executable, str(REPO / "whisper_llada_data_prep.py"), "train-tokenizer", str(manifest), "--vocab-size",
               "320", "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not list(out.parent.glob("*.tmp"))
    tokenizer = build_llada_style_tokenizer(str(out))
    vocab = tokenizer.get_vocab()
    assert vocab["<|endoftext|>"] == 0 and vocab["<|ctc_blank|>"] == 1 and tokenizer.eos_token_id == 0
    assert len(vocab) == 320 + 5  # + LLaDA's specials: BOS, mask, the two header tokens, <|eot_id|>
    # trained on lower-cased targets: frequent words are single tokens; unseen text still round-trips (byte level)
    assert len(tokenizer("the quick brown fox", add_special_tokens=False)["input_ids"]) == 4
    for text in ("the quick brown fox", "zebra's naïve quiz"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text and 1 not in ids

    bad = subprocess.run(command[:3] + [str(manifest), "--vocab-size", "100", "-o", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "vocab_size must be at least 300" in bad.stderr
    assert not (tmp_path / "x.json").exists()
