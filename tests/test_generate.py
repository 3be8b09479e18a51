"""generate(): token-identical to LLaDA's reference sampler at temperature 0 (configs A/B/C), batching, options."""

import pytest
import torch

from conftest import EOS_ID, MASK_ID, synthetic_speech
from llada_reference import reference_generate
from generation_llada import num_transfer_schedule

GEN = 32


def random_prefix(model, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, model.config.decoder_config.d_model, generator=g)


def reference_tokens(model, prefix: torch.Tensor, steps: int, gen_length: int, block_length: int, **kwargs):
    """LLaDA's reference sampler (tests/llada_reference.py) driven by our decoder on the same prefix."""
    width = prefix.shape[1]
    embed = model.decoder.get_input_embeddings()

    def logits_fn(x):
        return model.decoder(inputs_embeds=torch.cat((prefix, embed(x[:, width:])), dim=1)).logits

    dummy_prompt = torch.zeros(1, width, dtype=torch.long)  # stands for the prefix positions, never masked
    with torch.no_grad():
        x = reference_generate(logits_fn, dummy_prompt, steps, gen_length, block_length, mask_id=MASK_ID, **kwargs)
    return x[:, width:]


def test_transfer_schedule_matches_llada():
    assert num_transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert num_transfer_schedule(2, 8) == [1, 1, 0, 0, 0, 0, 0, 0]
    assert sum(num_transfer_schedule(128, 8)) == 128


