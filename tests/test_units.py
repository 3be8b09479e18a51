"""CTC units (processing_ctc_units.CTCUnits): a small set of the decoder's tokens that spells any word; the processor
spells answers in them; a checkpoint with a unit set saves, loads as remote code and decodes."""

import json
import random
import string

import pytest
import torch

from conftest import (needs_whisper_tokenizer, DEMO_AUDIO, ROOT, load_in_clean_process, make_processor, make_tiny_asr_model,
                      read_jsonl, synthetic_speech)
from processing_ctc_units import DEFAULT_ALPHABET, CTCUnits, UnspellableError, spelling_ids
from whisper_llada_data import normalize_transcript

SMOLLM2_TOKENIZER = ROOT / "demo" / "model"  # SmolLM2's byte-level BPE (49152 tokens), bundled with the demo model


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(SMOLLM2_TOKENIZER)


@pytest.fixture(scope="module")
def texts():
    return [normalize_transcript(line["text"]) for line in read_jsonl(DEMO_AUDIO / "manifest.jsonl")]


def random_words(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase + "'") for _ in range(rng.randint(1, 14))) for _ in range(count)]


@pytest.mark.parametrize("size", [96, 256])
def test_every_word_of_any_text_is_spelled_and_round_trips(tokenizer, texts, size):
    units = CTCUnits.choose(tokenizer, texts, size)
    assert len(units) == size
    unseen = " ".join(random_words(300))  # words the unit set was not chosen from, apostrophes anywhere
    for text in texts + [unseen, "a", "i'm o'neill", "zyzzyva quixotic"]:
        ids = units.segment(text)
        assert ids and all(i in units for i in ids)
        assert tokenizer.decode(ids) == text
    # the tokenizer's own tokens where they are all units: a frequent word is one unit
    assert units.segment(" the") == tokenizer(" the", add_special_tokens=False)["input_ids"]


def test_unit_set_holds_every_letter_with_and_without_the_word_start_marker(tokenizer, texts):
    units = CTCUnits.choose(tokenizer, texts, 128)
    needed = spelling_ids(tokenizer, DEFAULT_ALPHABET)
    assert needed <= set(units.ids)
    for c in DEFAULT_ALPHABET:
        for piece in (c, "Ġ" + c):
            token = tokenizer.convert_tokens_to_ids(piece)
            if token is not None and token != tokenizer.unk_token_id:
                assert token in units
    assert not set(units.ids) & set(tokenizer.all_special_ids)
    with pytest.raises(ValueError, match="below the .* units needed to spell every word"):
        CTCUnits.choose(tokenizer, texts, 20)
    # more units: fewer per text; each unit kept is used by the texts it was chosen from
    small, large = CTCUnits.choose(tokenizer, texts, 96), CTCUnits.choose(tokenizer, texts, 400)
    assert sum(map(len, map(large.segment, texts))) < sum(map(len, map(small.segment, texts)))


def test_a_character_no_unit_writes_is_named_or_skipped(tokenizer, texts):
    units = CTCUnits.choose(tokenizer, texts, 96)
    with pytest.raises(UnspellableError, match="cannot spell 'über'"):
        units.segment("an über word")
    assert tokenizer.decode(units.segment("an über word", skip_unspellable=True)) == "an ber word"


def test_processor_spells_labels_in_units_and_keeps_them_when_saved(tokenizer, texts, tmp_path):
    from transformers import WhisperFeatureExtractor

    from processing_whisper_llada import WhisperLladaProcessor

    units = CTCUnits.choose(tokenizer, texts, 128)
    processor = WhisperLladaProcessor(WhisperFeatureExtractor(), tokenizer, ctc_units=units.ids)
    labels = processor(text=["knitting needles", "a"])["labels"]
    eos = processor.eos_token_id
    first = [i for i in labels[0].tolist() if i != eos]
    assert first == units.segment("knitting needles") and all(i in units for i in first)
    assert labels[0].tolist().count(eos) >= 1 and labels.shape[1] == len(first) + 1
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["ctc_units"] == units.ids
    again = WhisperLladaProcessor.from_pretrained(tmp_path)
    assert again.ctc_units == units.ids and torch.equal(again(text=["knitting needles", "a"])["labels"], labels)


@needs_whisper_tokenizer
def test_a_checkpoint_with_a_unit_set_saves_loads_as_remote_code_and_decodes(texts, tmp_path):
    processor = make_processor()
    units = CTCUnits.choose(processor.tokenizer, texts, 120)
    blank = processor.tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    processor.ctc_units = units.ids
    model = make_tiny_asr_model(processor, gen_length=16)
    model.config.update(dict(ctc_blank_id=blank, ctc_token_ids=units.ids + [blank], answer_units=True))
    model.config.validate_architecture()
    audio = synthetic_speech(2.0)
    features = processor(audio=audio, sampling_rate=16000)
    reading = model.generate(**features, decoding="CTC")
    assert all(int(i) in units or int(i) == processor.eos_token_id for i in reading[0])
    model.generation_config.update(decoding="D", anchored=True, steps=1)  # D by default, as a unit model records
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "processing_ctc_units.py").is_file()
    result = load_in_clean_process(tmp_path / "model", audio, features, tmp_path)
    assert result["ids_model"] == model.generate(**features).tolist()  # the model's default: D
    assert result["pipeline"]["text"] == processor.batch_decode(model.generate(**features))[0]
