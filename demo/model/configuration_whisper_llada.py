"""Configurations for whisper-llada: a frozen Whisper encoder, a trainable MLP projector and a LLaDA masked-diffusion
decoder.

`LladaConfig` uses the field names of the official LLaDA `config.json` (`d_model`, `n_layers`, `n_heads`, ...) so that
the official file of GSAI-ML/LLaDA-8B-Instruct loads as is. `WhisperLladaConfig` composes a `WhisperConfig` (encoder),
a `LladaConfig` (decoder) and the projector/prompt/decoding settings. With `decoder_type="causal"` the decoder is any
transformers causal LM instead (e.g. Llama-3-8B-Instruct, the autoregressive baseline), described by its own config.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import AutoConfig, PretrainedConfig, WhisperConfig

# Token ids of LLaDA-8B-Instruct (tokenizer_config.json of GSAI-ML/LLaDA-8B-Instruct).
LLADA_MASK_TOKEN_ID = 126336
LLADA_BOS_TOKEN_ID = 126080
LLADA_EOS_TOKEN_ID = 126081  # <|endoftext|>, also the padding id
LLADA_EOT_TOKEN_ID = 126348  # <|eot_id|>

DEFAULT_PROMPT = "transcribe the following speech to text:"

DECODER_TYPES = ("llada", "causal")  # masked-diffusion LLaDA, or an autoregressive `AutoModelForCausalLM`
SPEECH_EMBEDDINGS = ("projector", "token_mixture")  # what the decoder reads: the projector's outputs, or CTC mixtures
# what save_pretrained writes: every weight; only the trainable ones (base models pulled by id on load); or the
# trainable ones plus the frozen encoder (the decoder base is pulled by id; for a demo whose encoder is not on the Hub)
CHECKPOINT_WEIGHTS = ("full", "trainable", "trainable+encoder")

# Decoding settings saved in config.json by earlier versions; they now live in generation_config.json
# (`generation_llada.LladaGenerationConfig`, the one home of the decoding defaults and the A/B/C presets).
LEGACY_DECODING_KEYS = ("gen_length", "steps", "block_length", "remasking", "temperature")


def check_number(owner: str, name: str, value: Any, kind: type = int, optional: bool = False) -> Any:
    """`value` checked as an int (`kind=int`: an int, an integral float or a numeric string) or a float (`kind=float`:
    any real number or numeric string); None passes when `optional`. Anything else raises a ValueError naming the
    field and the expected type (instead of e.g. "invalid literal for int()"). Numbers keep their value."""
    if value is None and optional:
        return None
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    ok = isinstance(number, (int, float)) and not isinstance(number, bool)
    if ok and kind is int:
        ok = float(number).is_integer()
    if not ok:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{owner}: `{name}` must be {expected}{' or None' if optional else ''}, got {value!r} "
                         f"({type(value).__name__}).")
    if kind is int:
        return int(number)
    return float(number) if isinstance(value, str) else value


def _int_list(owner: str, name: str, value: Any, optional: bool = False) -> list[int] | None:
    """`value` checked as a list (or tuple) of integers; see `check_number`."""
    if value is None and optional:
        return None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{owner}: `{name}` must be a list of integers{' or None' if optional else ''}, got {value!r} "
                         f"({type(value).__name__}).")
    try:
        return [check_number(owner, name, item) for item in value]
    except ValueError:
        raise ValueError(f"{owner}: `{name}` must be a list of integers, got {value!r}.") from None


class LladaConfig(PretrainedConfig):
    """Configuration of a LLaDA mask predictor (bidirectional Llama-style transformer).

    Field names follow the official LLaDA `config.json`; fields of the official file that do not change the
    architecture we implement (init settings, dropout flags, ...) are kept as plain attributes. Settings that would
    change the architecture to one we do not implement (ALiBi, biases, non-RMS norms, non-llama blocks) are rejected
    with a clear error instead of being silently ignored.
    """

    model_type = "llada"

    def __init__(
        self,
        d_model: int = 4096,
        n_layers: int = 32,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        mlp_hidden_size: int = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        weight_tying: bool = False,
        mask_token_id: int = LLADA_MASK_TOKEN_ID,
        eos_token_id: int = LLADA_EOS_TOKEN_ID,
        pad_token_id: int = LLADA_EOS_TOKEN_ID,
        bos_token_id: int = LLADA_BOS_TOKEN_ID,
        activation_type: str = "silu",
        block_type: str = "llama",
        layer_norm_type: str = "rms",
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        alibi: bool = False,
        rope: bool = True,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        check = functools.partial(check_number, "LladaConfig")
        d_model, n_layers, n_heads, mlp_hidden_size, vocab_size, max_sequence_length = (
            check("d_model", d_model), check("n_layers", n_layers), check("n_heads", n_heads),
            check("mlp_hidden_size", mlp_hidden_size), check("vocab_size", vocab_size),
            check("max_sequence_length", max_sequence_length))
        n_kv_heads = check("n_kv_heads", n_kv_heads, optional=True)
        embedding_size = check("embedding_size", embedding_size, optional=True)
        rope_theta, rms_norm_eps = check("rope_theta", rope_theta, float), check("rms_norm_eps", rms_norm_eps, float)
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.weight_tying = weight_tying
        self.mask_token_id = mask_token_id
        self.activation_type = activation_type
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.alibi = alibi
        self.rope = rope
        self.initializer_range = initializer_range
        kwargs.setdefault("tie_word_embeddings", weight_tying)
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id, **kwargs)
        self._check_supported()

    def _check_supported(self) -> None:
        unsupported = {
            "block_type": (self.block_type, "llama"),
            "layer_norm_type": (self.layer_norm_type, "rms"),
            "activation_type": (self.activation_type, "silu"),
            "include_bias": (self.include_bias, False),
            "include_qkv_bias": (self.include_qkv_bias, False),
            "alibi": (self.alibi, False),
            "rope": (self.rope, True),
        }
        for field, (value, expected) in unsupported.items():
            if value != expected:
                raise ValueError(f"LladaConfig: `{field}`={value!r} is not supported; expected {expected!r}.")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"LladaConfig: d_model={self.d_model} must be divisible by n_heads={self.n_heads}.")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"LladaConfig: n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}.")
        if (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError("LladaConfig: the head dimension d_model / n_heads must be even for rotary embeddings.")

    # Names used by transformers utilities (e.g. gradient checkpointing, device maps).
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads


class WhisperLladaConfig(PretrainedConfig):
    """Configuration of `WhisperLladaForConditionalGeneration`.

    Args:
        encoder_config: a `WhisperConfig` (or its dict); only the encoder part is used.
        decoder_type: "llada" (masked-diffusion decoder, the default) or "causal" (an autoregressive causal LM built with
            `AutoModelForCausalLM`, trained with next-token cross-entropy and decoded greedily / with beam search).
        decoder_config: a `LladaConfig` (or its dict, e.g. an official LLaDA `config.json`); for "causal", any
            transformers config (or its dict, which must hold a `model_type`, e.g. a Llama `config.json`).
        encoder_name_or_path / decoder_name_or_path: where the base weights come from (Hub id, local dir, or
            `package:NAME` for weights shipped inside an installed Python package). A checkpoint saved with
            `checkpoint_weights="trainable"` stores only the trainable weights and pulls the base encoder/decoder from
            these at load time.
        decoder_gguf_file: the GGUF file inside `decoder_name_or_path` to load (dequantized by transformers).
        decoder_from_causal_lm: the LLaDA decoder's base weights are a Llama-architecture causal LM's, converted on
            load (`load_causal_lm_as_llada`: LLaDA tensor names, first `decoder_config.n_layers` layers, bidirectional).
        stack_factor: encoder frames merged into one speech embedding (50 frames/s / 5 = 10 embeddings/s).
        downsample_method: "stack" (concatenate k consecutive frames, the reference) or "mean" (average them).
        projector_hidden_sizes: hidden sizes of the MLP projector; the reference "sln-large" is [2048, 1024, 2048].
            The first hidden layer is Linear+act, the following ones Linear+LayerNorm+act, then a Linear to d_model.
        projector_activation: activation of the projector ("silu", "gelu", "relu").
        prompt: the user instruction; the speech embeddings follow it inside the user turn.
        prompt_prefix_ids / prompt_suffix_ids: token ids of the chat prompt before and after the speech embeddings.
            Filled from the tokenizer's chat template by `WhisperLladaProcessor.prompt_ids()`.
        mask_token_id / eos_token_id / eot_token_id / pad_token_id: special ids of the decoder's tokenizer. The
            end-of-turn id also stops generation; it defaults to LLaDA-Instruct's `<|eot_id|>` for a LLaDA decoder
            and to none for a causal one (another vocabulary: LLaDA's id would be an arbitrary token there).
        checkpoint_weights: "full" saves every weight; "trainable" saves only weights with requires_grad (the
            projector, LoRA adapters, an unfrozen decoder) and pulls the base models by id on load;
            "trainable+encoder" also saves the frozen encoder (only the decoder base is pulled).
        ctc_weight / ctc_blank_id: training only: weight of an auxiliary CTC loss on the speech embeddings read as
            tokens (logits = speech @ token embeddings^T), with this unused token id as the blank (0 = off).
        ctc_token_ids: the CTC reads the speech embeddings against these tokens only (sorted ids, the blank among
            them; e.g. the tokens of the training transcripts: a few thousand classes instead of a 50k vocabulary);
            None = the whole vocabulary. Target tokens outside the set are left out of the CTC target.
        speech_embeddings: what the decoder reads for the speech: "projector" (the projector's outputs, the
            default) or "token_mixture" (LegoSLM-style: each output's expected token embedding under the CTC's
            posterior, softmax(CTC scores) @ the CTC classes' embeddings; train it with the auxiliary CTC loss).
        mask_time_prob / mask_time_length / mask_feature_prob / mask_feature_length: training only: SpecAugment on the
            encoder frames (as Whisper's and wav2vec2's settings of the same names, but after the frozen encoder, so
            that it also applies to frames read from an encoder cache). About `mask_time_prob` of each audio's frames
            are zeroed in spans of `mask_time_length` frames, and about `mask_feature_prob` of the channels in spans
            of `mask_feature_length` channels. 0 = off (the default).
        block_mask_prob / block_mask_length: training only (masked-diffusion decoders): the share of training samples
            masked the way block (semi-autoregressive) decoding sees them instead of LLaDA's uniform masking: the
            answer's blocks of `block_mask_length` tokens before a random block are clean, that block's tokens are
            masked with probability t, every later token is masked (block-diffusion-style training; set the length to
            the block length you decode with, C: gen_length / 16). The loss keeps LLaDA's form, each masked token's
            cross-entropy divided by its masking probability (1 for the later blocks). 0 = off (the default).
    """

    model_type = "whisper_llada"
    sub_configs = {"encoder_config": WhisperConfig, "decoder_config": LladaConfig}

    def __init__(
        self,
        encoder_config: dict | WhisperConfig | None = None,
        decoder_config: dict | PretrainedConfig | None = None,
        decoder_type: str = "llada",
        encoder_name_or_path: str | None = None,
        decoder_name_or_path: str | None = None,
        decoder_gguf_file: str | None = None,
        decoder_from_causal_lm: bool = False,
        stack_factor: int = 5,
        downsample_method: str = "stack",
        projector_hidden_sizes: list[int] | tuple[int, ...] = (2048, 1024, 2048),
        projector_activation: str = "silu",
        prompt: str = DEFAULT_PROMPT,
        prompt_prefix_ids: list[int] | None = None,
        prompt_suffix_ids: list[int] | None = None,
        mask_token_id: int | None = None,
        eos_token_id: int | None = None,
        eot_token_id: int | None = None,
        pad_token_id: int | None = None,
        checkpoint_weights: str = "full",
        ctc_weight: float = 0.0,
        ctc_blank_id: int | None = None,
        ctc_token_ids: list[int] | None = None,
        speech_embeddings: str = "projector",
        mask_time_prob: float = 0.0,
        mask_time_length: int = 10,
        mask_feature_prob: float = 0.0,
        mask_feature_length: int = 10,
        block_mask_prob: float = 0.0,
        block_mask_length: int = 8,
        **kwargs: Any,
    ):
        for key in LEGACY_DECODING_KEYS:  # decoding defaults are read from generation_config.json
            kwargs.pop(key, None)
        if isinstance(encoder_config, dict):
            encoder_config = WhisperConfig(**{k: v for k, v in encoder_config.items() if k != "model_type"})
        if decoder_type not in DECODER_TYPES:
            raise ValueError(f"WhisperLladaConfig: decoder_type must be one of {DECODER_TYPES}, got {decoder_type!r}.")
        if decoder_type == "causal":
            if decoder_config is None or (isinstance(decoder_config, dict) and "model_type" not in decoder_config):
                raise ValueError(
                    "WhisperLladaConfig: decoder_type='causal' needs a decoder_config with a `model_type` (e.g. a "
                    "Llama config.json), or a config object."
                )
            if isinstance(decoder_config, dict):
                decoder_config = AutoConfig.for_model(**decoder_config)
        elif isinstance(decoder_config, dict):
            decoder_config = LladaConfig(**{k: v for k, v in decoder_config.items() if k != "model_type"})
        self.decoder_type = decoder_type
        self.encoder_config = encoder_config if encoder_config is not None else WhisperConfig()
        self.decoder_config = decoder_config if decoder_config is not None else LladaConfig()

        if downsample_method not in ("stack", "mean"):
            raise ValueError(f"WhisperLladaConfig: downsample_method must be 'stack' or 'mean', got {downsample_method!r}.")
        check = functools.partial(check_number, "WhisperLladaConfig")
        stack_factor = check("stack_factor", stack_factor)
        projector_hidden_sizes = _int_list("WhisperLladaConfig", "projector_hidden_sizes", projector_hidden_sizes)
        prompt_prefix_ids = _int_list("WhisperLladaConfig", "prompt_prefix_ids", prompt_prefix_ids, optional=True)
        prompt_suffix_ids = _int_list("WhisperLladaConfig", "prompt_suffix_ids", prompt_suffix_ids, optional=True)
        mask_token_id, eot_token_id, pad_token_id = (check("mask_token_id", mask_token_id, optional=True),
                                                    check("eot_token_id", eot_token_id, optional=True),
                                                    check("pad_token_id", pad_token_id, optional=True))
        if stack_factor < 1:
            raise ValueError(f"WhisperLladaConfig: stack_factor must be >= 1, got {stack_factor}.")
        if checkpoint_weights not in CHECKPOINT_WEIGHTS:
            raise ValueError(
                f"WhisperLladaConfig: checkpoint_weights must be one of {CHECKPOINT_WEIGHTS}, got {checkpoint_weights!r}."
            )
        self.encoder_name_or_path = encoder_name_or_path
        self.decoder_name_or_path = decoder_name_or_path
        self.decoder_gguf_file = decoder_gguf_file
        self.decoder_from_causal_lm = bool(decoder_from_causal_lm)
        self.stack_factor = int(stack_factor)
        self.downsample_method = downsample_method
        self.projector_hidden_sizes = [int(h) for h in projector_hidden_sizes]
        self.projector_activation = projector_activation
        self.prompt = prompt
        self.prompt_prefix_ids = list(prompt_prefix_ids) if prompt_prefix_ids is not None else None
        self.prompt_suffix_ids = list(prompt_suffix_ids) if prompt_suffix_ids is not None else None
        dec = self.decoder_config
        self.mask_token_id = mask_token_id if mask_token_id is not None else getattr(dec, "mask_token_id", None)
        if eot_token_id is None and decoder_type == "llada" and not decoder_from_causal_lm:
            eot_token_id = LLADA_EOT_TOKEN_ID  # LLaDA-Instruct's <|eot_id|>; a causal LM's comes from its tokenizer
        self.eot_token_id = eot_token_id
        self.checkpoint_weights = checkpoint_weights
        self.ctc_weight = check_number("WhisperLladaConfig", "ctc_weight", ctc_weight, float)
        self.ctc_blank_id = check_number("WhisperLladaConfig", "ctc_blank_id", ctc_blank_id, optional=True)
        if self.ctc_weight and self.ctc_blank_id is None:
            raise ValueError("WhisperLladaConfig: ctc_weight > 0 needs ctc_blank_id (an unused token id as the CTC blank).")
        self.set_ctc_token_ids(ctc_token_ids)
        self.set_speech_embeddings(speech_embeddings)
        self.set_training_masks(mask_time_prob=mask_time_prob, mask_time_length=mask_time_length,
                                mask_feature_prob=mask_feature_prob, mask_feature_length=mask_feature_length,
                                block_mask_prob=block_mask_prob, block_mask_length=block_mask_length)
        eos_token_id = eos_token_id if eos_token_id is not None else dec.eos_token_id
        if isinstance(eos_token_id, (list, tuple)):  # causal LMs may list several stop ids: the first one is EOS
            eos_token_id = eos_token_id[0]
        if pad_token_id is None:
            pad_token_id = getattr(dec, "pad_token_id", None)
        super().__init__(
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id if pad_token_id is not None else eos_token_id,
            **kwargs,
        )

    def set_ctc_token_ids(self, token_ids: list[int] | None) -> None:
        """Restricts the auxiliary CTC loss to these token ids (see the class docstring); checked here."""
        ids = _int_list("WhisperLladaConfig", "ctc_token_ids", token_ids, optional=True)
        if ids is not None:
            ids = sorted(set(ids))
            if self.ctc_blank_id is not None and self.ctc_blank_id not in ids:
                raise ValueError(f"WhisperLladaConfig: ctc_token_ids must contain the CTC blank ({self.ctc_blank_id}).")
            if len(ids) < 2 or ids[0] < 0:
                raise ValueError("WhisperLladaConfig: ctc_token_ids must hold at least two token ids >= 0 (the blank "
                                 f"and a token), got {token_ids[:8]!r}.")
        self.ctc_token_ids = ids

    def set_speech_embeddings(self, mode: str) -> None:
        """What the decoder reads for the speech (see the class docstring); checked here."""
        if mode not in SPEECH_EMBEDDINGS:
            raise ValueError(f"WhisperLladaConfig: speech_embeddings must be one of {SPEECH_EMBEDDINGS}, got {mode!r}.")
        self.speech_embeddings = mode

    def set_training_masks(self, **values: Any) -> None:
        """Sets (and checks) the training-only masking settings given: SpecAugment (mask_time_prob, mask_time_length,
        mask_feature_prob, mask_feature_length) and block masking (block_mask_prob, block_mask_length)."""
        for name, value in values.items():
            if name not in TRAINING_MASK_KEYS:
                raise ValueError(f"WhisperLladaConfig: unknown training masking setting {name!r}; expected one of "
                                 f"{TRAINING_MASK_KEYS}.")
            if name.endswith("_prob"):
                value = float(check_number("WhisperLladaConfig", name, value, float))
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"WhisperLladaConfig: {name} must be between 0 and 1, got {value}.")
            else:
                value = check_number("WhisperLladaConfig", name, value)
                if value < 1:
                    raise ValueError(f"WhisperLladaConfig: {name} must be >= 1, got {value}.")
            setattr(self, name, value)


TRAINING_MASK_KEYS = ("mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length",
                      "block_mask_prob", "block_mask_length")

__all__ = ["LladaConfig", "WhisperLladaConfig", "DECODER_TYPES", "CHECKPOINT_WEIGHTS", "TRAINING_MASK_KEYS", "check_number"]
