"""Speech to text with whisper-llada: the one transcription path used by the ASR pipeline, eval_hf.py and bench_hf.py.

    audio (any length) -> split_long_audio: windows that fit the encoder, cut in pauses
                       -> processor: log-mel features (B, n_mels, 3000)
                       -> generate_window: model.generate with one resolved generation config (D may start from a
                          first-pass hypothesis); with timestamps, each answer token's time from a CTC alignment
                       -> processor.batch_decode, windows joined per audio; words with (start, end) offset by their
                          window's start (`return_timestamps="word"`), or one chunk per window (`True`)

Long audio. Whisper's seq2seq chunking merges overlapping windows by their timestamp/token alignment; a masked-diffusion
decoder has no timestamps, so windows here do not overlap. Each window ends in the quietest 300 ms (a pause, found
on the smoothed frame energy) within its last `stride_length_s` seconds, so no word is cut in two, decoded twice or
dropped; the window texts are joined with a space. Audio up to the encoder's 30 s window is one window, except for
the decodings that run the decoder when the model records a shorter `max_window_s` (the longest audio its decoder
trained on): their windows are at most that long, since a decoder reading a longer window than it learned to ends its
answer early (the demo model trained on utterances up to 17.3 s; 2026-12-07 run in BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.pipelines.base import ChunkPipeline

try:
    from .alignment_whisper_llada import word_chunks
    from .decoder_families import family
    from .generation_whisper_llada import accept_whisper_options
    from .processing_whisper_llada import WhisperLladaProcessor, load_audio
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from alignment_whisper_llada import word_chunks
    from decoder_families import family
    from generation_whisper_llada import accept_whisper_options
    from processing_whisper_llada import WhisperLladaProcessor, load_audio

logger = logging.getLogger(__name__)
_WARNED: set = set()

DEFAULT_CHUNK_LENGTH_S = 20.0  # windows for audio longer than the encoder's 30 s, when chunk_length_s is not given


def decoder_window_s(generation_config) -> float | None:
    """The longest window a decoding should read: the model's `max_window_s` for decodings that run the decoder,
    None (the encoder's 30 s) for CTC's reading and the first pass alone."""
    runs_decoder = getattr(generation_config, "runs_decoder", True)
    return getattr(generation_config, "max_window_s", None) if runs_decoder else None


def split_long_audio(
    wave: np.ndarray,
    sampling_rate: int,
    chunk_length_s: float | None = None,
    stride_length_s: float | None = None,
    max_length_s: float = 30.0,
    window_s: float | None = None,
) -> list[tuple[int, int]]:
    """(start, end) sample ranges that cover `wave` without overlap, each at most `chunk_length_s` long (default: the
    whole audio if it fits `max_length_s` and `window_s`, else `DEFAULT_CHUNK_LENGTH_S` or `window_s`, the shorter).
    `window_s` (`decoder_window_s`: the longest audio the decoder trained on) also caps a longer `chunk_length_s`,
    with a warning. Every cut is placed in the quietest 300 ms stretch (mean energy of 20 ms frames) within the last
    `stride_length_s` seconds of its window (default chunk_length_s / 3), at its quietest 20 ms frame: in the
    longest pause there, when there is one."""
    total = len(wave)
    limit = max_length_s if not window_s else min(max_length_s, window_s)
    if not chunk_length_s:  # None or 0: as transformers reads it, no chunking asked for
        chunk_length_s = None
    if chunk_length_s is None:
        if total <= limit * sampling_rate:
            return [(0, total)]
        chunk_length_s = min(DEFAULT_CHUNK_LENGTH_S, limit)
    if isinstance(stride_length_s, (list, tuple)):
        raise ValueError(
            f"stride_length_s={list(stride_length_s)}: whisper-llada's windows do not overlap (a masked-diffusion "
            "decoder predicts no timestamps to merge overlaps by), so a two-sided [left, right] stride has no meaning "
            "here; pass one number: the stretch at the end of each window in which the cut is placed, in a pause.")
    if not 0 < chunk_length_s <= max_length_s:
        raise ValueError(f"chunk_length_s must be in (0, {max_length_s:g}] (the encoder's window), got {chunk_length_s!r}.")
    if chunk_length_s > limit:
        if (chunk_length_s, limit) not in _WARNED:
            _WARNED.add((chunk_length_s, limit))
            logger.warning(f"chunk_length_s={chunk_length_s:g} is longer than the audio this model's decoder trained "
                           f"on (max_window_s={limit:g}): its windows are cut at {limit:g} s, so that no answer ends "
                           "early (pass max_window_s=30 to decode longer windows anyway).")
        chunk_length_s = limit
        if stride_length_s is not None and stride_length_s >= chunk_length_s:
            stride_length_s = None
    stride_length_s = chunk_length_s / 3 if stride_length_s is None else stride_length_s
    if not 0 < stride_length_s < chunk_length_s:
        raise ValueError(f"stride_length_s must be in (0, chunk_length_s={chunk_length_s:g}), got {stride_length_s!r}.")
    chunk, search = int(chunk_length_s * sampling_rate), int(stride_length_s * sampling_rate)
    frame = max(1, sampling_rate // 50)  # 20 ms
    energy = np.square(wave[: total - total % frame].astype(np.float64)).reshape(-1, frame).mean(1)
    smooth = np.convolve(energy, np.ones(15) / 15, mode="same")  # 300 ms: pauses between phrases, not stop consonants
    ranges, start = [], 0
    while total - start > chunk:
        lo, hi = (start + chunk - search) // frame, (start + chunk) // frame  # frames the cut may fall in
        pause = lo + int(np.argmin(smooth[lo:hi]))  # the quietest 300 ms ...
        a, b = max(lo, pause - 7), min(hi, pause + 8)
        cut = (a + int(np.argmin(energy[a:b]))) * frame + frame // 2  # ... and its quietest 20 ms frame
        ranges.append((start, cut))
        start = cut
    ranges.append((start, total))
    return ranges


def join_texts(texts: Iterable[str]) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())


def generate_window(model, input_features: torch.Tensor, attention_mask: torch.Tensor,
                    generation_config: GenerationConfig, return_timestamps: bool = False,
                    hypotheses: list | None = None, streamer=None):
    """model.generate on log-mel features (moved to the model's device and encoder dtype): (ids (B, G), token times
    (B, G, 2) in seconds or None). `hypotheses`: a first-pass transcript per row (text, or None) as D's start."""
    extra = {"hypotheses": hypotheses} if hypotheses is not None and any(h is not None for h in hypotheses) else {}
    if streamer is not None:
        extra["streamer"] = streamer
    out = model.generate(input_features=input_features.to(model.device, model.encoder.dtype),
                         attention_mask=attention_mask.to(model.device), generation_config=generation_config,
                         return_dict_in_generate=True, return_timestamps=return_timestamps, **extra)
    return out.sequences, getattr(out, "token_timestamps", None)


def generate_ids(model, input_features: torch.Tensor, attention_mask: torch.Tensor,
                 generation_config: GenerationConfig) -> torch.Tensor:
    """model.generate on log-mel features, moved to the model's device and encoder dtype."""
    return generate_window(model, input_features, attention_mask, generation_config)[0]


def window_words(processor, ids: list[int], times, offset: float, end: float) -> list[dict]:
    """A window's words with their times (`alignment_whisper_llada.word_chunks`), offset by the window's start."""
    stops = {i for i in (processor.eos_token_id, processor.eot_token_id) if i is not None}
    drop = {i for i in (processor.mask_token_id, processor.tokenizer.pad_token_id) if i is not None}
    length = next((i for i, token in enumerate(ids) if token in stops), len(ids))
    kept = [i for i in range(length) if ids[i] not in drop]
    # each token as the transcript's decoding writes it: special tokens (the CTC blank a decoder writes to delete a
    # slot, among them) are no text
    pieces = [processor.tokenizer.decode([ids[i]], skip_special_tokens=True) for i in kept]
    spans = [None if times is None or math.isnan(float(times[i][0])) else (float(times[i][0]), float(times[i][1]))
             for i in kept]
    return word_chunks(pieces, spans, offset=offset, end_of_audio=end)


def processor_for(model, feature_extractor, tokenizer) -> WhisperLladaProcessor:
    """The model's processor from its feature extractor and tokenizer (what a pipeline loads): its decoder family's
    special tokens, answers spelled in the CTC's units when the model writes them (`config.answer_units`)."""
    units = None
    if getattr(model.config, "answer_units", False):
        units = [i for i in model.config.ctc_token_ids if i != model.config.ctc_blank_id]
    tokens = family(model.config.decoder_type)
    return WhisperLladaProcessor(feature_extractor, tokenizer, ctc_units=units, mask_token=tokens.mask_token,
                                 end_of_turn_token=tokens.end_of_turn)


def transcribe(
    model,
    processor: WhisperLladaProcessor,
    audios: list,
    chunk_length_s: float | None = None,
    stride_length_s: float | None = None,
    batch_size: int | None = None,
    generation_config: GenerationConfig | str | None = None,
    return_timestamps: bool | str = False,
    hypotheses: list[str | None] | None = None,
    stats: dict | None = None,
) -> list:
    """Texts of `audios` (paths, arrays at the processor's rate, audio dicts; any length). Long audio is split
    (`split_long_audio`); all windows are decoded in batches of `batch_size` (default: all at once) with
    `generation_config` (a resolved one, a preset or "B,kv_cache=dual"-style string, or None: the model's defaults),
    resolved once (`model.resolve_decoding`).

    `return_timestamps="word"` (or True: one chunk per window) returns `{"text", "chunks"}` per audio instead of its
    text. `hypotheses`: a first-pass transcript per audio (or None) as D's start, put in the model's transcript form
    (an empty one falls back to the CTC reading); an audio of several windows keeps D's CTC start. `stats` (a dict) counts `cut_answers` (answers that filled their length without an end of text)
    and `hypotheses_used`."""
    config = model.resolve_decoding(generation_config)
    rate = processor.feature_extractor.sampling_rate
    windows, owners, spans = [], [], []
    for index, audio in enumerate(audios):
        wave = load_audio(audio if not isinstance(audio, np.ndarray) else {"array": audio, "sampling_rate": rate}, rate)
        own = hypotheses is not None and hypotheses[index] is not None  # a hypothesis covers its whole audio
        ranges = split_long_audio(wave, rate, chunk_length_s, stride_length_s,
                                  window_s=None if own else decoder_window_s(config))
        for start, end in ranges:
            windows.append(wave[start:end])
            owners.append(index)
            spans.append((start / rate, end / rate, len(ranges)))
    stats = stats if stats is not None else {}
    step = batch_size or max(1, len(windows))
    texts, chunks = [], []
    for first in range(0, len(windows), step):
        features = processor.features_of_waves(windows[first : first + step])
        firsts = None
        if hypotheses is not None:
            firsts = [hypotheses[owners[w]] if spans[w][2] == 1 else None for w in range(first, first + len(features[
                "input_features"]))]
            stats["hypotheses_used"] = stats.get("hypotheses_used", 0) + sum(
                bool(h if isinstance(h, str) else getattr(h, "words", None) or getattr(h, "text", "").strip())
                for h in firsts if h is not None)
        ids, times = generate_window(model, features["input_features"], features["attention_mask"], config,
                                     bool(return_timestamps), firsts)
        stats["cut_answers"] = stats.get("cut_answers", 0) + count_cut(ids, model.config)
        window_texts = processor.batch_decode(ids)
        texts.extend(window_texts)
        if return_timestamps:
            for row, text in enumerate(window_texts):
                start, end, _ = spans[first + row]
                chunks.append(window_words(processor, ids[row].tolist(), times[row], start, end)
                              if return_timestamps == "word" else [{"text": text, "timestamp": (round(start, 3),
                                                                                             round(end, 3))}])
    joined = [join_texts(t for t, owner in zip(texts, owners) if owner == index) for index in range(len(audios))]
    if not return_timestamps:
        return joined
    return [{"text": text, "chunks": [c for c, owner in zip(chunks, owners) if owner == index for c in c if c["text"]]}
            for index, text in enumerate(joined)]


def count_cut(ids: torch.Tensor, config) -> int:
    """Answers that filled their whole length without an end of text (the model's EOS or end of turn)."""
    stops = torch.tensor([i for i in (config.eos_token_id, config.eot_token_id) if i is not None], device=ids.device)
    return int((~torch.isin(ids, stops).any(-1)).sum())


class _Paired:
    """An input of the pipeline with its own first-pass hypothesis."""

    def __init__(self, audio, hypothesis):
        self.audio, self.hypothesis = audio, hypothesis


class WhisperLladaASRPipeline(ChunkPipeline):
    """`pipeline("automatic-speech-recognition", model=..., trust_remote_code=True)` for whisper-llada.

    Inputs: a file path, raw bytes, a 16 kHz numpy array, or `{"raw" | "array": ndarray, "sampling_rate": int}` at any
    rate (resampled with soxr; stereo is downmixed), one at a time, as a list, or from a generator; `batch_size=N`
    decodes N windows at once. Audio longer than 30 s is split in pauses (`chunk_length_s`, default 20 s when needed;
    0 or None: as transformers, no chunking asked for; `stride_length_s`: the stretch at each window's end where the
    cut is sought; see the module docstring). `return_timestamps="word"` adds `chunks`: each word with its (start, end)
    in seconds from a CTC alignment of the transcript (needs a CTC head); `return_timestamps=True`: one chunk per
    window. `generate_kwargs` (and the top-level `decoding`, `steps`, `gen_length`, ...) are resolved once into the
    model's generation config (`model.resolve_decoding`: unknown names raise before any audio is read);
    `generate_kwargs={"hypothesis": "text"}` starts D from a first-pass transcript (put in the model's transcript
    form), with a list of inputs a list of hypotheses, one per input (None where there is none);
    `generate_kwargs={"streamer": s}` hands every sampler step to a streamer (transformers' `TextDiffusionStreamer`
    shows drafts; it takes one audio at a time). Whisper's `language="en"` and `task="transcribe"` are accepted
    (English transcription is what the model does). Audio is read with soundfile, so neither ffmpeg nor torchaudio is
    needed."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def __call__(self, inputs=None, **kwargs):
        """transformers' pipeline call; a list of hypotheses (`hypothesis`, at the top level or in generate_kwargs)
        goes with a list of inputs, one each."""
        generate_kwargs = dict(kwargs.get("generate_kwargs") or {})
        where = "generate_kwargs" if "hypothesis" in generate_kwargs else "kwargs"
        hypothesis = generate_kwargs.get("hypothesis", kwargs.get("hypothesis"))
        several = isinstance(inputs, (list, tuple))
        if isinstance(hypothesis, (list, tuple)):
            if not several or len(hypothesis) != len(inputs):
                count = len(inputs) if several else 1
                raise ValueError(f"{len(hypothesis)} hypotheses for {count} input(s): pass one hypothesis (or None) per "
                                 "input.")
            inputs = [_Paired(audio, text) for audio, text in zip(inputs, hypothesis)]
            if where == "generate_kwargs":
                generate_kwargs.pop("hypothesis")
                kwargs["generate_kwargs"] = generate_kwargs
            else:
                kwargs.pop("hypothesis")
        elif hypothesis is not None and several and len(inputs) > 1:
            raise ValueError(f"one hypothesis for {len(inputs)} inputs: pass a list of {len(inputs)} hypotheses (None "
                             "where there is none), one per input.")
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, generate_kwargs=None, chunk_length_s=None, stride_length_s=None,
                             return_timestamps=None, **kwargs):
        settings = {**(generate_kwargs or {}), **kwargs}  # decoding, steps, gen_length, ...
        accept_whisper_options(settings)
        streamer = settings.pop("streamer", None)
        if return_timestamps not in (None, False, True, "word"):
            raise ValueError(f"return_timestamps must be True (one chunk per window), 'word' or False, got "
                             f"{return_timestamps!r}.")
        if return_timestamps:
            self.model._require_ctc_head("return_timestamps (a CTC alignment of the transcript)")
        hypothesis = settings.pop("hypothesis", None)
        generation_config = self.model.resolve_decoding(settings.pop("decoding", None),
                                                        settings.pop("generation_config", None), **settings)
        if hypothesis is not None and not getattr(generation_config, "anchored", False):
            raise ValueError(f"a hypothesis is D's start: pass decoding='D' with it, not {generation_config.name}.")
        if hypothesis is not None and not isinstance(hypothesis, str):
            raise ValueError(f"hypothesis must be a transcript (a string), got {type(hypothesis).__name__}.")
        return ({"chunk_length_s": chunk_length_s, "stride_length_s": stride_length_s, "hypothesis": hypothesis,
                 "window_s": decoder_window_s(generation_config)},
                {"generation_config": generation_config, "return_timestamps": return_timestamps,
                 "streamer": streamer},
                {"return_timestamps": return_timestamps})

    @property
    def asr_processor(self) -> WhisperLladaProcessor:
        if getattr(self, "_asr_processor", None) is None:
            self._asr_processor = processor_for(self.model, self.feature_extractor, self.tokenizer)
        return self._asr_processor

    def preprocess(self, inputs, chunk_length_s=None, stride_length_s=None, hypothesis=None, window_s=None):
        if isinstance(inputs, _Paired):  # an input given its own hypothesis (a list of them with a list of inputs)
            inputs, hypothesis = inputs.audio, inputs.hypothesis
        rate = self.feature_extractor.sampling_rate
        wave = load_audio(inputs, rate)
        # a hypothesis covers its whole audio: only the encoder's window limits it
        ranges = split_long_audio(wave, rate, chunk_length_s, stride_length_s,
                                  window_s=window_s if hypothesis is None else None)
        if hypothesis is not None and len(ranges) > 1:
            raise ValueError(f"a hypothesis is D's start for audio of one window; this audio is {len(wave) / rate:.1f} "
                             f"s, {len(ranges)} windows: transcribe it window by window, or without the hypothesis.")
        for number, (start, end) in enumerate(ranges):
            features = self.asr_processor.features_of_waves([wave[start:end]])
            yield {"is_last": number == len(ranges) - 1, "input_features": features["input_features"],
                   "attention_mask": features["attention_mask"], "span": (start / rate, end / rate),
                   "hypothesis": hypothesis}

    def _forward(self, model_inputs, generation_config=None, return_timestamps=None, streamer=None):
        is_last, span, hypothesis = (model_inputs.pop(k) for k in ("is_last", "span", "hypothesis"))
        hypotheses = hypothesis if isinstance(is_last, list) else [hypothesis]  # a list when windows are batched
        ids, times = generate_window(self.model, model_inputs["input_features"], model_inputs["attention_mask"],
                                     generation_config or self.model.resolve_decoding(), bool(return_timestamps),
                                     hypotheses, streamer)
        return {"is_last": is_last, "ids": ids, "times": times, "span": span}

    def postprocess(self, model_outputs, return_timestamps=None):
        texts = [self.asr_processor.batch_decode(output["ids"].reshape(1, -1))[0] for output in model_outputs]
        result = {"text": join_texts(texts)}
        if return_timestamps == "word":
            result["chunks"] = [word for output in model_outputs for word in window_words(
                self.asr_processor, output["ids"].reshape(-1).tolist(), output["times"].reshape(-1, 2),
                *map(float, output["span"]))]
        elif return_timestamps:
            result["chunks"] = [{"text": text, "timestamp": tuple(round(float(t), 3) for t in output["span"])}
                                for text, output in zip(texts, model_outputs) if text]
        return result


__all__ = ["WhisperLladaASRPipeline", "transcribe", "split_long_audio", "generate_ids", "generate_window",
           "window_words", "processor_for", "accept_whisper_options", "DEFAULT_CHUNK_LENGTH_S"]
