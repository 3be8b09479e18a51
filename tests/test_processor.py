"""WhisperLladaProcessor: the chat prompt against LLaDA's official template, training labels, transcript decoding and
the audio input checks. Uses Whisper tiny.en's tokenizer (with LLaDA's special tokens) and feature extractor from
../shared; skips cleanly without it."""

import json
import re
from functools import partial

import numpy as np
import pytest
import torch

from conftest import needs_whisper_tokenizer, LLADA_META, needs_shared, synthetic_speech

pytestmark = needs_whisper_tokenizer

SPEECH = "<|speech|>"


# A steady 330 Hz tone of amplitude 0.3: tone(seconds, rate=16000). `processor` is conftest's fixture.
tone = partial(synthetic_speech, freq=330.0, tremolo=None, noise=0.0)


# ----------------------------------------------------------------------------------------------------------------------
# 5. The chat prompt
# ----------------------------------------------------------------------------------------------------------------------


@needs_shared(LLADA_META)
def test_prompt_ids_match_official_chat_template(processor):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from processing_whisper_llada import LLADA_CHAT_TEMPLATE

    official = json.loads((LLADA_META / "tokenizer_config.json").read_text())
    assert LLADA_CHAT_TEMPLATE == official["chat_template"]
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders it
    rendered = environment.from_string(official["chat_template"]).render(
        messages=[{"role": "user", "content": "transcribe the following speech to text:" + SPEECH}],
        bos_token=official["bos_token"],
        add_generation_prompt=True,
    )
    assert rendered == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\ntranscribe the following speech to text:"
        "<|speech|><|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    prefix, suffix = processor.prompt_ids()
    tokenizer = processor.tokenizer
    assert tokenizer.decode(prefix) + SPEECH + tokenizer.decode(suffix) == rendered


def test_prompt_ids_structure(processor):
    tokenizer = processor.tokenizer
    prefix, suffix = processor.prompt_ids()
    assert prefix[0] == tokenizer.bos_token_id == tokenizer.convert_tokens_to_ids("<|startoftext|>")
    assert prefix[1] == tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    assert tokenizer.decode(prefix[1:]) == "<|start_header_id|>user<|end_header_id|>\n\n" + processor.prompt
    assert suffix[0] == processor.eot_token_id == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert suffix[1] == tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    assert tokenizer.decode(suffix[1:]) == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    # special tokens are single ids, distinct from each other and from EOS
    specials = [processor.mask_token_id, processor.eot_token_id, processor.eos_token_id, tokenizer.bos_token_id]
    assert None not in specials and len(set(specials)) == 4
    # a custom prompt replaces the instruction only
    other_prefix, other_suffix = processor.prompt_ids("write down what is said:")
    assert other_suffix == suffix and tokenizer.decode(other_prefix).endswith("user<|end_header_id|>\n\nwrite down what is said:")


# ----------------------------------------------------------------------------------------------------------------------
# 6. Labels and decoding
# ----------------------------------------------------------------------------------------------------------------------


def test_labels_are_transcript_plus_eos_padded_with_eos(processor):
    tokenizer, eos = processor.tokenizer, processor.eos_token_id
    texts = ["HELLO WORLD THIS IS A TEST", "YES"]
    labels = processor(text=texts)["labels"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(i) for i in ids) + 1
    assert labels.dtype == torch.long and labels.shape == (2, width)
    for row, row_ids in zip(labels.tolist(), ids):
        assert row == row_ids + [eos] * (width - len(row_ids))
    assert processor.batch_decode(labels) == texts
    # surrounding whitespace is stripped; a single string gives a batch of one
    assert processor(text="  YES ")["labels"].tolist() == [ids[1] + [eos]]
    # max_label_length pads (or truncates) to a fixed width
    assert processor(text=texts, max_label_length=12)["labels"].shape == (2, 12)


