"""DiffusionGemma as whisper-llada's decoder (modeling_diffusion_gemma_decoder.py), on a tiny random
`DiffusionGemmaForBlockDiffusion` saved as a native checkpoint: loading it, generating exactly what transformers'
`generate` gives (from embeddings and from ids, batched with left padding), the SFT loss against a plain per-row
computation, starting canvases, LoRA, the decoding strings, the prompt layout and the published 26B-A4B config."""

import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, PreTrainedModel, PretrainedConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from modeling_diffusion_gemma_decoder import (  # noqa: E402
    DIFFUSION_GEMMA_26B_A4B_CONFIG,
    DIFFUSION_GEMMA_26B_A4B_PARAMETERS,
    DiffusionGemmaDecoder,
    DiffusionGemmaSpeechGenerationConfig,
    canvas_from_hypothesis,
    count_parameters,
    read_prompt_layout,
)
from modeling_lora import LoraLinear, add_lora  # noqa: E402

VOCAB, CANVAS, EOS, MASK_MARKER = 512, 16, 1, 4
FAST = {"max_denoising_steps": 2}  # a few sampler steps per canvas keep the tests fast; the loop is the same


def tiny_config() -> DiffusionGemmaConfig:
    """A 2-layer DiffusionGemma (a sliding and a full attention layer, MoE of 4 experts) with a 1-layer vision tower;
    a sliding window of 8 so that the sliding layers' cache window is exercised."""
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, global_head_dim=32, num_experts=4, top_k_experts=2,
                moe_intermediate_size=32, sliding_window=8, max_position_embeddings=256,
                layer_types=["sliding_attention", "full_attention"])
    vision = dict(model_type="gemma4_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS, image_token_id=511,
                                boi_token_id=509, eoi_token_id=510)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model's ops are too small to share, and threads contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random native DiffusionGemma checkpoint directory."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("diffusion-gemma-tiny")
    DiffusionGemmaForBlockDiffusion(tiny_config()).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def native(checkpoint):
    return DiffusionGemmaForBlockDiffusion.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def decoder(checkpoint):
    return DiffusionGemmaDecoder.pull(SimpleNamespace(decoder_name_or_path=str(checkpoint))).eval()


def prompts(batch: int) -> tuple[torch.LongTensor, torch.LongTensor | None]:
    """(B, 7) prompt ids; with B = 2 the second row is left-padded (3 pads) and a mask is given."""
    ids = torch.randint(3, 500, (batch, 7), generator=torch.Generator().manual_seed(11))
    if batch == 1:
        return ids, None
    mask = torch.ones(batch, 7, dtype=torch.long)
    mask[1, :3] = 0
    return ids.masked_fill(mask == 0, 0), mask


# ----------------------------------------------------------------------------------------------------------------------
# 1. Loading a native checkpoint
# ----------------------------------------------------------------------------------------------------------------------


def test_pull_and_from_pretrained_load_the_native_weights_and_logits(checkpoint, native, decoder):
    loaded = DiffusionGemmaDecoder.from_pretrained(checkpoint).eval()
    ids, canvas = prompts(1)[0], torch.randint(0, VOCAB, (1, CANVAS))
    with torch.no_grad():
        reference = native(input_ids=ids, decoder_input_ids=canvas).logits
        for model in (decoder, loaded):
            assert model.state_dict().keys() == native.state_dict().keys()
            assert torch.equal(model(input_ids=ids, decoder_input_ids=canvas).logits, reference)
    assert decoder.dtype == torch.get_default_dtype()
    assert isinstance(decoder.generation_config, DiffusionGemmaSpeechGenerationConfig)
    embedding = decoder.get_input_embeddings()  # the encoder's scaled lookup, tied to the decoder's and the LM head
    assert embedding is decoder.model.encoder.language_model.embed_tokens
    assert embedding.weight is decoder.model.decoder.embed_tokens.weight is decoder.lm_head.weight
    assert float(embedding.embed_scale) == pytest.approx(64**0.5)
    fresh = DiffusionGemmaDecoder.from_config(decoder.config.to_dict())  # random weights, same layout
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in decoder.state_dict().items()}


