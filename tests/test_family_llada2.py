"""The LLaDA2.0 decoder family: official checkpoint layout and config, logits and generate against the independent
plain reference (tests/llada2_reference.py), the block-diffusion SFT loss, LoRA, gradient checkpointing, the
generation config and preset D's start. Tiny random weights: 2 layers (one dense, one MoE), hidden 32, 8 experts in 4
groups, top-2 of the best 2 groups, one shared expert, vocabulary 64."""

import json

import pytest
import torch
from safetensors.torch import save_file

from llada2_reference import bd_training_mask, block_mask, official_llada2_logits, reference_generate
from modeling_llada2 import (LLADA2_MINI_CONFIG, Llada2GenerationConfig, Llada2MoeConfig,
                             Llada2MoeForMaskedDiffusion, count_parameters)
from modeling_lora import add_lora

VOCAB, MASK, EOS = 64, 63, 62

# an official-format config.json (field names and extras as the Hub's), plus the tiny vocabulary's special ids
OFFICIAL_CONFIG = {
    "architectures": ["LLaDA2MoeModelLM"],
    "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                 "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
    "model_type": "llada2_moe", "torch_dtype": "bfloat16", "attention_dropout": 0.0, "embedding_dropout": 0.0,
    "output_dropout": 0.0, "first_k_dense_replace": 1, "head_dim": 8, "hidden_act": "silu", "hidden_size": 32,
    "initializer_range": 0.02, "intermediate_size": 48, "max_position_embeddings": 512, "max_window_layers": 28,
    "moe_intermediate_size": 16, "moe_router_enable_expert_bias": True, "n_group": 4, "norm_head": False,
    "norm_softmax": False, "norm_topk_prob": True, "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "num_shared_experts": 1, "output_router_logits": False,
    "pad_token_id": EOS, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 600000, "rotary_dim": 4, "routed_scaling_factor": 2.5, "router_dtype": "fp32",
    "score_function": "sigmoid",
    "sliding_window": 4096, "tie_word_embeddings": False, "topk_group": 2, "use_bias": False, "use_cache": False,
    "use_qkv_bias": False, "use_rmsnorm": True, "vocab_size": VOCAB,
    "mask_token_id": MASK, "eos_token_id": EOS,
}


def official_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official key names and shapes (expert_bias non-zero, so that it matters)."""
    g = torch.Generator().manual_seed(seed)
    d, hd = config["hidden_size"], config["head_dim"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    def norm(n):
        return 1 + 0.1 * torch.randn(n, generator=g)

    def mlp(prefix, inner):
        return {f"{prefix}gate_proj.weight": rand(inner, d, scale=0.3),
                f"{prefix}up_proj.weight": rand(inner, d, scale=0.3),
                f"{prefix}down_proj.weight": rand(d, inner, scale=0.3)}

    state = {"model.word_embeddings.weight": rand(VOCAB, d, scale=1.0), "model.norm.weight": norm(d),
             "lm_head.weight": rand(VOCAB, d, scale=0.5)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state.update({p + "input_layernorm.weight": norm(d), p + "post_attention_layernorm.weight": norm(d),
                      p + "attention.query_key_value.weight": rand((heads + 2 * kv) * hd, d, scale=0.4),
                      p + "attention.query_layernorm.weight": norm(hd), p + "attention.key_layernorm.weight": norm(hd),
                      p + "attention.dense.weight": rand(d, heads * hd, scale=0.3)})
        if i < config["first_k_dense_replace"]:
            state.update(mlp(p + "mlp.", config["intermediate_size"]))
            continue
        state.update({p + "mlp.gate.weight": rand(config["num_experts"], d, scale=0.5),
                      p + "mlp.gate.expert_bias": rand(config["num_experts"], scale=0.3)})
        for e in range(config["num_experts"]):
            state.update(mlp(f"{p}mlp.experts.{e}.", config["moe_intermediate_size"]))
        state.update(mlp(p + "mlp.shared_experts.", config["moe_intermediate_size"] * config["num_shared_experts"]))
    return state


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(directory of an official-format checkpoint, its state dict, the loaded model)."""
    directory = tmp_path_factory.mktemp("llada2_official")
    state = official_state_dict(OFFICIAL_CONFIG)
    (directory / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    names = sorted(state)
    weight_map = {}
    for index in range(2):
        file = f"model-{index + 1:05d}-of-00002.safetensors"
        part = {n: state[n].contiguous() for n in names[index::2]}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = Llada2MoeForMaskedDiffusion.from_pretrained(directory, dtype=torch.float32).eval()
    return directory, state, model


def reference_logits(state, ids=None, embeds=None, allowed=None, positions=None):
    return official_llada2_logits(state, OFFICIAL_CONFIG, input_ids=ids, inputs_embeds=embeds, allowed=allowed,
                                  position_ids=positions)


def left_pad(rows: list[torch.Tensor], value: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat((torch.full((width - len(r),), value), r)) for r in rows])
    mask = torch.stack([torch.cat((torch.zeros(width - len(r)), torch.ones(len(r)))) for r in rows]).long()
    return ids, mask


