"""Masked-diffusion decoding for LLaDA-style mask predictors: LLaDA's low-confidence remasking sampler.

The decoding settings it runs, `LladaGenerationConfig` (the A/B/C/D presets, defaults, validation, "B,kv_cache=dual"
strings, names), live in configuration_llada_generation.py. `LladaGenerationMixin.generate` is the sampler, one loop in
the order of LLaDA's reference `generate.py`:

    answer = [MASK] * gen_length after the prompt       (D: the anchored CTC hypothesis, `anchored_answer`)
    for each block, for each of its steps:               (semi-autoregressive blocks; steps counted over all blocks)
        logits of the block's positions                  (`_block_logits`; the Fast-dLLM cache lives there)
        x0, confidence = argmax and its probability      (`_predict`; Gumbel noise when temperature > 0)
        [D: no EOS inside the reading; the CTC's scores fused in at masked slots]   (`_Rows.no_eos`, `SlotPrior.fuse`)
        commit the most confident masked positions       (`_select`; as many as the schedule gives this step)
        [early stop: fill after EOS, retire finished rows]  (`_Rows.fill_after_eos`, `_Rows.retire_finished`)
        [streamer: the answer after every step]          (`streamer.put_draft`)

At temperature 0 with the exact settings A, B and C give the tokens of LLaDA's reference sampler (tested against an
independent implementation of it). `threshold`, `kv_cache` and `early_stop` are opt-in approximations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput

try:
    from .configuration_llada_generation import LladaGenerationConfig
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_llada_generation import LladaGenerationConfig


# ----------------------------------------------------------------------------------------------------------------------
# Small steps of the sampler
# ----------------------------------------------------------------------------------------------------------------------


def num_transfer_schedule(block_length: int, steps: int) -> list[int]:
    """LLaDA's `get_num_transfer_tokens` for a fully masked block: masked // steps per step, the remainder
    distributed one by one to the first steps."""
    base, remainder = divmod(block_length, steps)
    return [base + (1 if step < remainder else 0) for step in range(steps)]


def diffusion_schedule(config: LladaGenerationConfig) -> Iterator[tuple[int, int, int, int]]:
    """(block start, block end, step within the block, tokens to commit in a fully masked block) for every step,
    blocks left to right."""
    for block in range(config.num_blocks):
        start = block * config.block_length
        for step, n_commit in enumerate(num_transfer_schedule(config.block_length, config.steps_per_block)):
            yield start, start + config.block_length, step, n_commit


def anchored_answer(tokens: list[list[int]], confidences: list[list[float]], config: LladaGenerationConfig) -> torch.LongTensor:
    """D's start state (B, gen_length): each row's CTC hypothesis (`tokens`, with their `confidences`) with the tokens
    under `anchor_threshold` replaced by [MASK], then `anchor_slack` [MASK] slots, then EOS up to gen_length. A
    hypothesis longer than gen_length - anchor_slack is cut to fit."""
    rows = torch.full((len(tokens), config.gen_length), config.eos_token_id, dtype=torch.long)
    room = max(0, config.gen_length - config.anchor_slack)
    for row, (ids, conf) in enumerate(zip(tokens, confidences)):
        ids, conf = ids[:room], conf[:room]
        kept = [i if c >= config.anchor_threshold else config.mask_token_id for i, c in zip(ids, conf)]
        slots = min(config.anchor_slack, config.gen_length - len(kept))
        rows[row, : len(kept) + slots] = torch.tensor(kept + [config.mask_token_id] * slots, dtype=torch.long)
    return rows


@dataclass
class SlotPrior:
    """Scores another model gives some answer slots, fused with the decoder's where those slots are masked (D: the CTC
    head's log-posterior at the frame of each token it read): (1 - weight) * decoder + weight * prior over the prior's
    classes, only among its `top_k` best classes when set. weight 1 gives the prior's best class back exactly."""

    class_ids: torch.LongTensor  # (K,) token id of each class
    log_probs: torch.Tensor  # (B, G, K) log-probabilities over the classes, per answer slot
    present: torch.BoolTensor  # (B, G) the slots the prior scores
    weight: float = 0.0
    top_k: int | None = None

    @property
    def active(self) -> bool:
        return self.weight > 0 or self.top_k is not None

    def rows(self, keep: torch.Tensor) -> "SlotPrior":
        return SlotPrior(self.class_ids, self.log_probs[keep], self.present[keep], self.weight, self.top_k)

    def fuse(self, logits: torch.Tensor, predicted: torch.Tensor, confidence: torch.Tensor, start: int, end: int):
        """The decoder's prediction (b, L) and confidence replaced at the slots the prior scores by the fused ones."""
        present = self.present[:, start:end]
        if not bool(present.any()):
            return predicted, confidence
        prior = self.log_probs[:, start:end].to(logits.device, torch.float32)  # (b, L, K)
        decoder = torch.log_softmax(logits.float(), dim=-1)[..., self.class_ids.to(logits.device)]  # (b, L, K)
        fused = (1.0 - self.weight) * decoder.clamp(min=-1e4) + self.weight * prior  # -inf (a forbidden token) * 0
        if self.top_k is not None:
            kth = prior.topk(min(self.top_k, prior.shape[-1]), dim=-1).values[..., -1:]
            fused = fused.masked_fill(prior < kth, -math.inf)
        best = fused.argmax(-1)
        fused_confidence = torch.softmax(fused, dim=-1).gather(-1, best[..., None]).squeeze(-1)
        present = present.to(logits.device)
        return (torch.where(present, self.class_ids.to(logits.device)[best], predicted),
                torch.where(present, fused_confidence.to(confidence.dtype), confidence))


