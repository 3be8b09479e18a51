"""The Dream decoder family (modeling_dream.py, generation_dream.py) on tiny random weights: the official checkpoint
layout and config.json, logits, Dream's sampler and SFT loss against an independent reference (dream_reference.py),
the decoder interface (presets, anchored start, LoRA, gradient checkpointing)."""

import copy
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from transformers import GenerationConfig

from configuration_whisper_llada import TrainingRecipe
from dream_reference import official_dream_logits, reference_diffusion_generate, reference_sft_loss
from generation_dream import DREAM_PRESETS, DreamGenerationConfig
from modeling_dream import (DREAM_V0_7B_CONFIG, DreamConfig, DreamForMaskedDiffusion, cart_weights,
                            count_parameters)
from modeling_lora import add_lora

VOCAB, MASK, EOS = 64, 63, 62

# A tiny Dream with the official config.json's field names (the published file's keys, smaller shapes)
TINY_OFFICIAL_CONFIG = {**DREAM_V0_7B_CONFIG, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB, "mask_token_id": MASK,
                        "bos_token_id": EOS, "eos_token_id": EOS, "pad_token_id": EOS, "max_window_layers": 2,
                        "max_position_embeddings": 512, "rope_theta": 10000.0, "torch_dtype": "float32"}


def official_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official Dream key names and shapes (q/k/v with biases)."""
    g = torch.Generator().manual_seed(seed)
    d, m, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * d // config["num_attention_heads"]
    shapes = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
              "self_attn.q_proj.weight": (d, d), "self_attn.q_proj.bias": (d,), "self_attn.k_proj.weight": (kv, d),
              "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.weight": (kv, d), "self_attn.v_proj.bias": (kv,),
              "self_attn.o_proj.weight": (d, d), "mlp.gate_proj.weight": (m, d), "mlp.up_proj.weight": (m, d),
              "mlp.down_proj.weight": (d, m)}
    state = {"model.embed_tokens.weight": torch.randn(v, d, generator=g) * 0.5,
             "model.norm.weight": 1 + 0.1 * torch.randn(d, generator=g),
             "lm_head.weight": torch.randn(v, d, generator=g) * 0.3}
    state["lm_head.weight"][config["mask_token_id"]] = 0.0  # as in a trained Dream, [MASK] is never the argmax
    for i in range(config["num_hidden_layers"]):
        for name, shape in shapes.items():
            scale = 0.1 if "norm" in name or "bias" in name else 0.2
            base = 1.0 if "norm" in name else 0.0
            state[f"model.layers.{i}.{name}"] = base + scale * torch.randn(shape, generator=g)
    return state


def write_official_checkpoint(directory, config: dict, state: dict, shards: int = 2) -> None:
    """The official config.json as it is + sharded safetensors + model.safetensors.index.json."""
    (directory / "config.json").write_text(json.dumps(config))
    names, weight_map = sorted(state), {}
    for index in range(shards):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[index::shards]}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dream")
    state = official_state_dict(TINY_OFFICIAL_CONFIG)
    write_official_checkpoint(directory, TINY_OFFICIAL_CONFIG, state)
    model = DreamForMaskedDiffusion.from_pretrained(directory, dtype=torch.float32).eval()
    return directory, state, model


def reference_logits_fn(state):
    return lambda x, mask: official_dream_logits(state, TINY_OFFICIAL_CONFIG, input_ids=x, attention_mask=mask)


def prompts(batch: int):
    """(ids, attention_mask): one prompt, or two with the second left-padded by 3 positions."""
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, 60, (batch, 7), generator=g)
    mask = torch.ones_like(ids)
    if batch == 2:
        ids[1, :3], mask[1, :3] = EOS, 0
    return ids, mask


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint layout, config.json, logits
# ----------------------------------------------------------------------------------------------------------------------


def test_official_config_json_loads_as_is_and_counts_7_6b_parameters(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(DREAM_V0_7B_CONFIG))
    config = DreamConfig.from_pretrained(tmp_path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (3584, 28, 28)
    assert (config.num_key_value_heads, config.intermediate_size, config.vocab_size) == (4, 18944, 152064)
    assert config.rope_parameters["rope_theta"] == 1e6 and config.mask_token_id == 151666
    assert config.eos_token_id == config.pad_token_id == 151643 and not config.tie_word_embeddings
    total = count_parameters(DREAM_V0_7B_CONFIG)
    assert total == 7_615_616_512 and abs(total / 1e9 - 7.6) < 0.05


def test_official_checkpoint_loads_and_matches_reference_logits(official):
    _, state, model = official
    assert set(model.state_dict()) == set(state)  # exactly the official names, nothing else persisted
    ids = torch.randint(0, 60, (2, 9))
    with torch.no_grad():
        ours = model(ids).logits
    torch.testing.assert_close(ours, official_dream_logits(state, TINY_OFFICIAL_CONFIG, input_ids=ids),
                               atol=2e-5, rtol=1e-4)


def test_left_padding_matches_reference_and_the_unpadded_prompt(official):
    _, state, model = official
    ids, mask = prompts(2)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        alone = model(ids[1:, 3:]).logits
    expected = official_dream_logits(state, TINY_OFFICIAL_CONFIG, input_ids=ids, attention_mask=mask)
    real = mask.bool()  # padding positions' own logits are not defined by the official model
    torch.testing.assert_close(ours[real], expected[real], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours[1, 3:], alone[0], atol=2e-5, rtol=1e-4)


def test_logits_positions_and_embeddings_input(official):
    _, _, model = official
    ids = torch.randint(0, 60, (1, 8))
    with torch.no_grad():
        full = model(ids).logits
        part = model(inputs_embeds=model.get_input_embeddings()(ids), logits_positions=slice(3, 6)).logits
    torch.testing.assert_close(part, full[:, 3:6], atol=1e-6, rtol=1e-6)


def test_missing_key_is_a_clear_error(tmp_path):
    state = official_state_dict(TINY_OFFICIAL_CONFIG)
    del state["model.layers.1.self_attn.k_proj.bias"]
    write_official_checkpoint(tmp_path, TINY_OFFICIAL_CONFIG, state)
    with pytest.raises(ValueError, match=r"missing weights .*layers\.1\.self_attn\.k_proj\.bias"):
        DreamForMaskedDiffusion.from_pretrained(tmp_path, dtype=torch.float32)


def test_misshaped_key_is_a_clear_error(tmp_path):
    state = official_state_dict(TINY_OFFICIAL_CONFIG)
    state["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(5, 32)
    write_official_checkpoint(tmp_path, TINY_OFFICIAL_CONFIG, state)
    with pytest.raises(ValueError, match=r"mis-shaped weights .*q_proj"):
        DreamForMaskedDiffusion.from_pretrained(tmp_path, dtype=torch.float32)


def test_saved_model_reloads_with_the_same_weights(official, tmp_path):
    _, state, model = official
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "Dream"
    reloaded = DreamForMaskedDiffusion.from_pretrained(tmp_path, dtype=torch.float32)
    assert all(torch.equal(reloaded.state_dict()[name], tensor) for name, tensor in state.items())
    assert reloaded.generation_config.mask_token_id == MASK


def test_pull_reads_the_named_checkpoint_in_the_default_dtype(official):
    directory, state, _ = official

    class SpeechConfig:
        decoder_name_or_path = str(directory)
        decoder_config = None

    decoder = DreamForMaskedDiffusion.pull(SpeechConfig())
    assert decoder.dtype == torch.get_default_dtype()
    assert torch.equal(decoder.lm_head.weight, state["lm_head.weight"])
    assert isinstance(decoder.generation_config, DreamGenerationConfig)


def test_tied_config_ties_the_head_to_the_embeddings():
    config = DreamConfig.from_dict({**TINY_OFFICIAL_CONFIG, "tie_word_embeddings": True})
    model = DreamForMaskedDiffusion(config)
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


# ----------------------------------------------------------------------------------------------------------------------
# Dream's sampler against the reference diffusion_generate
# ----------------------------------------------------------------------------------------------------------------------

SAMPLER_CASES = [
    dict(alg="origin", temperature=0.0),
    dict(alg="origin", temperature=0.8),
    dict(alg="entropy", temperature=0.0),
    dict(alg="entropy", temperature=0.8, top_p=0.9),
    dict(alg="maskgit_plus", temperature=0.0, top_k=8),
    dict(alg="maskgit_plus", temperature=0.7, alg_temp=0.5),
    dict(alg="topk_margin", temperature=0.6, top_p=0.95, top_k=20),
]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("case", SAMPLER_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_generate_gives_the_reference_tokens_from_ids_and_from_embeddings(official, case, batch):
    _, state, model = official
    ids, mask = prompts(batch)
    gen_length, steps = 12, 6
    torch.manual_seed(11)
    expected = reference_diffusion_generate(reference_logits_fn(state), ids, mask, gen_length, steps, MASK, **case)
    torch.manual_seed(11)
    from_ids = model.generate(input_ids=ids, attention_mask=mask, gen_length=gen_length, steps=steps, **case)
    torch.manual_seed(11)
    from_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=mask,
                                 max_new_tokens=gen_length, steps=steps, **case)
    assert torch.equal(from_ids, expected[:, ids.shape[1]:])
    assert torch.equal(from_embeds, expected[:, ids.shape[1]:])
    assert case["temperature"] or not (from_ids == MASK).any()  # sampling may draw [MASK], as the official code


def test_batched_generation_equals_one_by_one(official):
    _, _, model = official
    ids, mask = prompts(2)
    both = model.generate(input_ids=ids, attention_mask=mask, gen_length=12, steps=4, alg="entropy")
    alone = model.generate(input_ids=ids[1:, 3:], gen_length=12, steps=4, alg="entropy")
    assert torch.equal(both[1:], alone)


def test_generator_makes_sampling_reproducible(official):
    _, _, model = official
    ids, _ = prompts(1)
    settings = dict(gen_length=12, steps=6, alg="origin", temperature=1.0)
    first = model.generate(input_ids=ids, generator=torch.Generator().manual_seed(3), **settings)
    again = model.generate(input_ids=ids, generator=torch.Generator().manual_seed(3), **settings)
    assert torch.equal(first, again)


def test_semi_autoregressive_blocks_fill_left_to_right(official):
    _, _, model = official
    ids, _ = prompts(1)
    out = model.generate(input_ids=ids, gen_length=16, steps=8, block_length=4, return_dict_in_generate=True,
                         output_history=True)
    assert out.history.shape == (1, 9, 16) and torch.equal(out.history[:, -1], out.sequences)
    for block in range(4):
        state = out.history[0, 2 * (block + 1)]  # after the block's 2 steps
        assert not (state[: 4 * (block + 1)] == MASK).any() and (state[4 * (block + 1):] == MASK).all()


def test_streamer_gets_every_step(official):
    _, _, model = official

    class Recorder:
        def __init__(self):
            self.drafts, self.final, self.ended = [], None, False

        def put_draft(self, value):
            self.drafts.append(value.clone())

        def put(self, value):
            self.final = value

        def end(self):
            self.ended = True

    streamer = Recorder()
    answer = model.generate(input_ids=prompts(1)[0], gen_length=8, steps=4, streamer=streamer)
    assert len(streamer.drafts) == 5 and (streamer.drafts[0] == MASK).all() and streamer.ended
    assert torch.equal(streamer.drafts[-1], answer) and torch.equal(streamer.final, answer)


def test_anchored_start_keeps_given_tokens_and_fills_masks(official):
    _, _, model = official
    ids, mask = prompts(2)
    start = torch.randint(0, 60, (2, 10))
    start[:, 8:] = EOS
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, decoding="D", answer_start=start), start)
    holes = start.clone()
    holes[0, [1, 4]] = MASK
    holes[1, [0, 2, 3, 7]] = MASK
    for settings in (dict(), dict(steps=3, alg="origin"), dict(steps=2, alg="maskgit_plus", alg_temp=0.3)):
        filled = model.generate(input_ids=ids, attention_mask=mask, decoding="D", answer_start=holes, **settings)
        given = holes != MASK
        assert torch.equal(filled[given], holes[given]) and not (filled == MASK).any()
        assert not (filled[~given] == EOS).any()  # a reading slot is refilled, never ended
    lengths = torch.tensor([10, 8])
    filled = model.generate(input_ids=ids, attention_mask=mask, decoding="D", answer_start=holes,
                            answer_lengths=lengths)
    assert not (filled == MASK).any()
    with pytest.raises(ValueError, match="answer_start"):
        model.generate(input_ids=ids, attention_mask=mask, decoding="D")


# ----------------------------------------------------------------------------------------------------------------------
# Decoding settings
# ----------------------------------------------------------------------------------------------------------------------


def test_presets_names_and_settings(official):
    _, _, model = official
    a = model.resolve_generation_config(decoding="A", gen_length=32)
    assert (a.steps, a.num_blocks, a.name) == (1, 1, "A,gen_length=32")
    b = model.resolve_generation_config(decoding="B,alg=origin,temperature=0.5")
    assert (b.steps, b.alg, b.temperature, b.name) == (8, "origin", 0.5, "B,alg=origin,temperature=0.5")
    c = model.resolve_generation_config(decoding="C")
    assert (c.steps, c.num_blocks, c.block_length, c.steps_per_block) == (128, 16, 8, 8)
    d = model.resolve_generation_config(decoding="D", anchor_threshold=0.5)
    assert d.anchored and d.steps == 1 and d.settings()["anchor_threshold"] == 0.5
    assert set(DREAM_PRESETS) == {"A", "B", "C", "D", "CTC"}
    assert model.resolve_generation_config(decoding="CTC").ctc_reading and not d.ctc_reading
    settings = b.settings()
    assert settings["gen_length"] == 128 and settings["alg"] == "origin" and settings["num_beams"] == 1
    assert model.resolve_generation_config(max_new_tokens=24).gen_length == 24
    assert model.resolve_generation_config(b) is b  # a resolved config is taken as it is
    config = copy.deepcopy(model.generation_config)
    config.set_length(40)
    assert config.max_new_tokens == config.block_length == 40


def test_strings_and_bad_settings_are_refused(official):
    _, _, model = official
    assert DreamGenerationConfig.handles("B,alg=entropy,top_p=0.9")
    assert not DreamGenerationConfig.handles("AR,num_beams=4")
    assert not DreamGenerationConfig.handles("B,kv_cache=dual")
    assert DreamGenerationConfig.parse("steps=16,gen_length=64") == {"steps": 16, "gen_length": 64}
    with pytest.raises(TypeError, match=r"\['kv_cache', 'remasking'\]"):
        model.generate(input_ids=prompts(1)[0], remasking="random", kv_cache="dual")
    for bad in (dict(alg="greedy"), dict(top_p=1.5), dict(top_k=0), dict(temperature=-1.0), dict(steps=0),
                dict(gen_length=30, block_length=8), dict(eps=1.0), dict(anchor_slack=2)):
        with pytest.raises(ValueError):
            model.resolve_generation_config(**bad)
    with pytest.raises(ValueError, match="num_beams"):
        model.resolve_generation_config(num_beams=4)


def test_official_generation_config_json_is_read(official):
    _, _, model = official
    official_file = GenerationConfig(alg="origin", alg_temp=None, bos_token_id=EOS, eos_token_id=EOS, eps=0.001,
                                     mask_token_id=None, output_history=False, pad_token_id=EOS, steps=512,
                                     temperature=0.0, top_k=None, top_p=None)
    config = model.resolve_generation_config(official_file, gen_length=16)
    assert (config.alg, config.steps, config.gen_length, config.mask_token_id) == ("origin", 512, 16, MASK)
    with pytest.raises(ValueError, match="repetition_penalty"):
        model.resolve_generation_config(GenerationConfig(repetition_penalty=1.2))


def test_a_saved_generation_config_reads_back(official, tmp_path):
    _, _, model = official
    resolved = model.resolve_generation_config(decoding="C", alg="origin", temperature=0.3, top_k=5)
    resolved.save_pretrained(tmp_path)
    for loaded in (GenerationConfig.from_pretrained(tmp_path), DreamGenerationConfig.from_pretrained(tmp_path)):
        again = model.resolve_generation_config(loaded)
        assert again.name == resolved.name == "C,alg=origin,temperature=0.3,top_k=5"
        assert again.settings() == resolved.settings()


# ----------------------------------------------------------------------------------------------------------------------
# Dream's SFT loss
# ----------------------------------------------------------------------------------------------------------------------


def loss_inputs(model, seed: int = 0):
    """A left-padded prefix of embeddings (2, 5, d) and EOS-padded answers, the second with a -100 tail."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randn(2, 5, model.config.hidden_size, generator=g)
    prefix_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    labels = torch.randint(0, 60, (2, 9), generator=g)
    labels[0, 6:] = EOS
    labels[1, 5:7], labels[1, 7:] = EOS, -100
    return prefix, prefix_mask, labels


