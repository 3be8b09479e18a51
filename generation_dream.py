"""Dream's masked-diffusion sampler for `modeling_dream.DreamForMaskedDiffusion`: its decoding settings
(`DreamGenerationConfig`) and the sampling loop (`DreamGenerationMixin.generate`), with the semantics of the official
`diffusion_generate` (Dream-org/Dream-v0-*-7B, `generation_utils.py`).

Dream reads its logits *shifted*: the logits at position i predict the token at i + 1, so answer slot j is read from
the position before it (the first slot from the prompt's last position). The answer starts as [MASK] * gen_length and
is revealed over `steps` steps on the time grid t_k = linspace(1, eps, steps + 1)[k], going from t to s at each step:

    answer = [MASK] * gen_length after the prompt           (D: the given start, `_start`)
    for each block, for each of its steps (t -> s):          (`dream_schedule`; one block = Dream's own sampler)
        shifted logits of the block's slots                  (`_slot_logits`; D: no EOS inside the reading)
        origin: reveal each masked slot with prob. 1 - s/t   (`_reveal_at_random`)
        else:   x0 and a confidence per masked slot, reveal  (`sample_tokens`, `transfer_counts`, `select_positions`)
                the int(n (1 - s/t)) most confident ones     (`_reveal_most_confident`)
        (the last step of a block reveals every slot left)
        [streamer: the answer after every step]              (`streamer.put_draft`)

`sample_tokens` is Dream's: temperature scaling, top-p then top-k filtering, softmax, x0 drawn (temperature > 0) or
argmax; the confidence is x0's probability (maskgit_plus), top1 - top2 (topk_margin) or the negative entropy
(entropy). With `alg_temp` the slots to reveal are drawn from softmax(confidence / alg_temp) instead of taken best
first. Random numbers are drawn in the official code's order and shapes, so that under the same `torch.manual_seed`
(or `generator`) the tokens are the official sampler's (tested against an independent reference of it).

The project's presets map onto it: A = 1 step, B = 8 steps, C = 16 semi-autoregressive blocks of 8 steps each (Dream's
schedule inside each block, later blocks still [MASK]: Fast-dLLM's Dream variant), D = start from a given hypothesis
whose [MASK] slots are filled (the other slots are kept).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput

# The decoding presets (the meaning they have in configuration_llada_generation.py): A = one step, B = 8 steps,
# C = 8 steps per block x 16 semi-autoregressive blocks (steps counted over all blocks: 128), D = start from a given
# hypothesis with [MASK] where to fill (`answer_start`), CTC = the speech model's CTC reading, without the sampler.
DREAM_PRESETS: dict[str, dict[str, Any]] = {
    "A": {"steps": 1, "num_blocks": 1},
    "B": {"steps": 8, "num_blocks": 1},
    "C": {"steps": 8 * 16, "num_blocks": 16},
    "D": {"steps": 1, "num_blocks": 1, "anchored": True},
    "CTC": {"steps": 1, "num_blocks": 1, "ctc_reading": True},  # the speech model's CTC reading alone (no sampler)
}
MODE_FLAGS = ("anchored", "ctc_reading")  # what a preset sets besides its settings: how the answer starts
DREAM_ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")

# The settings `generate()` takes, with the parsers used for "key=value" strings. max_new_tokens (Dream's name) and
# gen_length (the project's) are the same setting: the answer length.
DREAM_SETTINGS: dict[str, Any] = {
    "gen_length": int,
    "max_new_tokens": int,
    "steps": int,
    "block_length": int,
    "alg": str,
    "alg_temp": float,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "eps": float,
    "anchor_threshold": float,
    "anchor_slack": int,
}
ANCHOR_SETTINGS = ("anchor_threshold", "anchor_slack")
# keys of an official Dream generation_config.json (or transformers' bookkeeping) that set nothing here
IGNORED_KEYS = {"transformers_version", "_from_model_config", "num_beams", "do_sample", "output_history", "return_dict",
                "return_dict_in_generate", "num_return_sequences", "generation_kwargs", "max_length", "bos_token_id",
                "decoding", "explicit", "_resolved", *MODE_FLAGS}
SPECIAL_IDS = ("mask_token_id", "eos_token_id", "pad_token_id")


# ----------------------------------------------------------------------------------------------------------------------
# Decoding settings
# ----------------------------------------------------------------------------------------------------------------------


class DreamGenerationConfig(GenerationConfig):
    """Decoding settings of Dream's sampler, validated once (`resolved`, `check`) and named for tables (`name`).

    The defaults decode deterministically, one token per step (the official defaults are 512 steps for 512 tokens,
    alg "origin", which orders the reveals at random even at temperature 0): 128 steps for 128 tokens, alg "entropy"
    (the official README's choice), temperature 0.

    Args:
        max_new_tokens: answer length (alias `gen_length`); the answer starts as [MASK] * max_new_tokens and the model
            writes EOS where it ends.
        steps: denoising steps over all blocks together.
        block_length: semi-autoregressive block length (C; default: max_new_tokens, one block = Dream's sampler).
            max_new_tokens must be a multiple of it and steps a multiple of the number of blocks.
        alg: which masked slots a step reveals: "origin" (each with probability 1 - s/t, in random order),
            "maskgit_plus" (most probable first), "topk_margin" (largest top1 - top2 first), "entropy" (lowest
            entropy first).
        alg_temp: confidence algorithms: None or 0 = reveal the most confident slots; > 0 = draw them from
            softmax(confidence / alg_temp).
        temperature: 0 = x0 is the argmax; > 0 = x0 is drawn from softmax(logits / temperature).
        top_p / top_k: nucleus / top-k filtering of the logits before x0 and the confidences (None = off).
        eps: the time grid's end, linspace(1, eps, steps + 1).
        anchored: start from a given hypothesis (preset D, `answer_start`) instead of all-[MASK].
        ctc_reading: the speech model's CTC reading is the answer, no sampler step (preset CTC).
        anchor_threshold / anchor_slack: D: read by whoever builds the start (the speech model: hypothesis tokens
            under this confidence are masked; [MASK] slots after it); the sampler itself does not use them.
        decoding: the preset this config was resolved from (A, B, C, D), or None; part of its `name`.
        mask_token_id / eos_token_id / pad_token_id: the decoder's special ids.
    """

    def __init__(
        self,
        max_new_tokens: int = 128,
        steps: int = 128,
        block_length: int | None = None,
        alg: str = "entropy",
        alg_temp: float | None = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        eps: float = 1e-3,
        anchored: bool = False,
        anchor_threshold: float = 0.3,
        anchor_slack: int = 0,
        ctc_reading: bool = False,
        decoding: str | None = None,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("num_beams", 1)  # so that pipelines do not inject beam search
        max_new_tokens = kwargs.pop("gen_length", max_new_tokens)
        explicit = kwargs.pop("explicit", ())
        super().__init__(**kwargs)
        self.max_new_tokens = max_new_tokens
        self.steps = steps
        self.block_length = block_length if block_length is not None else max_new_tokens
        self.alg = alg
        self.alg_temp = alg_temp
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.eps = eps
        self.anchored = anchored
        self.ctc_reading = ctc_reading
        self.anchor_threshold = anchor_threshold
        self.anchor_slack = anchor_slack
        self.decoding = decoding
        self.explicit = list(explicit)  # the settings a caller set on top of the preset (for `name`)
        self.mask_token_id = mask_token_id

    # -- lengths -------------------------------------------------------------------------------------------------------

    @property
    def gen_length(self) -> int:
        """The answer length, as the project names it (Dream's `max_new_tokens`)."""
        return self.max_new_tokens

    @gen_length.setter
    def gen_length(self, value: int) -> None:
        self.max_new_tokens = value

    @property
    def num_blocks(self) -> int:
        return self.max_new_tokens // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    def set_length(self, length: int) -> None:
        """The default answer length, one block (train_hf.py --gen_length)."""
        self.max_new_tokens = self.block_length = int(length)

    # -- resolving and checking ----------------------------------------------------------------------------------------

    def validate(self, strict: bool = False, user_set_attributes: set[str] | None = None) -> None:
        """transformers' sampling-flag rules (do_sample, ...) do not apply to Dream's sampler, whose temperature, top_p
        and top_k also shape the confidences at temperature 0; its settings are checked by `check`."""

    @classmethod
    def from_generation_config(cls, config: GenerationConfig,
                               defaults: "DreamGenerationConfig") -> "DreamGenerationConfig":
        """A plain `GenerationConfig` (e.g. an official Dream generation_config.json, or this class's saved one read
        back by `GenerationConfig.from_pretrained`) read as Dream settings on top of `defaults`: its Dream fields are
        taken and validated, its special ids fill in what it sets; anything the sampler cannot honour (beam search,
        repetition penalties, ...) raises one error naming it."""
        if isinstance(config, cls):
            return config
        values = config.to_diff_dict()
        unknown = sorted(set(values) - set(DREAM_SETTINGS) - IGNORED_KEYS - set(SPECIAL_IDS))
        if unknown or values.get("num_beams", 1) not in (None, 1):
            raise ValueError(f"generation_config: {unknown or ['num_beams']} cannot be used for Dream's "
                             f"masked-diffusion decoding; a Dream generation config holds {', '.join(DREAM_SETTINGS)}.")
        merged = copy.deepcopy(defaults)
        for name, value in values.items():
            if name in DREAM_SETTINGS or name in ("decoding", "explicit", *MODE_FLAGS):
                setattr(merged, name, value)
            elif name in SPECIAL_IDS and value is not None:
                setattr(merged, name, value)
        if "block_length" not in values and "max_new_tokens" in values:
            merged.block_length = merged.max_new_tokens
        merged.check()
        return merged

    def resolved(self, decoding: str | None = None, **settings: Any) -> "DreamGenerationConfig":
        """A validated copy with a preset and/or explicit settings applied: `decoding` is "A", "B", "C" or "D", or a
        string such as "B,alg=origin,temperature=0.2" (`parse`). Without an explicit block_length the number of blocks
        is kept (the preset's, or this config's). A setting given as None keeps this config's value. Unknown names
        raise a TypeError naming them."""
        if decoding is not None and ("," in decoding or "=" in decoding):
            parsed = self.parse(decoding)
            decoding = parsed.pop("decoding", None)
            settings = {**parsed, **settings}
        settings = _canonical_settings(settings)
        config = copy.deepcopy(self)
        num_blocks = max(1, config.num_blocks)
        if decoding is not None and decoding == self.decoding and not self.explicit:
            decoding = None  # the preset this config already is: its settings are kept
        if decoding is not None:
            if decoding not in DREAM_PRESETS:
                raise ValueError(f"decoding must be one of {sorted(DREAM_PRESETS)}, got {decoding!r}.")
            preset = DREAM_PRESETS[decoding]
            num_blocks = preset["num_blocks"]
            config.steps = preset["steps"]
            for flag in MODE_FLAGS:
                setattr(config, flag, preset.get(flag, False))
            config.decoding, config.explicit = decoding, []
        for name, value in settings.items():
            if value is not None:
                setattr(config, name, value)
                if name not in config.explicit:
                    config.explicit.append(name)
        if settings.get("block_length") is None:
            _check_positive_int("gen_length", config.gen_length)
            if config.gen_length % num_blocks:
                raise ValueError(f"gen_length={config.gen_length} must be divisible by the number of blocks "
                                 f"({num_blocks}).")
            config.block_length = config.gen_length // num_blocks
        config.check()
        return config

    def check(self) -> None:
        """Clear errors for settings the sampler cannot run, instead of a silent wrong result."""
        for name in ("steps", "gen_length", "block_length"):
            _check_positive_int(name, getattr(self, name))
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} must be divisible by block_length={self.block_length}.")
        if self.steps % self.num_blocks:
            raise ValueError(f"steps={self.steps} must be divisible by the number of blocks "
                             f"gen_length/block_length={self.num_blocks} (steps are counted over all blocks).")
        if self.anchored and self.ctc_reading:
            raise ValueError("anchored (D) and ctc_reading (CTC) are two different decodings: pick one preset.")
        if self.anchored and self.num_blocks != 1:
            raise ValueError("anchored decoding (D) runs over one block: leave block_length at gen_length.")
        if self.alg not in DREAM_ALGORITHMS:
            raise ValueError(f"alg must be one of {list(DREAM_ALGORITHMS)}, got {self.alg!r}.")
        if self.alg_temp is not None and _check_finite("alg_temp", self.alg_temp) < 0:
            raise ValueError(f"alg_temp must be None or >= 0, got {self.alg_temp!r}.")
        if _check_finite("temperature", self.temperature or 0.0) < 0:  # None: greedy, as 0
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}.")
        if self.top_p is not None and not 0.0 < _check_finite("top_p", self.top_p) <= 1.0:
            raise ValueError(f"top_p must be None or in (0, 1], got {self.top_p!r}.")
        if self.top_k is not None:
            _check_positive_int("top_k", self.top_k)
        if not 0.0 <= _check_finite("eps", self.eps) < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {self.eps!r}.")
        if not 0.0 <= _check_finite("anchor_threshold", self.anchor_threshold) <= 1.0:
            raise ValueError(f"anchor_threshold must be in [0, 1], got {self.anchor_threshold!r}.")
        if isinstance(self.anchor_slack, bool) or not isinstance(self.anchor_slack, int) or self.anchor_slack < 0:
            raise ValueError(f"anchor_slack must be an integer >= 0, got {self.anchor_slack!r}.")
        if not self.anchored and any(name in self.explicit for name in ANCHOR_SETTINGS):
            raise ValueError(f"{[n for n in ANCHOR_SETTINGS if n in self.explicit]} apply to anchored decoding only: "
                             'use decoding="D".')
        if self.mask_token_id is None or self.eos_token_id is None:
            raise ValueError("The generation config needs mask_token_id and eos_token_id (the decoder's special ids).")

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        """"B", "B,alg=origin,temperature=0.2", "steps=16,gen_length=64" -> `generate()` keyword arguments (a preset
        name may only come first). Raises ValueError naming the bad part."""
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts:
            raise ValueError(f"empty decoding configuration {text!r}")
        settings: dict[str, Any] = {}
        for index, part in enumerate(parts):
            if "=" not in part:
                if index != 0 or part not in DREAM_PRESETS:
                    raise ValueError(f"decoding {text!r}: {part!r} is not a Dream preset ({sorted(DREAM_PRESETS)}, "
                                     "first only) nor a key=value setting")
                settings["decoding"] = part
                continue
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in DREAM_SETTINGS:
                raise ValueError(f"decoding {text!r}: unknown setting {key!r}; expected one of {list(DREAM_SETTINGS)}")
            try:
                settings[key] = DREAM_SETTINGS[key](value) if value.lower() != "none" else None
            except ValueError as error:
                raise ValueError(f"decoding {text!r}: bad value for {key}: {value!r}") from error
        return settings

    @staticmethod
    def handles(spec: str) -> bool:
        """Whether a decoding string is for Dream's sampler (a preset and/or Dream settings; not "AR..." nor a LLaDA
        string such as "B,kv_cache=dual")."""
        try:
            DreamGenerationConfig.parse(spec)
        except ValueError:
            return False
        return True

    # -- naming and recording (eval_hf.py rows, bench_hf.py variants, the model card) --------------------------------

    @property
    def name(self) -> str:
        """"B", "B,alg=origin", "steps=16,gen_length=64": the preset, then the settings set on top of it."""
        exact = [f"{k}={_format(getattr(self, k))}" for k in self.explicit]
        return ",".join(([self.decoding] if self.decoding else []) + exact) or "default"

    def settings(self) -> dict[str, Any]:
        """The resolved settings, as eval_hf.py records them for each row."""
        return {"decoding": self.decoding, "steps": self.steps, "gen_length": self.gen_length,
                "block_length": self.block_length, "num_blocks": self.num_blocks, "num_beams": 1,
                "alg": self.alg, "alg_temp": self.alg_temp, "temperature": self.temperature or 0.0,
                "top_p": self.top_p, "top_k": self.top_k, "eps": self.eps, "ctc_reading": bool(self.ctc_reading),
                **({name: getattr(self, name) for name in ANCHOR_SETTINGS} if self.anchored else {})}


def _canonical_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword settings checked by name; max_new_tokens becomes gen_length, num_beams must be 1."""
    unknown = sorted(set(settings) - set(DREAM_SETTINGS) - {"num_beams"})
    if unknown:
        raise TypeError(f"generate() got unknown argument(s) {unknown} for Dream decoding; valid: decoding, "
                        f"{', '.join(DREAM_SETTINGS)}, num_beams (1), generation_config, generator, answer_start, "
                        "answer_lengths, streamer, return_dict_in_generate, output_history.")
    settings = dict(settings)
    if settings.pop("num_beams", 1) not in (None, 1):
        raise ValueError("Beam search is not defined for masked-diffusion decoding: use num_beams=1.")
    if "max_new_tokens" in settings:
        length = settings.pop("max_new_tokens")
        if settings.get("gen_length") not in (None, length):
            raise ValueError(f"max_new_tokens={length} and gen_length={settings['gen_length']} disagree: they are "
                             "the same setting.")
        settings["gen_length"] = length
    return settings


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------------------------------------------------
# Small steps of the sampler
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class DreamStep:
    """One sampler step: the block [start, end) of the answer, going from time t to s (0-dim float32 tensors, as the
    official `linspace` grid holds them); the last step of a block reveals every slot left."""

    start: int
    end: int
    t: torch.Tensor
    s: torch.Tensor
    last: bool


def dream_schedule(config: DreamGenerationConfig, answer_length: int, device: torch.device) -> Iterator[DreamStep]:
    """Every step, blocks left to right; inside a block Dream's grid linspace(1, eps, steps_per_block + 1)."""
    block_length = answer_length // config.num_blocks
    times = torch.linspace(1, config.eps, config.steps_per_block + 1, device=device)
    for block in range(config.num_blocks):
        start = block * block_length
        for step in range(config.steps_per_block):
            yield DreamStep(start, start + block_length, times[step], times[step + 1],
                            step == config.steps_per_block - 1)


def keep_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: the smallest set of most probable tokens whose probability reaches top_p is kept (the most
    probable always); the others get the dtype's lowest value."""
    ordered, order = torch.sort(scores, dim=-1, descending=True)
    reached = torch.softmax(ordered, dim=-1).cumsum(dim=-1) > top_p
    drop_ordered = torch.zeros_like(reached)
    drop_ordered[..., 1:] = reached[..., :-1]  # a token is dropped once the ones before it reach top_p
    drop = torch.zeros_like(reached).scatter(-1, order, drop_ordered)
    return scores.masked_fill(drop, torch.finfo(scores.dtype).min)


def keep_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Top-k filtering: tokens below the k-th highest score get the dtype's lowest value."""
    kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, torch.finfo(scores.dtype).min)


