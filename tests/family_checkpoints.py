"""Tiny official-format checkpoints of every decoder family, for the integration tests (tests/test_families.py) and the
lab tool tools/family_tiny_training.py.

A family checkpoint directory holds what its published checkpoint holds, at toy sizes: config.json with the official
`model_type` (and, for Dream and LLaDA2, the official field names), random weights under the official key names, a
tokenizer with the family's special tokens and a chat template in the family's style, and for DiffusionGemma its
generation_config.json. The tokenizer is word level over the bundled demo transcripts' words (demo/audio), the prompt's
words and the chat roles, so the vocabulary (and the test) stays small: about 250 tokens.

    words = demo_words()
    path = write_family_checkpoint("dream", tmp_path / "dream", words)      # a directory DecoderSpec(path) reads
    encoder = write_whisper_encoder(tmp_path / "whisper")                     # a tiny random Whisper + features
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_MANIFEST = ROOT / "demo" / "audio" / "manifest.jsonl"
# words of the prompt (configuration_whisper_llada.DEFAULT_PROMPT), the chat roles and templates' plain words
PROMPT_WORDS = ["transcribe", "the", "following", "speech", "to", "text", ":", ".", "user", "assistant", "system",
                "model", "thought", "you", "are", "a", "helpful", "human", "detailed", "thinking", "off"]
BLANK = "<|blank|>"  # an unused special token of every tiny tokenizer: the CTC blank of the tests


@dataclass(frozen=True)
class TokenizerStyle:
    """A family's tokenizer at toy size: its special tokens (in id order, first), which of them are BOS / EOS / pad /
    unk / mask, and its chat template (one user turn, then the assistant's opening)."""

    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    unk: str
    mask: str | None
    chat_template: str


LLADA_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Qwen2.5's ChatML with its default system message, as Dream-v0-Instruct's tokenizer renders it
DREAM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# LLaDA2.0 (Ling 2.0): <role>NAME</role> ... <|role_end|>, thinking off by default
LLADA2_TEMPLATE = (
    "{{ '<role>SYSTEM</role>detailed thinking off<|role_end|>' }}{% for message in messages %}"
    "{% set role = 'HUMAN' if message['role'] == 'user' else message['role'] | upper %}"
    "{{ '<role>' + role + '</role>' + message['content'] + '<|role_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<role>ASSISTANT</role>' }}{% endif %}")
# Gemma 4 (DiffusionGemma-it): <|turn>role ... <turn|>, the model turn opens an empty thought channel
GEMMA4_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else "
    "message['role'] %}{{ '<|turn>' + role + '\n' + message['content'] | trim + '<turn|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|turn>model\n<|channel>thought\n<channel|>' }}{% endif %}")

STYLES = {
    "llada": TokenizerStyle(("<|startoftext|>", "<|endoftext|>", "<unk>", "<|mdm_mask|>", "<|start_header_id|>",
                             "<|end_header_id|>", "<|eot_id|>", BLANK), "<|startoftext|>", "<|endoftext|>",
                            "<|endoftext|>", "<unk>", "<|mdm_mask|>", LLADA_TEMPLATE),
    "dream": TokenizerStyle(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<|mask|>", BLANK), None,
                            "<|endoftext|>", "<|endoftext|>", "<unk>", "<|mask|>", DREAM_TEMPLATE),
    "llada2": TokenizerStyle(("<|endoftext|>", "<|mask|>", "<role>", "</role>", "<|role_end|>", "<unk>", BLANK), None,
                             "<|endoftext|>", "<|endoftext|>", "<unk>", "<|mask|>", LLADA2_TEMPLATE),
    "diffusion_gemma": TokenizerStyle(("<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|channel>",
                                       "<channel|>", "<|image|>", "<|image>", "<image|>", BLANK), "<bos>", "<eos>",
                                      "<pad>", "<unk>", None, GEMMA4_TEMPLATE),
}
FAMILY_NAMES = tuple(STYLES)


def demo_words() -> list[str]:
    """The bundled demo transcripts' words (lower case, sorted)."""
    words = set()
    for line in DEMO_MANIFEST.read_text().splitlines():
        words.update(json.loads(line)["text"].lower().split())
    return sorted(words)


def demo_clips() -> list[dict]:
    """The bundled demo clips' manifest lines (audio_filepath relative to demo/audio, duration, text, key)."""
    return [json.loads(line) for line in DEMO_MANIFEST.read_text().splitlines()]


def word_tokenizer(style: TokenizerStyle, words: list[str]):
    """A word-level fast tokenizer: the style's special tokens (ids 0..), then `words` and the prompt's words; text
    is lower-cased and split on whitespace and punctuation, decoded with spaces between words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(style.specials)}
    for word in PROMPT_WORDS + list(words):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(WordLevel(vocab, unk_token=style.unk))
    backend.normalizer = normalizers.Lowercase()  # special tokens are matched before it, as they are
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    roles = {"bos_token": style.bos, "eos_token": style.eos, "pad_token": style.pad, "unk_token": style.unk,
             **({"mask_token": style.mask} if style.mask else {})}
    named = {token for token in roles.values() if token}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in roles.items() if v},
                                        additional_special_tokens=[t for t in style.specials if t not in named])
    tokenizer.chat_template = style.chat_template
    return tokenizer


def write_tokenizer(family: str, directory: Path, words: list[str]):
    """Saves the family's tiny tokenizer in `directory`; Dream's names its remote-code class, as the published
    tokenizer_config.json does (AutoTokenizer cannot build it without trust_remote_code: the builder reads the
    tokenizer.json instead)."""
    tokenizer = word_tokenizer(STYLES[family], words)
    tokenizer.save_pretrained(directory)
    if family == "dream":
        path = directory / "tokenizer_config.json"
        settings = json.loads(path.read_text())
        settings.update(tokenizer_class="DreamTokenizer",
                        auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]})
        path.write_text(json.dumps(settings, indent=2))
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------------
# Random weights under the official layouts
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinySize:
    """A toy decoder's shape: width, layers, heads (and for the MoE families, experts)."""

    hidden: int = 32
    layers: int = 2
    heads: int = 4
    experts: int = 8