def align(hypothesis: list[int], reference: list[int]) -> list[int | None]:
    """For each reference token, the index of the hypothesis token a minimum-edit alignment pairs it with (a match or
    a substitution), or None where the hypothesis misses it (a deletion). A substitution costs 3, a deletion or an
    insertion 2: among alignments with as many edits, those that pair equal tokens win."""
    n, m = len(reference), len(hypothesis)
    sub = lambda i, j: 0 if reference[i - 1] == hypothesis[j - 1] else 3  # noqa: E731
    cost = [[2 * (i + j) if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j - 1] + sub(i, j), cost[i - 1][j] + 2, cost[i][j - 1] + 2)
    pairs: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + sub(i, j):
            pairs[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 2:
            i -= 1
        else:
            j -= 1
    return pairs


def editor_example(labels: torch.LongTensor, tokens: list[int], confidences: list[float], threshold: float,
                   mask_id: int, eos_id: int, delete_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """D's training example for an editor of the CTC reading, in the reading's own frame as D presents it (Mask-CTC
    style): (input (A,), target (A,)). The input is the reading (`tokens`) with the tokens under `threshold`
    confidence masked, EOS after it; the target of each reading position is the transcript token aligned to it
    (`align`: a match or a substitution) or `delete_id` for a token the CTC wrote in excess (it decodes to nothing),
    EOS after the reading. The CTC's confident errors stay in the input (no loss there); transcript tokens the CTC
    missed have no slot. `labels` (A,): the answer, EOS-padded (-100 read as padding); a reading longer than A - 1 is
    cut."""
    width = labels.shape[0]
    length = int(((labels != eos_id) & (labels != -100)).long().cumprod(-1).sum())  # tokens before the first EOS
    reference = labels[:length].tolist()
    target = [delete_id] * len(tokens)
    for position, index in enumerate(align(tokens, reference)):
        if index is not None:
            target[index] = reference[position]
    shown = [t if c >= threshold else mask_id for t, c in zip(tokens, confidences)]
    n = min(len(tokens), width - 1)
    inputs = torch.full((width,), eos_id, dtype=torch.long)
    targets = torch.full((width,), eos_id, dtype=torch.long)
    inputs[:n] = torch.tensor(shown[:n], dtype=torch.long)
    targets[:n] = torch.tensor(target[:n], dtype=torch.long)
    return inputs, targets


def masked_stretches(masked: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive True values."""
    runs, start = [], None
    for index, flag in enumerate(list(masked) + [False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            runs.append((start, index))
            start = None
    return runs


def deliberation_start(word_ids: list[list[int]], masked: list[bool], slack: int,
                       mask_id: int) -> tuple[list[int], list[int]]:
    """D's start from a first pass (deliberation), before its EOS: (ids, hints). Each word's decoder tokens, the
    `masked` words replaced by [MASK] slots, as many as their tokens plus `slack` more per stretch of consecutive
    masked words, so that the decoder can write a word the first pass missed there (insertion) or the delete token
    where fewer tokens are needed (deletion). `hints` holds, at each masked slot, the first pass's token there (-1 at
    the slack slots and at kept tokens): a decoder trained with hints reads it with the mask (`embed_answer`)."""
    ids: list[int] = []
    hints: list[int] = []
    stretches = {start: end for start, end in masked_stretches(masked)}
    index = 0
    while index < len(word_ids):
        if index in stretches:
            end = stretches[index]
            first_pass = [t for word in word_ids[index:end] for t in word]
            ids += [mask_id] * (len(first_pass) + slack)
            hints += first_pass + [-1] * slack
            index = end
        else:
            ids += word_ids[index]
            hints += [-1] * len(word_ids[index])
            index += 1
    return ids, hints


def deliberation_example(reference: list[str], words: list[str], word_ids: list[list[int]],
                         reference_ids: list[list[int]], masked: list[bool], slack: int, width: int, mask_id: int,
                         eos_id: int, delete_id: int) -> tuple[torch.LongTensor, torch.LongTensor, torch.LongTensor]:
    """An editor's training example for deliberation: (input (width,), target (width,), hints (width,)). The input
    and the hints are the first pass's words as `deliberation_start` presents them (the `masked` words replaced by
    their slots), EOS after it; the target of each masked stretch's slots is the reference words the stretch stands
    for (the words aligned to its words by `align`, and the reference words the first pass missed next to them), then
    `delete_id` in the slots left. Kept words are their own target (no loss is taken there: prefix_loss scores [MASK]
    positions only). Reference words missed next to kept words have no slot. `word_ids` / `reference_ids`: each
    word's decoder tokens. Cut to width."""
    pairs = align(words, reference)  # for each reference word: the first-pass word it is aligned to, or None
    stretches = masked_stretches(masked)
    stretch_of = {index: number for number, (start, end) in enumerate(stretches) for index in range(start, end)}
    owned: list[list[int]] = [[] for _ in stretches]  # reference word indices each stretch stands for
    last = -1  # the first-pass word the previous reference word was aligned to
    for position, index in enumerate(pairs):
        if index is not None:
            last = index
            if index in stretch_of:
                owned[stretch_of[index]].append(position)
            continue
        for neighbour in (last, last + 1):  # a missed word goes to a masked stretch beside it, if there is one
            if neighbour in stretch_of:
                owned[stretch_of[neighbour]].append(position)
                break
    inputs, hints = deliberation_start(word_ids, masked, slack, mask_id)
    targets: list[int] = []
    index = 0
    starts = {start: number for number, (start, _) in enumerate(stretches)}
    while index < len(words):
        if index in starts:
            number = starts[index]
            start, end = stretches[number]
            slots = sum(len(ids) for ids in word_ids[start:end]) + slack
            wanted = [t for position in owned[number] for t in reference_ids[position]][:slots]
            targets += wanted + [delete_id] * (slots - len(wanted))
            index = end
        else:
            targets += word_ids[index]
            index += 1
    n = min(len(inputs), width - 1)
    rows = [torch.full((width,), fill, dtype=torch.long) for fill in (eos_id, eos_id, -1)]
    for row, values in zip(rows, (inputs, targets, hints)):
        row[:n] = torch.tensor(values[:n], dtype=torch.long)
    return rows[0], rows[1], rows[2]


def embed_answer(embedding, answer: torch.LongTensor, hints: torch.LongTensor | None, mask_id: int) -> torch.Tensor:
    """Answer ids (b, L) -> embeddings (b, L, d). A [MASK] slot with a hint (`hints` >= 0: the first pass's token at
    that slot) reads the mask's embedding plus the hint's: a decoder trained so (deliberation with hints) sees what
    the first pass wrote where it re-predicts. Without hints: the plain embeddings."""
    out = embedding(answer)
    if hints is None:
        return out
    hinted = (answer == mask_id) & (hints.to(answer.device) >= 0)
    if not bool(hinted.any()):
        return out
    return out + embedding(hints.to(answer.device).clamp(min=0)) * hinted[..., None].to(out.dtype)


def favour_hints(logits: torch.Tensor, hints: torch.Tensor, bias: float) -> torch.Tensor:
    """Logits (b, L, vocab) with `bias` added to the first pass's token at each hinted slot (`hints` (b, L) >= 0):
    deliberation's `first_pass_bias`, the first pass's word kept unless the decoder prefers another by more."""
    hinted = hints >= 0
    if not bool(hinted.any()):
        return logits
    logits = logits.float().clone()
    index = hints.clamp(min=0)[..., None]
    return logits.scatter_add_(-1, index, (hinted.to(logits.dtype) * bias)[..., None])


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


def put_draft(streamer, rows: "_Rows") -> None:
    """Hands the answer so far to a streamer that takes drafts (transformers' diffusion convention, e.g.
    `TextDiffusionStreamer`); a plain `TextStreamer` gets only the final answer (`put`, then `end`)."""
    if streamer is not None and hasattr(streamer, "put_draft"):
        streamer.put_draft(value=rows.state())


class _Rows:
    """The rows still being decoded: prefix embeddings, answer ids, attention mask, positions, the Fast-dLLM cache and
    (anchored start) each row's commit schedule. With early stop, finished rows retire into `output` and leave every
    tensor here."""

    def __init__(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer: torch.LongTensor,
                 config: LladaGenerationConfig, prior: SlotPrior | None = None,
                 answer_lengths: torch.LongTensor | None = None, hints: torch.LongTensor | None = None,
                 read_hints: bool = True):
        batch, device = prefix.shape[0], prefix.device
        self.prefix = prefix  # (b, P, d), left-padded
        self.answer = answer  # (b, G)
        self.hints = None if hints is None else hints.to(device)  # (b, G) the first pass's token at masked slots
        self.read_hints = read_hints  # the decoder reads them with the mask (trained so); else they only bias
        answer_mask = torch.ones_like(self.answer)
        if answer_lengths is not None:  # each row sees only its own answer length (an anchored start's EOS fill)
            answer_mask = (torch.arange(answer.shape[1], device=device) < answer_lengths.to(device)[:, None]).long()
        full_mask = torch.cat((prefix_mask, answer_mask), dim=1)  # (b, P + G)
        self.positions = (full_mask.cumsum(-1) - 1).clamp(min=0)  # real tokens numbered from 0
        self.key_mask = None if bool(full_mask.all()) else full_mask  # no padding: SDPA's fastest path
        self.index = torch.arange(batch, device=device)  # row of `output` each row goes to
        self.output = self.answer.clone()
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per-layer (k, v) of every position
        self.cache_block: int | None = None  # start of the block the cache was filled for
        self.plan = None  # (b, steps) tokens each row commits per step, when the start is not fully masked
        self.prior = prior if prior is not None and prior.active else None  # D: the CTC's scores, fused in
        # D: the slots before the start's EOS tail (its reading) may not become EOS, which would cut the transcript
        self.no_eos = (answer == config.eos_token_id).cumsum(-1) == 0 if config.anchored else None
        if config.anchored:
            masked = (answer == config.mask_token_id).sum(-1).tolist()
            self.plan = torch.tensor([num_transfer_schedule(n, config.steps) for n in masked], device=device)

    def n_commit(self, scheduled: int, step: int) -> int | torch.Tensor:
        """Tokens to commit this step: the block schedule's, or each row's own (anchored start: LLaDA's
        `get_num_transfer_tokens` over the row's masked positions)."""
        return scheduled if self.plan is None else self.plan[:, step]

    def fill_after_eos(self, eos_id: int) -> None:
        """Early stop: every position after a committed EOS becomes EOS."""
        self.answer = self.answer.masked_fill((self.answer == eos_id).cumsum(-1) > 0, eos_id)

    def retire_finished(self, mask_id: int) -> bool:
        """Rows without masks left are written to `output` and dropped. Returns True when no row is left."""
        done = ~(self.answer == mask_id).any(-1)
        if bool(done.any()):
            self.output[self.index[done]] = self.answer[done]
            keep = ~done
            self.prefix, self.answer, self.positions, self.index = (
                self.prefix[keep], self.answer[keep], self.positions[keep], self.index[keep])
            self.key_mask = None if self.key_mask is None else self.key_mask[keep]
            self.cache = None if self.cache is None else [(k[keep], v[keep]) for k, v in self.cache]
            self.plan = None if self.plan is None else self.plan[keep]
            self.prior = None if self.prior is None else self.prior.rows(keep)
            self.no_eos = None if self.no_eos is None else self.no_eos[keep]
            self.hints = None if self.hints is None else self.hints[keep]
        return self.index.numel() == 0

    def state(self) -> torch.LongTensor:
        """(B, G) every row's answer now, finished rows included (on the CPU)."""
        state = self.output.cpu().clone()
        state[self.index.cpu()] = self.answer.cpu()
        return state

    def result(self) -> torch.LongTensor:
        self.output[self.index] = self.answer
        return self.output


@dataclass
class LladaGenerateOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)`. sequences: (B, gen_length) answer ids. With
    `output_history=True`: history (B, S + 1, gen_length), the answer after each of the S sampler steps (state 0 = the
    start: all [MASK], or D's anchored hypothesis; the last state = `sequences`); confidences (B, S + 1, gen_length),
    the confidence each token had when it was committed, at the step that committed it, NaN elsewhere."""

    sequences: torch.LongTensor | None = None
    history: torch.LongTensor | None = None
    confidences: torch.Tensor | None = None
    token_timestamps: torch.Tensor | None = None  # (B, G, 2) seconds, with return_timestamps (the speech model)


class _History:
    """Records the answer of every row after each sampler step (only when asked: `output_history=True`)."""

    def __init__(self, start: torch.LongTensor):
        self.states = [start.clone()]
        self.confidences = [torch.full(start.shape, math.nan)]

    def record(self, rows: _Rows, commit: torch.Tensor, confidence: torch.Tensor, start: int, end: int) -> None:
        state = rows.state()
        committed = torch.full(state.shape, math.nan)
        values = torch.where(commit, confidence.float(), torch.full_like(confidence, math.nan, dtype=torch.float)).cpu()
        committed[rows.index.cpu(), start:end] = values
        self.states.append(state)
        self.confidences.append(committed)

    def output(self, sequences: torch.LongTensor) -> LladaGenerateOutput:
        self.states[-1] = sequences.cpu().clone()  # early stop's EOS fill of finished rows
        return LladaGenerateOutput(sequences=sequences, history=torch.stack(self.states, 1),
                                   confidences=torch.stack(self.confidences, 1))


# ----------------------------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------------------------


class LladaGenerationMixin:
    """`generate()` for a mask predictor whose forward takes `inputs_embeds`, `attention_mask`, `position_ids`,
    `logits_positions` and the cache arguments of `LladaForMaskedDiffusion`."""

    generation_config: LladaGenerationConfig

    def resolve_generation_config(self, generation_config: GenerationConfig | None = None, decoding: str | None = None,
                                  **settings: Any) -> LladaGenerationConfig:
        """The one place decoding settings are resolved: a preset or "B,kv_cache=dual"-style string and keyword
        settings on top of `generation_config` (default: the model's; a plain GenerationConfig is converted)."""
        base = generation_config if generation_config is not None else self.generation_config
        base = LladaGenerationConfig.from_generation_config(base, self.generation_config)
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
        generator: torch.Generator | None = None,
        input_ids: torch.LongTensor | None = None,  # (B, P) a prompt given as ids instead
        answer_start: torch.LongTensor | None = None,  # (B, gen_length) D's anchored start (`anchored_answer`)
        answer_prior: SlotPrior | None = None,  # D: the CTC's scores of the answer slots, fused in (`ctc_fusion`)
        answer_lengths: torch.LongTensor | None = None,  # (B,) D: positions each row sees (the rest is EOS, hidden)
        answer_hints: torch.LongTensor | None = None,  # (B, gen_length) D: the first pass's token at masked slots
        read_hints: bool = True,  # D: the decoder reads the hints with the mask (one trained with them)
        return_dict_in_generate: bool = False,
        output_history: bool = False,
        streamer=None,
        decoding: str | None = None,
        **settings: Any,
    ) -> torch.LongTensor | LladaGenerateOutput:
        """Fills the answer after the prompt; returns its ids (B, gen_length), or a `LladaGenerateOutput` with
        `return_dict_in_generate=True` (`output_history=True` adds every step's state and confidences).

        `decoding` picks a preset ("A", "B", "C"; "D" needs `answer_start`) or a "B,kv_cache=dual" string; keyword
        settings (`steps`, `gen_length`, `block_length`, `temperature`, `remasking`, `threshold`, `kv_cache`,
        `early_stop`, ...) override it; anything else raises. `streamer` (transformers' diffusion streamer
        convention, e.g. `TextDiffusionStreamer`) gets `put_draft(value=answer)` with the start and after every
        scheduled step (steps + 1 drafts, the last one the answer unless rows finish early), then `put(answer)` and
        `end()`."""
        config = self.resolve_generation_config(generation_config, decoding, **settings)
        prefix = self._prompt_embeddings(inputs_embeds, input_ids)
        mask = attention_mask if attention_mask is not None else torch.ones(prefix.shape[:2], dtype=torch.long)
        limit = getattr(self.config, "max_sequence_length", None)
        if limit is not None and prefix.shape[1] + config.gen_length > limit:
            raise ValueError(
                f"prompt ({prefix.shape[1]} positions) + gen_length ({config.gen_length}) exceeds the decoder's "
                f"max_sequence_length ({limit}); use a smaller gen_length."
            )
        rows = _Rows(prefix, mask.to(prefix.device).long(), self._start(prefix, config, answer_start), config,
                     answer_prior, answer_lengths, answer_hints, read_hints)
        history = _History(rows.answer) if output_history else None
        put_draft(streamer, rows)
        for start, end, step, scheduled in diffusion_schedule(config):
            finished = self._denoise(rows, start, end, rows.n_commit(scheduled, step), config, generator, history)
            put_draft(streamer, rows)
            if finished:
                break
        sequences = rows.result()
        if streamer is not None:
            streamer.put(sequences.cpu())
            streamer.end()
        if not return_dict_in_generate:
            return sequences
        return history.output(sequences) if history is not None else LladaGenerateOutput(sequences=sequences)

    def _denoise(self, rows: _Rows, start: int, end: int, n_commit: int | torch.Tensor, config: LladaGenerationConfig,
                 generator, history: _History | None) -> bool:
        """One sampler step on the block [start, end): predict, commit the most confident masked positions. Returns
        True when every row is finished (early stop or an anchored start: no mask left)."""
        if config.threshold is None and int(n_commit if isinstance(n_commit, int) else n_commit.max()) == 0:
            return False  # more steps than tokens in the block: the reference's step commits nothing
        masked = rows.answer[:, start:end] == config.mask_token_id  # (b, block_length)
        if config.may_finish_blocks_early and not bool(masked.any()):
            return False  # this block is already complete
        logits = self._block_logits(rows, start, end, config)
        if rows.no_eos is not None:  # D: a reading slot is refilled, never ended
            logits = logits.clone()
            logits[..., config.eos_token_id] = logits[..., config.eos_token_id].masked_fill(
                rows.no_eos[:, start:end], -math.inf)
        if rows.hints is not None and getattr(config, "first_pass_bias", 0.0):
            logits = favour_hints(logits, rows.hints[:, start:end], config.first_pass_bias)
        predicted, confidence = self._predict(logits, config, generator)
        if rows.prior is not None:
            predicted, confidence = rows.prior.fuse(logits, predicted, confidence, start, end)
        commit = self._select(confidence, masked, n_commit, config.threshold)
        rows.answer[:, start:end] = torch.where(commit, predicted, rows.answer[:, start:end])
        if config.early_stop:
            rows.fill_after_eos(config.eos_token_id)
        if history is not None:
            history.record(rows, commit, confidence, start, end)
        return bool(config.early_stop or config.anchored) and rows.retire_finished(config.mask_token_id)

    def _prompt_embeddings(self, inputs_embeds, input_ids) -> torch.Tensor:
        if (inputs_embeds is None) == (input_ids is None):
            raise ValueError("generate() needs exactly one of `inputs_embeds` or `input_ids` (the prompt).")
        return inputs_embeds if inputs_embeds is not None else self.get_input_embeddings()(input_ids)

    @staticmethod
    def _start(prefix: torch.Tensor, config: LladaGenerationConfig, answer_start) -> torch.LongTensor:
        """The answer before the first step: [MASK] * gen_length, or D's anchored hypothesis."""
        if not config.anchored:
            return torch.full((prefix.shape[0], config.gen_length), config.mask_token_id, dtype=torch.long,
                              device=prefix.device)
        if answer_start is None or tuple(answer_start.shape) != (prefix.shape[0], config.gen_length):
            raise ValueError(f"anchored decoding (D) needs answer_start of shape ({prefix.shape[0]}, "
                             f"{config.gen_length}): the CTC hypothesis built by the speech model (anchored_answer).")
        return answer_start.to(prefix.device).clone()

    def _block_logits(self, rows: _Rows, start: int, end: int, config: LladaGenerationConfig) -> torch.Tensor:
        """Logits (b, block_length, vocab) of the current block. Exact: a full forward each step. With `kv_cache`,
        the first step of a block refreshes the cache with a full forward; later steps recompute only [block start,
        end of sequence) ("prefix") or only the block ("dual") and read the other keys/values from the cache."""
        width = rows.prefix.shape[1]
        embed = self.get_input_embeddings()
        mask_id = config.mask_token_id
        hints = rows.hints if rows.read_hints else None
        if config.kv_cache is None or rows.cache_block != start:
            out = self(
                inputs_embeds=torch.cat((rows.prefix, embed_answer(embed, rows.answer, hints, mask_id)), dim=1),
                attention_mask=rows.key_mask,
                position_ids=rows.positions,
                logits_positions=slice(width + start, width + end),
                return_key_values=config.kv_cache is not None,
            )
            rows.cache, rows.cache_block = out.key_values, start
            return out.logits
        window_end = end if config.kv_cache == "dual" else rows.answer.shape[1]
        out = self(
            inputs_embeds=embed_answer(embed, rows.answer[:, start:window_end],
                                       None if hints is None else hints[:, start:window_end], mask_id),
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
    def _select(confidence: torch.Tensor, masked: torch.Tensor, n_commit: int | torch.Tensor, threshold: float | None):
        """Vectorised top-k commit: the n_commit most confident masked positions of each row (n_commit: one count, or
        one per row), plus, with a threshold, every masked position at least that confident."""
        confidence = confidence.masked_fill(~masked, -math.inf)
        if isinstance(n_commit, int):
            top = confidence.topk(n_commit, dim=-1).indices
            commit = torch.zeros_like(masked).scatter_(-1, top, True) & masked
        else:
            top = confidence.topk(int(n_commit.max()), dim=-1).indices
            wanted = torch.arange(top.shape[-1], device=top.device) < n_commit.to(top.device)[:, None]
            commit = torch.zeros_like(masked).scatter_(-1, top, wanted) & masked
        if threshold is not None:
            commit |= masked & (confidence >= threshold)
        return commit


__all__ = ["LladaGenerationMixin", "LladaGenerateOutput", "SlotPrior", "num_transfer_schedule", "argmax_probability",
           "anchored_answer", "editor_example", "align", "deliberation_start", "deliberation_example",
           "masked_stretches", "embed_answer"]
