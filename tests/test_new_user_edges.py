"""Edges a new user met (issue 36): first-pass hypotheses per input in the pipeline and never erasing a transcript,
streamers through the pipeline (diffusion drafts, or a plain TextStreamer), the delete token never in word chunks,
one warning for unscaled audio, the answer rate of streamed training data, CTC rows without decoder settings, and
what a resumed run reports."""

import logging

import numpy as np
import pytest
import torch

from conftest import make_pipeline, make_processor, needs_whisper_tokenizer, record_generate, synthetic_speech

pytestmark = needs_whisper_tokenizer


@pytest.fixture(scope="module")
def ctc_asr():
    """A tiny random model with a CTC head (blank <|notimestamps|>) and its pipeline."""
    from conftest import make_tiny_ctc_model

    processor = make_processor()
    model = make_tiny_ctc_model(processor, gen_length=16, steps=4)
    model.attach_processor(processor)
    return model, processor, make_pipeline(model, processor)


def test_the_pipeline_takes_one_hypothesis_per_input(ctc_asr):
    model, processor, asr = ctc_asr
    clips = [synthetic_speech(2.0, seed=1), synthetic_speech(3.0, seed=2)]
    settings = {"decoding": "D", "anchor_threshold": 0.0}  # nothing re-masked: each hypothesis comes back as it is
    out = asr(clips, generate_kwargs={**settings, "hypothesis": ["The cat, sat!", None]})
    alone = asr(clips[1], generate_kwargs={"decoding": "D", "anchor_threshold": 0.0})
    assert out[0]["text"] == "the cat sat" and out[1]["text"] == alone["text"]  # a row without one: its CTC reading
    batched = asr(clips, batch_size=2, generate_kwargs={**settings, "hypothesis": ["one two", "three four five"]})
    assert [o["text"] for o in batched] == ["one two", "three four five"]
    with pytest.raises(ValueError, match="one hypothesis for 2 inputs"):
        asr(clips, generate_kwargs={**settings, "hypothesis": "the cat sat"})
    with pytest.raises(ValueError, match="3 hypotheses for 2 input"):
        asr(clips, generate_kwargs={**settings, "hypothesis": ["a", "b", "c"]})


def test_transcribe_never_erases_a_row_without_a_hypothesis(ctc_asr):
    from pipeline_whisper_llada import transcribe

    model, processor, _ = ctc_asr
    clips = [synthetic_speech(2.0, seed=1), synthetic_speech(3.0, seed=2)]
    alone = transcribe(model, processor, [clips[1]], generation_config="D")
    for batch_size in (1, 2):
        mixed = transcribe(model, processor, clips, batch_size=batch_size, generation_config="D",
                           hypotheses=["the cat sat", None])
        assert mixed[1] == alone[0]