def _llada(directory: Path, tokenizer, size: TinySize) -> None:
    from configuration_whisper_llada import LladaConfig
    from modeling_llada import LladaForMaskedDiffusion

    vocab = len(tokenizer)
    config = LladaConfig(d_model=size.hidden, n_layers=size.layers, n_heads=size.heads,
                         mlp_hidden_size=size.hidden * 3 // 2, vocab_size=vocab, embedding_size=vocab,
                         max_sequence_length=1024, rope_theta=10000.0, mask_token_id=tokenizer.mask_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    LladaForMaskedDiffusion(config).save_pretrained(directory)


def _dream(directory: Path, tokenizer, size: TinySize) -> None:
    from modeling_dream import DREAM_V0_7B_CONFIG, DreamConfig, DreamForMaskedDiffusion

    official = {**DREAM_V0_7B_CONFIG, "hidden_size": size.hidden, "intermediate_size": size.hidden * 3 // 2,
                "num_hidden_layers": size.layers, "num_attention_heads": size.heads,
                "num_key_value_heads": size.heads // 2, "max_window_layers": size.layers, "vocab_size": len(tokenizer),
                "max_position_embeddings": 1024, "rope_theta": 10000.0, "torch_dtype": "float32",
                "mask_token_id": tokenizer.mask_token_id, "bos_token_id": tokenizer.eos_token_id,
                "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    DreamForMaskedDiffusion(DreamConfig.from_dict(official)).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(official, indent=2))  # the published file's fields, as they are


def _llada2(directory: Path, tokenizer, size: TinySize) -> None:
    from modeling_llada2 import LLADA2_MINI_CONFIG, Llada2MoeConfig, Llada2MoeForMaskedDiffusion

    head_dim = size.hidden // size.heads
    official = {**LLADA2_MINI_CONFIG, "hidden_size": size.hidden, "head_dim": head_dim, "rotary_dim": head_dim // 2,
                "num_attention_heads": size.heads, "num_key_value_heads": size.heads // 2,
                "intermediate_size": size.hidden * 3 // 2, "moe_intermediate_size": size.hidden // 2,
                "num_experts": size.experts, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
                "num_hidden_layers": size.layers, "vocab_size": len(tokenizer), "max_position_embeddings": 1024,
                "torch_dtype": "float32", "pad_token_id": tokenizer.pad_token_id,
                "mask_token_id": tokenizer.mask_token_id, "eos_token_id": tokenizer.eos_token_id}
    Llada2MoeForMaskedDiffusion(Llada2MoeConfig(**official)).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(official, indent=2))


CANVAS_LENGTH = 16


def _diffusion_gemma(directory: Path, tokenizer, size: TinySize) -> None:
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    from modeling_diffusion_gemma_decoder import DIFFUSION_GEMMA_26B_A4B_GENERATION_CONFIG

    ids = tokenizer.convert_tokens_to_ids
    width = max(size.hidden, 64)  # two heads of 32
    text = dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width, num_hidden_layers=size.layers,
                num_attention_heads=2, num_key_value_heads=1, head_dim=32, global_head_dim=32,
                num_experts=max(4, size.experts // 2), top_k_experts=2, moe_intermediate_size=width // 2,
                sliding_window=8, max_position_embeddings=1024, pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>"),
                eos_token_id=ids("<eos>"),
                layer_types=(["sliding_attention", "full_attention"] * size.layers)[: size.layers])
    vision = dict(model_type="gemma4_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    stops = [ids("<eos>"), ids("<turn|>")]
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS_LENGTH,
                                  image_token_id=ids("<|image|>"), boi_token_id=ids("<|image>"),
                                  eoi_token_id=ids("<image|>"), eos_token_id=stops)
    DiffusionGemmaForBlockDiffusion(config).save_pretrained(directory)
    generation = {**DIFFUSION_GEMMA_26B_A4B_GENERATION_CONFIG, "eos_token_id": stops, "pad_token_id": ids("<pad>"),
                  "max_new_tokens": 2 * CANVAS_LENGTH, "max_denoising_steps": 4}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))


WRITERS = {"llada": _llada, "dream": _dream, "llada2": _llada2, "diffusion_gemma": _diffusion_gemma}


def write_family_checkpoint(family: str, directory: Path, words: list[str] | None = None, seed: int = 0,
                            size: TinySize = TinySize()) -> Path:
    """A tiny random checkpoint of `family` in `directory` (created): official config.json and weights, the family's
    tokenizer over `words` (default: the demo transcripts'), DiffusionGemma's generation_config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(family, directory, demo_words() if words is None else words)
    torch.manual_seed(seed)
    WRITERS[family](directory, tokenizer, size)
    return directory


def write_whisper_encoder(directory: Path, seed: int = 0) -> Path:
    """A tiny random Whisper (1 encoder layer, width 16, 80 mel bins) with Whisper's feature extractor, in
    `directory`."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    directory = Path(directory)
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                           num_mel_bins=80, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2,
                           decoder_ffn_dim=32, vocab_size=100, max_target_positions=64, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(config).save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    return directory


def write_causal_lm(directory: Path, words: list[str] | None = None, seed: int = 0) -> Path:
    """A tiny random Llama causal LM with a ChatML tokenizer: a checkpoint no diffusion family reads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer("dream", directory, demo_words() if words is None else words)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory
