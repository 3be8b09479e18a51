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
     ({"decoding": "E"}, "decoding must be one of"),
     ({"decoding": "D"}, "needs a CTC head, and this model has none"),
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
    from configuration_llada_generation import LladaGenerationConfig

    assert LladaGenerationConfig.parse("B,kv_cache=dual,threshold=0.9,early_stop=1") == {
        "decoding": "B", "kv_cache": "dual", "threshold": 0.9, "early_stop": True}
    assert LladaGenerationConfig.parse("steps=16,gen_length=32,block_length=8") == {
        "steps": 16, "gen_length": 32, "block_length": 8}
    for text, message in (("E", "unknown preset"), ("B,C", "only the first item"), ("B,step=2", "unknown setting"),
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


# -- hypothesis-anchored decoding (D) ----------------------------------------------------------------------------------


def anchor_config(tiny_model, **settings):
    return tiny_model.resolve_decoding("D", **settings)


def test_anchored_start_keeps_confident_tokens_masks_the_rest_adds_slots_then_eos(tiny_model):
    from generation_llada import anchored_answer

    config = anchor_config(tiny_model, anchor_threshold=0.5, anchor_slack=2, gen_length=12)
    tokens = [[5, 6, 7, 8], [9], []]
    confidences = [[0.9, 0.2, 0.5, 0.7], [0.1], []]
    start = anchored_answer(tokens, confidences, config)
    M, E = MASK_ID, EOS_ID
    assert start.tolist() == [[5, M, 7, 8, M, M] + [E] * 6,  # 0.2 < 0.5 masked, 0.5 kept; 2 slots; EOS to the end
                              [M, M, M] + [E] * 9,
                              [M, M] + [E] * 10]
    assert start.shape == (3, config.gen_length)
    long = anchored_answer([list(range(20))], [[1.0] * 20], config)  # longer than gen_length - slack: cut to fit
    assert long.tolist() == [list(range(10)) + [M, M]]
    no_slack = anchored_answer([[5, 6]], [[1.0, 1.0]], anchor_config(tiny_model, anchor_slack=0, gen_length=8))
    assert no_slack.tolist() == [[5, 6] + [E] * 6]


def test_ctc_hypotheses_collapse_runs_drop_blanks_and_keep_the_best_frame(tiny_model):
    """Greedy CTC over the CTC head: argmax per frame, repeats collapsed (unless a blank separates them), blanks
    dropped, a token's confidence the highest posterior of its run; class k is ctc_token_ids[k]."""
    model = tiny_whisper_llada(ctc_blank_id=59, ctc_token_ids=[5, 6, 59])
    table = model.decoder.get_input_embeddings().weight.detach()[[5, 6, 59]]
    # frames that score classes [5, 5, blank, 5, 6, 6, blank] with growing margins
    frames = [0, 0, 2, 0, 1, 1, 2]
    scale = [1.0, 3.0, 3.0, 2.0, 5.0, 1.0, 3.0]
    states = torch.stack([s * 40 * table[k] / table[k].norm() for k, s in zip(frames, scale)])[None]
    tokens, confidences = model.ctc_hypotheses(states, torch.tensor([7]))
    assert tokens == [[5, 5, 6]]
    posterior = torch.softmax(model.speech_token_logits(states).float(), -1)[0]
    expected = [max(posterior[0, 0], posterior[1, 0]), posterior[3, 0], max(posterior[4, 1], posterior[5, 1])]
    torch.testing.assert_close(torch.tensor(confidences[0]), torch.stack(expected))
    assert model.ctc_hypotheses(states, torch.tensor([2]))[0] == [[5]]  # only the valid frames are read


def tiny_whisper_llada(**overrides):
    from conftest import tiny_whisper_llada as build

    torch.manual_seed(0)
    return build(**overrides)


def test_anchored_decoding_fills_only_masked_positions_batched_equals_one_by_one():
    from transformers import WhisperFeatureExtractor

    model = tiny_whisper_llada(ctc_blank_id=59)
    fe = WhisperFeatureExtractor(feature_size=80)
    waves = [synthetic_speech(s, seed=s, amplitude=0.0, noise=0.1) for s in (2, 5, 3)]
    feats = fe(waves, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    config = model.resolve_decoding("D", anchor_threshold=0.05, steps=2)
    out = model.generate(input_features=feats.input_features, attention_mask=feats.attention_mask,
                         generation_config=config, return_dict_in_generate=True, output_history=True)
    start, final = out.history[:, 0], out.sequences
    kept = start != MASK_ID
    assert torch.equal(final[kept], start[kept])  # the hypothesis' confident tokens and the EOS tail stay
    assert not (final == MASK_ID).any()
    for row, wave in enumerate(waves):
        one = fe([wave], sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
        alone = model.generate(input_features=one.input_features, attention_mask=one.attention_mask, decoding="D",
                               anchor_threshold=0.05, steps=2)
        width = alone.shape[1]  # a batch is as wide as its longest answer; a row's own positions decode the same
        assert torch.equal(final[row : row + 1, :width], alone)
        assert (final[row, width:] == EOS_ID).all()


def test_anchored_decoding_commits_each_rows_masks_over_the_steps_as_llada_schedules_them():
    from generation_llada import num_transfer_schedule

    model = tiny_whisper_llada(ctc_blank_id=59)
    feats = torch.randn(2, 80, 3000)
    mask = torch.zeros(2, 3000, dtype=torch.long)
    mask[0, :300], mask[1, :700] = 1, 1
    out = model.generate(input_features=feats, attention_mask=mask, decoding="D", anchor_threshold=0.9, anchor_slack=3,
                         steps=3, return_dict_in_generate=True, output_history=True)
    masks = (out.history == MASK_ID).sum(-1)  # (B, states)
    for row in range(2):
        committed = (masks[row, :-1] - masks[row, 1:]).tolist()
        assert committed == num_transfer_schedule(int(masks[row, 0]), 3)[: len(committed)]


def test_anchored_decoding_settings_are_validated():
    model = tiny_whisper_llada(ctc_blank_id=59)
    prefix = random_prefix(model, 5, 0)
    with pytest.raises(ValueError, match=r"anchor_threshold must be in \[0, 1\]"):
        model.resolve_decoding("D", anchor_threshold=1.5)
    with pytest.raises(ValueError, match="anchor_slack must be an integer >= 0"):
        model.resolve_decoding("D", anchor_slack=-1)
    with pytest.raises(ValueError, match="runs over one block"):
        model.resolve_decoding("D", block_length=8)
    with pytest.raises(ValueError, match=r"apply to anchored decoding only: use decoding=\"D\""):
        model.resolve_decoding("B", anchor_threshold=0.5)
    with pytest.raises(ValueError, match="reads the audio: pass input_features"):
        model.generate(inputs_embeds=prefix, decoding="D")
    with pytest.raises(ValueError, match=r"ctc_fusion must be in \[0, 1\]"):
        model.resolve_decoding("D", ctc_fusion=2.0)
    with pytest.raises(ValueError, match="ctc_top_k must be None or an integer >= 1"):
        model.resolve_decoding("D", ctc_top_k=0)
    assert model.resolve_decoding("D,anchor_threshold=0.5").name == "D,anchor_threshold=0.5"
    assert model.resolve_decoding("D").settings()["anchor_slack"] == 0  # the preset's default


def test_editor_example_is_d_s_start_with_the_aligned_transcript_as_target():
    """D's editing task as training sees it, in the reading's frame (Mask-CTC style): the input is the CTC reading with
    its uncertain tokens masked and EOS after it; each reading slot's target is the transcript token aligned to it, the
    delete filler where the CTC wrote a token in excess; a transcript token the CTC missed has no slot."""
    from generation_llada import align, editor_example

    assert align([1, 9, 3, 4], [1, 2, 3, 4]) == [0, 1, 2, 3]  # a substitution
    assert align([1, 3, 4], [1, 2, 3, 4]) == [0, None, 1, 2]  # a deletion
    assert align([1, 2, 7, 3], [1, 2, 3]) == [0, 1, 3]  # an insertion has no place
    assert align([5, 6], [6, 5]) in ([1, None], [None, 0])  # equal tokens paired rather than two substitutions
    labels = torch.tensor([10, 11, 12, 13, 14, EOS_ID, EOS_ID, EOS_ID])
    # reading: 10 right, 21 for 11 (confident), 12 unsure, 30 inserted (unsure), 13 and 14 right
    inputs, targets = editor_example(labels, [10, 21, 12, 30, 13, 14], [0.9, 0.8, 0.3, 0.2, 0.9, 0.9], 0.5, MASK_ID,
                                     EOS_ID, 59)
    assert inputs.tolist() == [10, 21, MASK_ID, MASK_ID, 13, 14, EOS_ID, EOS_ID]
    assert targets.tolist() == [10, 11, 12, 59, 13, 14, EOS_ID, EOS_ID]
    # 12 missed by the CTC: no slot for it
    _, targets = editor_example(labels, [10, 11, 13, 14], [0.9] * 4, 0.5, MASK_ID, EOS_ID, 59)
    assert targets.tolist() == [10, 11, 13, 14, EOS_ID, EOS_ID, EOS_ID, EOS_ID]
    cut_inputs, _ = editor_example(torch.tensor([10, EOS_ID, -100]), [10, 11, 12, 13], [0.9] * 4, 0.5, MASK_ID,
                                   EOS_ID, 59)
    assert cut_inputs.tolist() == [10, 11, EOS_ID]  # a reading longer than the answer is cut, EOS kept


def test_editor_training_loss_is_the_mean_cross_entropy_of_the_targets_at_the_masks():
    """training.anchor_prob = 1: every row's input is its editor example; the loss is the mean cross-entropy of the
    targets at the input's [MASK] positions (rows averaged); the CTC head is read, not trained by it."""
    import torch.nn.functional as F

    from generation_llada import editor_example

    model = tiny_whisper_llada(ctc_blank_id=59, training={"anchor_prob": 1.0, "anchor_threshold": 0.5}).train()
    feats = torch.randn(2, 80, 3000)
    mask = torch.zeros(2, 3000, dtype=torch.long)
    mask[0, :300], mask[1, :500] = 1, 1
    labels = torch.tensor([[5, 6, 7, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID],
                           [8, 9, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID]])
    torch.manual_seed(3)
    loss = model(input_features=feats, attention_mask=mask, labels=labels).loss
    model.eval()  # no SpecAugment (none is set) and the same speech states
    states, lengths = model.project_speech(feats, mask)
    tokens, confidences = model.ctc_hypotheses(states, lengths)
    examples = [editor_example(labels[r], tokens[r], confidences[r], 0.5, MASK_ID, EOS_ID, 59) for r in range(2)]
    inputs, targets = torch.stack([e[0] for e in examples]), torch.stack([e[1] for e in examples])
    prefix, prefix_mask = model.build_prefix(model.speech_embeddings_from(states), lengths)
    embeds = torch.cat((prefix, model.decoder.get_input_embeddings()(inputs)), 1)
    logits = model.decoder(inputs_embeds=embeds, attention_mask=torch.cat((prefix_mask, torch.ones_like(labels)), 1),
                           logits_positions=slice(prefix.shape[1], None)).logits
    masked = inputs == MASK_ID
    assert masked.any()
    expected = sum(F.cross_entropy(logits[r][masked[r]], targets[r][masked[r]]) for r in range(2) if masked[r].any()) / 2
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_a_plain_generation_config_is_read_as_masked_diffusion_settings(tiny_model, tmp_path):
    """generate(generation_config=GenerationConfig(...)) and GenerationConfig.from_pretrained(checkpoint) passed back in:
    their LLaDA fields are taken and validated like keyword arguments, the model's special ids fill in what they lack;
    fields masked diffusion cannot honour are one clear error."""
    from transformers import GenerationConfig

    prefix = random_prefix(tiny_model, 6, 4)
    plain = GenerationConfig(steps=4, gen_length=16, block_length=8)
    assert torch.equal(tiny_model.generate(inputs_embeds=prefix, generation_config=plain),
                       tiny_model.generate(inputs_embeds=prefix, steps=4, gen_length=16, block_length=8))
    tiny_model.generation_config.save_pretrained(tmp_path)
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert type(saved) is GenerationConfig
    assert torch.equal(tiny_model.generate(inputs_embeds=prefix, generation_config=saved),
                       tiny_model.generate(inputs_embeds=prefix))
    assert torch.equal(tiny_model.generate(inputs_embeds=prefix, generation_config=saved, decoding="C"),
                       tiny_model.generate(inputs_embeds=prefix, decoding="C"))
    with pytest.raises(ValueError, match=r"\['max_new_tokens'\] cannot be used for masked-diffusion decoding"):
        tiny_model.generate(inputs_embeds=prefix, generation_config=GenerationConfig(max_new_tokens=5))
    with pytest.raises(ValueError, match="cannot be used for masked-diffusion decoding"):
        tiny_model.generate(inputs_embeds=prefix, generation_config=GenerationConfig(num_beams=4))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tiny_model.generate(inputs_embeds=prefix, generation_config=GenerationConfig(steps=0))
