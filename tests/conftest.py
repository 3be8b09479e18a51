"""Shared fixtures: tiny random configs for unit tests, paths to the real assets in ../shared."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"
LIBRISPEECH = SHARED / "data" / "LibriSpeech" / "train-clean-5"
LLADA_META = SHARED / "models" / "llada-8b-instruct-meta"
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from configuration_whisper_llada import LladaConfig, WhisperLladaConfig  # noqa: E402

# Tiny vocabulary: ids 0..59 are "words", then the special ids.
TINY_VOCAB, MASK_ID, EOS_ID, EOT_ID, BOS_ID = 64, 63, 62, 61, 60


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not available (../shared is absent)")


def tiny_decoder_config(**overrides) -> LladaConfig:
    values = dict(d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=48, vocab_size=TINY_VOCAB,
                  embedding_size=TINY_VOCAB, max_sequence_length=512, mask_token_id=MASK_ID, eos_token_id=EOS_ID,
                  pad_token_id=EOS_ID, bos_token_id=BOS_ID, rope_theta=10000.0)
    values.update(overrides)
    return LladaConfig(**values)


def tiny_config(**overrides) -> WhisperLladaConfig:
    from transformers import WhisperConfig

    encoder = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                            num_mel_bins=80, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2,
                            decoder_ffn_dim=32, vocab_size=100)
    values = dict(encoder_config=encoder, decoder_config=tiny_decoder_config(), projector_hidden_sizes=[24, 16, 24],
                  prompt_prefix_ids=[BOS_ID, 1, 2, 3], prompt_suffix_ids=[EOT_ID, 4, 5], eot_token_id=EOT_ID)
    values.update(overrides)
    return WhisperLladaConfig(**values)


def tiny_whisper_llada(gen_length: int = 32, **overrides):
    """A tiny random WhisperLladaForConditionalGeneration whose decoding defaults are gen_length 32, 8 steps."""
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    model = WhisperLladaForConditionalGeneration(tiny_config(**overrides)).eval()
    model.generation_config.gen_length = model.generation_config.block_length = gen_length
    return model


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return tiny_whisper_llada()