# -- (1) official checkpoint, logits ----------------------------------------------------------------------------------


def test_official_checkpoint_loads_with_official_names_and_logits_match_reference(official, tmp_path):
    _, state, model = official
    assert set(model.state_dict()) == set(state)  # exactly the official names (expert_bias included), nothing else
    assert model.config.use_qk_norm and model.config.head_dim == 8  # official defaults for fields config.json omits
    ids = torch.randint(0, 60, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        blocked = model(input_ids=ids, attention_mask=torch.ones_like(ids), block_length=4).logits
    for row in range(2):  # bidirectional (the official forward without a mask) and block-causal (generate's mask)
        torch.testing.assert_close(ours[row], reference_logits(state, ids[row]), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(blocked[row], reference_logits(state, ids[row], allowed=block_mask(13, 4)),
                                   atol=2e-5, rtol=1e-4)
    model.save_pretrained(tmp_path)  # a saved decoder reloads as it was
    again = Llada2MoeForMaskedDiffusion.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, ours)


def test_left_padding_matches_the_unpadded_reference(official):
    _, state, model = official
    gen = torch.Generator().manual_seed(2)
    rows = [torch.randint(0, 60, (n,), generator=gen) for n in (6, 11)]
    ids, mask = left_pad(rows)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        blocked = model(input_ids=ids, attention_mask=mask, block_length=4).logits
    for row, tokens in enumerate(rows):
        n = len(tokens)
        torch.testing.assert_close(plain[row, -n:], reference_logits(state, tokens), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(blocked[row, -n:], reference_logits(state, tokens, allowed=block_mask(n, 4)),
                                   atol=2e-5, rtol=1e-4)


def test_mini_config_loads_as_is_and_counts_16b_total_1_4b_active():
    config = Llada2MoeConfig(**LLADA2_MINI_CONFIG)
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id) == (156895, 156892, 156892)
    total, active = count_parameters(config)
    assert 16.0e9 < total < 16.5e9 and 1.38e9 < active < 1.48e9


def test_bad_configs_and_missing_weights_are_clear_errors(official, tmp_path):
    with pytest.raises(ValueError, match="n_group"):
        Llada2MoeForMaskedDiffusion(Llada2MoeConfig(**{**OFFICIAL_CONFIG, "n_group": 8}))
    directory, state, _ = official
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    save_file({k: v for k, v in state.items() if "expert_bias" not in k}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing weights .*expert_bias"):
        Llada2MoeForMaskedDiffusion.from_pretrained(tmp_path)


# -- (2) generate against the reference --------------------------------------------------------------------------------


def reference_answers(state, model, prompts, **settings) -> list[torch.Tensor]:
    embed = state["model.word_embeddings.weight"]
    logits_fn = lambda e, allowed, pos: reference_logits(state, embeds=e, allowed=allowed, positions=pos)  # noqa: E731
    return [reference_generate(logits_fn, lambda ids: embed[ids], embed[p], mask_id=MASK, eos_id=EOS, **settings)
            for p in prompts]


def assert_same_answers(ours: torch.Tensor, expected: list[torch.Tensor]) -> None:
    """Ours is (B, gen_length) EOS-padded; the official answer stops after its first EOS."""
    for row, answer in zip(ours, expected):
        assert row[: len(answer)].tolist() == answer.tolist()
        assert (row[len(answer):] == EOS).all()


def eos_prone(official, bias: float):
    """(state, model) whose LM head favours EOS by `bias` (0: the official fixture's), so that answers end early."""
    _, state, model = official
    if not bias:
        return state, model
    state = dict(state)
    head = state["lm_head.weight"].clone()
    head[EOS] = 3 * bias * torch.ones(head.shape[1]) / head.shape[1] ** 0.5
    state["lm_head.weight"] = head
    model = Llada2MoeForMaskedDiffusion(Llada2MoeConfig(**OFFICIAL_CONFIG)).eval()
    model.load_state_dict(state)
    return state, model


GREEDY_SETTINGS = [  # (EOS bias, settings)
    (0.0, dict(gen_length=16, block_length=8, steps=4, threshold=0.95)),
    (0.0, dict(gen_length=16, block_length=8, steps=8, threshold=0.3)),  # the threshold commits several at once
    (0.0, dict(gen_length=16, block_length=8, steps=16, threshold=0.95, minimal_topk=2)),  # capped steps, 1 per step
    (1.5, dict(gen_length=16, block_length=8, steps=4, threshold=0.95)),  # rows end at a block holding an EOS
    (1.5, dict(gen_length=12, block_length=5, steps=3, threshold=1.0, eos_early_stop=True)),
    (2.0, dict(gen_length=16, block_length=8, steps=8, threshold=0.3, eos_early_stop=True)),
]


@pytest.mark.parametrize("bias,settings", GREEDY_SETTINGS)
def test_greedy_generate_matches_the_reference_from_ids_and_embeddings_batched(official, bias, settings):
    state, model = eos_prone(official, bias)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 60, (n,), generator=gen) for n in (5, 11)]
    expected = reference_answers(state, model, prompts, **settings)
    ids, mask = left_pad(prompts)
    embeds = model.get_input_embeddings()(ids)
    for row, prompt in enumerate(prompts):  # batch of one
        assert_same_answers(model.generate(input_ids=prompt[None], **settings), expected[row:row + 1])
    assert_same_answers(model.generate(input_ids=ids, attention_mask=mask, **settings), expected)
    assert_same_answers(model.generate(inputs_embeds=embeds, attention_mask=mask, **settings), expected)


