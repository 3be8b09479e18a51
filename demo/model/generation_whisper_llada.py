"""Decoding of the speech model: what `WhisperLladaForConditionalGeneration.generate` does before and after it hands
off to the decoder's sampler (generation_llada.py) or to a causal decoder's `generate`.

    features -> speech (projector outputs) -> prefix embeddings                      (modeling_whisper_llada.py)
             -> CTC:     the CTC head's greedy reading, no decoder                    (`ctc_read`)
             -> D:       the reading (or a given hypothesis, `decoder_input_ids`) as the start, its uncertain tokens
                         masked; the CTC's scores of each slot fused in (`SlotPrior`)  (`_anchored_inputs`)
             -> A/B/C:   all-[MASK]; the answer length follows the audio (`tokens_per_second`)
             -> the decoder's sampler; a warning when an answer fills its length without an end of text
             -> with `return_timestamps`, every answer token's time from a CTC forced alignment (alignment_whisper_llada)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.utils import logging

try:
    from .alignment_whisper_llada import TokenSpan, forced_align, frame_seconds
    from .generation_llada import LladaGenerateOutput, SlotPrior, anchored_answer
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from alignment_whisper_llada import TokenSpan, forced_align, frame_seconds
    from generation_llada import LladaGenerateOutput, SlotPrior, anchored_answer

logger = logging.get_logger(__name__)


@dataclass
class CTCReading:
    """Per row: the tokens a CTC reading (greedy, or a forced alignment of a given hypothesis) places in the speech,
    their confidences (the highest posterior of the token among the frames of its run) and the frame of that
    posterior; `log_probs` (B, S, K) are the CTC head's log-posteriors over its classes."""

    tokens: list[list[int]]
    confidences: list[list[float]]
    frames: list[list[int]]
    log_probs: torch.Tensor


def audio_lengths_from_features(input_features: torch.Tensor) -> torch.Tensor:
    """(B, 3000) mel-frame mask derived from Whisper log-mel features when none is given: the feature extractor pads
    the audio with zeros, whose log-mel frames are all at the clamp floor (max - 8 dB, the row's minimum). The frames
    up to the last one with any bin above it see some audio; the STFT window (400 samples, centred, hop 160) reaches
    up to two frames past the audio's end, so the mask ends two frames before that: at most one frame (10 ms) short
    of the feature extractor's own mask, never into the padding."""
    floor = input_features.amin(dim=(1, 2), keepdim=True)
    speech = (input_features > floor + 1e-4).any(dim=1)  # (B, frames)
    index = torch.arange(speech.shape[-1], device=speech.device)
    last = torch.where(speech, index, torch.full_like(index, -1)).amax(-1)
    return (index[None] <= (last[:, None] - 2).clamp(min=0)).long()