def test_a_checkpoint_missing_a_weight_is_an_error(checkpoint, tmp_path):
    weights = load_file(checkpoint / "model.safetensors")
    weights.pop("model.decoder.self_conditioning.gate_proj.weight")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(ValueError, match="self_conditioning.gate_proj"):
        DiffusionGemmaDecoder.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# 2. The contract: transformers' generate, token for token
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_generate_from_embeddings_and_ids_equals_transformers_generate(native, decoder, seed):
    """Two canvases (the second one is read back by the encoder), batch 1 and batch 2 with left padding."""
    for batch in (1, 2):
        ids, mask = prompts(batch)
        masked = {} if mask is None else {"attention_mask": mask}
        torch.manual_seed(seed)
        expected = native.generate(input_ids=ids, max_new_tokens=2 * CANVAS, **masked, **FAST).sequences
        torch.manual_seed(seed)
        from_embeddings = decoder.generate(inputs_embeds=decoder.get_input_embeddings()(ids), max_new_tokens=2 * CANVAS,
                                           **masked, **FAST)
        torch.manual_seed(seed)
        from_ids = decoder.generate(input_ids=ids, max_new_tokens=2 * CANVAS, return_dict_in_generate=True, **masked,
                                    **FAST)
        assert from_embeddings.shape == (batch, 2 * CANVAS)  # the new tokens only
        assert torch.equal(from_embeddings, expected[:, ids.shape[1]:])
        assert torch.equal(from_ids.sequences, expected[:, ids.shape[1]:])


def test_generate_with_the_checkpoints_own_settings_equals_transformers_generate(native, decoder):
    """No settings: both read the checkpoint's generation config, completed with transformers' defaults (48 steps)."""
    ids, mask = prompts(2)
    torch.manual_seed(7)
    expected = native.generate(input_ids=ids, attention_mask=mask, max_new_tokens=CANVAS).sequences
    torch.manual_seed(7)
    answer = decoder.generate(inputs_embeds=decoder.get_input_embeddings()(ids), attention_mask=mask,
                              max_new_tokens=CANVAS)
    assert torch.equal(answer, expected[:, ids.shape[1]:])


def test_a_generator_replaces_the_global_random_state(decoder):
    ids = prompts(1)[0]
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = decoder.generate(input_ids=ids, generator=torch.Generator().manual_seed(3), max_new_tokens=CANVAS, **FAST)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    again = decoder.generate(input_ids=ids, generator=torch.Generator().manual_seed(3), max_new_tokens=CANVAS, **FAST)
    torch.manual_seed(3)
    global_rng = decoder.generate(input_ids=ids, max_new_tokens=CANVAS, **FAST)
    assert torch.equal(first, again) and torch.equal(first, global_rng)


# ----------------------------------------------------------------------------------------------------------------------
# 3. The training loss
# ----------------------------------------------------------------------------------------------------------------------


def loss_batch():
    """Prompt ids and mask (row 1 left-padded), and answers: row 0 spans two canvases (EOS-padded), row 1 one canvas
    with its last positions out of the answer (-100)."""
    ids, mask = prompts(2)
    labels = torch.randint(5, 500, (2, 24), generator=torch.Generator().manual_seed(12))
    labels[0, 20:] = EOS
    labels[1, 9:12] = EOS
    labels[1, 12:] = -100
    return ids, mask, labels


def seed_choosing_canvases(wanted: list[int], spanned: list[int]) -> int:
    """A seed whose first draw picks canvas `wanted[b]` of the `spanned[b]` canvases of row b."""
    for seed in range(1000):
        torch.manual_seed(seed)
        if (torch.rand(len(wanted)) * torch.tensor(spanned)).long().tolist() == wanted:
            return seed
    raise AssertionError("no seed found")


def plain_loss(native, ids, mask, labels, seed, eps=1e-3):
    """The DiffusionGemma SFT loss written out per row with transformers' own forward on token ids: the same random
    draws in the same order; the encoder reads the prompt and the clean answer before the row's canvas, the canvas is
    the answer corrupted with random tokens at rate t, a first pass conditions the second for the rows whose coin says
    so, cross-entropy at the corrupted positions averaged over them."""
    batch = labels.shape[0]
    answers = F.pad(labels, (0, -labels.shape[1] % CANVAS), value=-100)
    torch.manual_seed(seed)
    block_draw = torch.rand(batch)
    t = eps + (1 - eps) * torch.rand(batch, 1)
    corrupt_draw = torch.rand(batch, CANVAS)
    fallback_draw = torch.rand(batch, CANVAS)
    random_tokens = torch.randint(0, VOCAB, (batch, CANVAS))
    conditioned = torch.rand(batch) < 0.5
    total, count = 0.0, 0
    for row in range(batch):
        answer = answers[row]
        last = int(torch.nonzero(answer != -100).max()) + 1
        block = int(block_draw[row] * math.ceil(last / CANVAS))
        target = answer[block * CANVAS: (block + 1) * CANVAS]
        valid = target != -100
        corrupted = (corrupt_draw[row] < t[row]) & valid
        if not corrupted.any():
            corrupted[int((fallback_draw[row] * valid).argmax())] = True
        canvas = torch.where(corrupted, random_tokens[row], target.clamp(min=0))
        before = answer[: block * CANVAS]
        context = torch.cat((ids[row][mask[row].bool()], before[before != -100]))[None]
        decoder_mask = torch.cat((torch.ones(context.shape[1], dtype=torch.bool), valid))[None]
        with torch.no_grad():
            inputs = dict(input_ids=context, decoder_input_ids=canvas[None], decoder_attention_mask=decoder_mask)
            first = native(**inputs).logits
            logits = native(**inputs, self_conditioning_logits=first,
                            self_conditioning_mask=conditioned[row: row + 1]).logits
        total += F.cross_entropy(logits[0][corrupted], target[corrupted], reduction="sum")
        count += int(corrupted.sum())
    return total / count