@pytest.mark.parametrize("bias", [0.0, 1.5])
def test_sampling_matches_the_reference_with_the_same_seed(official, bias):
    state, model = eos_prone(official, bias)
    prompt = torch.randint(0, 60, (7,), generator=torch.Generator().manual_seed(4))
    settings = dict(gen_length=16, block_length=8, steps=4, threshold=0.6, temperature=0.8, top_k=20, top_p=0.9)
    torch.manual_seed(11)
    expected = reference_answers(state, model, [prompt], **settings)
    torch.manual_seed(11)
    assert_same_answers(model.generate(input_ids=prompt[None], **settings), expected)
    torch.manual_seed(11)
    embeds = model.get_input_embeddings()(prompt[None])
    assert_same_answers(model.generate(inputs_embeds=embeds, **settings), expected)
    expected = reference_answers(state, model, [prompt], generator=torch.Generator().manual_seed(5), **settings)
    ours = model.generate(input_ids=prompt[None], generator=torch.Generator().manual_seed(5), **settings)
    assert_same_answers(ours, expected)


def test_presets_streamer_and_history(official):
    _, state, model = official
    prompt = torch.randint(0, 60, (6,), generator=torch.Generator().manual_seed(6))
    for preset, steps in (("A", 1), ("B", 8), ("C", 8)):
        config = model.resolve_generation_config(decoding=preset, gen_length=16)
        assert config.name == f"{preset},gen_length=16" and config.steps == steps and config.threshold is None
        expected = reference_answers(state, model, [prompt], gen_length=16, block_length=config.block_length,
                                     steps=steps, threshold=1.0)
        assert_same_answers(model.generate(input_ids=prompt[None], generation_config=config), expected)

    class Streamer:
        drafts, final, ended = 0, None, False

        def put_draft(self, value):
            self.drafts += 1

        def put(self, value):
            self.final = value

        def end(self):
            self.ended = True

    streamer = Streamer()
    out = model.generate(input_ids=prompt[None], decoding="B", gen_length=16, streamer=streamer,
                         return_dict_in_generate=True, output_history=True)
    assert streamer.ended and torch.equal(streamer.final, out.sequences)
    assert out.history.shape[1] == streamer.drafts and (out.history[:, 0] == MASK).all()


