"""Decoding CTC (the CTC head's reading alone), D with the CTC's scores fused in or its candidates only, a first-pass
hypothesis as D's start, live drafts through a streamer, the answer length following the audio (and the warning when
an answer is cut), and the audio length read off the features when no attention mask is given."""

import logging

import pytest
import torch
from transformers import WhisperFeatureExtractor

from conftest import EOS_ID, MASK_ID, synthetic_speech, tiny_whisper_llada

FE = WhisperFeatureExtractor(feature_size=80)


def features(*seconds, seed=0):
    waves = [synthetic_speech(s, seed=seed + i, amplitude=0.0, noise=0.1) for i, s in enumerate(seconds)]
    return FE(waves, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")


def ctc_model(**overrides):
    torch.manual_seed(0)
    return tiny_whisper_llada(ctc_blank_id=59, **overrides)


def reading_of(model, feats):
    states, lengths = model.project_speech(feats.input_features, feats.attention_mask)
    return model.ctc_read(states, lengths)


def test_decoding_ctc_is_the_greedy_reading_and_needs_a_ctc_head():
    model, feats = ctc_model(), features(2, 5)
    ids = model.generate(**feats, decoding="CTC")
    reading = reading_of(model, feats)
    for row, tokens in enumerate(reading.tokens):
        assert ids[row, : len(tokens)].tolist() == tokens and (ids[row, len(tokens):] == EOS_ID).all()
    assert ids.shape[1] == max(map(len, reading.tokens)) + 1
    out = model.generate(**feats, decoding="CTC", return_dict_in_generate=True, output_history=True)
    assert torch.equal(out.history[:, -1], ids) and out.history.shape[1] == 1
    with pytest.raises(ValueError, match="needs a CTC head"):
        tiny_whisper_llada().generate(**feats, decoding="CTC")


def test_fusion_weight_one_and_top_one_give_the_ctc_reading_back_and_weight_zero_is_plain_d():
    model, feats = ctc_model(), features(2, 5)
    ctc = model.generate(**feats, decoding="CTC")
    every = dict(decoding="D", anchor_threshold=1.0)  # every reading token masked: the decoder (or fusion) refills all
    for fused in (model.generate(**feats, **every, ctc_fusion=1.0), model.generate(**feats, **every, ctc_top_k=1)):
        width = ctc.shape[1]
        assert torch.equal(fused[:, :width], ctc) and (fused[:, width:] == EOS_ID).all()
    plain = model.generate(**feats, **every)
    assert torch.equal(model.generate(**feats, **every, ctc_fusion=0.0), plain)
    assert not torch.equal(plain[:, : ctc.shape[1]], ctc)  # the decoder alone writes something else (random weights)
    # a fused slot takes one of the CTC's classes, never the blank; two candidates keep it among the CTC's best two
    two = model.generate(**feats, **every, ctc_top_k=2)
    reading = reading_of(model, feats)
    for row, frames in enumerate(reading.frames):
        for slot, frame in enumerate(frames):
            best = reading.log_probs[row, frame].topk(8).indices.tolist()
            classes = [c for c in best if c not in model.silent_classes()][:2]
            assert int(two[row, slot]) in [model.class_token_ids()[c] for c in classes]


def test_a_hypothesis_canvas_equal_to_the_ctc_reading_is_d_s_own_start():
    model, feats = ctc_model(), features(2, 5)
    reading = reading_of(model, feats)
    own = model.generate(**feats, decoding="D", anchor_threshold=0.4, return_dict_in_generate=True,
                         output_history=True)
    given = model.generate(**feats, decoding="D", anchor_threshold=0.4, decoder_input_ids=reading.tokens,
                           return_dict_in_generate=True, output_history=True)
    assert torch.equal(given.history[:, 0], own.history[:, 0]) and torch.equal(given.sequences, own.sequences)
    # as a padded tensor too (trailing EOS dropped)
    padded = model.generate(**feats, decoding="CTC")
    assert torch.equal(model.generate(**feats, decoding="D", anchor_threshold=0.4, decoder_input_ids=padded),
                       own.sequences)
    with pytest.raises(ValueError, match="D's start: use decoding=\"D\""):
        model.generate(**feats, decoding="B", decoder_input_ids=reading.tokens)
    with pytest.raises(ValueError, match="2 hypotheses for a batch of 1"):
        model.generate(**features(2), decoding="D", decoder_input_ids=reading.tokens)


def test_a_hypothesis_without_a_ctc_head_is_re_masked_by_the_decoder_s_own_confidence():
    model, feats = tiny_whisper_llada(), features(3)
    hypothesis = [[5, 6, 7, 8, 9, 10]]
    out = model.generate(**feats, decoding="D", decoder_input_ids=hypothesis, anchor_threshold=0.5,
                         return_dict_in_generate=True, output_history=True)
    start = out.history[0, 0].tolist()
    assert len(start) == 32 and start[6:] == [EOS_ID] * 26
    assert all(t in (h, MASK_ID) for t, h in zip(start, hypothesis[0]))
    everything = model.generate(**feats, decoding="D", decoder_input_ids=hypothesis, anchor_threshold=1.0,
                                return_dict_in_generate=True, output_history=True)
    assert everything.history[0, 0, :6].tolist() == [MASK_ID] * 6  # threshold 1: the hypothesis sets the length


class Drafts:
    """A streamer in transformers' diffusion convention: put_draft per step, then put and end."""

    def __init__(self):
        self.drafts, self.put_values, self.ended = [], [], False

    def put_draft(self, value, **kwargs):
        self.drafts.append(value.clone())

    def put(self, value):
        self.put_values.append(value.clone())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("settings", [dict(decoding="A"), dict(decoding="B"), dict(decoding="B", steps=4),
                                      dict(decoding="D", anchor_threshold=0.9, steps=2)])
def test_the_streamer_sees_steps_plus_one_drafts_whose_last_is_the_answer(settings):
    model, feats = ctc_model(), features(2)
    streamer = Drafts()
    ids = model.generate(**feats, streamer=streamer, **settings)
    config = model.resolve_decoding(**settings)
    assert len(streamer.drafts) == config.steps + 1
    assert (streamer.drafts[0] == MASK_ID).any()  # the start
    assert torch.equal(streamer.drafts[-1], ids) and torch.equal(streamer.put_values[-1], ids) and streamer.ended


def test_transformers_text_diffusion_streamer_runs(capsys):
    from transformers import TextDiffusionStreamer

    from conftest import make_processor, make_tiny_asr_model

    processor = make_processor()  # skips without Whisper's tokenizer
    model = make_tiny_asr_model(processor)
    inputs = processor(audio=synthetic_speech(2.0), sampling_rate=16000)
    ids = model.generate(**inputs, streamer=TextDiffusionStreamer(processor.tokenizer, skip_special_tokens=True))
    assert processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip() in capsys.readouterr().out


def test_d_s_answer_grows_with_its_reading_and_a_cut_answer_is_warned_about(caplog):
    model, feats = ctc_model(), features(8)
    reading = reading_of(model, feats)
    assert len(reading.tokens[0]) + 1 > 32  # this random model reads more tokens than the default gen_length 32
    with caplog.at_level(logging.WARNING):
        full = model.generate(**feats, decoding="D")
    assert full.shape[1] == len(reading.tokens[0]) + 1 and (full[0] == EOS_ID).any()
    assert "without an end of text" not in caplog.text
    with caplog.at_level(logging.WARNING):
        cut = model.generate(**feats, decoding="D", gen_length=16)  # the caller's length is kept ... and warned about
    assert cut.shape[1] == 16 and "answers filled all 16 positions without an end of text (gen_length=16)" in caplog.text


def test_a_b_c_answers_follow_the_audio_with_tokens_per_second():
    model, short, long = ctc_model(), features(1), features(10)
    assert model.generate(**short, decoding="B", tokens_per_second=4.0).shape[1] == 32  # 5 positions needed: default
    assert model.generate(**long, decoding="B", tokens_per_second=4.0).shape[1] == 41  # 10 s x 4 + 1
    assert model.generate(**long, decoding="C", tokens_per_second=4.0).shape[1] == 48  # a multiple of 16 blocks
    assert model.generate(**long, decoding="B", tokens_per_second=4.0, gen_length=32).shape[1] == 32  # the caller's


def test_without_an_attention_mask_the_audio_length_is_read_off_the_features():
    model, feats = ctc_model(), features(2, 5)
    for settings in (dict(decoding="D"), dict(decoding="B")):
        with_mask = model.generate(**feats, **settings)
        without = model.generate(input_features=feats.input_features, **settings)
        assert torch.equal(with_mask, without)


def test_a_model_s_recorded_d_is_what_decoding_d_means_for_it(tmp_path):
    """A default recorded as "D,anchor_threshold=0.9,steps=8" (train_hf, the demo model): decoding="D", the pipeline's
    and eval_hf.py's "D", keep those settings after a save and load; other presets and explicit settings still apply."""
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    model = ctc_model()
    model.generation_config = model.resolve_decoding("D,anchor_threshold=0.9,steps=8")
    model.generation_config.explicit = []
    model.save_pretrained(tmp_path)
    loaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path)
    own = loaded.resolve_decoding("D")
    assert (own.decoding, own.steps, own.anchor_threshold, own.name) == ("D", 8, 0.9, "D")
    assert loaded.resolve_decoding("D,steps=2").steps == 2 and loaded.resolve_decoding("B").steps == 8
    assert not loaded.resolve_decoding("A").anchored
    feats = features(2)
    assert torch.equal(loaded.generate(**feats), loaded.generate(**feats, decoding="D"))
