"""DiffusionGemma (Google's block-diffusion Gemma 4 MoE) as whisper-llada's decoder, behind the project's decoder
interface (docs/extending.md).

transformers ships the model as `DiffusionGemmaForBlockDiffusion`: a causal *encoder* reads the prompt into a KV cache,
and a bidirectional *decoder* (the same weights) denoises a canvas of `canvas_length` uniform-random tokens, block after
block, each block conditioned on the prompt and the blocks before it, with self-conditioning on its previous step's
logits and an entropy-bounded sampler. `DiffusionGemmaDecoder` subclasses it as it is (same checkpoint layout, same
`forward` and sampler) and adds what the speech model needs:

- `prefix_loss`: the DiffusionGemma SFT objective of the answer after a prefix given as embeddings, as dLLM's
  `DiffusionGemmaTrainer` and Google's Tunix loss compute it: one canvas of the answer per row, corrupted with uniform
  random tokens at a rate t ~ U(eps, 1), cross-entropy at the corrupted positions, self-conditioning on a first,
  gradient-free pass for half of the rows (NeMo AutoModel's `BlockDiffusionStrategy` corrupts and self-conditions
  alike, but scores every answer position of the canvas and adds an autoregressive loss on the encoder);
- `generate` from embeddings: transformers' own sampler, with the prompt's prefill read from the given embeddings
  (`_prefill_from`); the speech is spliced into the *encoder's* input embeddings (`get_input_embeddings()`);
- `DiffusionGemmaSpeechGenerationConfig`: the sampler's settings, named and recorded like the project's presets ("DG",
  "DG,max_denoising_steps=16").

Also here: the published config of google/diffusiongemma-26B-A4B-it with a meta-device parameter count
(`count_parameters`), and `read_prompt_layout`, the special ids and chat-prompt pieces a speech model needs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, GenerationConfig
from transformers.cache_utils import DynamicCache
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
    EntropyBoundSamplerConfig,
)
from transformers.utils import ModelOutput

try:
    from .configuration_whisper_llada import TrainingRecipe
    from .modeling_llada import resolve_model_path
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import TrainingRecipe
    from modeling_llada import resolve_model_path


# ----------------------------------------------------------------------------------------------------------------------
# The published checkpoint: google/diffusiongemma-26B-A4B-it
# ----------------------------------------------------------------------------------------------------------------------

# config.json of google/diffusiongemma-26B-A4B-it (no Hub here: as quoted verbatim by public parsers' test fixtures,
# e.g. mlxcel's DiffusionGemma tests "against a literal snippet of the real checkpoint config" and OpenJev's checkpoint
# fixture; `vision_config.position_embedding_size` / `default_output_length` from the latter).
_LAYER_TYPES = (["sliding_attention"] * 5 + ["full_attention"]) * 5
DIFFUSION_GEMMA_26B_A4B_CONFIG: dict[str, Any] = {
    "architectures": ["DiffusionGemmaForBlockDiffusion"],
    "model_type": "diffusion_gemma",
    "canvas_length": 256,
    "eos_token_id": [1, 106, 50],
    "boi_token_id": 255999,
    "eoi_token_id": 258882,
    "image_token_id": 258880,
    "tie_word_embeddings": True,
    "vision_soft_tokens_per_image": 280,
    "text_config": {
        "model_type": "diffusion_gemma_text",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "dtype": "bfloat16",
        "eos_token_id": 1,
        "final_logit_softcapping": 30.0,
        "global_head_dim": 512,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2816,
        "initializer_range": 0.02,
        "intermediate_size": 2112,
        "layer_types": _LAYER_TYPES,
        "max_position_embeddings": 262144,
        "moe_intermediate_size": 704,
        "num_attention_heads": 16,
        "num_experts": 128,
        "num_global_key_value_heads": 2,
        "num_hidden_layers": 30,
        "num_key_value_heads": 8,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
        },
        "sliding_window": 1024,
        "tie_word_embeddings": True,
        "top_k_experts": 8,
        "use_bidirectional_attention": "vision",
        "vocab_size": 262144,
    },
    "vision_config": {
        "model_type": "gemma4_vision",
        "default_output_length": 280,
        "global_head_dim": 72,
        "head_dim": 72,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "num_key_value_heads": 16,
        "patch_size": 16,
        "pooling_kernel_size": 3,
        "position_embedding_size": 10240,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"},
        "standardize": True,
        "use_clipped_linears": False,
    },
}
# its generation_config.json (the same sources): transformers' DiffusionGemma defaults, plus the stop and pad ids
DIFFUSION_GEMMA_26B_A4B_GENERATION_CONFIG: dict[str, Any] = {
    "confidence_threshold": 0.005,
    "eos_token_id": [1, 106, 50],  # <eos>, <turn|> (end of turn), <|tool_response>
    "max_denoising_steps": 48,
    "max_new_tokens": 256,
    "pad_token_id": 0,
    "sampler_config": {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1},
    "stability_threshold": 1,
    "t_max": 0.8,
    "t_min": 0.4,
}
# the checkpoint's parameter count as published (26B total / ~4B active per token; 25,823,778,864 exactly, as reported
# for the production checkpoint by a public DiffusionGemma training harness)
DIFFUSION_GEMMA_26B_A4B_PARAMETERS = 25_823_778_864


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a DiffusionGemma model, each tensor counted once (the encoder and the decoder share their layers).
    active: what one token runs: everything but the (1 - top_k / num_experts) share of the experts it is not routed
    to; `active_text` leaves the vision tower out as well (a text or speech prompt never runs it)."""

    total: int
    active: int
    experts: int
    vision: int
    embeddings: int

    @property
    def active_text(self) -> int:
        return self.active - self.vision