def test_batch_decode_cuts_at_eos_and_drops_special_ids(processor):
    tokenizer = processor.tokenizer
    mask, eos, eot = processor.mask_token_id, processor.eos_token_id, processor.eot_token_id
    hello = tokenizer("HELLO", add_special_tokens=False)["input_ids"]
    world = tokenizer(" WORLD", add_special_tokens=False)["input_ids"]
    rows = [
        hello + world + [eos] + hello + [eos],  # cut at the first EOS
        [mask] + hello + [mask] + world + [mask],  # masks dropped
        hello + [eot] + world,  # cut at EOT
        [eos] * 4,  # nothing
    ]
    width = max(len(r) for r in rows)
    padded = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
    assert processor.batch_decode(padded) == ["HELLO WORLD", "HELLO WORLD", "HELLO", ""]
    assert processor.decode(torch.tensor(rows[1])) == "HELLO WORLD"
    assert processor.decode(rows[0]) == "HELLO WORLD"


# ----------------------------------------------------------------------------------------------------------------------
# 7. Audio inputs: accepted forms and one clear error per bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_features_and_attention_mask(processor):
    out = processor(audio=[tone(1.0), tone(2.5)], sampling_rate=16000)
    assert out["input_features"].shape == (2, 80, 3000) and out["input_features"].dtype == torch.float32
    assert out["attention_mask"].sum(-1).tolist() == [100, 250]


def test_stereo_is_downmixed(processor):
    mono = tone(1.0)
    reference = processor(audio=mono, sampling_rate=16000)["input_features"]
    stereo = np.stack([mono * 0.5, mono * 1.5])  # mean = mono
    for item in ([stereo], [stereo.T.copy()], {"raw": stereo, "sampling_rate": 16000}):
        features = processor(audio=item, sampling_rate=16000)["input_features"]
        assert features.shape == reference.shape
        assert torch.allclose(features, reference, atol=1e-5)


def test_stereo_array_is_one_clip_as_in_the_pipeline(processor):
    # a bare 2-D array is one multi-channel clip (the pipeline's load_audio reads it so), never a batch of rows
    from processing_whisper_llada import AudioInputError, load_audio

    mono = tone(0.04)  # 640 samples
    stereo = np.stack([mono * 0.5, mono * 1.5])  # (channels, samples); mean = mono
    reference = processor(audio=mono, sampling_rate=16000)["input_features"]
    for array in (stereo, stereo.T.copy(), torch.from_numpy(stereo.T.copy())):  # (2, N), (N, 2), a tensor
        np.testing.assert_allclose(load_audio(array), mono, atol=1e-6)  # what the pipeline feeds the extractor
        features = processor(audio=array, sampling_rate=16000)["input_features"]
        assert features.shape == reference.shape == (1, 80, 3000)
        assert torch.allclose(features, reference, atol=1e-5)
    assert processor(audio=[mono, mono], sampling_rate=16000)["input_features"].shape[0] == 2  # a batch is a list

    ambiguous = np.zeros((300, 400), dtype=np.float32)
    for call in (lambda: processor(audio=ambiguous, sampling_rate=16000), lambda: load_audio(ambiguous)):
        with pytest.raises(AudioInputError, match=re.escape("has shape (300, 400)") + ".*give a list of 1-D arrays"):
            call()


def test_8khz_input_is_resampled(processor):
    audio_8k = tone(2.0, rate=8000)
    out = processor(audio=audio_8k, sampling_rate=8000)
    assert int(out["attention_mask"].sum()) == 200  # 2 s at 100 mel frames/s, i.e. resampled to 32000 samples
    as_dict = processor(audio={"raw": audio_8k, "sampling_rate": 8000})
    assert torch.equal(as_dict["input_features"], out["input_features"])
    reference = processor(audio=tone(2.0), sampling_rate=16000)
    assert (out["input_features"][..., :198] - reference["input_features"][..., :198]).abs().mean() < 0.05


def test_an_array_without_sampling_rate_is_read_at_16khz_with_a_warning(processor, caplog):
    """As transformers' feature extractors do: an array without `sampling_rate` is taken at the extractor's rate, and
    that is said; files carry their own rate, and an explicit rate silences it."""
    import logging

    with caplog.at_level(logging.WARNING):
        unnamed = processor(audio=tone(1.0))["input_features"]
    assert "without `sampling_rate`; they are read as 16000 Hz" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        named = processor(audio=tone(1.0), sampling_rate=16000)["input_features"]
    assert caplog.text == "" and torch.equal(unnamed, named)