def test_prefix_loss_equals_the_reference_and_reaches_the_prefix(official):
    _, state, model = official
    prefix, prefix_mask, labels = loss_inputs(model)
    prefix.requires_grad_(True)
    torch.manual_seed(5)
    ours = model.prefix_loss(prefix, prefix_mask, labels)
    torch.manual_seed(5)
    expected = reference_sft_loss(
        lambda embeds, mask: official_dream_logits(state, TINY_OFFICIAL_CONFIG, inputs_embeds=embeds,
                                                   attention_mask=mask),
        prefix.detach(), prefix_mask, labels, state["model.embed_tokens.weight"], MASK)
    torch.testing.assert_close(ours.loss, expected, atol=1e-5, rtol=1e-4)
    assert ours.logits.shape == (2, 9, VOCAB)
    ours.loss.backward()
    assert prefix.grad is not None and prefix.grad[0].abs().sum() > 0 and (prefix.grad[1, :2] == 0).all()


def test_cart_weights_are_the_geometric_context():
    clean = torch.tensor([[1, 1, 0, 0, 1, 0]], dtype=torch.bool)
    weights = cart_weights(clean, 0)
    expected = [sum(0.5 * 0.3 * 0.7 ** (abs(i - j) - 1) for j in (0, 1, 4) if j != i) for i in range(6)]
    torch.testing.assert_close(weights[0], torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_anchored_rows_score_only_their_mask_slots(official):
    _, _, model = official
    prefix, prefix_mask, labels = loss_inputs(model)
    anchored = labels.clamp(min=0).clone()
    anchored[0, [2, 5]] = MASK
    anchored[1] = -1  # row 1 is not anchored
    torch.manual_seed(1)
    loss = model.prefix_loss(prefix, prefix_mask, labels, TrainingRecipe(), anchored).loss
    changed = labels.clone()
    changed[0, [0, 1, 3]] = (changed[0, [0, 1, 3]] + 1) % 60  # targets at row 0's unmasked slots: not scored
    torch.manual_seed(1)
    assert torch.allclose(model.prefix_loss(prefix, prefix_mask, changed, TrainingRecipe(), anchored).loss, loss)

    only = anchored.clone()
    only[1] = labels[1].clamp(min=0)
    only[1, 0] = MASK
    with torch.no_grad():
        out = model.prefix_loss(prefix, prefix_mask, labels, anchored=only)
        nll = lambda b, j: -torch.log_softmax(out.logits[b, j].float(), -1)[labels[b, j]]  # noqa: E731
        row0 = (nll(0, 2) + nll(0, 5)) / 2 * 9  # the row's mean cross-entropy, for its 9 answer tokens
        row1 = nll(1, 0) * 7
    torch.testing.assert_close(out.loss, (row0 + row1) / 16, atol=1e-5, rtol=1e-5)


def test_lora_gradients_reach_only_the_adapters(official):
    directory, _, _ = official
    model = DreamForMaskedDiffusion.from_pretrained(directory, dtype=torch.float32)
    wrapped = add_lora(model, {"target_modules": list(model.lora_targets), "r": 2, "lora_alpha": 4,
                               "lora_dropout": 0.0})
    assert len(wrapped) == 7 * 2 and all(name.startswith("model.layers.") for name in wrapped)
    model.requires_grad_(False)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    prefix, prefix_mask, labels = loss_inputs(model)
    torch.manual_seed(0)
    model.prefix_loss(prefix, prefix_mask, labels).loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(grad is None for name, grad in grads.items() if ".lora_" not in name)
    assert all(grads[name] is not None for name in grads if ".lora_" in name)
    assert all(grads[name].abs().sum() > 0 for name in grads if ".lora_B" in name)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(official):
    directory, _, _ = official
    model = DreamForMaskedDiffusion.from_pretrained(directory, dtype=torch.float32).train()
    model.requires_grad_(False)
    prefix, prefix_mask, labels = loss_inputs(model)
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        embeds = prefix.clone().requires_grad_(True)
        torch.manual_seed(2)
        loss = model.prefix_loss(embeds, prefix_mask, labels).loss
        loss.backward()
        results.append((loss.detach(), embeds.grad))
    assert math.isclose(float(results[0][0]), float(results[1][0]), rel_tol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())