class WhisperLladaGenerationMixin:
    """`generate()` and the CTC head's readings for `WhisperLladaForConditionalGeneration`."""

    def resolve_decoding(self, decoding: str | GenerationConfig | None = None,
                         generation_config: GenerationConfig | None = None, **settings: Any) -> GenerationConfig:
        """The typed decoding settings for a preset, a "B,kv_cache=dual" / "AR,num_beams=4" string or a generation
        config, with keyword settings on top, validated once: what `generate(generation_config=...)` takes and what
        eval_hf.py / bench_hf.py name and record."""
        if isinstance(decoding, GenerationConfig):
            generation_config, decoding = decoding, None
        base = generation_config if generation_config is not None else self.generation_config
        return self.decoder.resolve_generation_config(base, decoding, **settings)

    @torch.no_grad()
    def generate(
        self,
        input_features: torch.Tensor | None = None,  # (B, n_mels, 3000)
        attention_mask: torch.Tensor | None = None,  # (B, 3000) mel-frame mask, or (B, P) with inputs_embeds
        inputs_embeds: torch.Tensor | None = None,  # (B, P, d) a prefix built by the caller (no audio)
        encoder_outputs: torch.Tensor | None = None,  # (B, T, d_enc) precomputed encoder frames
        generation_config: GenerationConfig | None = None,
        decoding: str | None = None,
        generator: torch.Generator | None = None,
        decoder_input_ids: torch.LongTensor | list | None = None,  # D: a first-pass hypothesis as the start
        return_dict_in_generate: bool = False,
        output_history: bool = False,
        return_timestamps: bool = False,
        streamer=None,
        **settings: Any,
    ):
        """Transcribes: builds the speech prefix and hands off to the decoder's `generate`; returns the answer ids.

        `decoding="A"|"B"|"C"|"D"|"CTC"` (or "B,kv_cache=dual") picks a preset; `steps`, `gen_length`,
        `block_length`, `temperature`, `remasking`, `threshold`, `kv_cache`, `early_stop`, `anchor_threshold`,
        `anchor_slack`, `ctc_fusion`, `ctc_top_k`, `tokens_per_second` override it; with no arguments the model's own
        default decoding (generation_config.json) runs. D starts from the CTC head's reading, or from
        `decoder_input_ids` (a first-pass hypothesis: token ids, a list per row; its tokens' confidences come from a
        CTC forced alignment, or without a CTC head from the decoder's own reading of it). CTC returns the CTC head's
        greedy reading. A causal decoder takes "AR" settings (`max_new_tokens`, `num_beams`). Unknown arguments
        raise an error naming them. `return_dict_in_generate=True` returns a `LladaGenerateOutput`: with
        `output_history=True` the sampler's per-step history, with `return_timestamps=True` each answer token's
        (start, end) in seconds (`token_timestamps`, NaN where it could not be aligned; needs a CTC head).
        `streamer` gets the answer after every sampler step (`put_draft`), then `put` and `end`."""
        config = self.resolve_decoding(decoding, generation_config, **settings)
        self._check_prefix_inputs(input_features, inputs_embeds, encoder_outputs)
        anchored, reading_only = getattr(config, "anchored", False), getattr(config, "ctc_reading", False)
        if return_timestamps:
            self._require_ctc_head("word timestamps (a CTC alignment of the transcript)")
        extra = {k: v for k, v in (("generator", generator), ("output_history", output_history),
                                   ("streamer", streamer)) if v}
        if inputs_embeds is not None:
            if anchored or reading_only or return_timestamps or decoder_input_ids is not None:
                if decoder_input_ids is None:
                    self._require_ctc_head(f"decoding {config.name}")
                raise ValueError(f"decoding {config.name}{' with timestamps' if return_timestamps else ''} reads the "
                                 "audio: pass input_features, not inputs_embeds.")
            prefix, prefix_mask = self.prepare_prefix(attention_mask=attention_mask, inputs_embeds=inputs_embeds)
            return self.decoder.generate(inputs_embeds=prefix, attention_mask=prefix_mask, generation_config=config,
                                         return_dict_in_generate=return_dict_in_generate, **extra)
        if attention_mask is None and input_features is not None and encoder_outputs is None:
            self._check_input_features(input_features)
            attention_mask = audio_lengths_from_features(input_features)  # not all 30 s: the audio's own length
        states, lengths = self.project_speech(input_features, attention_mask, encoder_outputs)
        if decoder_input_ids is not None and not anchored:
            raise ValueError(f"decoder_input_ids (a first-pass hypothesis) is D's start: use decoding=\"D\", not "
                             f"{config.name}.")
        if reading_only:
            output = self._ctc_reading_output(self.ctc_read(states, lengths), config, output_history, streamer)
        else:
            prefix, prefix_mask = self.build_prefix(self.speech_embeddings_from(states), lengths)
            if anchored:
                config, start, prior, answer_lengths = self._anchored_inputs(states, lengths, prefix, prefix_mask,
                                                                             config, decoder_input_ids)
                extra.update(answer_start=start, answer_prior=prior, answer_lengths=answer_lengths)
            else:
                config = self._answer_length(config, attention_mask, encoder_outputs, prefix.shape[1])
            output = self.decoder.generate(inputs_embeds=prefix, attention_mask=prefix_mask, generation_config=config,
                                           return_dict_in_generate=True, **extra)
        self._warn_cut_answers(output.sequences, config)
        if return_timestamps:
            output.token_timestamps = self.token_timestamps(states, lengths, output.sequences)
        return output if return_dict_in_generate else output.sequences

    # -- the CTC head's readings ---------------------------------------------------------------------------------------

    def _require_ctc_head(self, purpose: str) -> None:
        if self.config.ctc_blank_id is None:
            raise ValueError(
                f"{purpose} needs a CTC head, and this model has none (config.ctc_blank_id is None). Train one: "
                "train_hf.py --model_name_or_path THIS_MODEL --ctc_blank_id ID --ctc_weight 0.5 (ID: an unused token "
                "of the decoder's vocabulary; --ctc_only true --ctc_vocab units:512 is a cheap warm-up of the "
                "projector).")

    def ctc_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """(B, S, K) log-posteriors of the CTC head over its classes (`ctc_class_ids`, the blank among them)."""
        return torch.log_softmax(self.speech_token_logits(states).float(), dim=-1)

    @torch.no_grad()
    def ctc_read(self, states: torch.Tensor, lengths: torch.Tensor) -> CTCReading:
        """The greedy CTC reading of the speech: per row, the token ids (argmax per frame, repeats collapsed, blanks
        dropped), each token's confidence (the highest posterior among the frames of its run) and that frame."""
        self._require_ctc_head("reading the speech with the CTC head")
        log_probs = self.ctc_log_probs(states)
        confidence, best = log_probs.exp().max(-1)
        classes = self.class_token_ids()
        silent = set(self.silent_classes())  # the blank, and the special ids a transcript never holds
        tokens, confidences, frames = [], [], []
        for row_best, row_conf, n in zip(best.tolist(), confidence.tolist(), lengths.tolist()):
            ids, conf, where = [], [], []
            previous = None
            for frame, (cls, p) in enumerate(zip(row_best[:n], row_conf[:n])):
                if cls not in silent and cls != previous:
                    ids.append(classes[cls])
                    conf.append(p)
                    where.append(frame)
                elif cls not in silent and p > conf[-1]:
                    conf[-1], where[-1] = p, frame
                previous = cls
            tokens.append(ids)
            confidences.append(conf)
            frames.append(where)
        return CTCReading(tokens, confidences, frames, log_probs)

    def ctc_hypotheses(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
        """The greedy CTC reading's token ids and confidences per row (`ctc_read`)."""
        reading = self.ctc_read(states, lengths)
        return reading.tokens, reading.confidences

    def class_token_ids(self) -> list[int]:
        """The token id of every CTC class (class k is token k without `config.ctc_token_ids`)."""
        classes = self.ctc_class_ids()
        return classes.tolist() if classes is not None else list(range(self.decoder.get_input_embeddings().weight.shape[0]))

    def silent_classes(self) -> list[int]:
        """The classes a reading never writes: the blank, and [MASK], EOS and end of turn when they are classes (a CTC
        head over the whole vocabulary)."""
        special = {self.config.mask_token_id, self.config.eos_token_id, self.config.eot_token_id}
        return [self.blank_class()] + [k for k, token in enumerate(self.class_token_ids())
                                       if token in special and k != self.blank_class()]

    def blank_class(self) -> int:
        classes = self.config.ctc_token_ids
        return classes.index(self.config.ctc_blank_id) if classes is not None else self.config.ctc_blank_id

    @torch.no_grad()
    def align_tokens(self, states: torch.Tensor, lengths: torch.Tensor, rows: list[list[int]],
                     log_probs: torch.Tensor | None = None) -> list[list[TokenSpan | None]]:
        """A CTC forced alignment of each row's token ids to its speech: a `TokenSpan` per token (speech-embedding
        frames and confidence), None for a token that is no CTC class (or a row too long for its speech)."""
        self._require_ctc_head("aligning a transcript to the speech")
        log_probs = self.ctc_log_probs(states) if log_probs is None else log_probs
        lookup = {token: cls for cls, token in enumerate(self.class_token_ids())}
        blank = self.blank_class()
        out = []
        for row, (ids, n) in enumerate(zip(rows, lengths.tolist())):
            known = [i for i, token in enumerate(ids) if token in lookup and lookup[token] != blank]
            spans = forced_align(log_probs[row, :n], [lookup[ids[i]] for i in known], blank) or []
            aligned: list[TokenSpan | None] = [None] * len(ids)
            for i, span in zip(known, spans):
                aligned[i] = span
            out.append(aligned)
        return out

    def token_timestamps(self, states: torch.Tensor, lengths: torch.Tensor, sequences: torch.LongTensor) -> torch.Tensor:
        """(B, G, 2) (start, end) in seconds of each answer token up to the end of text, from a CTC forced alignment
        of the answer; NaN for tokens after it, tokens the CTC cannot write and rows too long for their speech."""
        stops = {self.config.eos_token_id, self.config.eot_token_id, self.config.mask_token_id}
        rows = []
        for row in sequences.tolist():
            end = next((i for i, token in enumerate(row) if token in stops), len(row))
            rows.append(row[:end])
        seconds = frame_seconds(self.config.stack_factor)
        times = torch.full((*sequences.shape, 2), math.nan)
        for b, spans in enumerate(self.align_tokens(states, lengths, rows)):
            for i, span in enumerate(spans):
                if span is not None:
                    times[b, i] = torch.tensor([span.start * seconds, span.end * seconds])
        return times

    def _ctc_reading_output(self, reading: CTCReading, config, output_history: bool, streamer) -> LladaGenerateOutput:
        """Decoding "CTC": the greedy reading as answer ids (B, longest + 1), EOS after each row's reading."""
        width = max(len(t) for t in reading.tokens) + 1
        sequences = torch.full((len(reading.tokens), width), config.eos_token_id, dtype=torch.long)
        confidences = torch.full(sequences.shape, math.nan)
        for row, (ids, conf) in enumerate(zip(reading.tokens, reading.confidences)):
            sequences[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            confidences[row, : len(conf)] = torch.tensor(conf)
        if streamer is not None:
            streamer.put_draft(value=sequences.clone())
            streamer.put(sequences.clone())
            streamer.end()
        sequences = sequences.to(reading.log_probs.device)
        if not output_history:
            return LladaGenerateOutput(sequences=sequences)
        return LladaGenerateOutput(sequences=sequences, history=sequences.cpu()[:, None], confidences=confidences[:, None])

    # -- D: the anchored start -----------------------------------------------------------------------------------------

    def _anchored_inputs(self, states, lengths, prefix, prefix_mask, config, hypothesis):
        """D's (config with its answer length, start ids, slot prior): the CTC reading, or `hypothesis` with the
        confidences of a CTC forced alignment (without a CTC head: the decoder's own confidence in each token)."""
        if hypothesis is None:
            reading = self.ctc_read(states, lengths)
        else:
            rows = hypothesis_rows(hypothesis, len(lengths), {self.config.eos_token_id, self.config.pad_token_id})
            if self.config.ctc_blank_id is not None:
                reading = self._aligned_reading(states, lengths, rows)
            else:
                reading = CTCReading(rows, self._decoder_confidences(prefix, prefix_mask, rows, config),
                                     [[-1] * len(r) for r in rows], torch.empty(0))
        # each row's answer: room for its reading, the slack and an end of text (never less than gen_length, unless
        # the caller set gen_length); a batch is as long as its longest row, whose extra positions the others do
        # not see, so that a row decodes the same in any batch
        fixed = "gen_length" in config.explicit
        own = [config.gen_length if fixed else max(config.gen_length, len(t) + config.anchor_slack + 1)
               for t in reading.tokens]
        if max(own) != config.gen_length:
            config = copy.deepcopy(config)
            config.gen_length = config.block_length = max(own)
        start = anchored_answer(reading.tokens, reading.confidences, config)
        prior = None
        if self.config.ctc_blank_id is not None and (config.ctc_fusion > 0 or config.ctc_top_k is not None):
            prior = self._slot_prior(reading, config)
        answer_lengths = None if len(set(own)) == 1 else torch.tensor(own)
        return config, start, prior, answer_lengths

    def _aligned_reading(self, states, lengths, rows: list[list[int]]) -> CTCReading:
        """A hypothesis placed in the speech by a CTC forced alignment: each token's confidence and frame from its run
        (0 and no frame for a token the CTC cannot write)."""
        log_probs = self.ctc_log_probs(states)
        confidences, frames = [], []
        for row, spans in enumerate(self.align_tokens(states, lengths, rows, log_probs)):
            conf, where = [], []
            lookup = {token: cls for cls, token in enumerate(self.class_token_ids())}
            for token, span in zip(rows[row], spans):
                if span is None:
                    conf.append(0.0)
                    where.append(-1)
                    continue
                probs = log_probs[row, span.start: span.end, lookup[token]]
                conf.append(span.confidence)
                where.append(span.start + int(probs.argmax()))
            confidences.append(conf)
            frames.append(where)
        return CTCReading(rows, confidences, frames, log_probs)

    def _decoder_confidences(self, prefix, prefix_mask, rows, config) -> list[list[float]]:
        """Without a CTC head: each hypothesis token's probability under the decoder, which reads the whole unmasked
        hypothesis (one forward pass)."""
        width = max((len(r) for r in rows), default=0) + 1
        canvas = torch.full((len(rows), width), config.eos_token_id, dtype=torch.long, device=prefix.device)
        for row, ids in enumerate(rows):
            canvas[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        full_mask = torch.cat((prefix_mask, torch.ones_like(canvas)), dim=1)
        out = self.decoder(inputs_embeds=torch.cat((prefix, self.decoder.get_input_embeddings()(canvas)), dim=1),
                           attention_mask=None if bool(full_mask.all()) else full_mask,
                           position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0),
                           logits_positions=slice(prefix.shape[1], prefix.shape[1] + width))
        probs = torch.softmax(out.logits.float(), dim=-1).gather(-1, canvas[..., None]).squeeze(-1)
        return [probs[row, : len(ids)].tolist() for row, ids in enumerate(rows)]

    def _slot_prior(self, reading: CTCReading, config) -> SlotPrior:
        """The CTC's log-posterior over its non-blank classes (renormalised) at the frame of each reading token, as a
        prior for D's masked slots (`ctc_fusion`, `ctc_top_k`)."""
        silent = set(self.silent_classes())
        keep = torch.tensor([k for k in range(reading.log_probs.shape[-1]) if k not in silent])
        classes = torch.tensor(self.class_token_ids())[keep]
        log_probs = torch.zeros(len(reading.tokens), config.gen_length, len(keep))
        present = torch.zeros(len(reading.tokens), config.gen_length, dtype=torch.bool)
        for row, frames in enumerate(reading.frames):
            for slot, frame in enumerate(frames[: config.gen_length]):
                if frame >= 0:
                    scores = reading.log_probs[row, frame, keep].float().cpu()
                    log_probs[row, slot] = scores - torch.logsumexp(scores, -1)
                    present[row, slot] = True
        return SlotPrior(classes, log_probs, present, float(config.ctc_fusion), config.ctc_top_k)

    # -- answer length -------------------------------------------------------------------------------------------------

    def _answer_length(self, config, attention_mask, encoder_outputs, prompt_length: int):
        """A/B/C: with `tokens_per_second`, room for the longest audio of the batch at that rate (gen_length grows,
        rounded up to a multiple of the number of blocks; steps per block unchanged), when the caller did not set
        gen_length, within the decoder's max_sequence_length."""
        rate = getattr(config, "tokens_per_second", None)
        if not rate or "gen_length" in config.explicit or attention_mask is None or encoder_outputs is not None:
            return config
        seconds = float(attention_mask.long().sum(-1).max()) / 100.0  # Whisper: 100 mel frames per second
        blocks = config.num_blocks
        needed = math.ceil(seconds * rate) + 1
        limit = getattr(self.decoder.config, "max_sequence_length", None)
        if limit is not None:
            needed = min(needed, (limit - prompt_length) // blocks * blocks)
        if needed <= config.gen_length:
            return config
        config = copy.deepcopy(config)
        config.gen_length = math.ceil(needed / blocks) * blocks
        config.block_length = config.gen_length // blocks  # steps are counted over the blocks: unchanged
        return config

    def _warn_cut_answers(self, sequences: torch.LongTensor, config) -> int:
        """Warns when answers fill their whole length without an end of text (the transcript may be cut); returns
        how many."""
        stops = torch.tensor([i for i in (self.config.eos_token_id, self.config.eot_token_id) if i is not None],
                             device=sequences.device)
        cut = int((~torch.isin(sequences, stops).any(-1)).sum())
        if cut and not getattr(config, "ctc_reading", False):
            length = sequences.shape[-1]
            setting = "gen_length" if hasattr(config, "steps") else "max_new_tokens"
            logger.warning(
                f"generate(): {cut} of {sequences.shape[0]} answers filled all {length} positions without an end of "
                f"text ({setting}={getattr(config, setting, length)}): the transcript may be cut. Pass a larger "
                f"{setting}{' (or tokens_per_second for A/B/C)' if setting == 'gen_length' else ''}, or shorter "
                "windows (chunk_length_s).")
        return cut


def hypothesis_rows(hypothesis, batch: int, drop: set) -> list[list[int]]:
    """`decoder_input_ids` as one list of token ids per row: a (B, L) tensor (trailing EOS/pad dropped) or a list of
    lists (or one list for a batch of one)."""
    if torch.is_tensor(hypothesis):
        hypothesis = hypothesis.tolist() if hypothesis.dim() == 2 else [hypothesis.tolist()]
    rows = [list(hypothesis)] if hypothesis and isinstance(hypothesis[0], int) else [list(r) for r in hypothesis]
    if len(rows) != batch:
        raise ValueError(f"decoder_input_ids holds {len(rows)} hypotheses for a batch of {batch} audios.")
    out = []
    for row in rows:
        while row and row[-1] in drop:
            row = row[:-1]
        out.append([int(t) for t in row])
    return out


__all__ = ["WhisperLladaGenerationMixin", "CTCReading", "audio_lengths_from_features", "hypothesis_rows"]
