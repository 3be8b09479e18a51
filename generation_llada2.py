"""LLaDA2.0's block-diffusion sampler: `Llada2GenerationConfig` (its settings) and `Llada2GenerationMixin` (its loop).

The official `generate` of LLaDA2.0 (`modeling_llada2_moe.py` on the Hub) decodes on a grid of `block_length`
positions that starts at the prompt's first token, the grid the model is trained on. The prompt fills the first
blocks; the answer is the rest of the prompt's last block plus as many blocks as `gen_length` needs, all [MASK] at
the start. Blocks are decoded one after the other under block-causal attention (a block sees itself and every earlier
block, never a later one):

    for each answer block:                                  (`_Canvas.windows`: each row's block of this round)
        for step in range(steps):                           (`steps` per block, capped at gen_length // minimal_topk)
            logits of the block                             (`_window_logits`: one forward up to the block's end)
            predict x0 and its probability                  (`sample_tokens`: argmax, or temperature/top-k/top-p)
            commit: every masked position above `threshold`  (`select_commits`), or else the block schedule's count
                    of the most confident ones
            [eos_early_stop: a committed EOS with nothing masked before it ends the row]
        a block holding an EOS ends the row                 (`_Canvas.stop_rows_with_eos`)

The answer is cut after its first EOS: here padded with EOS to (B, gen_length). Rows of a batch keep their own grid
(positions count real tokens of the left-padded prompt), so a batch decodes each row as the official batch-of-one
`generate` does; with sampling, the random draws of a batch are not those of the rows one by one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput

# The decodings by name. L2 = the official generate's and model card's settings (blocks of 32, 32 steps per block,
# threshold 0.95). A, B, C, D: this project's presets read on LLaDA2's grid, exact schedules (no threshold):
# A = one step, B = 8 steps, over one block of gen_length; C = 16 blocks of gen_length / 16, 8 steps each; D starts from
# a given hypothesis (`answer_start`, [MASK] where to fill) and fills its masks in one step per block; CTC is the speech
# model's CTC reading alone (no sampler step). The grid starts at the prompt, so the answer's first block is what its
# first block leaves of the prompt's last one.
LLADA2_PRESETS: dict[str, dict[str, Any]] = {
    "L2": {"block_length": 32, "steps": 32, "threshold": 0.95},
    "A": {"num_blocks": 1, "steps": 1, "threshold": None},
    "B": {"num_blocks": 1, "steps": 8, "threshold": None},
    "C": {"num_blocks": 16, "steps": 8, "threshold": None},
    "D": {"num_blocks": 1, "steps": 1, "threshold": None, "anchored": True},
    "CTC": {"num_blocks": 1, "steps": 1, "threshold": None, "ctc_reading": True},  # the speech model's CTC reading
}
MODE_FLAGS = ("anchored", "ctc_reading")  # what a preset sets besides its settings: how the answer starts
ANCHOR_SETTINGS = ("anchor_threshold", "anchor_slack")  # D: read by whoever builds the start (the speech model)

_BOOL = lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")  # noqa: E731
# The settings generate() takes, with the parsers used for "key=value" strings.
LLADA2_SETTINGS: dict[str, Any] = {
    "gen_length": int,
    "block_length": int,
    "steps": int,
    "threshold": float,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "eos_early_stop": _BOOL,
    "minimal_topk": int,
    "anchor_threshold": float,
    "anchor_slack": int,
}


class Llada2GenerationConfig(GenerationConfig):
    """Decoding settings of LLaDA2.0's block-diffusion sampler (the official `generate`'s arguments).

    Args:
        gen_length: answer length; the result is (B, gen_length), EOS after the first EOS.
        block_length: the grid's block length (the model is trained with 32).
        steps: denoising steps per block (capped at gen_length // minimal_topk, as the official code does).
        threshold: each step commits every masked position of the block whose probability exceeds it, when they are
            at least the schedule's count; else the schedule's count of the most confident. None (the presets A-D) or
            1.0: the schedule only.
        temperature: 0 = greedy; > 0 = sampling (torch.multinomial) from softmax(logits / temperature) after top_k /
            top_p filtering.
        top_p, top_k: nucleus / top-k filtering when sampling (None = off).
        eos_early_stop: a committed EOS with nothing masked before it ends the row at once (otherwise a row ends after
            the block that holds an EOS).
        minimal_topk: caps steps at gen_length // minimal_topk.
        anchored: start from `answer_start` instead of all [MASK] (preset D).
        anchor_threshold / anchor_slack: D: read by whoever builds the start (the speech model: hypothesis tokens under
            this confidence are masked; [MASK] slots after it); the sampler itself does not use them.
        ctc_reading: the speech model's CTC reading is the answer, no sampler step (preset CTC).
        decoding: the preset this config was resolved from (L2, A, B, C, D), or None; part of its `name`.
        mask_token_id / eos_token_id / pad_token_id: the decoder's special ids.
    """

    def __init__(
        self,
        gen_length: int = 128,
        block_length: int = 32,
        steps: int = 32,
        threshold: float | None = 0.95,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        eos_early_stop: bool = False,
        minimal_topk: int = 1,
        anchored: bool = False,
        anchor_threshold: float = 0.3,
        anchor_slack: int = 0,
        ctc_reading: bool = False,
        decoding: str | None = None,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("num_beams", 1)  # so that pipelines do not inject beam search
        kwargs.pop("do_sample", None)  # sampling is `temperature > 0`
        explicit = kwargs.pop("explicit", ())
        super().__init__(**kwargs)
        self.gen_length = gen_length
        self.block_length = block_length
        self.steps = steps
        self.threshold = threshold
        self.temperature = temperature or None  # None = greedy; GenerationConfig warns about 0 without sampling
        self.do_sample = True if self.temperature else None
        self.top_p = top_p
        self.top_k = top_k
        self.eos_early_stop = eos_early_stop
        self.minimal_topk = minimal_topk
        self.anchored = anchored
        self.anchor_threshold = anchor_threshold
        self.anchor_slack = anchor_slack
        self.ctc_reading = ctc_reading
        self.decoding = decoding
        self.explicit = list(explicit)  # the settings a caller set on top of the preset (for `name`)
        self.mask_token_id = mask_token_id

    # -- resolving and checking --------------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """Blocks of gen_length (the answer spans one more when the prompt does not end on a block boundary)."""
        return math.ceil(self.gen_length / self.block_length)

    @property
    def denoising_steps(self) -> int:
        """Steps per block, as the official generate caps them."""
        return min(self.steps, self.gen_length // self.minimal_topk)

    def schedule(self) -> list[int]:
        """Tokens each step of a block commits at least: block_length split evenly, the remainder to the first."""
        base, remainder = divmod(self.block_length, self.denoising_steps)
        return [base + (step < remainder) for step in range(self.denoising_steps)]

    @classmethod
    def from_generation_config(cls, config: GenerationConfig,
                               defaults: "Llada2GenerationConfig") -> "Llada2GenerationConfig":
        """A plain `GenerationConfig` read as LLaDA2 settings on top of `defaults`; anything this sampler cannot honour
        (beam search, max_new_tokens, ...) raises one error naming it."""
        if isinstance(config, cls):
            return config
        values = config.to_diff_dict()
        ignored = {"transformers_version", "_from_model_config", "num_beams", "do_sample", "eos_token_id",
                   "pad_token_id", "bos_token_id", "mask_token_id", "decoding", "explicit", *MODE_FLAGS}
        unknown = sorted(set(values) - set(LLADA2_SETTINGS) - ignored)
        if unknown or values.get("num_beams", 1) not in (None, 1):
            raise ValueError(f"generation_config: {unknown or ['num_beams']} cannot be used for LLaDA2 decoding; "
                             f"pass a Llada2GenerationConfig or a GenerationConfig holding only "
                             f"{', '.join(LLADA2_SETTINGS)}.")
        merged = copy.deepcopy(defaults)
        merged.update(**{k: v for k, v in values.items() if k in LLADA2_SETTINGS or k in ("decoding", *MODE_FLAGS)})
        merged.temperature = merged.temperature or None
        merged.check()
        return merged

    @classmethod
    def from_loaded(cls, loaded: GenerationConfig | None, model_config) -> "Llada2GenerationConfig":
        """The model's generation config after `from_pretrained`: the class defaults with the special ids of the model
        config, and the sampler settings a loaded generation_config.json holds (its other fields are ignored)."""
        if isinstance(loaded, cls):
            return loaded
        config = cls(mask_token_id=model_config.mask_token_id, eos_token_id=model_config.eos_token_id,
                     pad_token_id=model_config.pad_token_id, decoding="L2")
        values = loaded.to_diff_dict() if loaded is not None else {}
        known = {k: v for k, v in values.items() if k in LLADA2_SETTINGS or k in ("decoding", *MODE_FLAGS)}
        if known:
            config.update(**known)
            config.temperature = config.temperature or None
            config.check()
        return config

    def resolved(self, decoding: str | None = None, **settings: Any) -> "Llada2GenerationConfig":
        """A validated copy with a preset and/or settings applied: `decoding` is a preset name or a string such as
        "L2,threshold=0.9" (`parse`). A preset's `num_blocks` sets block_length = gen_length / num_blocks unless
        block_length is given. Unknown names raise one TypeError naming them."""
        if decoding is not None and ("," in decoding or "=" in decoding):
            parsed = self.parse(decoding)
            decoding = parsed.pop("decoding", None)
            settings = {**parsed, **settings}
        unknown = sorted(set(settings) - set(LLADA2_SETTINGS) - {"num_beams"})
        if unknown:
            raise TypeError(f"generate() got unknown argument(s) {unknown} for LLaDA2 decoding; valid: decoding, "
                            f"{', '.join(LLADA2_SETTINGS)}, num_beams (1), generation_config, generator, answer_start, "
                            "answer_lengths, streamer, return_dict_in_generate, output_history.")
        if settings.pop("num_beams", 1) not in (None, 1):
            raise ValueError("Beam search is not defined for masked diffusion decoding: use num_beams=1.")
        config = copy.deepcopy(self)
        num_blocks = None
        if decoding is not None and not (decoding == self.decoding and not self.explicit):
            if decoding not in LLADA2_PRESETS:
                raise ValueError(f"decoding must be one of {sorted(LLADA2_PRESETS)}, got {decoding!r}.")
            preset = dict(LLADA2_PRESETS[decoding])
            num_blocks = preset.pop("num_blocks", None)
            config.update(**{**{flag: False for flag in MODE_FLAGS}, **preset})
            config.decoding, config.explicit = decoding, []
        for name, value in settings.items():
            if value is not None:
                setattr(config, name, value)
                if name not in config.explicit:
                    config.explicit.append(name)
        config.temperature = config.temperature or None
        config.do_sample = True if config.temperature else None
        if num_blocks is not None and "block_length" not in settings:
            _check_positive_int("gen_length", config.gen_length)
            if config.gen_length % num_blocks:
                raise ValueError(f"gen_length={config.gen_length} must be divisible by the preset's {num_blocks} "
                                 f"blocks ({decoding}).")
            config.block_length = config.gen_length // num_blocks
        config.check()
        return config

    def check(self) -> None:
        """Clear errors for settings the sampler cannot run, instead of a silent wrong result."""
        for name in ("gen_length", "block_length", "steps", "minimal_topk"):
            _check_positive_int(name, getattr(self, name))
        if self.minimal_topk > self.gen_length:
            raise ValueError(f"minimal_topk={self.minimal_topk} leaves no step for gen_length={self.gen_length}.")
        if self.threshold is not None and not 0.0 < _check_finite("threshold", self.threshold) <= 1.0:
            raise ValueError(f"threshold must be None or in (0, 1], got {self.threshold!r}.")
        if _check_finite("temperature", self.temperature or 0.0) < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}.")
        if self.top_p is not None and not 0.0 < _check_finite("top_p", self.top_p) <= 1.0:
            raise ValueError(f"top_p must be None or in (0, 1], got {self.top_p!r}.")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 0):
            raise ValueError(f"top_k must be None or an integer >= 0 (0 = off), got {self.top_k!r}.")
        for name in ("eos_early_stop", *MODE_FLAGS):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.anchored and self.ctc_reading:
            raise ValueError("anchored (D) and ctc_reading (CTC) are two different decodings: pick one preset.")
        if not 0.0 <= _check_finite("anchor_threshold", self.anchor_threshold) <= 1.0:
            raise ValueError(f"anchor_threshold must be in [0, 1], got {self.anchor_threshold!r}.")
        if isinstance(self.anchor_slack, bool) or not isinstance(self.anchor_slack, int) or self.anchor_slack < 0:
            raise ValueError(f"anchor_slack must be an integer >= 0, got {self.anchor_slack!r}.")
        if not self.anchored and any(name in self.explicit for name in ANCHOR_SETTINGS):
            raise ValueError(f"{[n for n in ANCHOR_SETTINGS if n in self.explicit]} apply to decoding D only: "
                             'use decoding="D".')
        if self.mask_token_id is None or self.eos_token_id is None:
            raise ValueError("The generation config needs mask_token_id and eos_token_id (the decoder's special ids).")

    @staticmethod
    def handles(spec: str) -> bool:
        """Whether a decoding string is for this sampler: a preset (L2, A, B, C, D) or LLaDA2 settings."""
        first = str(spec).split(",")[0].strip()
        return first in LLADA2_PRESETS or first.partition("=")[0].strip() in LLADA2_SETTINGS

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        """"L2", "B,gen_length=64", "block_length=16,steps=16,threshold=0.9" -> generate() keyword arguments (a preset
        name may only come first; "none" = not set). Raises ValueError naming the bad part."""
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts:
            raise ValueError(f"empty decoding configuration {text!r}")
        kwargs: dict[str, Any] = {}
        for index, part in enumerate(parts):
            if "=" not in part:
                if index != 0 or part not in LLADA2_PRESETS:
                    raise ValueError(f"decoding {text!r}: {part!r} is not a preset (first item only: one of "
                                     f"{sorted(LLADA2_PRESETS)}) nor key=value")
                kwargs["decoding"] = part
                continue
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in LLADA2_SETTINGS:
                raise ValueError(f"decoding {text!r}: unknown setting {key!r}; expected one of {list(LLADA2_SETTINGS)}")
            try:
                kwargs[key] = None if value.lower() == "none" else LLADA2_SETTINGS[key](value)
            except ValueError as error:
                raise ValueError(f"decoding {text!r}: bad value for {key}: {value!r}") from error
        return kwargs

    def set_length(self, length: int) -> None:
        """The default answer length (train_hf.py --gen_length); the block length stays the model's."""
        self.gen_length = int(length)

    # -- naming and recording ------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """"L2", "B,gen_length=64", "L2,threshold=0.9": the preset, then the settings set on top of it."""
        exact = [f"{k}={_format(getattr(self, k))}" for k in self.explicit]
        return ",".join(([self.decoding] if self.decoding else []) + exact) or "default"

    def settings(self) -> dict[str, Any]:
        """The resolved settings, as eval_hf.py records them for each row (LLaDA's keys where they exist)."""
        return {"decoding": self.decoding, "steps": self.steps, "gen_length": self.gen_length,
                "block_length": self.block_length, "num_blocks": self.num_blocks,
                "num_beams": 1, "temperature": self.temperature or 0.0, "top_p": self.top_p, "top_k": self.top_k,
                "threshold": self.threshold, "remasking": "low_confidence", "kv_cache": None,
                "early_stop": bool(self.eos_early_stop), "minimal_topk": self.minimal_topk,
                "anchored": bool(self.anchored), "ctc_reading": bool(self.ctc_reading),
                **({name: getattr(self, name) for name in ANCHOR_SETTINGS} if self.anchored else {})}


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------------------------------
# The sampler's steps
# ----------------------------------------------------------------------------------------------------------------------


def filter_top_k(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Logits below the k-th largest become -inf (None or 0: no filter)."""
    if not top_k:
        return logits
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Nucleus filter: keeps the most probable tokens up to and including the one that brings the mass past top_p."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    past = sorted_logits.softmax(-1).cumsum(-1) > top_p  # the mass up to and including each sorted token
    drop_sorted = torch.cat((torch.zeros_like(past[..., :1]), past[..., :-1]), dim=-1)  # the token after passing it
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_tokens(logits: torch.Tensor, config: Llada2GenerationConfig, generator: torch.Generator | None = None):
    """(b, L, V) float32 logits -> predicted ids (b, L) and their probabilities (b, L). Greedy: argmax of the softmax.
    Sampling: temperature, top-k, top-p, then one torch.multinomial draw per position over the flattened (b * L, V)
    probabilities, as the official code draws them."""
    if not config.temperature:
        probs = logits.softmax(-1)
        tokens = probs.argmax(-1)
        return tokens, probs.gather(-1, tokens[..., None]).squeeze(-1)
    scaled = logits / config.temperature if config.temperature != 1.0 else logits
    probs = filter_top_p(filter_top_k(scaled, config.top_k), config.top_p).softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    tokens = torch.multinomial(flat, num_samples=1, generator=generator).view(probs.shape[:-1])
    return tokens, probs.gather(-1, tokens[..., None]).squeeze(-1)


def select_commits(probs: torch.Tensor, masked: torch.Tensor, scheduled: int, threshold: float | None) -> torch.Tensor:
    """(b, L) positions to commit: every masked position above `threshold` when they are at least `scheduled`;
    otherwise the min(scheduled, masked) most confident masked positions."""
    confidence = probs.masked_fill(~masked, float("-inf"))
    count = masked.sum(-1).clamp(max=scheduled)  # (b,)
    commit = torch.zeros_like(masked)
    if int(count.max()) > 0:
        top = confidence.topk(int(count.max()), dim=-1).indices
        wanted = torch.arange(top.shape[-1], device=top.device) < count[:, None]
        commit = commit.scatter(-1, top, wanted) & masked
    if threshold is None:
        return commit
    confident = confidence > threshold
    enough = confident.sum(-1, keepdim=True) >= scheduled
    return torch.where(enough, confident, commit)


@dataclass
class Llada2GenerateOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)`. sequences: (B, gen_length) answer ids, EOS after the first EOS.
    With `output_history=True`: history (B, S + 1, gen_length), the answer after each of the S sampler steps (state 0 =
    the start; a finished row keeps its last state; the last state before the EOS fill of `sequences`)."""

    sequences: torch.LongTensor | None = None
    history: torch.LongTensor | None = None


class _Canvas:
    """The answer positions of every row on its own block grid. Row b has p_b real prompt tokens and gen length g_b
    (`answer_lengths`, else gen_length): its grid has ceil((p_b + g_b) / L) blocks, the answer slots are the positions
    from p_b to the grid's end (W_b >= g_b slots, the tail beyond g_b decoded and dropped as the official code does),
    and round r decodes its block p_b // L + r. Slots beyond W_b (other rows are longer) are hidden."""

    def __init__(self, prompt_lengths: torch.LongTensor, config: Llada2GenerationConfig, answer_start, answer_lengths):
        device = prompt_lengths.device
        self.block = config.block_length
        self.mask_id, self.eos_id = config.mask_token_id, config.eos_token_id
        self.gen_length = config.gen_length
        self.lengths = (answer_lengths.to(device).long() if answer_lengths is not None
                        else torch.full_like(prompt_lengths, config.gen_length))  # (B,) g_b
        if bool((self.lengths < 1).any() or (self.lengths > config.gen_length).any()):
            raise ValueError(f"answer_lengths must be in [1, gen_length={config.gen_length}].")
        blocks = (prompt_lengths + self.lengths + self.block - 1) // self.block  # (B,) grid blocks of each row
        self.first_block = prompt_lengths // self.block  # (B,) the block holding the prompt's end
        self.rounds = blocks - self.first_block  # (B,) answer blocks
        self.offset = self.first_block * self.block - prompt_lengths  # (B,) slot of round 0's first position (<= 0)
        self.width = blocks * self.block - prompt_lengths  # (B,) W_b
        columns = max(int(self.width.max()), config.gen_length)
        self.answer = torch.full((len(prompt_lengths), columns), self.mask_id, dtype=torch.long, device=device)
        if config.anchored:
            self.answer[:, : config.gen_length] = answer_start.to(device)
            self.answer.masked_fill_(self.slots()[None] >= self.lengths[:, None], self.mask_id)  # the official canvas
        self.finished = torch.zeros(len(prompt_lengths), dtype=torch.bool, device=device)

    def slots(self) -> torch.LongTensor:
        return torch.arange(self.answer.shape[1], device=self.answer.device)

    @property
    def num_rounds(self) -> int:
        return int(self.rounds.max())

    def key_mask(self) -> torch.LongTensor:
        """(B, W) 1 = an answer slot of the row's grid."""
        return (self.slots()[None] < self.width[:, None]).long()

    def windows(self, round_index: int) -> tuple[torch.LongTensor, torch.Tensor]:
        """Each row's block of this round: slots (B, L) (negative = prompt positions of the first block) and which of
        them are masked answer slots of a row still decoding."""
        start = self.offset + round_index * self.block  # (B,)
        slots = start[:, None] + torch.arange(self.block, device=start.device)  # (B, L)
        decoding = ~self.finished & (round_index < self.rounds)
        inside = (slots >= 0) & (slots < self.width[:, None])
        masked = inside & (self.answer.gather(1, slots.clamp(0, self.answer.shape[1] - 1)) == self.mask_id)
        return slots, masked & decoding[:, None]

    def commit(self, rows: torch.LongTensor, slots: torch.LongTensor, tokens: torch.LongTensor, commit: torch.Tensor):
        """Writes the committed tokens (b, L) of `rows` into their slots (committed slots are answer slots)."""
        self.answer[rows[:, None].expand_as(slots)[commit], slots[commit]] = tokens[commit]

    def stop_rows_at_committed_eos(self, rows: torch.LongTensor, tokens: torch.LongTensor, commit: torch.Tensor,
                                   block_end: torch.LongTensor) -> None:
        """eos_early_stop: a row that committed an EOS this step ends when its first EOS (within its blocks so far)
        has no [MASK] before it."""
        committed_eos = ((tokens == self.eos_id) & commit).any(-1)  # (b,)
        answer = self.answer[rows]
        seen = self.slots()[None] < block_end[:, None]
        is_eos = (answer == self.eos_id) & seen
        before_first = is_eos.long().cumsum(-1) == 0
        clean_before = ~((answer == self.mask_id) & before_first).any(-1)
        self.finished[rows] |= committed_eos & is_eos.any(-1) & clean_before

    def stop_rows_with_eos(self, round_index: int) -> None:
        """After a round: a row whose answer so far (up to its block's end) holds an EOS ends."""
        block_end = self.offset + (round_index + 1) * self.block
        seen = self.slots()[None] < block_end[:, None]
        self.finished |= ((self.answer == self.eos_id) & seen).any(-1) & (round_index < self.rounds)

    def state(self) -> torch.LongTensor:
        """(B, gen_length) every row's answer now (on the CPU)."""
        return self.answer[:, : self.gen_length].cpu().clone()

    def result(self) -> torch.LongTensor:
        """(B, gen_length): the answer, EOS from the first EOS on and beyond each row's length."""
        answer = self.answer[:, : self.gen_length]
        slots = self.slots()[: self.gen_length]
        after_eos = (answer == self.eos_id).long().cumsum(-1) > 0
        return answer.masked_fill(after_eos | (slots[None] >= self.lengths[:, None]), self.eos_id)


# ----------------------------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------------------------


class Llada2GenerationMixin:
    """`generate()` for a LLaDA2 mask predictor whose forward takes `inputs_embeds`, a left-padded `attention_mask`,
    `block_length` (block-causal attention) and `logits_positions`."""

    generation_config: Llada2GenerationConfig

    def resolve_generation_config(self, generation_config: GenerationConfig | None = None, decoding: str | None = None,
                                  **settings: Any) -> Llada2GenerationConfig:
        """The one place decoding settings are resolved: a preset or "L2,threshold=0.9"-style string and keyword
        settings on top of `generation_config` (default: the model's; a plain GenerationConfig is converted)."""
        base = generation_config if generation_config is not None else self.generation_config
        base = Llada2GenerationConfig.from_generation_config(base, self.generation_config)
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
        answer_start: torch.LongTensor | None = None,  # (B, gen_length) D: the start, [MASK] where to fill
        answer_lengths: torch.LongTensor | None = None,  # (B,) each row's own gen length (the rest is EOS)
        answer_prior=None,  # LLaDA's CTC fusion (D): not part of LLaDA2's sampler; refused when active
        return_dict_in_generate: bool = False,
        output_history: bool = False,
        streamer=None,
        decoding: str | None = None,
        **settings: Any,
    ) -> torch.LongTensor | Llada2GenerateOutput:
        """The answer ids (B, gen_length) after the left-padded prompt, EOS after the first EOS (or a
        `Llada2GenerateOutput` with `return_dict_in_generate=True`; `output_history=True` adds every step's state).

        `decoding` picks a preset (L2, A, B, C; D needs `answer_start`) or a "L2,threshold=0.9" string; keyword
        settings override it; anything else raises. `streamer` (transformers' diffusion streamer convention) gets
        `put_draft(value=answer)` with the start and after every step, then `put(answer)` and `end()`."""
        config = self.resolve_generation_config(generation_config, decoding, **settings)
        if getattr(answer_prior, "active", answer_prior is not None):
            raise ValueError("answer_prior (CTC fusion: ctc_fusion / ctc_top_k) is not supported by LLaDA2's sampler.")
        if config.ctc_reading:
            raise ValueError("decoding CTC is the speech model's CTC reading: it runs no sampler step.")
        prefix = self._prompt_embeddings(inputs_embeds, input_ids)
        prefix_mask = (attention_mask.to(prefix.device).long() if attention_mask is not None
                       else torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device))
        self._check_start(prefix, config, answer_start)
        canvas = _Canvas(prefix_mask.sum(-1), config, answer_start, answer_lengths)
        self._check_length(prefix_mask, canvas)
        history = [canvas.state()] if output_history else None
        if streamer is not None:
            streamer.put_draft(value=canvas.state())

        schedule = config.schedule()
        for round_index in range(canvas.num_rounds):
            for scheduled in schedule:
                slots, masked = canvas.windows(round_index)
                rows = masked.any(-1).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    break  # every row's block is complete
                logits = self._window_logits(prefix, prefix_mask, canvas, rows, slots[rows])
                tokens, probs = sample_tokens(logits, config, generator)
                commit = select_commits(probs, masked[rows], scheduled, config.threshold)
                canvas.commit(rows, slots[rows], tokens, commit)
                if config.eos_early_stop:
                    canvas.stop_rows_at_committed_eos(rows, tokens, commit, slots[rows, -1] + 1)
                if history is not None:
                    history.append(canvas.state())
                if streamer is not None:
                    streamer.put_draft(value=canvas.state())
            canvas.stop_rows_with_eos(round_index)
            if bool(canvas.finished.all()):
                break
        sequences = canvas.result()
        if streamer is not None:
            streamer.put(sequences.cpu())
            streamer.end()
        if not return_dict_in_generate:
            return sequences
        return Llada2GenerateOutput(sequences=sequences,
                                    history=torch.stack(history, 1) if history is not None else None)

    def _prompt_embeddings(self, inputs_embeds, input_ids) -> torch.Tensor:
        if (inputs_embeds is None) == (input_ids is None):
            raise ValueError("generate() needs exactly one of `inputs_embeds` or `input_ids` (the prompt).")
        return inputs_embeds if inputs_embeds is not None else self.get_input_embeddings()(input_ids)

    @staticmethod
    def _check_start(prefix: torch.Tensor, config: Llada2GenerationConfig, answer_start) -> None:
        if config.anchored and (answer_start is None
                                or tuple(answer_start.shape) != (prefix.shape[0], config.gen_length)):
            raise ValueError(f"decoding from a given start (D) needs answer_start of shape ({prefix.shape[0]}, "
                             f"{config.gen_length}): the hypothesis with [MASK] where to fill.")
        if not config.anchored and answer_start is not None:
            raise ValueError('answer_start is the start of decoding="D" (anchored); other decodings start all [MASK].')

    def _check_length(self, prefix_mask: torch.Tensor, canvas: _Canvas) -> None:
        limit = getattr(self.config, "max_position_embeddings", None)
        longest = int((prefix_mask.sum(-1) + canvas.width).max())
        if limit is not None and longest > limit:
            raise ValueError(f"prompt + answer blocks ({longest} positions) exceed the decoder's "
                             f"max_position_embeddings ({limit}); use a smaller gen_length.")

    def _window_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, canvas: _Canvas, rows: torch.LongTensor,
                       slots: torch.LongTensor) -> torch.Tensor:
        """Logits (b, L, vocab) of the current block of `rows`: one block-causal forward over the prompt and the
        answer up to the furthest block end (later slots cannot change them), the LM head on the blocks' span only."""
        width = prefix.shape[1]
        low, high = int(slots[:, 0].min()), int(slots[:, -1].max()) + 1
        answer = canvas.answer[rows, :high]
        out = self(
            inputs_embeds=torch.cat((prefix[rows], self.get_input_embeddings()(answer)), dim=1),
            attention_mask=torch.cat((prefix_mask[rows], canvas.key_mask()[rows, :high]), dim=1),
            block_length=canvas.block,
            logits_positions=slice(width + low, width + high),
        )
        index = (slots - low)[..., None].expand(-1, -1, out.logits.shape[-1])
        return out.logits.gather(1, index)


__all__ = ["LLADA2_PRESETS", "LLADA2_SETTINGS", "Llada2GenerateOutput", "Llada2GenerationConfig",
           "Llada2GenerationMixin", "filter_top_k", "filter_top_p", "sample_tokens", "select_commits"]