def test_integer_pcm_is_scaled(processor):
    audio = tone(1.0)
    pcm = (audio * np.iinfo(np.int16).max).astype(np.int16)
    features = processor(audio=pcm, sampling_rate=16000)["input_features"]
    reference = processor(audio=audio, sampling_rate=16000)["input_features"]
    assert (features - reference).abs().mean() < 1e-3  # int16 quantisation only


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, dtype=np.float32), "is empty"),
        (np.full(16000, np.nan, dtype=np.float32), "all 16000 samples are NaN"),
        (np.where(np.arange(16000) == 5, np.nan, 0.1).astype(np.float32), "1 of 16000 samples are NaN or infinite"),
        (np.zeros(30 * 16000 + 160, dtype=np.float32),
         "30.01 s long (480160 samples at 16000 Hz); the Whisper encoder sees at most 30 s (480000 samples)"),
        (np.zeros(16000, dtype=np.complex64), "must be a float (or integer PCM) waveform, got dtype complex64"),
        ([np.array(["a", "b", "c"])], "must be a float (or integer PCM) waveform, got dtype <U1"),
        ({"raw": np.zeros((2, 2, 16000), dtype=np.float32), "sampling_rate": 16000},
         "must be 1-D (mono) or 2-D (multi-channel), got shape (2, 2, 16000)"),
        ([np.zeros((1, 2, 16000), dtype=np.float32)], "must be 1-D (mono) or 2-D (multi-channel)"),
        (b"this is not an audio file", "Could not read audio <bytes>"),
        ({"bytes": b"RIFF....WAVEfmt garbage"}, "Could not read audio <bytes>"),
        ({"raw": np.zeros(10, dtype=np.float32)}, "needs 'raw' (or 'array') and 'sampling_rate'"),
    ],
    ids=["empty", "all-nan", "some-nan", "over-30s", "complex", "string", "3d-dict", "3d-list", "corrupt-bytes",
         "corrupt-bytes-dict", "dict-without-rate"],
)
def test_bad_audio_raises_one_clear_error(processor, audio, message):
    from processing_whisper_llada import AudioInputError

    with pytest.raises(AudioInputError, match=re.escape(message)):
        processor(audio=audio, sampling_rate=16000)


def test_missing_and_corrupt_files_name_the_path(processor, tmp_path):
    from processing_whisper_llada import AudioInputError

    missing = tmp_path / "missing" / "clip.flac"
    with pytest.raises(AudioInputError, match=re.escape(f"Audio file not found: {missing}")):
        processor(audio=str(missing))
    with pytest.raises(AudioInputError, match=re.escape(f"Audio file not found: {missing}")):
        processor(audio=missing)  # a Path works too
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00" * 64)
    with pytest.raises(AudioInputError, match=re.escape(f"Could not read audio {corrupt}")):
        processor(audio=str(corrupt))


def test_long_item_in_batch_is_named(processor):
    from processing_whisper_llada import AudioInputError

    with pytest.raises(AudioInputError, match=r"Audio item 1 is 31\.00 s long"):
        processor(audio=[tone(1.0), tone(31.0)], sampling_rate=16000)


@pytest.mark.parametrize("text", ["", "   ", ["OK", ""], [None]])
def test_empty_transcript_raises(processor, text):
    with pytest.raises(ValueError, match=r"Transcript \d is empty or not a string"):
        processor(text=text)


def test_needs_audio_or_text(processor):
    with pytest.raises(ValueError, match="needs `audio` and/or `text`"):
        processor()


def test_loading_from_a_checkpoint_does_not_ask_about_remote_code(processor, tmp_path, monkeypatch):
    # a whisper-llada checkpoint's config.json is remote code; the processor must not need it (no trust prompt)
    import transformers.models.auto.configuration_auto as configuration_auto

    from processing_whisper_llada import WhisperLladaProcessor

    processor.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "whisper_llada", "auto_map": {"AutoConfig": "configuration_whisper_llada.WhisperLladaConfig"}}))

    def no_prompt(*args, **kwargs):
        raise AssertionError("the processor asked whether to trust remote code")

    monkeypatch.setattr(configuration_auto, "resolve_trust_remote_code", no_prompt)
    loaded = WhisperLladaProcessor.from_pretrained(tmp_path)
    assert type(loaded.feature_extractor).__name__ == "WhisperFeatureExtractor"
    assert loaded.prompt_ids() == processor.prompt_ids()
    assert (loaded.mask_token_id, loaded.eot_token_id) == (processor.mask_token_id, processor.eot_token_id)
