"""Long-form transcription (pipeline_whisper_llada): windows cut in pauses, no word dropped or decoded twice; the
pipeline's chunking, batch_size and generator inputs; a > 60 s clip through `pipeline(...)` as remote code."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import needs_whisper_tokenizer, HIDE_THIS_PACKAGE, make_pipeline, make_tiny_asr_model, synthetic_speech
from pipeline_whisper_llada import split_long_audio, transcribe

RATE = 16000


def words_with_pauses(n_words: int, seed: int = 0):
    """Synthetic 'speech': tone bursts ("words", 0.2-0.7 s) separated by short gaps (0.05-0.15 s, as inside a phrase)
    and, every few words, pauses (0.35-0.6 s). Returns the audio and the (start, end) sample span of every word."""
    rng = np.random.default_rng(seed)
    pieces, spans, position = [], [], 0
    for index in range(n_words):
        length = int(rng.uniform(0.2, 0.7) * RATE)
        t = np.arange(length) / RATE
        word = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.01 * rng.standard_normal(length)
        gap = rng.uniform(0.35, 0.6) if index % 4 == 3 else rng.uniform(0.05, 0.15)
        silence = 0.002 * rng.standard_normal(int(gap * RATE))
        pieces += [word, silence]
        spans.append((position, position + length))
        position += length + len(silence)
    return np.concatenate(pieces).astype(np.float32), spans


@pytest.mark.parametrize("chunk_length_s, stride_length_s", [(20.0, None), (30.0, 5.0), (8.0, 2.0)])
def test_windows_cover_the_audio_and_cut_only_in_pauses(chunk_length_s, stride_length_s):
    audio, spans = words_with_pauses(160)
    assert len(audio) > 60 * RATE
    ranges = split_long_audio(audio, RATE, chunk_length_s, stride_length_s)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous: nothing dropped, nothing overlapping
    assert all(0 < end - start <= chunk_length_s * RATE for start, end in ranges)
    # every word lies inside exactly one window: no word is cut in two, dropped or decoded twice
    owners = [[i for i, (s, e) in enumerate(ranges) if s <= ws and we <= e] for ws, we in spans]
    assert all(len(o) == 1 for o in owners)
    assert [o[0] for o in owners] == sorted(o[0] for o in owners)


def test_short_audio_is_one_window_and_bad_lengths_are_refused():
    audio, _ = words_with_pauses(20)
    assert split_long_audio(audio, RATE) == [(0, len(audio))]
    with pytest.raises(ValueError, match="chunk_length_s"):
        split_long_audio(audio, RATE, chunk_length_s=31)
    with pytest.raises(ValueError, match="stride_length_s"):
        split_long_audio(audio, RATE, chunk_length_s=10, stride_length_s=10)


@pytest.fixture(scope="module")
def asr_parts(processor):
    return make_tiny_asr_model(processor), processor


@needs_whisper_tokenizer
def test_pipeline_batch_size_and_generator_equal_one_by_one(asr_parts):
    model, processor = asr_parts
    asr = make_pipeline(model, processor)
    long_audio, _ = words_with_pauses(110, seed=1)  # ~ 70 s: windows of at most 20 s
    clips = [words_with_pauses(n, seed=n)[0] for n in (6, 12, 9)] + [long_audio]
    one_by_one = [asr(clip, chunk_length_s=20)["text"] for clip in clips]
    batched = [out["text"] for out in asr(clips, batch_size=3, chunk_length_s=20)]
    streamed = [out["text"] for out in asr((clip for clip in clips), batch_size=2, chunk_length_s=20)]
    assert batched == one_by_one and streamed == one_by_one
    # the pipeline and transcribe() are one path
    assert transcribe(model, processor, clips, chunk_length_s=20, batch_size=2) == one_by_one
    windows = split_long_audio(long_audio, RATE, 20)
    assert len(windows) >= 3
    parts = transcribe(model, processor, [long_audio[s:e] for s, e in windows])
    assert one_by_one[-1] == " ".join(p for p in parts if p)


CHILD = HIDE_THIS_PACKAGE + textwrap.dedent(
    """
    import json
    import numpy as np
    from transformers import pipeline
    audio = np.load(sys.argv[2])
    asr = pipeline("automatic-speech-recognition", model=sys.argv[1], trust_remote_code=True)
    print("RESULT " + json.dumps({"default": asr(audio)["text"], "chunked": asr(audio, chunk_length_s=15)["text"]}))
    """
)


@needs_whisper_tokenizer
def test_long_clip_through_remote_code_pipeline_in_clean_process(asr_parts, tmp_path):
    model, processor = asr_parts
    saved = tmp_path / "model"
    model.save_pretrained(saved)
    processor.save_pretrained(saved)
    audio, _ = words_with_pauses(150, seed=3)
    assert len(audio) > 60 * RATE
    np.save(tmp_path / "audio.npy", audio)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS="1")
    (tmp_path / "elsewhere").mkdir()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(saved), str(tmp_path / "audio.npy")],
                          cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    with torch.no_grad():
        assert result["default"] == transcribe(model, processor, [audio])[0]  # 20 s windows by default past 30 s
        assert result["chunked"] == transcribe(model, processor, [audio], chunk_length_s=15)[0]


def test_decodings_that_run_the_decoder_read_windows_no_longer_than_it_trained_on(caplog):
    import logging

    from configuration_llada_generation import LladaGenerationConfig
    from pipeline_whisper_llada import decoder_window_s, split_long_audio

    wave = synthetic_speech(25.0)
    assert split_long_audio(wave, 16000) == [(0, len(wave))]  # fits the encoder: one window
    windows = split_long_audio(wave, 16000, window_s=12.0)
    assert len(windows) == 3 and all(b - a <= 12 * 16000 for a, b in windows) and windows[-1][1] == len(wave)
    with caplog.at_level(logging.WARNING):
        capped = split_long_audio(wave, 16000, chunk_length_s=30, window_s=12.0)
    assert capped == windows and "longer than the audio this model's decoder trained on" in caplog.text
    config = LladaGenerationConfig(mask_token_id=1, eos_token_id=2, max_window_s=12.0)
    assert decoder_window_s(config.resolved("B")) == 12.0 and decoder_window_s(config.resolved("D")) == 12.0
    assert decoder_window_s(config.resolved("CTC")) is None  # the CTC reading alone reads 30 s windows well
