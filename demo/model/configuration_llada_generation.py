"""Decoding settings of LLaDA-style masked-diffusion decoders: `LladaGenerationConfig`.

The one home of the decoding settings: the A/B/C/D presets (`DECODING_PRESETS`), the defaults, their validation and
the parsing of strings such as "B,kv_cache=dual"; a resolved config also names itself (`name`) and lists its settings
(`settings()`), which is what eval_hf.py, bench_hf.py and the model card record. The sampler that runs them is
`generation_llada.LladaGenerationMixin`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from transformers import GenerationConfig

# The decoding presets. A, B and C are the reference results' configurations: A = one step, B = 8 steps of iterative
# refinement, C = 8 steps per block x 16 semi-autoregressive blocks (LLaDA counts steps over all blocks: 128 in all).
# D starts from the CTC hypothesis instead of all-[MASK] (hypothesis-anchored decoding): its uncertain tokens are
# masked, and `steps` steps of LLaDA's remasking fill only those, optionally with the CTC's scores fused in
# (`ctc_fusion`) or its candidates only (`ctc_top_k`). CTC is the CTC head's greedy reading alone (no decoder
# forward): the row every table shows next to D, so that what the decoder adds is visible.
DECODING_PRESETS: dict[str, dict[str, Any]] = {
    "A": {"steps": 1, "num_blocks": 1},
    "B": {"steps": 8, "num_blocks": 1},
    "C": {"steps": 8 * 16, "num_blocks": 16},
    # D's other settings (anchor_threshold, anchor_slack, ctc_fusion, ctc_top_k) are the model's own: its
    # generation_config.json holds those chosen on validation; a model whose default decoding is D keeps its steps too
    "D": {"steps": 1, "num_blocks": 1, "anchored": True},
    "CTC": {"steps": 1, "num_blocks": 1, "ctc_reading": True},
    # deliberation (Whisper-LLaDA's best setting): D from the model's own first pass (a Whisper recogniser named in its
    # config, `first_pass`): the words the first pass is unsure of (`anchor_threshold` on its own word confidences)
    # re-masked with `anchor_slack` extra slots per masked stretch, refilled by the decoder; with `first_pass_beams` >
    # 1 and `rescore_weight`, its N-best rescored by the decoder first. first_pass: that transcript alone.
    "deliberation": {"steps": 1, "num_blocks": 1, "anchored": True, "first_pass": True},
    "first_pass": {"steps": 1, "num_blocks": 1, "first_pass": True},
}
# what a preset sets besides its settings: how the answer starts (a hypothesis, the CTC reading, the first pass)
MODE_FLAGS = ("anchored", "ctc_reading", "first_pass")

# The settings `generate()` takes, with the parsers used for "key=value" strings.
_BOOL = lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")  # noqa: E731
LLADA_SETTINGS: dict[str, Any] = {
    "gen_length": int,
    "steps": int,
    "block_length": int,
    "temperature": float,
    "remasking": str,
    "threshold": float,
    "kv_cache": str,
    "early_stop": _BOOL,
    "anchor_threshold": float,
    "anchor_slack": int,
    "ctc_fusion": float,
    "ctc_top_k": int,
    "tokens_per_second": float,
    "max_window_s": float,
    "first_pass_beams": int,
    "rescore_weight": float,
    "rescore_passes": int,
    "first_pass_bias": float,
}
APPROXIMATE_SETTINGS = ("threshold", "kv_cache", "early_stop")
ANCHOR_SETTINGS = ("anchor_threshold", "anchor_slack", "ctc_fusion", "ctc_top_k", "first_pass_bias")
FIRST_PASS_SETTINGS = ("first_pass_beams", "rescore_weight", "rescore_passes")


class LladaGenerationConfig(GenerationConfig):
    """Decoding settings of a masked-diffusion decoder.

    Args:
        gen_length: answer length; the answer starts as `[MASK] * gen_length` and EOS fills what is not needed.
        steps: denoising steps over all blocks together (as LLaDA counts them).
        block_length: semi-autoregressive block length (default: gen_length, one block). `gen_length` must be a
            multiple of it and `steps` a multiple of the number of blocks.
        temperature: 0 = greedy; > 0 = Gumbel-max sampling in float64 as LLaDA.
        remasking: "low_confidence" (commit the most confident predictions) or "random".
        threshold: approximate: each step also commits every masked token of the block at least this confident.
        kv_cache: approximate: None, "prefix" or "dual" (Fast-dLLM caching of the keys/values outside the block).
        early_stop: approximate: after a committed EOS every later position becomes EOS; finished rows stop.
        anchored: start from the CTC hypothesis (preset D) instead of all-[MASK].
        anchor_threshold: D: hypothesis tokens whose CTC confidence is below this are masked.
        anchor_slack: D: [MASK] slots after the hypothesis, for tokens the CTC missed at the end.
        ctc_fusion: D: weight w of the CTC's log-posterior at a masked slot that holds a CTC token:
            (1 - w) * decoder + w * CTC log-probabilities over the CTC's classes (0 = the decoder alone; 1 = the CTC
            reading back, exactly).
        ctc_top_k: D: a masked slot holding a CTC token may only take one of the CTC's k best classes there.
        ctc_reading: the CTC head's greedy reading, without the decoder (preset CTC).
        first_pass: start from the model's first pass (presets deliberation and first_pass; `config.first_pass` of
            the speech model names the recogniser).
        first_pass_beams: deliberation: the first pass's beam size (1: greedy); its best hypothesis is refined.
        rescore_weight: deliberation with first_pass_beams > 1: the N-best hypotheses are rescored by the first
            pass's log-probability + rescore_weight x the decoder's audio-conditioned pseudo-log-likelihood (each
            token masked in one of `rescore_passes` passes); None = the first pass's own best.
        rescore_passes: the number of masked passes of that pseudo-log-likelihood (token i is masked in pass
            i mod rescore_passes).
        first_pass_bias: D from a hypothesis (deliberation, or `hypotheses=`): added to the logit of the
            hypothesis's own token at each re-masked slot (natural-log units): 0 = the decoder alone refills; larger =
            the hypothesis's word stays unless the decoder prefers another by more than that.
        preset_settings: the settings a model recorded for its presets ({"D": {...}, "deliberation": {...}}, chosen
            on validation): what `decoding="D"` means for this model, before explicit settings.
        tokens_per_second: the answer length follows the audio: a window of s seconds gets at least
            ceil(s * tokens_per_second) + 1 positions (gen_length grows when that is more; never shrinks). None: the
            fixed gen_length. D's answer length always follows its CTC reading.
        max_window_s: the longest audio (seconds) the decoder read in training (train_hf.py records it): the
            pipeline and eval split longer audio into windows at most this long, in pauses, for the decodings that run
            the decoder (A, B, C, D, deliberation), so that none reads a window longer than it learned to (its answer
            would end early). None: windows up to the encoder's 30 s.
        decoding: the preset this config was resolved from (A, B, C, D, CTC), or None; part of its `name`.
        mask_token_id / eos_token_id / pad_token_id: the decoder's special ids.
    """

    def __init__(
        self,
        gen_length: int = 128,
        steps: int = 8,
        block_length: int | None = None,
        temperature: float = 0.0,
        remasking: str = "low_confidence",
        threshold: float | None = None,
        kv_cache: str | None = None,
        early_stop: bool = False,
        anchored: bool = False,
        anchor_threshold: float = 0.3,
        anchor_slack: int = 0,
        ctc_fusion: float = 0.0,
        ctc_top_k: int | None = None,
        ctc_reading: bool = False,
        tokens_per_second: float | None = None,
        max_window_s: float | None = None,
        first_pass: bool = False,
        first_pass_beams: int = 1,
        rescore_weight: float | None = None,
        rescore_passes: int = 4,
        first_pass_bias: float = 0.0,
        preset_settings: dict | None = None,
        decoding: str | None = None,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("num_beams", 1)  # so that pipelines do not inject beam search
        kwargs.pop("do_sample", None)  # sampling is `temperature > 0`
        explicit = kwargs.pop("explicit", ())
        super().__init__(**kwargs)
        self.gen_length = gen_length
        self.steps = steps
        self.block_length = block_length if block_length is not None else gen_length
        self.temperature = temperature or None  # None = greedy; GenerationConfig warns about 0 without sampling
        self.do_sample = True if self.temperature else None
        self.remasking = remasking
        self.threshold = threshold
        self.kv_cache = kv_cache
        self.early_stop = early_stop
        self.anchored = anchored
        self.anchor_threshold = anchor_threshold
        self.anchor_slack = anchor_slack
        self.ctc_fusion = ctc_fusion
        self.ctc_top_k = ctc_top_k
        self.ctc_reading = ctc_reading
        self.tokens_per_second = tokens_per_second
        self.max_window_s = max_window_s
        self.first_pass = first_pass
        self.first_pass_beams = first_pass_beams
        self.rescore_weight = rescore_weight
        self.rescore_passes = rescore_passes
        self.first_pass_bias = first_pass_bias
        self.preset_settings = {str(k): dict(v) for k, v in (preset_settings or {}).items()}
        self.decoding = decoding
        self.explicit = list(explicit)  # the settings a caller set on top of the preset (for `name`)
        self.mask_token_id = mask_token_id

    # -- resolving and checking --------------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def may_finish_blocks_early(self) -> bool:
        """The approximations (and an anchored start) can fill a block before its last scheduled step."""
        return self.threshold is not None or bool(self.early_stop) or self.anchored

    @classmethod
    def from_generation_config(cls, config: GenerationConfig, defaults: "LladaGenerationConfig") -> "LladaGenerationConfig":
        """A plain `GenerationConfig` (e.g. `GenerationConfig.from_pretrained(checkpoint)` or one built by hand) read
        as masked-diffusion settings on top of `defaults`: its LLaDA fields are taken (and validated like keyword
        arguments), the special ids fill in what `defaults` lacks; anything a masked-diffusion decoder cannot honour
        (beam search, a max_new_tokens, top-k ...) raises one error naming it."""
        if isinstance(config, cls):
            return config
        values = config.to_diff_dict()
        ignored = {"transformers_version", "_from_model_config", "num_beams", "do_sample", "eos_token_id",
                   "pad_token_id", "bos_token_id", "mask_token_id", "decoding", "explicit", "preset_settings",
                   *MODE_FLAGS}
        unknown = sorted(set(values) - set(LLADA_SETTINGS) - ignored)
        if unknown or values.get("num_beams", 1) not in (None, 1):
            bad = unknown or ["num_beams"]
            raise ValueError(
                f"generation_config: {bad} cannot be used for masked-diffusion decoding. Pass a LladaGenerationConfig "
                f"(model.generation_config, or its .resolved(...)) or a GenerationConfig holding only "
                f"{', '.join(LLADA_SETTINGS)}."
            )
        merged = copy.deepcopy(defaults)
        merged.update(**{k: v for k, v in values.items() if k in LLADA_SETTINGS or k in ("mask_token_id",
                                                                                        "eos_token_id", "pad_token_id",
                                                                                        "decoding", "preset_settings",
                                                                                        *MODE_FLAGS)})
        merged.check()
        return merged

    def resolved(self, decoding: str | None = None, **settings: Any) -> "LladaGenerationConfig":
        """A validated copy with a preset and/or explicit settings applied: `decoding` is "A", "B", "C" or "D", or a
        string such as "B,kv_cache=dual" (`parse`). Without an explicit block_length the number of blocks is kept
        (the preset's, or this config's). Unknown names raise a TypeError naming them."""
        if decoding is not None and ("," in decoding or "=" in decoding):
            parsed = self.parse(decoding)
            decoding = parsed.pop("decoding", None)
            settings = {**parsed, **settings}
        unknown = sorted(set(settings) - set(LLADA_SETTINGS) - {"num_beams"})
        if unknown:
            hint = (" (max_new_tokens: a masked-diffusion decoder's answer length is gen_length, or tokens_per_second "
                    "to follow the audio)" if "max_new_tokens" in unknown else "")
            raise TypeError(
                f"generate() got unknown argument(s) {unknown} for masked-diffusion decoding{hint}; valid: decoding, "
                f"{', '.join(LLADA_SETTINGS)}, num_beams (1), generation_config, generator, decoder_input_ids, "
                "streamer, return_timestamps."
            )
        if settings.pop("num_beams", 1) not in (None, 1):
            raise ValueError("Beam search is not defined for masked diffusion decoding: use num_beams=1.")
        config = copy.deepcopy(self)
        num_blocks = max(1, config.gen_length // (config.block_length or config.gen_length))
        if decoding is not None and decoding == self.decoding and not self.explicit:
            decoding = None  # the preset this config already is (e.g. a model's own D): its settings are kept
        if decoding is not None:
            if decoding not in DECODING_PRESETS:
                raise ValueError(f"decoding must be one of {sorted(DECODING_PRESETS)}, got {decoding!r}.")
            preset = DECODING_PRESETS[decoding]
            num_blocks = preset["num_blocks"]
            config.update(**{k: v for k, v in preset.items() if k != "num_blocks"})
            for flag in MODE_FLAGS:
                setattr(config, flag, preset.get(flag, False))
            recorded = self.preset_settings.get(decoding, {})
            config.update(**recorded)  # what this preset means for this model (chosen on validation)
            if "block_length" in recorded:
                num_blocks = max(1, config.gen_length // config.block_length)
            config.decoding, config.explicit = decoding, []
        for name, value in settings.items():
            if value is not None:
                setattr(config, name, value)
                if name not in config.explicit:
                    config.explicit.append(name)
        if settings.get("temperature") is not None:
            _check_finite("temperature", settings["temperature"])
            config.temperature = settings["temperature"] or None
            config.do_sample = True if config.temperature else None
        if settings.get("block_length") is None:
            _check_positive_int("gen_length", config.gen_length)
            if config.gen_length % num_blocks:
                raise ValueError(f"gen_length={config.gen_length} must be divisible by the number of blocks ({num_blocks}).")
            config.block_length = config.gen_length // num_blocks
        config.check()
        return config

    def check(self) -> None:
        """Clear errors for settings the sampler cannot run, instead of a silent wrong result."""
        for name in ("steps", "gen_length", "block_length"):
            _check_positive_int(name, getattr(self, name))
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} must be divisible by block_length={self.block_length}.")
        if self.anchored and self.num_blocks != 1:
            raise ValueError("anchored decoding (D) runs over one block: leave block_length at gen_length.")
        if self.steps % self.num_blocks:
            raise ValueError(
                f"steps={self.steps} must be divisible by the number of blocks gen_length/block_length={self.num_blocks} "
                "(LLaDA counts steps over all blocks)."
            )
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"remasking must be 'low_confidence' or 'random', got {self.remasking!r}.")
        if self.kv_cache not in (None, "prefix", "dual"):
            raise ValueError(f"kv_cache must be None, 'prefix' or 'dual', got {self.kv_cache!r}.")
        temperature = _check_finite("temperature", self.temperature or 0.0)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}.")
        if self.threshold is not None and not 0.0 < _check_finite("threshold", self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}.")
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop must be True or False, got {self.early_stop!r}.")
        if not 0.0 <= _check_finite("anchor_threshold", self.anchor_threshold) <= 1.0:
            raise ValueError(f"anchor_threshold must be in [0, 1], got {self.anchor_threshold!r}.")
        if isinstance(self.anchor_slack, bool) or not isinstance(self.anchor_slack, int) or self.anchor_slack < 0:
            raise ValueError(f"anchor_slack must be an integer >= 0, got {self.anchor_slack!r}.")
        if not 0.0 <= _check_finite("ctc_fusion", self.ctc_fusion) <= 1.0:
            raise ValueError(f"ctc_fusion must be in [0, 1], got {self.ctc_fusion!r}.")
        if self.ctc_top_k is not None and (isinstance(self.ctc_top_k, bool) or not isinstance(self.ctc_top_k, int)
                                           or self.ctc_top_k < 1):
            raise ValueError(f"ctc_top_k must be None or an integer >= 1, got {self.ctc_top_k!r}.")
        if self.tokens_per_second is not None and not _check_finite("tokens_per_second", self.tokens_per_second) > 0:
            raise ValueError(f"tokens_per_second must be None or > 0, got {self.tokens_per_second!r}.")
        if self.max_window_s is not None and not _check_finite("max_window_s", self.max_window_s) > 0:
            raise ValueError(f"max_window_s must be None or > 0 (seconds), got {self.max_window_s!r}.")
        if not self.anchored and any(name in self.explicit for name in ANCHOR_SETTINGS):
            raise ValueError(f"{[n for n in ANCHOR_SETTINGS if n in self.explicit]} apply to anchored decoding only: "
                             'use decoding="D" (or "deliberation").')
        if self.anchored and self.ctc_reading:
            raise ValueError("a decoding is either anchored (D) or the CTC reading alone (CTC), not both.")
        if self.first_pass and self.ctc_reading:
            raise ValueError("a decoding starts from the first pass or is the CTC reading alone, not both.")
        if not self.first_pass and any(name in self.explicit for name in FIRST_PASS_SETTINGS):
            raise ValueError(f"{[n for n in FIRST_PASS_SETTINGS if n in self.explicit]} apply to decodings from the "
                             'first pass only: use decoding="deliberation".')
        for name in ("first_pass_beams", "rescore_passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.rescore_weight is not None and _check_finite("rescore_weight", self.rescore_weight) < 0:
            raise ValueError(f"rescore_weight must be None or >= 0, got {self.rescore_weight!r}.")
        _check_finite("first_pass_bias", self.first_pass_bias)
        if not isinstance(self.preset_settings, dict) or any(
                name not in DECODING_PRESETS or not isinstance(values, dict) or set(values) - set(LLADA_SETTINGS)
                for name, values in self.preset_settings.items()):
            raise ValueError(f"preset_settings must map preset names {sorted(DECODING_PRESETS)} to settings among "
                             f"{list(LLADA_SETTINGS)}, got {self.preset_settings!r}.")
        if self.mask_token_id is None or self.eos_token_id is None:
            raise ValueError("The generation config needs mask_token_id and eos_token_id (the decoder's special ids).")

    @staticmethod
    def handles(spec: str) -> bool:
        """Whether a decoding string is for a masked-diffusion decoder (a preset or settings, not "AR...")."""
        return str(spec).split(",")[0].strip() != "AR"

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        """"B", "B,kv_cache=dual,threshold=0.9", "steps=16,gen_length=128,block_length=32" -> `generate()` keyword
        arguments (a preset name may only come first). Raises ValueError naming the bad part."""
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts:
            raise ValueError(f"empty decoding configuration {text!r}")
        kwargs: dict[str, Any] = {}
        for index, part in enumerate(parts):
            if "=" not in part:
                if index != 0:
                    raise ValueError(f"decoding {text!r}: only the first item may be a preset name, got {part!r}")
                if part not in DECODING_PRESETS:
                    raise ValueError(f"decoding {text!r}: unknown preset {part!r}; expected one of {sorted(DECODING_PRESETS)}")
                kwargs["decoding"] = part
                continue
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in LLADA_SETTINGS:
                raise ValueError(f"decoding {text!r}: unknown setting {key!r}; expected one of {list(LLADA_SETTINGS)}")
            try:
                kwargs[key] = LLADA_SETTINGS[key](value) if value.lower() != "none" else None
            except ValueError as error:
                raise ValueError(f"decoding {text!r}: bad value for {key}: {value!r}") from error
        return kwargs

    def set_length(self, length: int) -> None:
        """The default answer length, one block (train_hf.py --gen_length)."""
        self.gen_length = self.block_length = int(length)

    # -- naming and recording (eval_hf.py rows, bench_hf.py variants, the model card) ----------------------------------

    @property
    def name(self) -> str:
        """"B", "B,gen_length=64", "steps=16,gen_length=128,block_length=32", "C+dual+thr0.9+es": the preset, the
        exact settings set on top of it, then the approximations."""
        exact = [f"{k}={_format(getattr(self, k))}" for k in self.explicit if k not in APPROXIMATE_SETTINGS]
        name = ",".join(([self.decoding] if self.decoding else []) + exact) or "default"
        if self.kv_cache:
            name += f"+{self.kv_cache}"
        if self.threshold is not None:
            name += f"+thr{_format(self.threshold)}"
        if self.early_stop:
            name += "+es"
        return name

    def settings(self) -> dict[str, Any]:
        """The resolved settings, as eval_hf.py records them for each row (a decoding without decoder steps, CTC or
        first_pass, has no steps, answer length or blocks)."""
        sampler = self.runs_decoder
        return {"decoding": self.decoding, "steps": self.steps if sampler else None,
                "gen_length": self.gen_length if sampler else None,
                "block_length": self.block_length if sampler else None,
                "num_blocks": self.num_blocks if sampler else None, "num_beams": 1,
                "temperature": self.temperature or 0.0, "remasking": self.remasking, "threshold": self.threshold,
                "kv_cache": self.kv_cache, "early_stop": bool(self.early_stop),
                "tokens_per_second": self.tokens_per_second, "max_window_s": self.max_window_s,
                **({name: getattr(self, name) for name in ANCHOR_SETTINGS} if self.anchored else {}),
                **({name: getattr(self, name) for name in FIRST_PASS_SETTINGS} if self.first_pass else {})}

    @property
    def runs_decoder(self) -> bool:
        """Whether this decoding runs the diffusion decoder (not CTC's reading or the first pass alone)."""
        return not (self.ctc_reading or (self.first_pass and not self.anchored))

    def record(self, decoding: str, **settings: Any) -> None:
        """Records what `decoding` means for this model (`preset_settings`: settings chosen on validation, saved in
        generation_config.json); keyword settings are checked as generate() arguments are."""
        self.resolved(decoding, **settings)  # one clear error for a bad name or value
        self.preset_settings[decoding] = {k: v for k, v in settings.items() if v is not None}


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


__all__ = ["LladaGenerationConfig", "DECODING_PRESETS"]
