"""Our LLaDA decoder: official checkpoint layout, logits equal to the official computation, padding, dtypes, errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import LLADA_META, MASK_ID, needs_shared, tiny_decoder_config
from configuration_whisper_llada import LladaConfig
from llada_reference import official_llada_logits
from modeling_llada import LladaForMaskedDiffusion

OFFICIAL_BLOCK_KEYS = ["attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]


def official_state_dict(config: LladaConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official LLaDA key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    d, m, v = config.d_model, config.mlp_hidden_size, config.embedding_size
    kv = config.n_kv_heads * (d // config.n_heads)
    shapes = {"attn_norm": (d,), "ff_norm": (d,), "q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d),
              "attn_out": (d, d), "ff_proj": (m, d), "up_proj": (m, d), "ff_out": (d, m)}
    state = {"model.transformer.wte.weight": torch.randn(v, d, generator=g) * 0.5,
             "model.transformer.ln_f.weight": 1 + 0.1 * torch.randn(d, generator=g),
             "model.transformer.ff_out.weight": torch.randn(v, d, generator=g) * 0.2}
    for i in range(config.n_layers):
        for name in OFFICIAL_BLOCK_KEYS:
            shape = shapes[name]
            w = 1 + 0.1 * torch.randn(shape, generator=g) if len(shape) == 1 else torch.randn(shape, generator=g) * 0.15
            state[f"model.transformer.blocks.{i}.{name}.weight"] = w
    return state


def write_official_checkpoint(directory, config: LladaConfig, state: dict, shards: int = 3) -> None:
    """config.json with official field names + sharded safetensors + model.safetensors.index.json."""
    official = {"d_model": config.d_model, "n_layers": config.n_layers, "n_heads": config.n_heads,
                "n_kv_heads": config.n_kv_heads, "mlp_hidden_size": config.mlp_hidden_size,
                "vocab_size": config.vocab_size, "embedding_size": config.embedding_size,
                "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
                "mask_token_id": config.mask_token_id, "eos_token_id": config.eos_token_id,
                "pad_token_id": config.pad_token_id, "weight_tying": False, "model_type": "llada",
                "block_type": "llama", "architectures": ["LLaDAModelLM"], "max_sequence_length": 512,
                "auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}}
    (directory / "config.json").write_text(json.dumps(official))
    names = sorted(state)
    weight_map = {}
    for index in range(shards):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[index::shards]}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.fixture
def official_checkpoint(tmp_path):
    config = tiny_decoder_config(n_kv_heads=2)
    state = official_state_dict(config)
    write_official_checkpoint(tmp_path, config, state)
    return tmp_path, config, state


def plain_config(config: LladaConfig) -> dict:
    return {k: getattr(config, k) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size",
                                            "vocab_size", "embedding_size", "rope_theta", "rms_norm_eps",
                                            "weight_tying")}


def test_official_checkpoint_loads_and_matches_official_logits(official_checkpoint):
    directory, config, state = official_checkpoint
    model = LladaForMaskedDiffusion.from_pretrained(directory, dtype=torch.float32).eval()
    assert set(model.state_dict()) == set(state)  # exactly the official names, nothing else persisted
    ids = torch.randint(0, 60, (2, 11))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    expected = torch.stack([official_llada_logits(state, plain_config(config), input_ids=row) for row in ids])
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_official_checkpoint_loads_in_half_precision(official_checkpoint, dtype):
    directory, config, state = official_checkpoint
    model = LladaForMaskedDiffusion.from_pretrained(directory, dtype=dtype).eval()
    assert model.get_input_embeddings().weight.dtype == dtype
    ids = torch.randint(0, 60, (1, 9))
    with torch.no_grad():
        ours = model(input_ids=ids).logits.float()
    half_state = {k: v.to(dtype) for k, v in state.items()}
    expected = official_llada_logits(half_state, plain_config(config), input_ids=ids[0]).float()
    assert torch.isfinite(ours).all()
    assert (ours[0].argmax(-1) == expected.argmax(-1)).float().mean() > 0.8
    torch.testing.assert_close(ours[0], expected, atol=0.15, rtol=0.05)


def test_left_padding_gives_the_same_logits_as_no_padding(official_checkpoint):
    directory, _, _ = official_checkpoint
    model = LladaForMaskedDiffusion.from_pretrained(directory).eval()
    ids = torch.randint(0, 60, (1, 7))
    padded = torch.cat((torch.full((1, 4), MASK_ID), ids), dim=1)
    mask = torch.tensor([[0] * 4 + [1] * 7])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with_pad = model(input_ids=padded, attention_mask=mask).logits[:, 4:]
    torch.testing.assert_close(with_pad, plain, atol=1e-5, rtol=1e-5)


def test_missing_key_is_a_clear_error(official_checkpoint):
    directory, config, state = official_checkpoint
    del state["model.transformer.blocks.1.up_proj.weight"]
    for f in directory.glob("*.safetensors"):
        f.unlink()
    write_official_checkpoint(directory, config, state)
    with pytest.raises(ValueError, match=r"missing weights .*blocks\.1\.up_proj"):
        LladaForMaskedDiffusion.from_pretrained(directory)


def test_misshaped_key_is_a_clear_error(official_checkpoint):
    directory, config, state = official_checkpoint
    state["model.transformer.blocks.0.q_proj.weight"] = torch.zeros(5, config.d_model)
    for f in directory.glob("*.safetensors"):
        f.unlink()
    write_official_checkpoint(directory, config, state)
    with pytest.raises(ValueError, match=r"q_proj"):
        LladaForMaskedDiffusion.from_pretrained(directory)


def test_unsupported_architecture_is_rejected():
    with pytest.raises(ValueError, match="alibi"):
        tiny_decoder_config(alibi=True)


@needs_shared(LLADA_META)
def test_official_llada_8b_config_and_key_names():
    config = LladaConfig.from_pretrained(LLADA_META)
    assert (config.d_model, config.n_layers, config.n_heads, config.n_kv_heads) == (4096, 32, 32, 32)
    assert (config.mlp_hidden_size, config.vocab_size, config.mask_token_id) == (12288, 126464, 126336)
    assert config.rope_theta == 500000.0 and config.rms_norm_eps == 1e-5 and not config.weight_tying
    with torch.device("meta"):
        model = LladaForMaskedDiffusion(config)
    index = json.loads((LLADA_META / "model.safetensors.index.json").read_text())
    assert set(model.state_dict()) == set(index["weight_map"])  # our names are exactly the 291 official tensors
    assert sum(p.numel() for p in model.parameters()) * 2 == index["metadata"]["total_size"]  # bf16 bytes


def test_gradients_flow_through_frozen_decoder_with_checkpointing():
    model = LladaForMaskedDiffusion(tiny_decoder_config()).train()
    model.requires_grad_(False)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    embeds = torch.randn(2, 6, 32, requires_grad=True)
    model(inputs_embeds=embeds).logits.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
