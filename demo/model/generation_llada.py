"""Masked-diffusion decoding for LLaDA-style mask predictors: LLaDA's low-confidence remasking sampler.

`LladaGenerationConfig` is the one home of the decoding settings: the A/B/C presets, the defaults, their validation
and the parsing of strings such as "B,kv_cache=dual". `LladaGenerationMixin.generate` is the sampler, one loop in the
order of LLaDA's reference `generate.py`:

    answer = [MASK] * gen_length after the prompt
    for each block, for each of its steps:               (semi-autoregressive blocks; steps counted over all blocks)
        logits of the block's positions                  (`_block_logits`; the Fast-dLLM cache lives there)
        x0, confidence = argmax and its probability      (`_predict`; Gumbel noise when temperature > 0)
        commit the most confident masked positions       (`_select`; as many as the schedule gives this step)
        [early stop: fill after EOS, retire finished rows]  (`_Rows.retire_finished`)

At temperature 0 with the exact settings the tokens are those of LLaDA's reference sampler (tested against an
independent implementation of it). `threshold`, `kv_cache` and `early_stop` are opt-in approximations.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator

import torch
from transformers import GenerationConfig

# The three decoding configurations of the reference results: A = one step, B = 8 steps of iterative refinement,
# C = 8 steps per block x 16 semi-autoregressive blocks (LLaDA counts steps over all blocks: 128 in all).
DECODING_PRESETS: dict[str, dict[str, int]] = {
    "A": {"steps": 1, "num_blocks": 1},
    "B": {"steps": 8, "num_blocks": 1},
    "C": {"steps": 8 * 16, "num_blocks": 16},
}

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
}
APPROXIMATE_SETTINGS = ("threshold", "kv_cache", "early_stop")


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
        mask_token_id: int | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("num_beams", 1)  # so that pipelines do not inject beam search
        kwargs.pop("do_sample", None)  # sampling is `temperature > 0`
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
        """The approximations can fill a block before its last scheduled step."""
        return self.threshold is not None or bool(self.early_stop)

    def resolved(self, decoding: str | None = None, **settings: Any) -> "LladaGenerationConfig":
        """A validated copy with a preset (`decoding` "A", "B" or "C") and/or explicit settings applied. Without an
        explicit block_length the number of blocks is kept (the preset's, or this config's). Unknown names raise."""
        unknown = sorted(set(settings) - set(LLADA_SETTINGS) - {"num_beams"})
        if unknown:
            raise TypeError(
                f"generate() got unknown argument(s) {unknown} for masked-diffusion decoding; valid: decoding, "
                f"{', '.join(LLADA_SETTINGS)}, generation_config, generator."
            )
        if settings.get("num_beams", 1) not in (None, 1):
            raise ValueError("Beam search is not defined for masked diffusion decoding: use num_beams=1.")
        settings.pop("num_beams", None)
        config = copy.deepcopy(self)
        num_blocks = max(1, config.gen_length // (config.block_length or config.gen_length))
        if decoding is not None:
            if decoding not in DECODING_PRESETS:
                raise ValueError(f"decoding must be one of {sorted(DECODING_PRESETS)}, got {decoding!r}.")
            config.steps, num_blocks = DECODING_PRESETS[decoding]["steps"], DECODING_PRESETS[decoding]["num_blocks"]
        for name, value in settings.items():
            if value is not None:
                setattr(config, name, value)
        if "temperature" in settings and settings["temperature"] is not None:
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
        if self.mask_token_id is None or self.eos_token_id is None:
            raise ValueError("The generation config needs mask_token_id and eos_token_id (the decoder's special ids).")

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


def num_transfer_schedule(block_length: int, steps: int) -> list[int]:
    """LLaDA's `get_num_transfer_tokens` for a fully masked block: masked // steps per step, the remainder
    distributed one by one to the first steps."""
    base, remainder = divmod(block_length, steps)
    return [base + (1 if step < remainder else 0) for step in range(steps)]


def diffusion_schedule(config: LladaGenerationConfig) -> Iterator[tuple[int, int, int]]:
    """(block start, block end, tokens to commit) for every step, blocks left to right."""
    for block in range(config.num_blocks):
        start = block * config.block_length
        for n_commit in num_transfer_schedule(config.block_length, config.steps_per_block):
            yield start, start + config.block_length, n_commit


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """Gumbel-max sampling as in LLaDA: float64, exp(logits) / (-log u) ** temperature."""
    if not temperature:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return logits.exp() / (-torch.log(noise)) ** temperature


def argmax_probability(logits: torch.Tensor, predicted: torch.Tensor, max_elements: int = 2**27) -> torch.Tensor:
    """softmax(logits in float64)[predicted], as LLaDA computes confidences, in row chunks of at most
    `max_elements` float64 values (1 GiB) so that a large batch x block x vocabulary never materialises at once."""
    rows = max(1, max_elements // max(1, logits[0].numel()))
    parts = [
        torch.softmax(chunk.to(torch.float64), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
        for chunk, ids in zip(logits.split(rows), predicted.split(rows))
    ]
    return torch.cat(parts)


class _Rows:
    """The rows still being decoded: prefix embeddings, answer ids, attention mask, positions and the Fast-dLLM
    cache. With early stop, finished rows retire into `output` and leave every tensor here."""

    def __init__(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, config: LladaGenerationConfig):
        batch, device = prefix.shape[0], prefix.device
        self.prefix = prefix  # (b, P, d), left-padded
        self.answer = torch.full((batch, config.gen_length), config.mask_token_id, dtype=torch.long, device=device)
        full_mask = torch.cat((prefix_mask, torch.ones_like(self.answer)), dim=1)  # (b, P + G)
        self.positions = (full_mask.cumsum(-1) - 1).clamp(min=0)  # real tokens numbered from 0
        self.key_mask = None if bool(prefix_mask.all()) else full_mask  # no padding: SDPA's fastest path
        self.index = torch.arange(batch, device=device)  # row of `output` each row goes to
        self.output = self.answer.clone()
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per-layer (k, v) of every position
        self.cache_block: int | None = None  # start of the block the cache was filled for

    def retire_finished(self, eos_id: int, mask_id: int) -> bool:
        """Early stop: every position after a committed EOS becomes EOS; rows without masks left are written to
        `output` and dropped. Returns True when no row is left."""
        self.answer = self.answer.masked_fill((self.answer == eos_id).cumsum(-1) > 0, eos_id)
        done = ~(self.answer == mask_id).any(-1)
        if bool(done.any()):
            self.output[self.index[done]] = self.answer[done]
            keep = ~done
            self.prefix, self.answer, self.positions, self.index = (
                self.prefix[keep], self.answer[keep], self.positions[keep], self.index[keep])
            self.key_mask = None if self.key_mask is None else self.key_mask[keep]
            self.cache = None if self.cache is None else [(k[keep], v[keep]) for k, v in self.cache]
        return self.index.numel() == 0

    def result(self) -> torch.LongTensor:
        self.output[self.index] = self.answer
        return self.output


# ----------------------------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------------------------


class LladaGenerationMixin:
    """`generate()` for a mask predictor whose forward takes `inputs_embeds`, `attention_mask`, `position_ids`,
    `logits_positions` and the cache arguments of `LladaForMaskedDiffusion`."""

    generation_config: LladaGenerationConfig

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor | None = None,  # (B, P, d) left-padded prompt embeddings
        attention_mask: torch.Tensor | None = None,  # (B, P) 1 = real token
        generation_config: LladaGenerationConfig | None = None,
        generator: torch.Generator | None = None,
        input_ids: torch.LongTensor | None = None,  # (B, P) a prompt given as ids instead
        decoding: str | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Fills `[MASK] * gen_length` after the prompt; returns the answer ids (B, gen_length).

        `decoding` picks a preset ("A", "B", "C"); keyword arguments (`steps`, `gen_length`, `block_length`,
        `temperature`, `remasking`, `threshold`, `kv_cache`, `early_stop`) override it; anything else raises."""
        config = (generation_config or self.generation_config).resolved(decoding, **kwargs)
        prefix = self._prompt_embeddings(inputs_embeds, input_ids)
        mask = attention_mask if attention_mask is not None else torch.ones(prefix.shape[:2], dtype=torch.long)
        limit = getattr(self.config, "max_sequence_length", None)
        if limit is not None and prefix.shape[1] + config.gen_length > limit:
            raise ValueError(
                f"prompt ({prefix.shape[1]} positions) + gen_length ({config.gen_length}) exceeds the decoder's "
                f"max_sequence_length ({limit}); use a smaller gen_length."
            )
        rows = _Rows(prefix, mask.to(prefix.device).long(), config)

        for start, end, n_commit in diffusion_schedule(config):
            if n_commit == 0 and config.threshold is None:
                continue  # more steps than tokens in the block: the reference's step commits nothing
            masked = rows.answer[:, start:end] == config.mask_token_id  # (b, block_length)
            if config.may_finish_blocks_early and not bool(masked.any()):
                continue  # approximate modes: this block is already complete
            logits = self._block_logits(rows, start, end, config)
            predicted, confidence = self._predict(logits, config, generator)
            commit = self._select(confidence, masked, n_commit, config.threshold)
            rows.answer[:, start:end] = torch.where(commit, predicted, rows.answer[:, start:end])
            if config.early_stop and rows.retire_finished(config.eos_token_id, config.mask_token_id):
                break
        return rows.result()

    def _prompt_embeddings(self, inputs_embeds, input_ids) -> torch.Tensor:
        if (inputs_embeds is None) == (input_ids is None):
            raise ValueError("generate() needs exactly one of `inputs_embeds` or `input_ids` (the prompt).")
        return inputs_embeds if inputs_embeds is not None else self.get_input_embeddings()(input_ids)

    def _block_logits(self, rows: _Rows, start: int, end: int, config: LladaGenerationConfig) -> torch.Tensor:
        """Logits (b, block_length, vocab) of the current block. Exact: a full forward each step. With `kv_cache`,
        the first step of a block refreshes the cache with a full forward; later steps recompute only [block start,
        end of sequence) ("prefix") or only the block ("dual") and read the other keys/values from the cache."""
        width = rows.prefix.shape[1]
        embed = self.get_input_embeddings()
        if config.kv_cache is None or rows.cache_block != start:
            out = self(
                inputs_embeds=torch.cat((rows.prefix, embed(rows.answer)), dim=1),
                attention_mask=rows.key_mask,
                position_ids=rows.positions,
                logits_positions=slice(width + start, width + end),
                return_key_values=config.kv_cache is not None,
            )
            rows.cache, rows.cache_block = out.key_values, start
            return out.logits
        window_end = end if config.kv_cache == "dual" else rows.answer.shape[1]
        out = self(
            inputs_embeds=embed(rows.answer[:, start:window_end]),
            attention_mask=rows.key_mask,
            position_ids=rows.positions[:, width + start : width + window_end],
            logits_positions=slice(0, end - start),
            cached_key_values=rows.cache,
            cache_start=width + start,
        )
        return out.logits

    @staticmethod
    def _predict(logits: torch.Tensor, config: LladaGenerationConfig, generator=None):
        """x0 = argmax (with Gumbel noise if temperature > 0) and its confidence, as LLaDA computes them.

        One deliberate difference: the mask token itself is never predicted (LLaDA's sampler may "commit" [MASK],
        leaving the position masked); confidences are still the reference's softmax over the full vocabulary."""
        scores = add_gumbel_noise(logits, config.temperature or 0.0, generator)
        scores = scores.index_fill(-1, torch.tensor([config.mask_token_id], device=logits.device), -math.inf)
        predicted = scores.argmax(-1)
        if config.remasking == "low_confidence":
            confidence = argmax_probability(logits, predicted)
        else:
            confidence = torch.rand(predicted.shape, dtype=torch.float64, device=logits.device, generator=generator)
        return predicted, confidence

    @staticmethod
    def _select(confidence: torch.Tensor, masked: torch.Tensor, n_commit: int, threshold: float | None):
        """Vectorised top-k commit: the n_commit most confident masked positions of each row (plus, with a threshold,
        every masked position at least that confident)."""
        confidence = confidence.masked_fill(~masked, -math.inf)
        top = confidence.topk(n_commit, dim=-1).indices
        commit = torch.zeros_like(masked).scatter_(-1, top, True) & masked
        if threshold is not None:
            commit |= masked & (confidence >= threshold)
        return commit


__all__ = ["LladaGenerationConfig", "LladaGenerationMixin", "DECODING_PRESETS", "num_transfer_schedule",
           "argmax_probability"]