# -- (3) the block-diffusion SFT loss ----------------------------------------------------------------------------------


def independent_loss(state, model, prefix, prefix_mask, labels, seed, block, anchored=None):
    """dFactory's block-diffusion SFT loss recomputed per sample on the unpadded sequence with the reference forward:
    t ~ U(0.3, 0.8), tokens masked with probability t, [x_t ; x_0] under bd_training_mask, mean CE at masked slots."""
    torch.manual_seed(seed)
    batch, answer_len = labels.shape
    t = 0.3 + 0.5 * torch.rand(batch, 1)
    masked = torch.rand(batch, answer_len) < t
    embed = state["model.word_embeddings.weight"]
    losses = []
    for b in range(batch):
        keep = labels[b] != -100
        answer = labels[b][keep]
        row_masked = masked[b][keep]
        noisy = torch.where(row_masked, torch.tensor(MASK), answer)
        if anchored is not None and (anchored[b] >= 0).all():
            noisy = anchored[b][keep]
            row_masked = noisy == MASK
        real_prefix = prefix[b][prefix_mask[b].bool()]
        n = len(real_prefix) + len(answer)
        x_t = torch.cat((real_prefix, embed[noisy]))
        x_0 = torch.cat((real_prefix, embed[answer]))
        logits = reference_logits(state, embeds=torch.cat((x_t, x_0)), allowed=bd_training_mask(n, block),
                                  positions=torch.arange(n).repeat(2))
        answer_logits = logits[len(real_prefix):n]
        ce = torch.nn.functional.cross_entropy(answer_logits[row_masked], answer[row_masked], reduction="sum")
        losses.append(ce / row_masked.sum().clamp(min=1))
    return torch.stack(losses).mean()


def loss_inputs(model):
    gen = torch.Generator().manual_seed(7)
    prefix = torch.randn(2, 6, 32, generator=gen)
    prefix_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    labels = torch.randint(0, 60, (2, 10), generator=gen)
    labels[0, 7:] = EOS  # EOS padding is part of the answer
    labels[1, 8:] = -100  # not in the answer
    return prefix, prefix_mask, labels


@pytest.mark.parametrize("block", [4, 32])
def test_prefix_loss_equals_the_authors_objective_and_reaches_the_prefix(official, block, monkeypatch):
    _, state, model = official
    monkeypatch.setattr(model, "sft_block_length", block)
    prefix, prefix_mask, labels = loss_inputs(model)
    prefix.requires_grad_(True)
    torch.manual_seed(8)
    out = model.prefix_loss(prefix, prefix_mask, labels)
    expected = independent_loss(state, model, prefix.detach(), prefix_mask, labels, seed=8, block=block)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-4)
    assert out.logits.shape == (2, 10, VOCAB)
    out.loss.backward()
    assert prefix.grad[prefix_mask.bool()].abs().sum() > 0 and (prefix.grad[~prefix_mask.bool()] == 0).all()


def test_anchored_rows_score_only_their_mask_positions(official, monkeypatch):
    _, state, model = official
    monkeypatch.setattr(model, "sft_block_length", 4)
    prefix, prefix_mask, labels = loss_inputs(model)
    anchored = torch.full_like(labels, -1)
    anchored[0] = labels[0].clamp(min=0)
    anchored[0, [1, 4, 8]] = MASK
    anchored[0, 2] = 5  # a wrong hypothesis token is input, not scored
    torch.manual_seed(9)
    loss = model.prefix_loss(prefix, prefix_mask, labels, anchored=anchored).loss
    expected = independent_loss(state, model, prefix, prefix_mask, labels, seed=9, block=4, anchored=anchored)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)