def test_a_streamer_goes_through_the_pipeline_and_a_plain_text_streamer_gets_the_answer(ctc_asr):
    from transformers import TextDiffusionStreamer, TextStreamer

    model, processor, asr = ctc_asr
    drafts = []

    class Recording(TextDiffusionStreamer):
        def put_draft(self, value):
            drafts.append(value.clone())

    asr(synthetic_speech(2.0), generate_kwargs={"decoding": "B", "streamer": Recording(processor.tokenizer)})
    assert len(drafts) == 1 + model.resolve_decoding("B").steps
    finals = []

    class Plain(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            finals.append(text)

    out = asr(synthetic_speech(2.0), generate_kwargs={"decoding": "B", "streamer": Plain(processor.tokenizer,
                                                                                        skip_special_tokens=True)})
    assert "".join(finals).strip() == out["text"]


def test_word_chunks_never_show_a_special_token_the_decoder_wrote():
    from pipeline_whisper_llada import window_words

    processor = make_processor()
    blank = processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    ids = processor.encode_text(" perhaps") + [blank] + processor.encode_text(" barely") + [processor.eos_token_id]
    times = [[0.1 * i, 0.1 * i + 0.1] for i in range(len(ids))]
    chunks = window_words(processor, ids, times, 0.0, 5.0)
    assert [c["text"] for c in chunks] == processor.batch_decode([ids])[0].split() == ["perhaps", "barely"]


def test_unscaled_float_audio_is_warned_about_once(ctc_asr, caplog):
    _, _, asr = ctc_asr
    with caplog.at_level(logging.WARNING):
        asr(synthetic_speech(2.0) * 20000)
    assert caplog.text.count("float samples reach") == 1


def test_decodings_without_decoder_steps_record_none_for_steps_and_length(ctc_asr):
    model, _, _ = ctc_asr
    settings = model.resolve_decoding("CTC").settings()
    assert settings["steps"] is None and settings["gen_length"] is None and settings["block_length"] is None
    assert model.resolve_decoding("B").settings()["steps"] == 8


def test_the_answer_rate_and_longest_window_of_streamed_training_data_are_recorded_from_the_records_read(ctc_asr):
    import datasets

    import train_hf
    from whisper_llada_training import SpeechCollator

    model, processor, _ = ctc_asr
    collator = SpeechCollator(processor)
    rows = [{"key": f"k{i}", "audio": {"array": synthetic_speech(s, seed=i), "sampling_rate": 16000},
             "text": text, "length": 0.0} for i, (s, text) in enumerate([(2.0, "one two three"), (4.0, "four")])]
    collator(rows)
    assert collator.answer_rates == pytest.approx([(len(processor.encode_text("one two three")) + 1) / 2.0,
                                                   (len(processor.encode_text("four")) + 1) / 4.0], rel=0.02)
    stream = datasets.Dataset.from_list([{"text": "x", "length": 1.0}]).to_iterable_dataset()
    model.generation_config.tokens_per_second = None
    try:
        train_hf.record_answer_rate(model, processor, stream, streamed_rates=collator.answer_rates,
                                    streamed_seconds=collator.seconds_read)
        assert model.generation_config.tokens_per_second == pytest.approx(max(collator.answer_rates), abs=0.01)
        assert collator.seconds_read == pytest.approx([2.0, 4.0]) and model.generation_config.max_window_s == 4.0
    finally:
        model.generation_config.max_window_s = None


def test_a_resumed_training_run_says_how_many_steps_it_trained(tmp_path):
    import json

    import train_hf

    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert train_hf.resumed_step(str(checkpoint)) == 3 and train_hf.resumed_step(None) == 0


def test_a_sharded_merge_counts_the_resumed_utterances(tmp_path):
    from types import SimpleNamespace

    from whisper_llada_eval import JobProgress
    from whisper_llada_eval_shards import Shards, merge_shards, shard_file
    from whisper_llada_report import HypothesesFile

    shards = Shards(rank=0, world=2)
    path = tmp_path / "hypotheses_CTC_x.jsonl"
    old = {"key": "a", "hypothesis": "x", "batch_id": "20261205T000000-aaaa-rank0-0", "batch_seconds": 1.0}
    new = {"key": "b", "hypothesis": "y", "batch_id": "20261207T000000-bbbb-rank1-0", "batch_seconds": 2.0}
    HypothesesFile(shard_file(path, shards, 0), {}).append([old])
    HypothesesFile(shard_file(path, shards, 1), {}).append([new])
    job = SimpleNamespace(hypotheses=HypothesesFile(path, {}), data=SimpleNamespace(records=[{"key": "a"},
                                                                                            {"key": "b"}]))
    progress, slowest = merge_shards(job, shards, JobProgress, "20261207T000000-bbbb")
    assert (progress.resumed, progress.timed, slowest) == (1, 1, 2.0)


def test_generate_accepts_whisper_s_english_options(ctc_asr):
    model, processor, _ = ctc_asr
    inputs = processor(audio=synthetic_speech(2.0), sampling_rate=16000)
    plain = model.generate(**inputs, decoding="B")
    assert torch.equal(model.generate(**inputs, decoding="B", language="en", task="transcribe"), plain)
    assert np.array_equal(plain.shape, model.generate(**inputs, decoding="B", language="english").shape)


@needs_whisper_tokenizer
def test_long_windows_are_cut_to_what_the_decoder_trained_on_for_decoder_decodings_only(ctc_asr, monkeypatch):
    model, processor, asr = ctc_asr
    calls = record_generate(model, monkeypatch)
    audio = {"raw": synthetic_speech(5.0), "sampling_rate": 16000}
    model.generation_config.max_window_s = 2.0
    try:
        windows = asr(audio, decoding="B", return_timestamps=True)["chunks"]
        assert len(calls) == 3 and all(c["input_features"].shape[0] == 1 for c in calls)  # 3 windows of <= 2 s
        assert len(windows) <= 3 and all(end - start <= 2.0 + 1e-6 for start, end in (w["timestamp"] for w in windows))
        calls.clear()
        asr(audio, decoding="CTC")  # the CTC reading alone reads the whole window
        assert len(calls) == 1
        calls.clear()
        asr(audio, decoding="D", hypothesis="the cat sat")  # a hypothesis covers its whole audio: one window
        assert len(calls) == 1
        with pytest.raises(ValueError, match="max_window_s must be None or > 0"):
            model.resolve_decoding("B", max_window_s=0)
    finally:
        model.generation_config.max_window_s = None