def test_prefix_loss_is_the_diffusion_gemma_sft_loss_and_trains_the_prefix(native, decoder):
    ids, mask, labels = loss_batch()
    seed = seed_choosing_canvases([1, 0], [2, 1])  # row 0 trains its second canvas, after its first one
    model = copy.deepcopy(decoder).requires_grad_(False)  # frozen, as in the speech model
    prefix = model.get_input_embeddings()(ids).detach().requires_grad_()  # stands for the projector's output
    torch.manual_seed(seed)
    out = model.prefix_loss(prefix, mask, labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.logits.shape == (2, CANVAS, VOCAB)
    assert out.targets[0].tolist() == labels[0, CANVAS:].tolist() + [-100] * 8  # past the answer: -100
    assert not out.loss_mask[1, 12:].any()
    torch.testing.assert_close(out.loss, plain_loss(native, ids, mask, labels, seed), rtol=1e-4, atol=1e-4)

    out.loss.backward()
    assert prefix.grad[mask.bool()].abs().sum(-1).gt(0).all()  # every real prefix position gets a gradient
    assert prefix.grad[~mask.bool()].abs().sum() == 0  # padding gets none
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")
def test_prefix_loss_under_gradient_checkpointing(decoder):
    """transformers' checkpointing of the decoder layers (the encoder's prefill is never checkpointed: it writes the
    cache) gives the same loss and prefix gradients."""
    ids, mask, labels = loss_batch()
    results, checkpointed = [], []
    for checkpointing in (False, True):
        model = copy.deepcopy(decoder).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            for layer in model.model.decoder.layers:
                run = layer._gradient_checkpointing_func
                layer._gradient_checkpointing_func = lambda *a, run=run, **k: checkpointed.append(1) or run(*a, **k)
        prefix = model.get_input_embeddings()(ids).detach().requires_grad_()
        torch.manual_seed(4)
        loss = model.prefix_loss(prefix, mask, labels).loss
        loss.backward()
        results.append((loss.detach(), prefix.grad))
    assert checkpointed  # the layers did run under checkpointing
    torch.testing.assert_close(results[0], results[1])


def test_anchored_rows_train_the_first_canvas_at_the_marked_positions(decoder):
    ids, mask, labels = loss_batch()
    prefix = decoder.get_input_embeddings()(ids)
    anchored = torch.full_like(labels, -1)
    anchored[0] = labels[0]
    anchored[0, [2, 5]] = MASK_MARKER
    model = copy.deepcopy(decoder)
    with pytest.raises(ValueError, match="mask_token_id"):
        model.prefix_loss(prefix, mask, labels, anchored=anchored)
    model.generation_config.update(mask_token_id=MASK_MARKER)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.prefix_loss(prefix, mask, labels, anchored=anchored)
    assert torch.equal(out.targets[0], labels[0, :CANVAS])
    assert out.loss_mask[0].nonzero().flatten().tolist() == [2, 5]
    assert torch.isfinite(out.loss)


# ----------------------------------------------------------------------------------------------------------------------
# 4. A starting canvas (decoding D)
# ----------------------------------------------------------------------------------------------------------------------


def identity_denoiser(decoder):
    """The decoder with every layer's and the self-conditioning block's output zeroed and large embeddings: its logits
    at each canvas position are sharply peaked at the token it reads there, so it is sure of any canvas."""
    model = copy.deepcopy(decoder)
    with torch.no_grad():
        for layer in model.model.decoder.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            layer.experts.down_proj.zero_()
        model.model.decoder.self_conditioning.down_proj.weight.zero_()
        model.get_input_embeddings().weight.mul_(20)
    return model


def test_a_starting_canvas_changes_the_answer_and_a_sure_canvas_is_kept(native, decoder):
    ids = prompts(1)[0]
    hypothesis = canvas_from_hypothesis([[7, 8, 9, 10]], CANVAS, EOS)
    assert hypothesis[0].tolist() == [7, 8, 9, 10] + [EOS] * (CANVAS - 4)
    torch.manual_seed(6)
    from_noise = decoder.generate(input_ids=ids, max_new_tokens=CANVAS, **FAST)
    torch.manual_seed(6)
    from_hypothesis = decoder.generate(input_ids=ids, decoder_input_ids=hypothesis, max_new_tokens=CANVAS, **FAST)
    torch.manual_seed(6)
    expected = native.generate(input_ids=ids, decoder_input_ids=hypothesis, max_new_tokens=CANVAS, **FAST).sequences
    assert not torch.equal(from_noise, from_hypothesis)
    assert torch.equal(from_hypothesis, expected[:, ids.shape[1]:])

    sure = identity_denoiser(decoder)
    torch.manual_seed(6)
    kept = sure.generate(inputs_embeds=sure.get_input_embeddings()(ids), decoder_input_ids=hypothesis,
                         max_new_tokens=CANVAS)
    torch.manual_seed(6)
    noise_kept = sure.generate(input_ids=ids, max_new_tokens=CANVAS)
    assert torch.equal(kept, hypothesis)
    assert not torch.equal(noise_kept, hypothesis)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        decoder.generate(input_ids=ids, decoder_input_ids=hypothesis[:, :4])


# ----------------------------------------------------------------------------------------------------------------------
# 5. LoRA
# ----------------------------------------------------------------------------------------------------------------------


LORA = {"r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": list(DiffusionGemmaDecoder.lora_targets)}


def twin_projections(decoder):
    """Layer 1's q_proj in the encoder and in the decoder (one tied weight)."""
    return (decoder.model.encoder.language_model.layers[1].self_attn.q_proj,
            decoder.model.decoder.layers[1].self_attn.q_proj)


def test_lora_adapters_train_alone_on_the_shared_layers(decoder):
    model = copy.deepcopy(decoder).train()
    ids, mask, labels = loss_batch()
    prefix = model.get_input_embeddings()(ids).detach()
    torch.manual_seed(2)
    before = model.prefix_loss(prefix, mask, labels).loss.detach()
    model.requires_grad_(False)
    names = add_lora(model, {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": list(model.lora_targets)})
    model.tie_weights()  # re-ties the encoder's base weights to the decoder's under their new names; adapters stay own
    assert len(names) == 2 * 13  # encoder and decoder: 7 linear layers in the sliding layer, 6 (no v_proj) in the full
    assert not any("experts" in name or "router" in name or "vision" in name for name in names)
    encoder_q, decoder_q = twin_projections(model)
    assert isinstance(encoder_q, LoraLinear) and isinstance(decoder_q, LoraLinear)
    assert encoder_q.base_layer.weight is decoder_q.base_layer.weight
    assert encoder_q.lora_B["default"].weight is not decoder_q.lora_B["default"].weight

    torch.manual_seed(2)
    loss = model.prefix_loss(prefix, mask, labels).loss
    torch.testing.assert_close(loss.detach(), before)  # B = 0: the adapters start as the identity
    loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(".lora_" in name for name in with_grad)
    # the decoder reads the encoder's keys/values only: its last layer's queries, output and MLP never reach the loss
    unused = ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    trained = {f"{name}.lora_B.default.weight" for name in names
               if not (name.startswith("model.encoder.language_model.layers.1.") and name.endswith(unused))}
    assert {name for name in with_grad if ".lora_B." in name} == trained
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in trained)


class _Holder(PreTrainedModel):
    """A composite model with a DiffusionGemma decoder, LoRA added before its own `post_init` (as the speech model does
    with `config.lora`) or after it (as build_whisper_llada.apply_lora does)."""

    config_class = PretrainedConfig

    def __init__(self, config):
        super().__init__(config)
        self.decoder = DiffusionGemmaDecoder(DiffusionGemmaConfig(**config.decoder))
        if config.lora_in_init:
            add_lora(self.decoder, LORA)
        self.post_init()


@pytest.mark.parametrize("lora_in_init", [True, False])
def test_lora_inside_a_composite_model_saves_and_loads_with_its_ties(tmp_path, lora_in_init):
    torch.manual_seed(0)
    holder = _Holder(PretrainedConfig(decoder=tiny_config().to_dict(), lora_in_init=lora_in_init))
    if not lora_in_init:
        add_lora(holder.decoder, LORA)
        holder.config.lora_in_init = True  # the saved config rebuilds the adapters
    with torch.no_grad():
        for name, parameter in holder.named_parameters():
            if ".lora_B." in name:
                parameter.normal_()
    holder.save_pretrained(tmp_path)
    loaded, info = _Holder.from_pretrained(tmp_path, output_loading_info=True)
    loaded.decoder.tie_weights()  # as the speech model's from_pretrained does
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for model in (holder, loaded):
        encoder_q, decoder_q = twin_projections(model.decoder)
        assert encoder_q.base_layer.weight is decoder_q.base_layer.weight
        assert model.decoder.lm_head.weight is model.decoder.get_input_embeddings().weight
    torch.testing.assert_close(loaded.state_dict(), holder.state_dict())  # each adapter kept its own values


# ----------------------------------------------------------------------------------------------------------------------
# Decoding strings, the prompt layout, the published checkpoint
# ----------------------------------------------------------------------------------------------------------------------


def test_decoding_strings_resolve_to_a_named_validated_config(decoder, tmp_path):
    kind = DiffusionGemmaSpeechGenerationConfig
    assert kind.handles("DG,max_new_tokens=64") and not kind.handles("AR") and not kind.handles("B")
    assert kind.parse("DG,max_new_tokens=64,entropy_bound=0.2") == {"decoding": "DG", "max_new_tokens": 64,
                                                                     "entropy_bound": 0.2}
    assert kind.handles("D") and kind.handles("CTC") and kind.parse("D,anchor_slack=2")["anchor_slack"] == 2
    default = decoder.resolve_generation_config()
    assert default.name == "DG" and default.max_denoising_steps == 48 and default.entropy_bound == 0.1
    config = decoder.resolve_generation_config(decoding="DG,gen_length=32", max_denoising_steps=8)
    assert config.name == "DG,max_new_tokens=32,max_denoising_steps=8"
    assert config.settings()["max_new_tokens"] == 32 and config.settings()["steps"] == 8
    assert decoder.resolve_generation_config(config) is config  # validated once
    for bad in ({"decoding": "DG,top_k=3"}, {"decoding": "B"}, {"max_denoising_steps": 0}, {"t_min": 0.9, "t_max": 0.5},
                {"stability_threshold": -1}, {"entropy_bound": 0.0}, {"entropy_bound": "high"}):
        with pytest.raises(ValueError):
            decoder.resolve_generation_config(**bad)
    with pytest.raises(ValueError, match=r"\['num_beams', 'top_k'\]"):
        decoder.resolve_generation_config(num_beams=4, top_k=2)
    config.set_length(48)
    config.save_pretrained(tmp_path)
    again = kind.from_pretrained(tmp_path)
    assert again.max_new_tokens == 48 and again.entropy_bound == 0.1 and again.name == config.name


def test_prompt_layout_of_a_checkpoint(checkpoint, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    layout = read_prompt_layout(str(checkpoint))
    assert (layout.pad_token_id, layout.bos_token_id, layout.eos_token_ids) == (0, 2, [1])
    assert (layout.canvas_length, layout.vocab_size, layout.image_token_id) == (16, 512, 511)
    assert layout.mask_token_id is None  # uniform-noise diffusion: no mask token
    assert layout.prompt_prefix_ids is None  # no tokenizer in the checkpoint

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<|turn>": 5, "<turn|>": 6, "user": 8, "model": 9,
             "Transcribe": 10}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>",
                                        additional_special_tokens=["<|turn>", "<turn|>"])
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}<|turn>{{ m['role'] }} {{ m['content'] }}"
                               "<turn|>{% endfor %}{% if add_generation_prompt %}<|turn>model {% endif %}")
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    layout = read_prompt_layout(str(tmp_path), instruction="Transcribe")
    assert layout.prompt_prefix_ids == [2, 5, 8, 10] and layout.prompt_suffix_ids == [6, 5, 9]
    assert layout.end_of_turn_token_id == 6


def test_published_26b_a4b_config_counts_26b_parameters_4b_active():
    config = DiffusionGemmaConfig(**DIFFUSION_GEMMA_26B_A4B_CONFIG)
    assert config.canvas_length == 256 and config.get_text_config().num_experts == 128
    count = count_parameters()
    assert count.total == DIFFUSION_GEMMA_26B_A4B_PARAMETERS  # 25.8B: "26B"
    assert round(count.total / 1e9) == 26
    assert 3.5e9 < count.active_text < 4.5e9  # ~3.8B per text token: "A4B"
    assert count.experts / count.total > 0.85