# -- (4) LoRA and gradient checkpointing -------------------------------------------------------------------------------


def test_lora_gradients_only_on_lora_parameters_and_checkpointing_changes_nothing(official):
    directory, _, _ = official
    model = Llada2MoeForMaskedDiffusion.from_pretrained(directory, dtype=torch.float32).train()
    model.requires_grad_(False)
    names = add_lora(model, {"r": 2, "lora_alpha": 4, "target_modules": list(model.lora_targets), "lora_dropout": 0.0})
    assert "model.layers.0.attention.query_key_value" in names and "model.layers.1.mlp.shared_experts.up_proj" in names
    assert "model.layers.0.mlp.gate_proj" in names and not any(".experts." in n for n in names)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B = 0 at the start: give the adapters an effect
            param.data.normal_(0, 0.1)
    prefix, prefix_mask, labels = loss_inputs(model)
    torch.manual_seed(10)
    loss = model.prefix_loss(prefix, prefix_mask, labels).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n for n in grads) and all(g.abs().sum() > 0 for g in grads.values())
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(10)
    again = model.prefix_loss(prefix, prefix_mask, labels).loss
    again.backward()
    torch.testing.assert_close(again, loss)
    assert all(torch.allclose(p.grad, grads[n], atol=1e-6) for n, p in model.named_parameters() if n in grads)


# -- (5) preset D's start and the generation config --------------------------------------------------------------------


def test_d_start_keeps_given_tokens_and_fills_masks(official):
    _, state, model = official
    gen = torch.Generator().manual_seed(12)
    prompts = [torch.randint(0, 60, (n,), generator=gen) for n in (5, 9)]
    ids, mask = left_pad(prompts)
    full = torch.randint(0, 60, (2, 12), generator=gen)
    full[1, 9:] = EOS  # a hypothesis then EOS padding
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, decoding="D", gen_length=12,
                                      answer_start=full), full)
    start = full.clone()
    start[:, [0, 3, 4, 7]] = MASK
    out = model.generate(input_ids=ids, attention_mask=mask, decoding="D", gen_length=12, answer_start=start)
    assert not (out == MASK).any() and torch.equal(out[start != MASK], full[start != MASK])
    expected = reference_answers(state, model, prompts[:1], gen_length=12, block_length=12, steps=1, threshold=1.0,
                                 answer_start=start[0])
    assert_same_answers(out[:1], expected)
    with pytest.raises(ValueError, match="answer_start"):
        model.generate(input_ids=ids, attention_mask=mask, decoding="D", gen_length=12)


def test_generation_config_resolves_validates_and_names(official):
    _, _, model = official
    config = model.generation_config
    assert isinstance(config, Llada2GenerationConfig) and config.name == "L2"
    assert (config.block_length, config.steps, config.threshold, config.mask_token_id) == (32, 32, 0.95, MASK)
    resolved = model.resolve_generation_config(decoding="L2,threshold=0.9,top_k=5", gen_length=64)
    assert resolved.name == "L2,threshold=0.9,top_k=5,gen_length=64" and resolved.settings()["num_blocks"] == 2
    assert Llada2GenerationConfig.handles("L2,steps=4") and Llada2GenerationConfig.handles("B")
    assert not Llada2GenerationConfig.handles("AR") and not Llada2GenerationConfig.handles("AR,num_beams=4")
    assert Llada2GenerationConfig.parse("C,gen_length=64,top_p=0.9") == {"decoding": "C", "gen_length": 64,
                                                                         "top_p": 0.9}
    with pytest.raises(TypeError, match=r"\['kv_cache', 'max_new_tokens'\]"):
        model.resolve_generation_config(kv_cache="dual", max_new_tokens=3)
    for bad in (dict(threshold=1.5), dict(top_p=0.0), dict(steps=0), dict(temperature=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            model.resolve_generation_config(**bad)
    with pytest.raises(ValueError, match="divisible"):
        model.resolve_generation_config(decoding="C", gen_length=40)
    config.set_length(48)
    assert config.gen_length == 48 and config.block_length == 32