def count_parameters(config: DiffusionGemmaConfig | dict | None = None) -> ParameterCount:
    """Builds the model on the meta device (no memory, well under a second for 26B) and counts its parameters; default:
    the published google/diffusiongemma-26B-A4B-it (`DIFFUSION_GEMMA_26B_A4B_CONFIG`)."""
    config = copy.deepcopy(DIFFUSION_GEMMA_26B_A4B_CONFIG if config is None else config)
    if isinstance(config, dict):
        config = DiffusionGemmaConfig(**config)
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    text = config.get_text_config()
    sizes = {name: parameter.numel() for name, parameter in model.named_parameters()}  # shared tensors listed once
    experts = sum(n for name, n in sizes.items() if ".experts." in name)
    vision = sum(n for name, n in sizes.items() if ".vision_tower." in name or ".embed_vision." in name)
    unrouted = round(experts * (1 - text.top_k_experts / text.num_experts))
    return ParameterCount(total=sum(sizes.values()), active=sum(sizes.values()) - unrouted, experts=experts,
                          vision=vision, embeddings=model.get_input_embeddings().weight.numel())


# ----------------------------------------------------------------------------------------------------------------------
# The prompt: special ids and chat-template pieces a speech model splices its speech between
# ----------------------------------------------------------------------------------------------------------------------

# Gemma 4's chat prompt as the published checkpoint's chat_template.jinja renders one user turn (ids of that tokenizer):
# <bos>=2 <|turn>=105 "user"=2364 "\n"=107 {content} <turn|>=106 "\n" <|turn> "model"=4368 "\n" <|channel>=100
# "thought"=45518 "\n" <channel|>=101 (thinking off: an empty thought channel), then the answer.
GEMMA4_USER_TURN = ("<bos><|turn>user\n", "<turn|>\n<|turn>model\n<|channel>thought\n<channel|>")
_CONTENT = "\u0001SPEECH\u0001"  # a stand-in for the user's content while the chat template renders


@dataclass
class DiffusionGemmaPromptLayout:
    """What a speech model needs from a DiffusionGemma checkpoint to build its prompt and read its answers.

    There is no mask token: DiffusionGemma's noise is uniform random tokens (`mask_token_id` is None). The speech goes
    where the user's content goes: `prompt_prefix_ids` (template up to the content, then `instruction`) + speech +
    `prompt_suffix_ids` (the end of the user turn and the model turn's opening, where the answer starts). An image would
    take the same place as `boi_token_id`, `image_token_id` x n, `eoi_token_id`. The prompt pieces are None when the
    checkpoint has no tokenizer with a chat template."""

    pad_token_id: int | None
    bos_token_id: int | None
    eos_token_ids: list[int]
    end_of_turn_token_id: int | None
    image_token_id: int | None
    boi_token_id: int | None
    eoi_token_id: int | None
    canvas_length: int
    vocab_size: int
    prompt_prefix_ids: list[int] | None = None
    prompt_suffix_ids: list[int] | None = None
    mask_token_id: int | None = None


def read_prompt_layout(name_or_path: str, instruction: str = "") -> DiffusionGemmaPromptLayout:
    """Reads a DiffusionGemma checkpoint's (directory, Hub id or `package:NAME`) special ids from its config.json and
    generation_config.json, and the user turn around the speech from its tokenizer's chat template."""
    path = resolve_model_path(name_or_path)
    config = DiffusionGemmaConfig.from_pretrained(path)
    text = config.get_text_config()
    generation = _saved_generation_config(path)
    eos = (_as_list(getattr(generation, "eos_token_id", None)) or _as_list(getattr(config, "eos_token_id", None))
           or _as_list(text.eos_token_id))  # the sampler's stop ids first: what generation_config.json says
    pad = getattr(generation, "pad_token_id", None)
    prefix_ids, suffix_ids = _chat_prompt_ids(path, instruction)
    return DiffusionGemmaPromptLayout(
        pad_token_id=text.pad_token_id if pad is None else pad, bos_token_id=text.bos_token_id, eos_token_ids=eos,
        end_of_turn_token_id=suffix_ids[0] if suffix_ids else None, image_token_id=config.image_token_id,
        boi_token_id=config.boi_token_id, eoi_token_id=config.eoi_token_id, canvas_length=config.canvas_length,
        vocab_size=text.vocab_size, prompt_prefix_ids=prefix_ids, prompt_suffix_ids=suffix_ids)


