"""Word timestamps from a CTC forced alignment of the final transcript: the Viterbi alignment on score matrices with
known spans, words from token pieces, the pipeline's `return_timestamps="word"` / `True` in transformers' format, times
monotonic, inside the audio and offset by each window's start."""

import math

import numpy as np
import pytest
import torch

from alignment_whisper_llada import forced_align, word_chunks
from conftest import needs_whisper_tokenizer, make_pipeline, make_processor, make_tiny_asr_model, synthetic_speech


def scores(frames: list[int], classes: int = 6, blank: int = 0, sure: float = 0.9) -> torch.Tensor:
    """(T, K) log-probabilities that put `sure` on the given class at each frame."""
    probs = torch.full((len(frames), classes), (1 - sure) / (classes - 1))
    probs[torch.arange(len(frames)), torch.tensor(frames)] = sure
    return probs.log()


def test_forced_alignment_recovers_known_spans():
    # frames: blank, 3 3, blank, 4, 4 4, blank blank, 3, blank  (two 3s, the second after a blank)
    log_probs = scores([0, 3, 3, 0, 4, 4, 4, 0, 0, 3, 0])
    spans = forced_align(log_probs, [3, 4, 3], blank=0)
    assert [(s.start, s.end) for s in spans] == [(1, 3), (4, 7), (9, 10)]
    assert all(math.isclose(s.confidence, 0.9, rel_tol=1e-5) for s in spans)
    # a transcript the greedy path does not spell is still placed: the best path through its tokens
    other = forced_align(log_probs, [3, 5], blank=0)
    assert other[0].start == 1 and other[1].start >= other[0].end
    # equal neighbours need a frame between them: 3 frames cannot hold "3 3 3" (5 needed), 2 tokens fit 2 frames
    assert forced_align(scores([3, 3, 3]), [3, 3, 3], blank=0) is None
    assert [(s.start, s.end) for s in forced_align(scores([3, 4]), [3, 4], blank=0)] == [(0, 1), (1, 2)]
    assert forced_align(scores([0, 0]), [], blank=0) == []


def test_words_from_token_pieces_end_where_the_next_starts_and_are_offset():
    pieces = ["the", " kn", "itting", " need", "les", " x"]
    times = [(0.0, 0.1), (0.5, 0.6), (0.7, 0.8), (1.2, 1.3), None, None]
    chunks = word_chunks(pieces, times, offset=10.0, end_of_audio=11.5)
    assert chunks == [{"text": "the", "timestamp": (10.0, 10.5)}, {"text": "knitting", "timestamp": (10.5, 11.2)},
                      {"text": "needles", "timestamp": (11.2, 11.3)}, {"text": "x", "timestamp": (11.3, 11.5)}]
    # words the CTC cannot write (no aligned token) share the time between their aligned neighbours
    pieces = [" after", " mister", " crow", " flew", " back"]
    times = [(0.5, 0.6), (0.9, 1.0), None, (1.6, 1.7), (2.0, 2.1)]
    stamps = [c["timestamp"] for c in word_chunks(pieces, times)]
    assert stamps == [(0.5, 0.9), (0.9, 1.0), (1.0, 1.6), (1.6, 2.0), (2.0, 2.1)]
    assert [c["timestamp"] for c in word_chunks([" a", " b"], [None, None])] == [(None, None), (None, None)]


@pytest.fixture(scope="module")
def ctc_asr():
    processor = make_processor()  # skips without Whisper's tokenizer
    model = make_tiny_asr_model(processor, gen_length=16)
    model.config.ctc_blank_id = processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    return model, processor, make_pipeline(model, processor)


def check_words(chunks, text, duration):
    starts = [c["timestamp"][0] for c in chunks if c["timestamp"][0] is not None]
    assert " ".join(c["text"] for c in chunks) == text
    assert starts == sorted(starts)  # monotonic
    for c in chunks:
        start, end = c["timestamp"]
        if start is not None:
            assert 0 <= start <= end <= duration + 1e-6  # inside the audio


@needs_whisper_tokenizer
@pytest.mark.parametrize("decoding", ["CTC", "B", "D"])
def test_pipeline_word_timestamps_in_transformers_format(ctc_asr, decoding):
    model, processor, asr = ctc_asr
    audio = synthetic_speech(6.0, seed=3)
    out = asr(audio, return_timestamps="word", generate_kwargs={"decoding": decoding})
    assert set(out) == {"text", "chunks"} and out["text"] == asr(audio, decoding=decoding)["text"]
    assert all(set(c) == {"text", "timestamp"} and len(c["timestamp"]) == 2 for c in out["chunks"])
    check_words(out["chunks"], out["text"], 6.0)
    whole = asr(audio, return_timestamps=True, decoding=decoding)
    assert whole["chunks"] == ([{"text": whole["text"], "timestamp": (0.0, 6.0)}] if whole["text"] else [])


@needs_whisper_tokenizer
def test_long_audio_word_times_are_offset_by_their_window_and_not_doubled(ctc_asr):
    from pipeline_whisper_llada import split_long_audio, transcribe

    model, processor, asr = ctc_asr
    audio = np.concatenate([synthetic_speech(14.0, seed=4), np.zeros(16000, np.float32), synthetic_speech(14.0, seed=5)])
    windows = split_long_audio(audio, 16000, chunk_length_s=20)
    assert len(windows) == 2
    out = asr(audio, chunk_length_s=20, return_timestamps="word", decoding="CTC")
    check_words(out["chunks"], out["text"], len(audio) / 16000)
    second = windows[1][0] / 16000
    per_window = [transcribe(model, processor, [audio[a:b]], generation_config="CTC", return_timestamps="word")[0]
                  for a, b in windows]
    assert len(out["chunks"]) == sum(len(w["chunks"]) for w in per_window)  # no word twice at the join
    tail = out["chunks"][len(per_window[0]["chunks"]):]
    for joined, alone in zip(tail, per_window[1]["chunks"]):
        if alone["timestamp"][0] is not None:
            assert joined["timestamp"][0] == pytest.approx(alone["timestamp"][0] + second, abs=1e-3)
    batched = transcribe(model, processor, [audio], chunk_length_s=20, generation_config="CTC",
                         return_timestamps="word")[0]
    assert batched == out


@needs_whisper_tokenizer
def test_timestamps_need_a_ctc_head(ctc_asr):
    processor = ctc_asr[1]
    plain = make_tiny_asr_model(processor)
    with pytest.raises(ValueError, match="return_timestamps .* needs a CTC head"):
        make_pipeline(plain, processor)(synthetic_speech(1.0), return_timestamps="word")
    with pytest.raises(ValueError, match="return_timestamps must be True"):
        ctc_asr[2](synthetic_speech(1.0), return_timestamps="char")
    out = ctc_asr[0].generate(**processor(audio=synthetic_speech(2.0), sampling_rate=16000), decoding="CTC",
                              return_dict_in_generate=True, return_timestamps=True)
    assert out.token_timestamps.shape == (*out.sequences.shape, 2)