def is_categorical(probs: torch.Tensor) -> bool:
    """Whether every row, normalised, is a distribution as torch.distributions.Categorical validates it (entries
    >= 0, sum within 1e-6 of 1). The official sampler draws through Categorical and falls back to the argmax for the
    whole call when this validation fails (e.g. NaN, or a low-precision sum)."""
    normalized = probs / probs.sum(-1, keepdim=True)
    return bool(((normalized >= 0).all(-1) & ((normalized.sum(-1) - 1).abs() < 1e-6)).all())


def draw_tokens(probs: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """x0 (n,) and its probability (n,) from `probs` (n, V): a draw (temperature > 0; the official Categorical
    draw: one multinomial sample of each normalised row), or the argmax."""
    if temperature and probs.numel() and is_categorical(probs):
        normalized = probs / probs.sum(-1, keepdim=True)
        tokens = torch.multinomial(normalized, 1, replacement=True, generator=generator).squeeze(-1)
        return tokens, probs.gather(-1, tokens[:, None]).squeeze(-1)
    confidence, tokens = probs.max(dim=-1)
    return tokens, confidence


def sample_tokens(scores: torch.Tensor, config: DreamGenerationConfig, generator: torch.Generator | None = None):
    """x0 (n,) and its confidence (n,) at n masked slots from their shifted logits (n, V), as Dream's `sample_tokens`:
    logits / temperature (if > 0), top-p then top-k filtering, softmax, x0 drawn or argmax (`draw_tokens`); the
    confidence is x0's probability, top1 - top2 (topk_margin) or the negative entropy sum p log(p + 1e-10)
    (entropy)."""
    if config.temperature:
        scores = scores / config.temperature
    if config.top_p is not None and config.top_p < 1:
        scores = keep_top_p(scores, config.top_p)
    if config.top_k is not None:
        scores = keep_top_k(scores, config.top_k)
    probs = torch.softmax(scores, dim=-1)
    tokens, confidence = draw_tokens(probs, config.temperature, generator)
    if config.alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif config.alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(-1)
    return tokens, confidence


def transfer_counts(masked: torch.Tensor, step: DreamStep) -> torch.LongTensor:
    """(b,) slots each row reveals this step: int(n (1 - s/t)) of its n masked slots in the block (float32, truncated,
    as the official count), all of them at the block's last step. (The official code takes n as the batch mean;
    rows decoded from all-[MASK] always have equal n, an anchored start's rows need their own.)"""
    remaining = masked.sum(-1)
    if step.last:
        return remaining
    return (remaining.to(step.t.dtype) * (1 - step.s / step.t)).long()


def select_positions(confidence: torch.Tensor, counts: torch.LongTensor, alg_temp: float | None,
                     generator: torch.Generator | None = None) -> torch.BoolTensor:
    """(b, W) the `counts` (b,) positions each row reveals, from its confidences (b, W; -inf where nothing may be
    revealed): the most confident, or with alg_temp > 0 drawn without replacement from softmax(confidence /
    alg_temp). Rows of equal counts draw in one call over the full row, as the official code does."""
    chosen = torch.zeros(confidence.shape, dtype=torch.bool, device=confidence.device)
    most = int(counts.max()) if counts.numel() else 0
    if most == 0:
        return chosen
    if not alg_temp:
        order = torch.topk(confidence, most, dim=-1).indices
    elif bool((counts == most).all()):
        order = torch.multinomial(torch.softmax(confidence / alg_temp, dim=-1), most, generator=generator)
    else:  # an anchored start: rows reveal different numbers of slots
        probs = torch.softmax(confidence / alg_temp, dim=-1)
        for row, count in enumerate(counts.tolist()):
            if count:
                chosen[row, torch.multinomial(probs[row], count, generator=generator)] = True
        return chosen
    wanted = torch.arange(most, device=confidence.device) < counts.to(confidence.device)[:, None]
    return chosen.scatter(-1, order, wanted)


class _Canvas:
    """The prompt and the answer being revealed: prefix embeddings (b, P, d), answer ids (b, G), positions (b, P + G;
    left padding: real tokens numbered from 0), the key mask (b, P + G, or None without padding) and (anchored start)
    the slots that may not become EOS."""

    def __init__(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer: torch.LongTensor,
                 config: DreamGenerationConfig, answer_lengths: torch.LongTensor | None = None):
        device = prefix.device
        self.prefix = prefix
        self.answer = answer
        answer_mask = torch.ones_like(answer)
        if answer_lengths is not None:  # each row sees only its own answer length (an anchored start's EOS fill)
            answer_mask = (torch.arange(answer.shape[1], device=device) < answer_lengths.to(device)[:, None]).long()
        full_mask = torch.cat((prefix_mask.to(device).long(), answer_mask), dim=1)
        self.positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        self.key_mask = None if bool(full_mask.all()) else full_mask
        # D: the slots before the start's EOS tail (its reading) are refilled, never ended (as LLaDA's D)
        self.no_eos = (answer == config.eos_token_id).cumsum(-1) == 0 if config.anchored else None

    @property
    def prefix_width(self) -> int:
        return self.prefix.shape[1]

    @property
    def width(self) -> int:
        return self.prefix.shape[1] + self.answer.shape[1]

    def forbid_eos(self, logits: torch.Tensor, step: DreamStep, eos_id: int) -> torch.Tensor:
        """D: EOS is not a candidate at the reading's slots of the block; otherwise the logits unchanged."""
        if self.no_eos is None:
            return logits
        logits = logits.clone()
        logits[..., eos_id] = logits[..., eos_id].masked_fill(self.no_eos[:, step.start : step.end], -math.inf)
        return logits


@dataclass
class DreamGenerateOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)`. sequences: (B, gen_length) answer ids. With
    `output_history=True`: history (B, S + 1, gen_length), the answer before the first step (all [MASK], or D's start)
    and after each of the S steps (the last state = `sequences`)."""

    sequences: torch.LongTensor | None = None
    history: torch.LongTensor | None = None


# ----------------------------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------------------------


class DreamGenerationMixin:
    """`generate()` for Dream's mask predictor, whose forward takes `inputs_embeds`, `attention_mask`, `position_ids`
    and `logits_positions` (`modeling_dream.DreamForMaskedDiffusion`)."""

    generation_config: DreamGenerationConfig

    def resolve_generation_config(self, generation_config: GenerationConfig | None = None, decoding: str | None = None,
                                  **settings: Any) -> DreamGenerationConfig:
        """The one place decoding settings are resolved: a preset or "B,alg=origin"-style string and keyword settings
        on top of `generation_config` (default: the model's; a plain GenerationConfig is converted)."""
        base = generation_config if generation_config is not None else self.generation_config
        base = DreamGenerationConfig.from_generation_config(base, self.generation_config)
        if decoding is None and not settings and getattr(base, "_resolved", False):
            return base
        config = base.resolved(decoding, **settings)
        config._resolved = True
        return config

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor | None = None,  # (B, P, d) left-padded prompt embeddings
        attention_mask: torch.Tensor | None = None,  # (B, P) 1 = real token
        generation_config: GenerationConfig | None = None,
        input_ids: torch.LongTensor | None = None,  # (B, P) a prompt given as ids instead
        generator: torch.Generator | None = None,
        answer_start: torch.LongTensor | None = None,  # (B, G) D's start: [MASK] where to fill
        answer_lengths: torch.LongTensor | None = None,  # (B,) D: answer positions each row sees (the rest hidden)
        answer_prior=None,  # LLaDA's CTC fusion (D): not part of Dream's sampler; refused when active
        return_dict_in_generate: bool = False,
        output_history: bool = False,
        streamer=None,
        decoding: str | None = None,
        **settings: Any,
    ) -> torch.LongTensor | DreamGenerateOutput:
        """Reveals the answer after the prompt; returns its ids (B, gen_length), or a `DreamGenerateOutput` with
        `return_dict_in_generate=True` (`output_history=True` adds every step's state).

        `decoding` picks a preset ("A", "B", "C"; "D" needs `answer_start`) or a "B,alg=origin" string; keyword
        settings (`steps`, `gen_length`/`max_new_tokens`, `block_length`, `alg`, `alg_temp`, `temperature`, `top_p`,
        `top_k`, `eps`) override it; anything else raises. Random draws use `generator`, or the global RNG (as the
        official code: `torch.manual_seed` controls it). `streamer` (transformers' diffusion streamer convention)
        gets `put_draft(value=answer)` with the start and after every step, then `put(answer)` and `end()`."""
        config = self.resolve_generation_config(generation_config, decoding, **settings)
        if getattr(answer_prior, "active", answer_prior is not None):
            raise ValueError("answer_prior (CTC fusion: ctc_fusion / ctc_top_k) is not supported by Dream's sampler.")
        if config.ctc_reading:
            raise ValueError("decoding CTC is the speech model's CTC reading: it runs no sampler step.")
        prefix = self._prompt_embeddings(inputs_embeds, input_ids)
        mask = attention_mask if attention_mask is not None else torch.ones(prefix.shape[:2], dtype=torch.long)
        canvas = _Canvas(prefix, mask, self._start(prefix, config, answer_start), config, answer_lengths)
        history = [canvas.answer.cpu().clone()] if output_history else None
        if streamer is not None:
            streamer.put_draft(value=canvas.answer.cpu())

        for step in dream_schedule(config, canvas.answer.shape[1], prefix.device):
            self._denoise(canvas, step, config, generator)
            if history is not None:
                history.append(canvas.answer.cpu().clone())
            if streamer is not None:
                streamer.put_draft(value=canvas.answer.cpu())
        if streamer is not None:
            streamer.put(canvas.answer.cpu())
            streamer.end()
        if not return_dict_in_generate:
            return canvas.answer
        return DreamGenerateOutput(sequences=canvas.answer,
                                   history=torch.stack(history, dim=1) if history is not None else None)

    def _denoise(self, canvas: _Canvas, step: DreamStep, config: DreamGenerationConfig, generator) -> None:
        """One sampler step on the block [start, end): shifted logits of its masked slots, then reveal some."""
        block = canvas.answer[:, step.start : step.end]
        masked = block == config.mask_token_id  # (b, L)
        if not bool(masked.any()):
            return  # nothing left to reveal in this block (an anchored start); the official step draws nothing either
        logits = canvas.forbid_eos(self._slot_logits(canvas, step), step, config.eos_token_id)  # (b, L, V)
        if config.alg == "origin":
            revealed = block.clone()
            revealed[masked] = self._reveal_at_random(logits[masked], step, config, generator)
        else:
            revealed = self._reveal_most_confident(logits, masked, block, step, canvas, config, generator)
        canvas.answer[:, step.start : step.end] = revealed

    def _prompt_embeddings(self, inputs_embeds, input_ids) -> torch.Tensor:
        if (inputs_embeds is None) == (input_ids is None):
            raise ValueError("generate() needs exactly one of `inputs_embeds` or `input_ids` (the prompt).")
        prefix = inputs_embeds if inputs_embeds is not None else self.get_input_embeddings()(input_ids)
        if prefix.shape[1] < 1:
            raise ValueError("generate() needs a prompt of at least one position: Dream reads answer slot 0 from the "
                             "logits of the position before it.")
        return prefix

    @staticmethod
    def _start(prefix: torch.Tensor, config: DreamGenerationConfig, answer_start) -> torch.LongTensor:
        """The answer before the first step: [MASK] * gen_length, or D's start (its width is the answer length)."""
        batch = prefix.shape[0]
        if not config.anchored:
            if answer_start is not None:
                raise ValueError('answer_start is D\'s start: use decoding="D".')
            return torch.full((batch, config.gen_length), config.mask_token_id, dtype=torch.long,
                              device=prefix.device)
        if answer_start is None or answer_start.dim() != 2 or answer_start.shape[0] != batch:
            raise ValueError(f"anchored decoding (D) needs answer_start of shape ({batch}, G): the hypothesis with "
                             "[MASK] where to fill.")
        if "gen_length" in config.explicit and answer_start.shape[1] != config.gen_length:
            raise ValueError(f"answer_start has {answer_start.shape[1]} positions but gen_length={config.gen_length}.")
        return answer_start.to(prefix.device).clone()

    def _slot_logits(self, canvas: _Canvas, step: DreamStep) -> torch.Tensor:
        """Shifted logits (b, L, vocab) of the block's slots: those of the positions one before them."""
        first = canvas.prefix_width - 1 + step.start
        out = self(inputs_embeds=torch.cat((canvas.prefix, self.get_input_embeddings()(canvas.answer)), dim=1),
                   attention_mask=canvas.key_mask, position_ids=canvas.positions,
                   logits_positions=slice(first, first + step.end - step.start))
        return out.logits

    @staticmethod
    def _reveal_at_random(scores: torch.Tensor, step: DreamStep, config: DreamGenerationConfig, generator):
        """origin: each of the n masked slots (scores (n, V)) is revealed with probability 1 - s/t (all at a block's
        last step) with a token from `sample_tokens`; returns their ids (n,), [MASK] where not revealed."""
        chance = 1 if step.last else 1 - step.s / step.t
        revealed = torch.rand(scores.shape[0], device=scores.device, generator=generator) < chance
        tokens = torch.full((scores.shape[0],), config.mask_token_id, dtype=torch.long, device=scores.device)
        if bool(revealed.any()):
            tokens[revealed] = sample_tokens(scores[revealed], config, generator)[0]
        return tokens

    @staticmethod
    def _reveal_most_confident(logits: torch.Tensor, masked: torch.Tensor, block: torch.LongTensor, step: DreamStep,
                               canvas: _Canvas, config: DreamGenerationConfig, generator) -> torch.LongTensor:
        """maskgit_plus / topk_margin / entropy: x0 and a confidence at every masked slot, then each row reveals its
        `transfer_counts` most confident slots (or draws them, alg_temp). The confidences are laid over the full
        sequence (prompt + answer, -inf elsewhere) as the official code holds them, so that draws match it."""
        tokens, confidence = sample_tokens(logits[masked], config, generator)
        offset = canvas.prefix_width + step.start
        row = torch.full((block.shape[0], canvas.width), -math.inf, dtype=confidence.dtype, device=block.device)
        row[:, offset : offset + block.shape[1]] = row[:, offset : offset + block.shape[1]].masked_scatter(
            masked, confidence)
        chosen = select_positions(row, transfer_counts(masked, step), config.alg_temp, generator)
        chosen = chosen[:, offset : offset + block.shape[1]] & masked
        candidates = torch.full_like(block, config.mask_token_id).masked_scatter(masked, tokens)
        return torch.where(chosen, candidates, block)


__all__ = ["DreamGenerationConfig", "DreamGenerationMixin", "DreamGenerateOutput", "DREAM_PRESETS", "DREAM_ALGORITHMS",
           "dream_schedule", "sample_tokens", "select_positions", "transfer_counts"]