def _as_list(ids) -> list[int]:
    return [] if ids is None else [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _saved_generation_config(path: str) -> DiffusionGemmaGenerationConfig | None:
    """The checkpoint's generation_config.json (None without one)."""
    try:
        return DiffusionGemmaGenerationConfig.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        return None


def _chat_prompt_ids(path: str, instruction: str) -> tuple[list[int] | None, list[int] | None]:
    """The chat template's user turn split around its content: (ids before the content + `instruction`, ids after it
    up to the answer); (None, None) without a tokenizer that has a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None, None
    if not getattr(tokenizer, "chat_template", None):
        return None, None
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _CONTENT}], tokenize=False,
                                             add_generation_prompt=True)
    before, after = rendered.split(_CONTENT)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(before + instruction), encode(after)


# ----------------------------------------------------------------------------------------------------------------------
# Decoding settings: transformers' DiffusionGemma generation config, named like the project's presets
# ----------------------------------------------------------------------------------------------------------------------

DG_PRESET = "DG"
# The decodings by name, each a start of the answer's first canvas: DG = uniform noise (the checkpoint's own sampler,
# the model's default); D = a hypothesis (the speech model's CTC reading or a given first pass), its uncertain tokens
# (the speech model marks them with `mask_token_id`) replaced by noise (`canvas_from_start`); CTC = the speech model's
# CTC reading alone, without the decoder. DiffusionGemma has no [MASK]: every canvas position is always a token, so
# a kept hypothesis token is where the sampler starts, not a constraint (it may renoise it, as any other).
DG_PRESETS: dict[str, dict[str, Any]] = {
    DG_PRESET: {},
    "D": {"anchored": True},
    "CTC": {"ctc_reading": True},
}
# the settings a "DG,key=value" string or generate() keyword may set, with their parsers; gen_length: max_new_tokens
DG_SETTINGS: dict[str, Any] = {
    "max_new_tokens": int,
    "gen_length": int,
    "max_denoising_steps": int,
    "entropy_bound": float,
    "t_min": float,
    "t_max": float,
    "stability_threshold": int,
    "confidence_threshold": float,
    "anchor_threshold": float,
    "anchor_slack": int,
}
ANCHOR_SETTINGS = ("anchor_threshold", "anchor_slack")
_SETTING_ALIASES = {"gen_length": "max_new_tokens"}
# what this class keeps beside transformers' fields (dropped before transformers' constructor sees them), and their
# defaults: D's hypothesis tokens under anchor_threshold confidence are renoised, anchor_slack noise slots after it
_OWN_FIELDS = {"mask_token_id": None, "explicit": (), "_resolved": False, "decoding": None, "anchored": False,
               "ctc_reading": False, "anchor_threshold": 0.3, "anchor_slack": 0}


class DiffusionGemmaSpeechGenerationConfig(DiffusionGemmaGenerationConfig):
    """transformers' `DiffusionGemmaGenerationConfig` (what its sampler reads), named and recorded like the project's
    decoding presets (`DG_PRESETS`): "DG" (the checkpoint's own settings), "D" (the first canvas starts from a
    hypothesis), "CTC" (the speech model's CTC reading), with settings on top: "DG,max_denoising_steps=16".

    Settings: max_new_tokens (gen_length: an alias; rounded up to whole canvases by the sampler), max_denoising_steps
    (per canvas), entropy_bound (the sampler's acceptance bound), t_min / t_max (the temperature schedule),
    stability_threshold / confidence_threshold (early stop of a canvas); D: anchor_threshold / anchor_slack (read by
    whoever builds the start: the speech model renoises hypothesis tokens under this confidence and adds noise slots
    after it). `mask_token_id`: the marker of a position to start from noise in D's start and in an anchored training
    example (`prefix_loss`): the speech model's [MASK] id, or the decoder's `noise_marker_id`; the sampler never sees
    it. `anchored` / `ctc_reading`: the preset's start; `decoding`: the preset; `explicit`: the settings set on top of
    it (for `name`)."""

    def __init__(self, **kwargs: Any):
        own = {name: kwargs.pop(name, default) for name, default in _OWN_FIELDS.items()}
        entropy_bound = kwargs.pop("entropy_bound", None)
        gen_length = kwargs.pop("gen_length", None)
        if gen_length is not None:
            kwargs.setdefault("max_new_tokens", gen_length)
        kwargs.pop("block_length", None)  # the speech model's D sets it with gen_length: one canvas grid here
        super().__init__(**kwargs)
        if entropy_bound is not None:
            self.entropy_bound = entropy_bound
        for name, value in own.items():
            if name != "_resolved":
                setattr(self, name, list(value or ()) if name == "explicit" else value)

    @property
    def gen_length(self) -> int:
        """The answer length, as the project names it (transformers' `max_new_tokens`)."""
        return self.max_new_tokens

    @gen_length.setter
    def gen_length(self, value: int) -> None:
        self.max_new_tokens = int(value)

    @property
    def block_length(self) -> int:
        """One block: the answer (whatever is set; the sampler's own grid is the checkpoint's canvas_length)."""
        return self.max_new_tokens

    @block_length.setter
    def block_length(self, value: int) -> None:
        """Set together with gen_length by the speech model's D; the answer length is gen_length."""

    @classmethod
    def from_generation_config(cls, config: GenerationConfig) -> "DiffusionGemmaSpeechGenerationConfig":
        """This class's copy of a generation config (transformers' DiffusionGemma one, or one of these)."""
        if isinstance(config, cls):
            return config
        if not isinstance(config, DiffusionGemmaGenerationConfig):
            raise ValueError(f"generation_config: a DiffusionGemma decoder decodes with a DiffusionGemma generation "
                             f"config ({cls.__name__} or {DG_PRESET!r} strings), got {type(config).__name__}.")
        fields = set(cls().__dict__) | set(_OWN_FIELDS)
        return cls(**{k: v for k, v in copy.deepcopy(config.__dict__).items() if k in fields})

    @property
    def entropy_bound(self) -> float | None:
        """The entropy-bound sampler's bound (transformers keeps it in `sampler_config`)."""
        return None if self.sampler_config is None else self.sampler_config.entropy_bound

    @entropy_bound.setter
    def entropy_bound(self, value: float) -> None:
        self.sampler_config = EntropyBoundSamplerConfig(entropy_bound=_check_float("entropy_bound", value))

    # -- resolving and checking --------------------------------------------------------------------------------------

    def resolved(self, decoding: str | None = None, **settings: Any) -> "DiffusionGemmaSpeechGenerationConfig":
        """A validated copy: transformers' defaults where this config leaves a setting unset (as its generate fills
        them), then `decoding` (a preset of `DG_PRESETS`, or "DG,key=value,...") and keyword settings on top. Another
        preset than this config's starts from the checkpoint's settings again. Unknown settings raise one ValueError
        naming them."""
        preset = None
        if decoding is not None:
            parsed = self.parse(decoding)
            preset = parsed.pop("decoding")
            settings = {**parsed, **settings}
        unknown = sorted(set(settings) - set(DG_SETTINGS))
        if unknown:
            raise ValueError(f"Unknown DiffusionGemma decoding setting(s) {unknown}; valid: {', '.join(DG_SETTINGS)} "
                             f"(or a string such as '{DG_PRESET},max_denoising_steps=16').")
        config = copy.deepcopy(self)
        config.update(**config._get_default_generation_params(), defaults_only=True)
        if preset is not None and not (preset == (self.decoding or DG_PRESET) and not self.explicit):
            config.anchored = config.ctc_reading = False
            for name, value in DG_PRESETS[preset].items():
                setattr(config, name, value)
            config.decoding, config.explicit = preset, []
        for name, value in settings.items():
            if value is None:
                continue
            name = _SETTING_ALIASES.get(name, name)
            setattr(config, name, _check_float(name, value) if DG_SETTINGS[name] is float else value)
            if name not in config.explicit:
                config.explicit.append(name)
        config.check()
        return config

    def check(self) -> None:
        """transformers' validation, after the checks it leaves out or words wrongly (one ValueError naming the
        setting)."""
        for name, low in (("max_new_tokens", 1), ("max_denoising_steps", 1), ("stability_threshold", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not _check_float("confidence_threshold", self.confidence_threshold) > 0:
            raise ValueError(f"confidence_threshold must be > 0, got {self.confidence_threshold!r}.")
        if self.sampler_config is None:
            raise ValueError("entropy_bound (the sampler's acceptance bound) is not set.")
        if not 0.0 <= _check_float("anchor_threshold", self.anchor_threshold) <= 1.0:
            raise ValueError(f"anchor_threshold must be in [0, 1], got {self.anchor_threshold!r}.")
        if isinstance(self.anchor_slack, bool) or not isinstance(self.anchor_slack, int) or self.anchor_slack < 0:
            raise ValueError(f"anchor_slack must be an integer >= 0, got {self.anchor_slack!r}.")
        if not self.anchored and any(name in self.explicit for name in ANCHOR_SETTINGS):
            raise ValueError(f"{[n for n in ANCHOR_SETTINGS if n in self.explicit]} apply to decoding D only (a "
                             'hypothesis as the start): use decoding="D".')
        self.validate()

    # -- the decoding-string interface (eval_hf.py rows, bench_hf.py variants) ---------------------------------------

    @staticmethod
    def handles(spec: str) -> bool:
        """Whether a decoding string is for a DiffusionGemma decoder (a preset of `DG_PRESETS` first)."""
        return str(spec).split(",")[0].strip() in DG_PRESETS

    @staticmethod
    def parse(spec: str) -> dict[str, Any]:
        """"DG", "D,anchor_threshold=0.5", "DG,max_new_tokens=64,entropy_bound=0.2" -> {"decoding": preset,
        settings...}; anything else raises ValueError naming it."""
        parts = [part.strip() for part in str(spec).split(",") if part.strip()]
        if not parts or parts[0] not in DG_PRESETS:
            raise ValueError(f"decoding {spec!r}: a DiffusionGemma decoder decodes with one of {list(DG_PRESETS)} "
                             f"first (e.g. '{DG_PRESET},max_denoising_steps=16').")
        settings: dict[str, Any] = {"decoding": parts[0]}
        for part in parts[1:]:
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in DG_SETTINGS or not value:
                raise ValueError(f"decoding {spec!r}: unknown setting {part!r}; expected key=value with a key among "
                                 f"{list(DG_SETTINGS)}.")
            try:
                settings[key] = DG_SETTINGS[key](value)
            except ValueError as error:
                raise ValueError(f"decoding {spec!r}: bad value for {key}: {value!r}") from error
        return settings

    @property
    def name(self) -> str:
        """"DG", "D", "DG,max_denoising_steps=16": the preset and the settings set on top of it."""
        explicit = [name for name in self.explicit if name in DG_SETTINGS]
        return ",".join([self.decoding or DG_PRESET] + [f"{k}={_format(getattr(self, k))}" for k in explicit])

    def settings(self) -> dict[str, Any]:
        """The resolved settings, as eval_hf.py records them. The sampler always samples: `temperature` is where its
        schedule starts (t_max), so that a run records its seed."""
        return {"decoding": self.decoding or DG_PRESET, "gen_length": self.max_new_tokens,
                "steps": self.max_denoising_steps, "num_beams": 1, "temperature": self.t_max,
                "max_new_tokens": self.max_new_tokens, "max_denoising_steps": self.max_denoising_steps,
                "entropy_bound": self.entropy_bound, "t_min": self.t_min, "t_max": self.t_max,
                "stability_threshold": self.stability_threshold, "confidence_threshold": self.confidence_threshold,
                **({name: getattr(self, name) for name in ANCHOR_SETTINGS} if self.anchored else {})}

    def set_length(self, length: int) -> None:
        """The default answer length (train_hf.py --gen_length)."""
        self.max_new_tokens = int(length)


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------------------------------
# Training: the block-diffusion SFT objective of one canvas of the answer
# ----------------------------------------------------------------------------------------------------------------------

SELF_CONDITIONING_PROB = 0.5  # the share of rows whose second pass is conditioned on the first (dLLM, Tunix, NeMo)


@dataclass
class DiffusionGemmaLossOutput(ModelOutput):
    """loss: mean cross-entropy at the corrupted answer positions of the canvases; logits (B, C, vocab): the trained
    canvas of each row; targets (B, C): its clean tokens (-100 past the answer); loss_mask (B, C): where the loss is."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    targets: torch.LongTensor | None = None
    loss_mask: torch.BoolTensor | None = None


def pad_to_canvases(labels: torch.LongTensor, canvas_length: int) -> torch.LongTensor:
    """(B, A) -> (B, K * canvas_length): the answer in whole canvases, -100 (not in the answer) past its end."""
    extra = -labels.shape[1] % canvas_length
    return F.pad(labels, (0, extra), value=-100)


def sample_blocks(in_answer: torch.BoolTensor, canvas_length: int) -> torch.LongTensor:
    """(B,) the canvas each row trains: uniform among the canvases up to the row's last answer position."""
    positions = torch.arange(1, in_answer.shape[1] + 1, device=in_answer.device)
    spanned = ((in_answer * positions).amax(-1) + canvas_length - 1) // canvas_length  # (B,)
    return (torch.rand(in_answer.shape[0], device=in_answer.device) * spanned.clamp(min=1)).long()


def canvas_at(tokens: torch.LongTensor, blocks: torch.LongTensor, canvas_length: int) -> torch.LongTensor:
    """(B, K * C), (B,) -> (B, C): each row's canvas `blocks[b]`."""
    index = blocks[:, None] * canvas_length + torch.arange(canvas_length, device=tokens.device)
    return tokens.gather(1, index)


def corrupt_canvas(targets: torch.LongTensor, target_mask: torch.BoolTensor, vocab_size: int, eps: float):
    """Uniform-noise corruption: per row t ~ U(eps, 1), each answer position replaced with probability t by a uniform
    random token (at least one per row that has an answer position, as dLLM does). Returns (noisy canvas (B, C),
    corrupted (B, C), the random tokens (B, C))."""
    batch, width = targets.shape
    device = targets.device
    t = eps + (1 - eps) * torch.rand(batch, 1, device=device)
    corrupted = (torch.rand(batch, width, device=device) < t) & target_mask
    fallback = (torch.rand(batch, width, device=device) * target_mask).argmax(-1)  # (B,) one answer position
    needs_one = target_mask.any(-1) & ~corrupted.any(-1)
    corrupted |= needs_one[:, None] & (torch.arange(width, device=device) == fallback[:, None])
    random_tokens = torch.randint(0, vocab_size, (batch, width), device=device)
    return torch.where(corrupted, random_tokens, targets.clamp(min=0)), corrupted, random_tokens


def pack_left(embeddings: torch.Tensor, keep: torch.BoolTensor) -> tuple[torch.Tensor, torch.BoolTensor]:
    """Moves each row's kept positions, in order, to the right end (left padding, as transformers' generate takes a
    batch): (B, L, d), (B, L) -> (B, L', d), (B, L') with L' the most positions a row keeps; padding is zeros."""
    length = keep.shape[1]
    index = torch.arange(length, device=keep.device)
    order = torch.argsort(torch.where(keep, index + length, index), dim=1, stable=True)  # dropped first, then kept
    order = order[:, length - int(keep.sum(-1).max()):]
    packed_keep = keep.gather(1, order)
    packed = embeddings.gather(1, order[..., None].expand(-1, -1, embeddings.shape[-1]))
    return packed * packed_keep[..., None].to(packed.dtype), packed_keep


# ----------------------------------------------------------------------------------------------------------------------
# Decoding from embeddings: transformers' sampler, its prefill read from the given embeddings
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class DiffusionGemmaAnswerOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)`. sequences (B, N): the answer ids, N = max_new_tokens rounded up to
    whole canvases (tokens after a row's EOS are the pad id, once an EOS/pad id is set); tokens_per_forward (B,):
    generated tokens per decoder forward (transformers' measure of the sampler's parallelism)."""

    sequences: torch.LongTensor | None = None
    tokens_per_forward: torch.Tensor | None = None
    token_timestamps: torch.Tensor | None = None  # (B, N, 2) seconds, with return_timestamps (the speech model)


@contextlib.contextmanager
def _prefill_from(embedding: nn.Module, prompt: torch.Tensor | None):
    """While active, the first call of the encoder's `embedding` (the prompt's prefill in transformers' generate)
    returns `prompt` (B, P, d) instead of looking its placeholder ids up; later calls (the generated canvases, which
    the encoder reads back into the cache) look up as usual."""
    if prompt is None:
        yield
        return

    def replace_once(module, args, looked_up):
        handle.remove()
        if looked_up.shape != prompt.shape:
            raise RuntimeError(f"prefill from embeddings: expected the prompt's lookup {tuple(prompt.shape)}, got "
                               f"{tuple(looked_up.shape)}.")
        return prompt.to(looked_up.dtype)

    handle = embedding.register_forward_hook(replace_once)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _random_source(generator: torch.Generator | None):
    """transformers' DiffusionGemma sampler draws from the global RNG; with a `generator` it draws from that one
    instead (the global RNG is restored afterwards, the generator advances)."""
    if generator is None:
        yield
        return
    device = generator.device
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if cuda:
            torch.cuda.set_rng_state(generator.get_state(), device)
        else:
            torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state())


def canvas_from_hypothesis(rows: list[list[int]] | torch.LongTensor, canvas_length: int,
                           fill_token_id: int) -> torch.LongTensor:
    """A first-pass hypothesis as a starting canvas (decoding D): each row's tokens, then `fill_token_id` (EOS) up to
    `canvas_length`; (B, canvas_length). A longer row is cut (only the first canvas can start from a hypothesis)."""
    rows = rows.tolist() if torch.is_tensor(rows) else rows
    canvas = torch.full((len(rows), canvas_length), fill_token_id, dtype=torch.long)
    for index, row in enumerate(rows):
        row = list(row)[:canvas_length]
        canvas[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return canvas


# ----------------------------------------------------------------------------------------------------------------------
# The decoder
# ----------------------------------------------------------------------------------------------------------------------


class DiffusionGemmaDecoder(DiffusionGemmaForBlockDiffusion):
    """transformers' `DiffusionGemmaForBlockDiffusion` (same weights, `forward` and sampler) behind the speech model's
    decoder interface: `pull`, `prefix_loss`, `resolve_generation_config`, `generate` from embeddings.

    The prompt -- and the speech spliced into it -- goes through the encoder side: `get_input_embeddings()` is the
    encoder's scaled word embedding (lookup x sqrt(hidden_size)); its weight is the decoder's embedding and the LM head
    too (tied). LoRA adapters (`lora_scope`, `lora_targets`) go on the attention and dense-MLP linear layers of the
    encoder's and the decoder's text layers (tied base weights, one adapter per module); the MoE experts are 3-D
    parameters, not `nn.Linear`, so they get none, and the router stays frozen (as NeMo AutoModel trains it)."""

    generation_config_class = DiffusionGemmaSpeechGenerationConfig
    lora_scope = r"model\.(?:encoder\.language_model|decoder)\.layers\.\d+\.(?:\w+\.)*"
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    # -- building ------------------------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DiffusionGemmaConfig | dict) -> "DiffusionGemmaDecoder":
        """Random weights with a decoder config (a checkpoint that stores the decoder fills them)."""
        return cls(DiffusionGemmaConfig(**config) if isinstance(config, dict) else config)

    @classmethod
    def pull(cls, config) -> "DiffusionGemmaDecoder":
        """The base decoder a speech model's config names (`decoder_name_or_path`: Hub id, local directory or
        `package:NAME`), in the current default dtype, with the checkpoint's generation_config.json."""
        return cls.from_pretrained(resolve_model_path(config.decoder_name_or_path), dtype=torch.get_default_dtype())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained; a weight the checkpoint lacks or stores in another shape is an error, not a
        random initialisation."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = [f"{kind} {sorted(map(str, info[key]))[:8]}" for key, kind in
                    (("missing_keys", "missing weights"), ("mismatched_keys", "mis-shaped weights")) if info.get(key)]
        if problems:
            raise ValueError(f"DiffusionGemma checkpoint {pretrained_model_name_or_path}: {'; '.join(problems)}.")
        return (model, info) if wants_info else model

    @property
    def all_tied_weights_keys(self) -> dict[str, str]:
        """transformers' {tied: source} weight names, read from the modules as they are now. DiffusionGemma ties every
        encoder layer weight to its decoder twin by name patterns; transformers expands them once, in `post_init`, and
        a module wrapped afterwards (`modeling_lora.add_lora`: `q_proj.weight` becomes `q_proj.base_layer.weight`)
        would leave a stale name that breaks the next tie (the speech model's `post_init`, `from_pretrained`).
        Expanded on every read, the base weights stay shared. LoRA adapters are not tied, whenever they were added:
        the encoder's and the decoder's modules each train their own (NeMo AutoModel's DiffusionGemma LoRA keeps them
        apart too: its guide warns that merging would fold both deltas into the one shared weight)."""
        expanded = self.get_expanded_tied_weights_keys(all_submodels=True)
        return {tied: source for tied, source in expanded.items() if ".lora_" not in tied}

    @all_tied_weights_keys.setter
    def all_tied_weights_keys(self, value: dict[str, str]) -> None:
        """transformers' `post_init` stores the expansion of the moment; it is recomputed on every read instead."""

    def tie_weights(self, missing_keys: set[str] | None = None, recompute_mapping: bool = True) -> None:
        """transformers' tying of what the checkpoint stores once (the LM head and the encoder's layers are the
        decoder's embedding and layers), always by the current module names (`all_tied_weights_keys`)."""
        super().tie_weights(missing_keys=missing_keys, recompute_mapping=False)

    # -- training ------------------------------------------------------------------------------------------------------

    def prefix_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor,
                    recipe: TrainingRecipe | None = None, anchored: torch.LongTensor | None = None
                    ) -> DiffusionGemmaLossOutput:
        """DiffusionGemma's SFT loss of the answer `labels` (B, A; EOS-padded, -100 = not in the answer) after the
        prefix embeddings `prefix` (B, P, d), left-padded (`prefix_mask` (B, P)).

        As dLLM's DiffusionGemmaTrainer and Google's Tunix loss train it: each row trains one canvas of its answer
        (`sample_blocks`), which the decoder sees as it sees it in `generate`: the encoder (causal) reads the prefix and
        the clean answer before that canvas into the cache; the canvas is corrupted with uniform random tokens
        (`corrupt_canvas`, t ~ U(recipe.mask_eps, 1)); a first decoder pass without gradient gives the logits that
        condition the second pass for half of the rows (`SELF_CONDITIONING_PROB`; the other rows get transformers'
        zero signal, as the sampler's first step); the loss is the cross-entropy of the second pass at the corrupted
        answer positions, averaged over them (dLLM's "token" normalisation). Positions past the answer (-100) are
        neither attended to nor in the loss, so a canvas is full only when the answer length is a multiple of
        `canvas_length`.

        `anchored` (B, A; rows of -1 = not anchored): D's editor examples. An anchored row trains the first canvas
        (the one `generate(decoder_input_ids=...)` starts from a hypothesis): the anchored tokens, those equal to
        `generation_config.mask_token_id` replaced by uniform random tokens; the loss is at those positions.

        Random draws (global RNG, on the prefix's device), in order: the canvases (B,), t (B, 1), the corruption
        (B, C), the fallback position (B, C), the random tokens (B, C), the self-conditioning coins (B,)."""
        recipe = recipe or TrainingRecipe()
        canvas_length, vocab_size = self.config.canvas_length, self.config.get_text_config().vocab_size
        labels = pad_to_canvases(labels.to(prefix.device), canvas_length)  # (B, K * C)
        in_answer = labels != -100
        blocks = sample_blocks(in_answer, canvas_length)  # (B,)
        rows = self._anchored_rows(anchored, labels)  # (B,) or None
        if rows is not None:
            blocks = torch.where(rows, 0, blocks)
        targets = canvas_at(labels, blocks, canvas_length)  # (B, C)
        target_mask = targets != -100
        noisy, corrupted, random_tokens = corrupt_canvas(targets, target_mask, vocab_size, recipe.mask_eps)
        if rows is not None:
            noisy, corrupted = self._anchored_canvas(anchored, labels, rows, random_tokens, target_mask, noisy,
                                                     corrupted)
        conditioned = torch.rand(labels.shape[0], device=prefix.device) < SELF_CONDITIONING_PROB  # (B,)

        context, context_mask = self._context_before(prefix, prefix_mask, labels, blocks * canvas_length)
        logits = self._denoise(context, context_mask, noisy, target_mask, conditioned)  # (B, C, vocab)
        token_loss = F.cross_entropy(logits[corrupted], targets[corrupted], reduction="sum")
        loss = token_loss / corrupted.sum().clamp(min=1)  # the mean over the corrupted positions (0 without any)
        return DiffusionGemmaLossOutput(loss=loss, logits=logits, targets=targets, loss_mask=corrupted)

    def _anchored_rows(self, anchored: torch.LongTensor | None, labels: torch.LongTensor) -> torch.BoolTensor | None:
        """(B,) the rows of `anchored` that hold an editor example, or None when there are none."""
        if anchored is None:
            return None
        rows = (anchored >= 0).all(-1).to(labels.device)
        if not rows.any():
            return None
        if self.generation_config.mask_token_id is None:
            raise ValueError("anchored training examples mark the positions to corrupt with the speech model's "
                             "[MASK] id: set decoder.generation_config.mask_token_id (the speech model does).")
        return rows

    def _anchored_canvas(self, anchored, labels, rows, random_tokens, target_mask, noisy, corrupted):
        """The first canvas of the anchored rows: their tokens, the [MASK]-marked ones replaced by random tokens."""
        anchored = pad_to_canvases(anchored.to(labels.device), self.config.canvas_length)[:, : noisy.shape[1]]
        marked = (anchored == self.generation_config.mask_token_id) & target_mask
        edited = torch.where(marked, random_tokens, anchored.clamp(min=0))
        return torch.where(rows[:, None], edited, noisy), torch.where(rows[:, None], marked, corrupted)

    def _context_before(self, prefix, prefix_mask, labels, starts) -> tuple[torch.Tensor, torch.BoolTensor]:
        """What the encoder reads before each row's canvas: the prefix and the answer before position `starts[b]`,
        left-packed: (B, L, d), (B, L)."""
        answer = self.get_input_embeddings()(labels.clamp(min=0)).to(prefix.dtype)  # (B, K * C, d)
        before = (labels != -100) & (torch.arange(labels.shape[1], device=labels.device) < starts[:, None])
        return pack_left(torch.cat((prefix, answer), dim=1), torch.cat((prefix_mask.bool(), before), dim=1))

    def _denoise(self, context, context_mask, canvas, canvas_mask, conditioned) -> torch.Tensor:
        """The decoder's logits (B, C, vocab) of `canvas` after the encoder read `context`, self-conditioned (rows
        `conditioned`) on a first pass without gradient, with transformers' attention masks and positions (as in
        its generate: the context from 0, the canvas after it)."""
        cache = DynamicCache(config=self.config.get_text_config(decoder=True))
        self.model.encoder(inputs_embeds=context, attention_mask=context_mask, cache=cache)
        length = context.shape[1]
        decode = dict(cache=cache, decoder_input_ids=canvas,
                      decoder_attention_mask=torch.cat((context_mask, canvas_mask), dim=1),
                      decoder_position_ids=torch.arange(length, length + canvas.shape[1], device=canvas.device)[None])
        with torch.no_grad():
            first = self(**decode).logits
        return self(**decode, self_conditioning_logits=first, self_conditioning_mask=conditioned).logits

    # -- decoding ------------------------------------------------------------------------------------------------------

    def resolve_generation_config(self, generation_config: GenerationConfig | None = None, decoding: str | None = None,
                                  **settings: Any) -> DiffusionGemmaSpeechGenerationConfig:
        """The one place decoding settings are resolved: "DG" strings and keyword settings on top of
        `generation_config` (default: the decoder's, i.e. the checkpoint's generation_config.json), validated once."""
        base = generation_config if generation_config is not None else self.generation_config
        base = DiffusionGemmaSpeechGenerationConfig.from_generation_config(base)
        if decoding is None and not settings and getattr(base, "_resolved", False):
            return base
        config = base.resolved(decoding, **settings)
        if config.mask_token_id is None:  # D's start marks its noise positions: with the speech model's [MASK], or this
            config.mask_token_id = self.noise_marker_id
        config._resolved = True
        return config

    @property
    def noise_marker_id(self) -> int:
        """The id that marks a position to start from noise in D's start (`answer_start`) when the speech model has
        no [MASK] of its own: the vocabulary's size, never a token."""
        return int(self.config.get_text_config().vocab_size)

    def canvas_from_start(self, answer_start: torch.LongTensor, marker: int, fill_token_id: int) -> torch.LongTensor:
        """D's start (B, G) as the first canvas (B, canvas_length): its first canvas_length positions (`fill_token_id`
        after a shorter one), each `marker` position replaced by a uniform random token, the noise the sampler starts
        every other position from (random draws: the global RNG, or `generate`'s generator)."""
        length = self.config.canvas_length
        canvas = canvas_from_hypothesis(answer_start[:, :length], length, fill_token_id).to(answer_start.device)
        noise = torch.randint(0, self.noise_marker_id, canvas.shape, device=canvas.device)
        return torch.where(canvas == marker, noise, canvas)

    def answer_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer: torch.LongTensor,
                      answer_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A, vocab) the decoder's logits of each answer position when the encoder has read the left-padded prefix
        embeddings (B, P, d) and the decoder sees the whole answer (B, A) as its canvas (one pass, no
        self-conditioning: the sampler's first step); `answer_mask` (B, A): its real positions (default: all)."""
        answer_mask = torch.ones_like(answer, dtype=torch.bool) if answer_mask is None else answer_mask.bool()
        cache = DynamicCache(config=self.config.get_text_config(decoder=True))
        self.model.encoder(inputs_embeds=prefix, attention_mask=prefix_mask.bool(), cache=cache)
        length = prefix.shape[1]
        return self(cache=cache, decoder_input_ids=answer.to(prefix.device),
                    decoder_attention_mask=torch.cat((prefix_mask.bool(), answer_mask.to(prefix.device)), dim=1),
                    decoder_position_ids=torch.arange(length, length + answer.shape[1], device=prefix.device)[None]
                    ).logits

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor | None = None,  # (B, P, d) left-padded prompt embeddings
        attention_mask: torch.Tensor | None = None,  # (B, P) 1 = real token
        generation_config: GenerationConfig | None = None,
        input_ids: torch.LongTensor | None = None,  # (B, P) a prompt given as ids instead
        decoder_input_ids: torch.LongTensor | None = None,  # (B, canvas_length) the first canvas's start
        answer_start: torch.LongTensor | None = None,  # (B, G) D's start (the speech model), `mask_token_id` = noise
        answer_lengths: torch.LongTensor | None = None,  # (B,) D: each row's length; every row decodes whole canvases
        answer_prior=None,  # LLaDA's CTC fusion (D): not part of DiffusionGemma's sampler; refused when active
        return_dict_in_generate: bool = False,
        streamer=None,
        generator: torch.Generator | None = None,
        decoding: str | None = None,
        **settings: Any,
    ) -> torch.LongTensor | DiffusionGemmaAnswerOutput:
        """The answer after a left-padded prompt, by transformers' DiffusionGemma sampler: returns the new tokens only
        (B, N), N = max_new_tokens rounded up to whole canvases -- from `inputs_embeds` as from `input_ids`, so that
        `generate(inputs_embeds=get_input_embeddings()(P))` and `generate(input_ids=P)` both equal
        `DiffusionGemmaForBlockDiffusion.generate(input_ids=P).sequences[:, P.shape[1]:]` after the same seed (the
        returned tensor also answers `.sequences`, as the native output does, so code written for either reads it).

        The embeddings replace the encoder's lookup of the prompt in its prefill (`_prefill_from`); everything else is
        transformers' loop, its random draws included (`generator`: draw from it instead of the global RNG).
        `decoder_input_ids`: the first canvas starts from it instead of uniform noise (`canvas_from_hypothesis`); a
        token the model is sure of stays, the others are renoised as usual. Decoding "D" starts it from `answer_start`
        instead (the speech model's hypothesis, `canvas_from_start`: its marked positions noise; only the first canvas
        can start from a hypothesis). `decoding` ("DG,...") and keyword settings (`max_new_tokens`,
        `max_denoising_steps`, `entropy_bound`, ...) on top of `generation_config`; anything else raises. `streamer`
        gets transformers' `put` (the placeholder prompt first, then each canvas), `put_draft` and `end`."""
        config = self.resolve_generation_config(generation_config, decoding, **settings)
        if (inputs_embeds is None) == (input_ids is None):
            raise ValueError("generate() needs exactly one of `inputs_embeds` or `input_ids` (the prompt).")
        if getattr(answer_prior, "active", answer_prior is not None):
            raise ValueError("answer_prior (CTC fusion: ctc_fusion / ctc_top_k) is not supported by DiffusionGemma's "
                             "sampler.")
        self._check_start(config, answer_start, decoder_input_ids)
        prompt_ids = input_ids if input_ids is not None else self._placeholder_ids(inputs_embeds)
        extra = {"attention_mask": attention_mask, "streamer": streamer,
                 "decoder_input_ids": self._checked_canvas(decoder_input_ids, prompt_ids)}
        with _random_source(generator), _prefill_from(self.get_input_embeddings(), inputs_embeds):
            if answer_start is not None:
                fill = _as_list(config.eos_token_id)[0] if config.eos_token_id is not None else config.pad_token_id
                extra["decoder_input_ids"] = self.canvas_from_start(answer_start.to(prompt_ids.device),
                                                                    config.mask_token_id, fill)
            output = super().generate(input_ids=prompt_ids, generation_config=config, return_dict_in_generate=True,
                                      **{name: value for name, value in extra.items() if value is not None})
        answer = output.sequences[:, prompt_ids.shape[1]:]
        if not return_dict_in_generate:
            answer.sequences = answer  # the tokens, also where DiffusionGemma's own generate has them (`.sequences`)
            return answer
        return DiffusionGemmaAnswerOutput(sequences=answer, tokens_per_forward=output.tokens_per_forward)

    @staticmethod
    def _check_start(config: DiffusionGemmaSpeechGenerationConfig, answer_start, decoder_input_ids) -> None:
        if config.anchored and answer_start is None and decoder_input_ids is None:
            raise ValueError('decoding "D" starts from a hypothesis: pass answer_start (B, G; the speech model builds '
                             "it) or decoder_input_ids (B, canvas_length).")
        if answer_start is not None and not config.anchored:
            raise ValueError('answer_start is the start of decoding "D"; other decodings start from noise.')
        if answer_start is not None and decoder_input_ids is not None:
            raise ValueError("pass D's start as answer_start or as decoder_input_ids, not both.")

    def _placeholder_ids(self, inputs_embeds: torch.Tensor) -> torch.LongTensor:
        """(B, P) ids that stand for the prompt in transformers' loop (its shape, device; never looked up)."""
        pad = self.config.get_text_config().pad_token_id or 0
        return torch.full(inputs_embeds.shape[:2], pad, dtype=torch.long, device=inputs_embeds.device)

    def _checked_canvas(self, canvas: torch.LongTensor | None, prompt_ids: torch.LongTensor) -> torch.LongTensor | None:
        if canvas is None:
            return None
        expected = (prompt_ids.shape[0], self.config.canvas_length)
        if tuple(canvas.shape) != expected:
            raise ValueError(f"decoder_input_ids (the first canvas's start) must have shape {expected}, got "
                             f"{tuple(canvas.shape)} (canvas_from_hypothesis pads a hypothesis to a canvas).")
        return canvas.to(prompt_ids.device)


__all__ = ["DiffusionGemmaDecoder", "DiffusionGemmaSpeechGenerationConfig", "DiffusionGemmaLossOutput",
           "DiffusionGemmaAnswerOutput", "DiffusionGemmaPromptLayout", "read_prompt_layout", "canvas_from_hypothesis",
           "count_parameters", "ParameterCount", "DIFFUSION_GEMMA_26B_A4B_CONFIG", "DG_PRESET", "DG_SETTINGS",
           "DIFFUSION_GEMMA_26B_A4B_GENERATION_CONFIG", "DIFFUSION_GEMMA_26B_A4B_PARAMETERS", "GEMMA4_USER_TURN"]