@pytest.mark.parametrize(
    "decoding, steps, block_length",
    [("A", 1, GEN), ("B", 8, GEN), ("C", 128, GEN // 16)],
)
def test_presets_equal_reference_sampler(tiny_model, decoding, steps, block_length):
    for seed in range(3):
        prefix = random_prefix(tiny_model, 9 + seed, seed)
        ours = tiny_model.generate(inputs_embeds=prefix, decoding=decoding, gen_length=GEN)
        expected = reference_tokens(tiny_model, prefix, steps, GEN, block_length)
        assert torch.equal(ours, expected), (decoding, seed)
        assert not (ours == MASK_ID).any()


@pytest.mark.parametrize("steps, gen_length, block_length", [(16, 32, 8), (12, 24, 24), (6, 32, 16), (4, 16, 4)])
def test_explicit_arguments_equal_reference_sampler(tiny_model, steps, gen_length, block_length):
    prefix = random_prefix(tiny_model, 7, 1)
    ours = tiny_model.generate(inputs_embeds=prefix, steps=steps, gen_length=gen_length, block_length=block_length)
    assert torch.equal(ours, reference_tokens(tiny_model, prefix, steps, gen_length, block_length))


def test_batched_mixed_lengths_equal_one_by_one(tiny_model):
    prefixes = [random_prefix(tiny_model, n, n) for n in (5, 12, 8)]
    width = max(p.shape[1] for p in prefixes)
    batch = torch.zeros(3, width, prefixes[0].shape[-1])
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, p in enumerate(prefixes):  # left padding
        batch[row, width - p.shape[1]:] = p[0]
        mask[row, width - p.shape[1]:] = 1
    for decoding in "ABC":
        together = tiny_model.generate(inputs_embeds=batch, attention_mask=mask, decoding=decoding)
        alone = torch.cat([tiny_model.generate(inputs_embeds=p, decoding=decoding) for p in prefixes])
        assert torch.equal(together, alone), decoding


def test_audio_batch_with_mixed_lengths_equals_one_by_one(tiny_model):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    waves = [synthetic_speech(s, seed=s, amplitude=0.0, noise=0.1) for s in (2, 5, 3)]  # plain noise
    feats = fe(waves, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    together = tiny_model.generate(input_features=feats.input_features, attention_mask=feats.attention_mask, decoding="B")
    for row, wave in enumerate(waves):
        one = fe([wave], sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
        alone = tiny_model.generate(input_features=one.input_features, attention_mask=one.attention_mask, decoding="B")
        assert torch.equal(together[row : row + 1], alone)


def test_temperature_sampling_and_random_remasking_are_seeded(tiny_model):
    prefix = random_prefix(tiny_model, 6, 0)
    runs = [tiny_model.generate(inputs_embeds=prefix, decoding="B", temperature=0.8, remasking="random",
                                generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and not (runs[0] == MASK_ID).any()
    greedy = tiny_model.generate(inputs_embeds=prefix, decoding="B")
    other_seed = tiny_model.generate(inputs_embeds=prefix, decoding="B", temperature=5.0,
                                     generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other_seed, greedy)


def test_generation_config_holds_the_defaults(tiny_model):
    gc = tiny_model.generation_config
    assert (gc.steps, gc.gen_length, gc.block_length, gc.num_beams) == (8, GEN, GEN, 1)
    s = gc.resolved("C")
    assert (s.steps, s.block_length, s.num_blocks, s.steps_per_block) == (128, 2, 16, 8)
    s = gc.resolved(gen_length=16)
    assert (s.gen_length, s.block_length) == (16, 16)
    assert (gc.steps, gc.gen_length) == (8, GEN)  # resolving returns a copy


@pytest.mark.parametrize(
    "kwargs, message",
    [({"steps": 3, "gen_length": 32, "block_length": 32}, None),
     ({"steps": 8, "gen_length": 30, "block_length": 8}, "divisible by block_length"),
     ({"steps": 6, "gen_length": 32, "block_length": 8}, "number of blocks"),
     ({"steps": 0}, "positive integer"),
     ({"decoding": "D"}, "decoding must be one of"),
     ({"kv_cache": "full"}, "kv_cache"),
     ({"threshold": 1.5}, "threshold"),
     ({"num_beams": 5}, "Beam search"),
     ({"temperature": float("nan")}, "temperature must be a finite number"),
     ({"temperature": float("inf")}, "temperature must be a finite number"),
     ({"threshold": float("nan")}, "threshold must be a finite number"),
     ({"temperature": -1.0}, "temperature must be >= 0"),
     ({"gen_length": 5000, "block_length": 5000}, r"exceeds the decoder's max_sequence_length \(512\)"),
     ({"early_stop": "yes"}, "early_stop must be True or False"),
     ({"remasking": "lowest"}, "remasking must be")],
)
def test_bad_decoding_arguments(tiny_model, kwargs, message):
    """Every setting is checked before any forward: one clear error instead of a silent wrong result."""
    prefix = random_prefix(tiny_model, 5, 0)
    if message is None:  # 3 steps over 32 tokens is valid (remainder goes to the first steps)
        assert tiny_model.generate(inputs_embeds=prefix, **kwargs).shape == (1, 32)
        return
    with pytest.raises(ValueError, match=message):
        tiny_model.generate(inputs_embeds=prefix, **kwargs)


# -- approximate options -----------------------------------------------------------------------------------------------


def test_cached_window_forward_equals_full_forward(tiny_model):
    """The cache mechanism itself is exact: recomputing a window against cached keys/values of unchanged tokens gives
    the full forward's logits (caching only approximates once other positions change)."""
    decoder = tiny_model.decoder
    x = torch.randn(2, 20, 32)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        full = decoder(inputs_embeds=x, attention_mask=mask, return_key_values=True)
        for start, end in ((8, 12), (8, 20)):
            window = decoder(inputs_embeds=x[:, start:end], attention_mask=mask, cached_key_values=full.key_values,
                             cache_start=start)
            torch.testing.assert_close(window.logits, full.logits[:, start:end], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
def test_kv_cache_is_exact_for_one_step_per_block(tiny_model, kv_cache):
    prefix = random_prefix(tiny_model, 8, 2)
    exact = tiny_model.generate(inputs_embeds=prefix, steps=4, gen_length=32, block_length=8)
    cached = tiny_model.generate(inputs_embeds=prefix, steps=4, gen_length=32, block_length=8, kv_cache=kv_cache)
    assert torch.equal(cached, exact)  # each block's only step is the cache-refreshing full forward
    cached_b = tiny_model.generate(inputs_embeds=prefix, decoding="C", kv_cache=kv_cache)
    assert not (cached_b == MASK_ID).any()


def test_threshold_extremes(tiny_model):
    prefix = random_prefix(tiny_model, 8, 3)
    exact = tiny_model.generate(inputs_embeds=prefix, decoding="B")
    assert torch.equal(tiny_model.generate(inputs_embeds=prefix, decoding="B", threshold=1.0), exact)
    one_step = tiny_model.generate(inputs_embeds=prefix, decoding="A")
    assert torch.equal(tiny_model.generate(inputs_embeds=prefix, decoding="B", threshold=1e-12), one_step)


def test_early_stop_fills_after_eos_and_rows_finish_independently(tiny_model):
    # Make EOS the most likely token everywhere except for one prefix, so rows finish at different times.
    head = tiny_model.decoder.model.transformer.ff_out.weight
    with torch.no_grad():
        head[EOS_ID] = head[:EOS_ID].mean(0) + 0.02 * torch.randn_like(head[EOS_ID])
    prefixes = [random_prefix(tiny_model, 6, s) for s in (0, 1, 2)]
    batch = torch.cat(prefixes)
    stopped = tiny_model.generate(inputs_embeds=batch, decoding="C", early_stop=True)
    assert not (stopped == MASK_ID).any()
    for row in stopped:
        eos = (row == EOS_ID).nonzero()
        if len(eos):
            assert (row[eos[0, 0]:] == EOS_ID).all()
    alone = torch.cat([tiny_model.generate(inputs_embeds=p, decoding="C", early_stop=True) for p in prefixes])
    assert torch.equal(stopped, alone)


def test_chunked_confidence_is_bit_identical_to_full_softmax():
    from generation_llada import argmax_probability as _argmax_probability

    logits = torch.randn(7, 5, 300)
    predicted = logits.argmax(-1)
    full = torch.softmax(logits.double(), -1).gather(-1, predicted[..., None]).squeeze(-1)
    assert torch.equal(_argmax_probability(logits, predicted, max_elements=1500), full)  # 1 row per chunk
    assert torch.equal(_argmax_probability(logits, predicted), full)


def test_unknown_or_misspelled_argument_raises(tiny_model):
    prefix = random_prefix(tiny_model, 5, 0)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['step'\]"):
        tiny_model.generate(inputs_embeds=prefix, step=8)
    with pytest.raises(TypeError, match=r"\['max_new_tokens', 'top_k'\]"):
        tiny_model.generate(inputs_embeds=prefix, top_k=5, max_new_tokens=3)


def test_decoding_strings_parse_to_generate_arguments(tiny_model):
    from generation_llada import LladaGenerationConfig

    assert LladaGenerationConfig.parse("B,kv_cache=dual,threshold=0.9,early_stop=1") == {
        "decoding": "B", "kv_cache": "dual", "threshold": 0.9, "early_stop": True}
    assert LladaGenerationConfig.parse("steps=16,gen_length=32,block_length=8") == {
        "steps": 16, "gen_length": 32, "block_length": 8}
    for text, message in (("D", "unknown preset"), ("B,C", "only the first item"), ("B,step=2", "unknown setting"),
                          ("steps=two", "bad value for steps"), ("", "empty")):
        with pytest.raises(ValueError, match=message):
            LladaGenerationConfig.parse(text)
    prefix = random_prefix(tiny_model, 6, 1)
    parsed = tiny_model.generate(inputs_embeds=prefix, **LladaGenerationConfig.parse("C,gen_length=16"))
    assert torch.equal(parsed, tiny_model.generate(inputs_embeds=prefix, decoding="C", gen_length=16))


def test_decoder_owns_its_sampler(tiny_model):
    """The LLaDA decoder generates on its own (prompt embeddings or ids); the speech model only builds the prefix."""
    prefix = random_prefix(tiny_model, 7, 2)
    decoder = tiny_model.decoder
    decoder.generation_config.update(gen_length=GEN, block_length=GEN)
    assert torch.equal(decoder.generate(inputs_embeds=prefix, decoding="B"),
                       tiny_model.generate(inputs_embeds=prefix, decoding="B"))
    ids = torch.tensor([[1, 2, 3, 4]])
    embeds = decoder.get_input_embeddings()(ids)
    assert torch.equal(decoder.generate(input_ids=ids, decoding="A"), decoder.generate(inputs_embeds=embeds, decoding="A"))
