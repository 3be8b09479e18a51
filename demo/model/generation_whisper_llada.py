"""Decoding of the speech model: what `WhisperLladaForConditionalGeneration.generate` does before and after it hands
off to the decoder's sampler (generation_llada.py) or to a causal decoder's `generate`.

    features -> speech (projector outputs) -> prefix embeddings                      (modeling_whisper_llada.py)
             -> CTC:     the CTC head's greedy reading, no decoder                    (`ctc_read`)
             -> D:       the reading (or a given hypothesis, `decoder_input_ids` / `hypotheses`) as the start, its
                         uncertain tokens masked; the CTC's scores of each slot fused in (`SlotPrior`)
                                                                                   (`_anchored_inputs`)
             -> deliberation / first_pass: the model's first pass (generation_deliberation.py), its words under
                         the threshold masked with slack slots; or that transcript alone
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
    from .generation_deliberation import FirstPassMixin, cut_to_capacity, first_pass_answer, speech_capacity, warn_once
    from .generation_llada import LladaGenerateOutput, SlotPrior, deliberation_start
    from .modeling_first_pass import FirstPassHypothesis, in_form
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from alignment_whisper_llada import TokenSpan, forced_align, frame_seconds
    from generation_deliberation import FirstPassMixin, cut_to_capacity, first_pass_answer, speech_capacity, warn_once
    from generation_llada import LladaGenerateOutput, SlotPrior, deliberation_start
    from modeling_first_pass import FirstPassHypothesis, in_form

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


# Whisper's options, as a Whisper user passes them (to the pipeline or to generate): English transcription is what the
# model does, so language="en" and task="transcribe" are accepted and change nothing; other values are refused.
WHISPER_OPTIONS = {
    "language": ({None, "en", "english", "<|en|>"}, "the model transcribes English only"),
    "task": ({None, "transcribe"}, "the model only transcribes (no translation task)"),
    "return_language": ({None, False}, "the model predicts no language token"),
    "return_token_timestamps": ({None, False}, "use return_timestamps='word' (a CTC alignment of the transcript)"),
}


def accept_whisper_options(options: dict) -> None:
    """Removes Whisper's options from `options`: the values that mean what this model does anyway, or one clear
    error for the others."""
    for name, (accepted, reason) in WHISPER_OPTIONS.items():
        if name not in options:
            continue
        value = options.pop(name)
        if (value.lower() if isinstance(value, str) else value) not in accepted:
            raise ValueError(f"`{name}={value!r}` is not supported by whisper-llada: {reason}.")


def stream_answer(streamer, sequences: torch.LongTensor) -> None:
    """A decoding without sampler steps (CTC, first_pass) hands its answer to a streamer: as a draft when the streamer
    takes drafts (transformers' diffusion convention, `put_draft`), then `put` and `end` (any TextStreamer)."""
    if streamer is None:
        return
    if hasattr(streamer, "put_draft"):
        streamer.put_draft(value=sequences.clone())
    streamer.put(sequences.clone())
    streamer.end()


class WhisperLladaGenerationMixin(FirstPassMixin):
    """`generate()`, the CTC head's readings and D's start for `WhisperLladaForConditionalGeneration`."""

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
        decoder_input_ids: torch.LongTensor | list | None = None,  # D: a first-pass hypothesis (token ids) per row
        hypotheses: list | str | None = None,  # D: a first-pass transcript (text or FirstPassHypothesis) per row
        return_dict_in_generate: bool = False,
        output_history: bool = False,
        return_timestamps: bool = False,
        streamer=None,
        **settings: Any,
    ):
        """Transcribes: builds the speech prefix and hands off to the decoder's `generate`; returns the answer ids.

        `decoding="A"|"B"|"C"|"D"|"CTC"|"deliberation"|"first_pass"` (or "B,kv_cache=dual") picks a preset; `steps`,
        `gen_length`, `block_length`, `temperature`, `remasking`, `threshold`, `kv_cache`, `early_stop`,
        `anchor_threshold`, `anchor_slack`, `ctc_fusion`, `ctc_top_k`, `tokens_per_second`, `first_pass_beams`,
        `rescore_weight`, `rescore_passes` override it; with no arguments the model's own default decoding
        (generation_config.json) runs. D starts from the CTC head's reading, or from a first pass given per row:
        `decoder_input_ids` (token ids; their confidences from a CTC forced alignment, or without a CTC head from the
        decoder's own reading of them) or `hypotheses` (text in any form, put in the model's transcript form, or
        `FirstPassHypothesis` objects with word confidences); a row with None, or with an empty hypothesis, starts
        from its CTC reading. `deliberation` runs the model's own first pass (`config.first_pass`) and refines it;
        `first_pass` returns that transcript alone. CTC returns the CTC head's greedy reading. A causal decoder takes
        "AR" settings (`max_new_tokens`, `num_beams`). Whisper's `language="en"` / `task="transcribe"` are accepted.
        Unknown arguments raise an error naming them. `return_dict_in_generate=True` returns a `LladaGenerateOutput`:
        with `output_history=True` the sampler's per-step history, with `return_timestamps=True` each answer token's
        (start, end) in seconds (`token_timestamps`, NaN where it could not be aligned; needs a CTC head).
        `streamer` gets the answer after every sampler step (`put_draft`, when it has it), then `put` and `end`."""
        accept_whisper_options(settings)
        config = self.resolve_decoding(decoding, generation_config, **settings)
        self._check_prefix_inputs(input_features, inputs_embeds, encoder_outputs)
        anchored, reading_only = getattr(config, "anchored", False), getattr(config, "ctc_reading", False)
        from_first_pass = getattr(config, "first_pass", False)
        given = decoder_input_ids is not None or hypotheses is not None
        if return_timestamps:
            if not return_dict_in_generate:
                raise ValueError("return_timestamps: the times come in the output's .token_timestamps; pass "
                                 "return_dict_in_generate=True too (the pipeline's return_timestamps='word' gives "
                                 "words with their times).")
            self._require_ctc_head("word timestamps (a CTC alignment of the transcript)")
        if given and not anchored:
            raise ValueError(f"a first-pass hypothesis (decoder_input_ids / hypotheses) is D's start: use "
                             f"decoding=\"D\" (or \"deliberation\"), not {config.name}.")
        self._check_settings_apply(config)
        extra = {k: v for k, v in (("generator", generator), ("output_history", output_history),
                                   ("streamer", streamer)) if v}
        if inputs_embeds is not None:
            if anchored or reading_only or from_first_pass or return_timestamps or given:
                if not given and not from_first_pass:
                    self._require_ctc_head(f"decoding {config.name}")
                raise ValueError(f"decoding {config.name}{' with timestamps' if return_timestamps else ''} reads the "
                                 "audio: pass input_features, not inputs_embeds.")
            prefix, prefix_mask = self.prepare_prefix(attention_mask=attention_mask, inputs_embeds=inputs_embeds)
            return self.decoder.generate(inputs_embeds=prefix, attention_mask=prefix_mask, generation_config=config,
                                         return_dict_in_generate=return_dict_in_generate, **extra)
        if attention_mask is None and input_features is not None and encoder_outputs is None:
            self._check_input_features(input_features)
            attention_mask = audio_lengths_from_features(input_features)  # not all 30 s: the audio's own length
        frames = None
        if from_first_pass:  # the encoder runs once: the projector and (when it shares it) the first pass read it
            if input_features is None:
                raise ValueError(f"decoding {config.name} runs the first pass on the audio: pass input_features.")
            frames = self.encode_audio(input_features)
        states, lengths = self.project_speech(input_features if frames is None else None, attention_mask,
                                              encoder_outputs if frames is None else frames)
        rows = self._given_hypotheses(decoder_input_ids, hypotheses, len(lengths))
        if from_first_pass and any(row is None for row in rows):  # the model's own first pass where none is given
            found = self.first_pass_hypotheses(input_features, frames, config.first_pass_beams)
            rows = [own if own is not None else candidates for own, candidates in zip(rows, found)]
        if reading_only:
            output = self._ctc_reading_output(self.ctc_read(states, lengths), config, output_history, streamer)
        elif from_first_pass and not anchored:
            best = [row if isinstance(row, FirstPassHypothesis) else row[0] for row in rows]  # its best hypothesis
            sequences = first_pass_answer(self, best, config.eos_token_id).to(states.device)
            stream_answer(streamer, sequences.cpu())
            output = LladaGenerateOutput(sequences=sequences, **({
                "history": sequences.cpu()[:, None],
                "confidences": torch.full(sequences.shape, math.nan)[:, None]} if output_history else {}))
        else:
            prefix, prefix_mask = self.build_prefix(self.speech_embeddings_from(states), lengths)
            if anchored:
                config, start, prior, answer_lengths, hints = self._anchored_inputs(states, lengths, prefix,
                                                                                    prefix_mask, config, rows)
                reads = bool(getattr(self.config, "first_pass_hints", False))
                extra.update(answer_start=start, answer_prior=prior, answer_lengths=answer_lengths,
                             **({"answer_hints": hints, "read_hints": reads} if hints is not None else {}))
            else:
                config = self._answer_length(config, attention_mask, encoder_outputs, prefix.shape[1])
            output = self.decoder.generate(inputs_embeds=prefix, attention_mask=prefix_mask, generation_config=config,
                                           return_dict_in_generate=True, **extra)
        self._warn_cut_answers(output.sequences, config)
        if return_timestamps:
            output.token_timestamps = self.token_timestamps(states, lengths, output.sequences)
        return output if return_dict_in_generate else output.sequences

    def encode_audio(self, input_features: torch.Tensor) -> torch.Tensor:
        """(B, 1500, d_enc) the encoder's frames of 30 s log-mel features (all of them: a first pass reads the padding
        as Whisper does)."""
        self._check_input_features(input_features)
        return self.encoder(input_features.to(self.encoder.dtype)).last_hidden_state

    def _check_settings_apply(self, config) -> None:
        """Decodings without a decoder pass (CTC, first_pass) refuse decoder settings instead of ignoring them."""
        if not (getattr(config, "ctc_reading", False) or (getattr(config, "first_pass", False)
                                                          and not getattr(config, "anchored", False))):
            return
        ignored = [name for name in getattr(config, "explicit", []) if name not in ("first_pass_beams",)]
        if ignored:
            raise ValueError(f"decoding {config.decoding} runs no decoder steps: {ignored} would change nothing "
                             "(they apply to A, B, C, D and deliberation).")

    def _given_hypotheses(self, decoder_input_ids, hypotheses, batch: int) -> list:
        """One first-pass hypothesis per row, or None: token ids (`decoder_input_ids`; trailing EOS/padding dropped)
        or a `FirstPassHypothesis` (`hypotheses`: text is put in the model's transcript form)."""
        if decoder_input_ids is not None and hypotheses is not None:
            raise ValueError("pass a first pass as decoder_input_ids (token ids) or as hypotheses (text), not both.")
        if decoder_input_ids is not None:
            return hypothesis_rows(decoder_input_ids, batch, {self.config.eos_token_id, self.config.pad_token_id})
        if hypotheses is None:
            return [None] * batch
        if isinstance(hypotheses, str) or as_first_pass(hypotheses) is not None:
            hypotheses = [hypotheses]
        hypotheses = list(hypotheses)
        if len(hypotheses) != batch:
            raise ValueError(f"hypotheses holds {len(hypotheses)} transcripts for a batch of {batch} audios.")
        form = getattr(self.config, "transcript_form", None)
        rows = []
        for index, item in enumerate(hypotheses):
            if item is None or as_first_pass(item) is not None:
                found = None if item is None else as_first_pass(item)
                if found is not None and not found.words and found.text.strip():  # text only: its words in form
                    found = FirstPassHypothesis(found.text, in_form(found.text, form).split(), [], found.score)
                rows.append(found)
            elif isinstance(item, (list, tuple)) and item and all(as_first_pass(h) is not None for h in item):
                rows.append([as_first_pass(h) for h in item])  # an N-best list, best first (see `rescore_weight`)
            elif isinstance(item, str):
                words = in_form(item, form).split()
                rows.append(FirstPassHypothesis(item, words, []))  # no confidences: read them off the audio
            else:
                raise TypeError(f"hypotheses[{index}] must be a string, a FirstPassHypothesis (or a list of them: an "
                                f"N-best list) or None, got {type(item).__name__}.")
        return rows

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
        sequences = torch.full((len(reading.tokens), width), self.config.eos_token_id, dtype=torch.long)
        confidences = torch.full(sequences.shape, math.nan)
        for row, (ids, conf) in enumerate(zip(reading.tokens, reading.confidences)):
            sequences[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            confidences[row, : len(conf)] = torch.tensor(conf)
        stream_answer(streamer, sequences)
        sequences = sequences.to(reading.log_probs.device)
        if not output_history:
            return LladaGenerateOutput(sequences=sequences)
        return LladaGenerateOutput(sequences=sequences, history=sequences.cpu()[:, None], confidences=confidences[:, None])

    # -- D: the anchored start -----------------------------------------------------------------------------------------

    def _anchored_inputs(self, states, lengths, prefix, prefix_mask, config, rows: list):
        """D's (config with its answer length, start ids (B, G), slot prior, per-row answer lengths, hints (B, G) or
        None: the first pass's token at each masked slot, for a decoder trained to read them). Each row starts
        from its own hypothesis (`rows`): a first pass's words with their confidences (the words under
        `anchor_threshold` masked, `anchor_slack` slots per masked stretch: `deliberation_start`); an N-best list
        (rescored when `rescore_weight` is set, else its best); text without confidences (each word's confidence read
        off the audio: the CTC forced alignment, or the decoder's own); token ids (token by token, as the CTC reading);
        or None / an empty hypothesis: the CTC reading (the tokens under the threshold masked, `anchor_slack` slots
        at its end)."""
        rows = self._chosen_hypotheses(prefix, prefix_mask, config, rows)
        batch, slack, mask_id = len(rows), config.anchor_slack, config.mask_token_id
        has_ctc = self.config.ctc_blank_id is not None
        log_probs = self.ctc_log_probs(states) if has_ctc else None
        words = {b: self.word_tokens(r.words) for b, r in enumerate(rows) if isinstance(r, FirstPassHypothesis)
                 and r.words}
        ids = {b: r for b, r in enumerate(rows) if isinstance(r, list) and r}
        fallback = [b for b in range(batch) if b not in words and b not in ids]
        seen: set = set()
        for b in fallback:
            if rows[b] is not None:
                warn_once("D: a first-pass hypothesis is empty (no words in the model's transcript form): "
                          f"{'those rows start from their CTC reading' if has_ctc else 'their transcript is empty'}.",
                          seen)
            elif not has_ctc:
                self._require_ctc_head("D without a first-pass hypothesis (it starts from the CTC reading)")
        for b in list(words) + list(ids):  # a hypothesis longer than its speech can hold is cut
            capacity = speech_capacity(int(lengths[b]))
            if b in words:
                confidences = rows[b].confidences or [1.0] * len(words[b])
                words[b], kept, cut = cut_to_capacity(words[b], confidences, capacity)
                rows[b] = FirstPassHypothesis(rows[b].text, rows[b].words[: len(kept)], kept if rows[b].confidences
                                              else [], rows[b].score)
            else:
                cut = len(ids[b]) > capacity
                ids[b] = ids[b][:capacity]
            if cut:
                warn_once(f"D: a first-pass hypothesis is longer than its speech can hold ({capacity} tokens for "
                          f"{capacity * frame_seconds(self.config.stack_factor):.1f} s): it is cut there.", seen)
        # confidences the hypotheses do not bring are read off the audio: one alignment for all such rows
        unscored = {b: [t for word in words[b] for t in word] for b in words if not rows[b].confidences}
        unscored.update(ids)
        token_confidences, token_frames = self._token_confidences(states, lengths, prefix, prefix_mask, config,
                                                                  unscored, log_probs)
        reading = self.ctc_read(states, lengths) if fallback and has_ctc else None
        starts, frames, hints = [], [], []
        for b in range(batch):
            if b in words:
                confidences = rows[b].confidences or word_minimum(words[b], token_confidences[b])
                masked = [c < config.anchor_threshold for c in confidences]
                start, hint = deliberation_start(words[b], masked, slack, mask_id)
                starts.append(start)
                hints.append(hint)
                frames.append([-1] * len(start))
            elif b in ids or reading is not None:
                tokens = ids[b] if b in ids else reading.tokens[b]
                confidences = token_confidences[b] if b in ids else reading.confidences[b]
                where = token_frames[b] if b in ids else reading.frames[b]
                kept = [c >= config.anchor_threshold for c in confidences]
                starts.append([t if keep else mask_id for t, keep in zip(tokens, kept)] + [mask_id] * slack)
                hints.append([-1 if keep or b not in ids else t for t, keep in zip(tokens, kept)] + [-1] * slack)
                frames.append(list(where) + [-1] * slack)
            else:
                starts.append([])
                hints.append([])
                frames.append([])
        # each row's answer: room for its start and an end of text (never less than gen_length, unless the caller set
        # gen_length: then a start is cut to it); a batch is as long as its longest row, whose extra positions the
        # others do not see, so that a row decodes the same in any batch
        if "gen_length" in config.explicit:
            room = max(0, config.gen_length - slack)
            starts = [s if len(s) <= config.gen_length else s[:room] + [mask_id] * min(slack, config.gen_length)
                      for s in starts]
            hints = [h if len(h) <= config.gen_length else h[:room] + [-1] * min(slack, config.gen_length)
                     for h in hints]
            own = [config.gen_length] * batch
        else:
            own = [max(config.gen_length, len(s) + 1) for s in starts]
        if max(own) != config.gen_length:
            config = copy.deepcopy(config)
            config.gen_length = config.block_length = max(own)
        start = torch.full((batch, config.gen_length), self.config.eos_token_id, dtype=torch.long)
        hinted = torch.full((batch, config.gen_length), -1, dtype=torch.long)
        for b, (ids_b, hints_b) in enumerate(zip(starts, hints)):
            start[b, : len(ids_b)] = torch.tensor(ids_b, dtype=torch.long)
            hinted[b, : len(hints_b)] = torch.tensor(hints_b, dtype=torch.long)
        prior = None
        if has_ctc and (getattr(config, "ctc_fusion", 0.0) > 0 or getattr(config, "ctc_top_k", None) is not None):
            prior = self._slot_prior(frames, log_probs, config)
        answer_lengths = None if len(set(own)) == 1 else torch.tensor(own)
        # a decoder trained with first-pass hints reads the first pass's token at each slot it re-predicts;
        # `first_pass_bias` favours that token in any decoder
        reads = getattr(self.config, "first_pass_hints", False)
        used = reads or getattr(config, "first_pass_bias", 0.0)
        hinted = hinted if used and bool((hinted >= 0).any()) else None
        return config, start, prior, answer_lengths, hinted

    def _chosen_hypotheses(self, prefix, prefix_mask, config, rows: list) -> list:
        """Each row's one hypothesis: an N-best list rescored by the decoder (`rescore_weight`), or its best."""
        lists = [b for b, r in enumerate(rows) if isinstance(r, (list, tuple)) and r
                 and isinstance(r[0], FirstPassHypothesis)]
        if not lists:
            return list(rows)
        chosen = list(rows)
        if getattr(config, "rescore_weight", None) is not None:
            picked = self.rescore(prefix[lists], prefix_mask[lists], [rows[b] for b in lists],
                                  float(config.rescore_weight), int(config.rescore_passes))
        else:
            picked = [rows[b][0] for b in lists]
        for b, hypothesis in zip(lists, picked):
            chosen[b] = hypothesis
        return chosen

    def _token_confidences(self, states, lengths, prefix, prefix_mask, config, rows: dict, log_probs):
        """({row: confidence of each token}, {row: its frame}) of hypotheses given as tokens: from a CTC forced
        alignment (0 and no frame for a token the CTC cannot write), or without a CTC head the decoder's own
        confidence in each token, reading the whole unmasked hypothesis (frames -1)."""
        if not rows:
            return {}, {}
        order = sorted(rows)
        if log_probs is None:
            values = self._decoder_confidences(prefix[order], prefix_mask[order], [rows[b] for b in order], config)
            return dict(zip(order, values)), {b: [-1] * len(rows[b]) for b in order}
        lookup = {token: cls for cls, token in enumerate(self.class_token_ids())}
        confidences, frames = {}, {}
        spans_rows = self.align_tokens(states[order], lengths[order], [rows[b] for b in order], log_probs[order])
        for b, spans in zip(order, spans_rows):
            conf, where = [], []
            for token, span in zip(rows[b], spans):
                if span is None:
                    conf.append(0.0)
                    where.append(-1)
                    continue
                probs = log_probs[b, span.start: span.end, lookup[token]]
                conf.append(span.confidence)
                where.append(span.start + int(probs.argmax()))
            confidences[b], frames[b] = conf, where
        return confidences, frames

    def _decoder_confidences(self, prefix, prefix_mask, rows, config) -> list[list[float]]:
        """Without a CTC head: each hypothesis token's probability under the decoder, which reads the whole unmasked
        hypothesis (one forward pass)."""
        width = max((len(r) for r in rows), default=0) + 1
        canvas = torch.full((len(rows), width), self.config.eos_token_id, dtype=torch.long, device=prefix.device)
        for row, ids in enumerate(rows):
            canvas[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        logits = self.decoder.answer_logits(prefix, prefix_mask, canvas)  # the decoder family's reading of a canvas
        probs = torch.softmax(logits.float(), dim=-1).gather(-1, canvas[..., None]).squeeze(-1)
        return [probs[row, : len(ids)].tolist() for row, ids in enumerate(rows)]

    def _slot_prior(self, frames: list[list[int]], log_probs: torch.Tensor, config) -> SlotPrior:
        """The CTC's log-posterior over its non-blank classes (renormalised) at the frame of each start token (-1:
        a slot the CTC did not place), as a prior for D's masked slots (`ctc_fusion`, `ctc_top_k`)."""
        silent = set(self.silent_classes())
        keep = torch.tensor([k for k in range(log_probs.shape[-1]) if k not in silent])
        classes = torch.tensor(self.class_token_ids())[keep]
        prior = torch.zeros(len(frames), config.gen_length, len(keep))
        present = torch.zeros(len(frames), config.gen_length, dtype=torch.bool)
        for row, where in enumerate(frames):
            for slot, frame in enumerate(where[: config.gen_length]):
                if frame >= 0:
                    scores = log_probs[row, frame, keep].float().cpu()
                    prior[row, slot] = scores - torch.logsumexp(scores, -1)
                    present[row, slot] = True
        return SlotPrior(classes, prior, present, float(config.ctc_fusion), config.ctc_top_k)

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


def hypothesis_rows(hypothesis, batch: int, drop: set) -> list[list[int] | None]:
    """`decoder_input_ids` as one list of token ids per row (trailing EOS/pad dropped; None: no hypothesis for that
    row): a (B, L) tensor, a list of lists (None entries allowed) or one list for a batch of one."""
    if torch.is_tensor(hypothesis):
        hypothesis = hypothesis.tolist() if hypothesis.dim() == 2 else [hypothesis.tolist()]
    rows = [list(hypothesis)] if hypothesis and isinstance(hypothesis[0], int) else list(hypothesis)
    if len(rows) != batch:
        raise ValueError(f"decoder_input_ids holds {len(rows)} hypotheses for a batch of {batch} audios.")
    out = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        row = list(row.tolist() if torch.is_tensor(row) else row)
        while row and row[-1] in drop:
            row = row[:-1]
        out.append([int(t) for t in row])
    return out


def as_first_pass(item) -> FirstPassHypothesis | None:
    """`item` as this module's `FirstPassHypothesis` (a first pass made by another copy of this code, e.g. the
    package's while the model runs its checkpoint's remote code, has the same fields), or None when it is none."""
    if isinstance(item, FirstPassHypothesis):
        return item
    if all(hasattr(item, name) for name in ("text", "words", "confidences")):
        return FirstPassHypothesis(str(item.text), list(item.words), [float(c) for c in item.confidences],
                                   float(getattr(item, "score", 0.0)))
    return None


def word_minimum(word_ids: list[list[int]], token_confidences: list[float]) -> list[float]:
    """Each word's confidence: the lowest of its tokens' (in order)."""
    out, index = [], 0
    for ids in word_ids:
        out.append(min(token_confidences[index: index + len(ids)], default=1.0))
        index += len(ids)
    return out


__all__ = ["WhisperLladaGenerationMixin", "CTCReading", "audio_lengths_from_features", "hypothesis_rows",
           "accept_whisper_options", "stream_answer", "WHISPER_OPTIONS"]
