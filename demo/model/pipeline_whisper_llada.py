"""Speech to text with whisper-llada: the one transcription path used by the ASR pipeline, eval_hf.py and bench_hf.py.

    audio (any length) -> split_long_audio: windows that fit the encoder, cut in pauses
                       -> processor: log-mel features (B, n_mels, 3000)
                       -> generate_ids: model.generate with one resolved generation config
                       -> processor.batch_decode, windows joined per audio

Long audio. Whisper's seq2seq chunking merges overlapping windows by their timestamp/token alignment; a masked-diffusion
decoder has no timestamps, so windows here do not overlap. Each window ends in the quietest 300 ms (a pause, found
on the smoothed frame energy) within its last `stride_length_s` seconds, so no word is cut in two, decoded twice or
dropped; the window texts are joined with a space. Audio up to the encoder's 30 s window is one window.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.pipelines.base import ChunkPipeline

try:
    from .processing_whisper_llada import WhisperLladaProcessor, load_audio
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from processing_whisper_llada import WhisperLladaProcessor, load_audio

DEFAULT_CHUNK_LENGTH_S = 20.0  # windows for audio longer than the encoder's 30 s, when chunk_length_s is not given
UNSUPPORTED_OPTIONS = {
    "return_timestamps": "a masked-diffusion decoder predicts no timestamps",
    "return_language": "the model transcribes English only and predicts no language token",
    "language": "the model transcribes English only",
    "task": "the model only transcribes (no translation task)",
    "return_token_timestamps": "a masked-diffusion decoder predicts no timestamps",
}


def split_long_audio(
    wave: np.ndarray,
    sampling_rate: int,
    chunk_length_s: float | None = None,
    stride_length_s: float | None = None,
    max_length_s: float = 30.0,
) -> list[tuple[int, int]]:
    """(start, end) sample ranges that cover `wave` without overlap, each at most `chunk_length_s` long (default: the
    whole audio if it fits `max_length_s`, else `DEFAULT_CHUNK_LENGTH_S`). Every cut is placed in the quietest 300 ms
    stretch (mean energy of 20 ms frames) within the last `stride_length_s` seconds of its window (default
    chunk_length_s / 3), at its quietest 20 ms frame: in the longest pause there, when there is one."""
    total = len(wave)
    if chunk_length_s is None:
        if total <= max_length_s * sampling_rate:
            return [(0, total)]
        chunk_length_s = DEFAULT_CHUNK_LENGTH_S
    if isinstance(stride_length_s, (list, tuple)):
        raise ValueError(
            f"stride_length_s={list(stride_length_s)}: whisper-llada's windows do not overlap (a masked-diffusion "
            "decoder predicts no timestamps to merge overlaps by), so a two-sided [left, right] stride has no meaning "
            "here; pass one number: the stretch at the end of each window in which the cut is placed, in a pause.")
    if not 0 < chunk_length_s <= max_length_s:
        raise ValueError(f"chunk_length_s must be in (0, {max_length_s:g}] (the encoder's window), got {chunk_length_s!r}.")
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


def generate_ids(model, input_features: torch.Tensor, attention_mask: torch.Tensor,
                 generation_config: GenerationConfig) -> torch.Tensor:
    """model.generate on log-mel features, moved to the model's device and encoder dtype."""
    return model.generate(input_features=input_features.to(model.device, model.encoder.dtype),
                          attention_mask=attention_mask.to(model.device), generation_config=generation_config)


def transcribe(
    model,
    processor: WhisperLladaProcessor,
    audios: list,
    chunk_length_s: float | None = None,
    stride_length_s: float | None = None,
    batch_size: int | None = None,
    generation_config: GenerationConfig | str | None = None,
) -> list[str]:
    """Texts of `audios` (paths, arrays at the processor's rate, audio dicts; any length). Long audio is split
    (`split_long_audio`); all windows are decoded in batches of `batch_size` (default: all at once) with
    `generation_config` (a resolved one, a preset or "B,kv_cache=dual"-style string, or None: the model's defaults),
    resolved once (`model.resolve_decoding`)."""
    config = model.resolve_decoding(generation_config)
    rate = processor.feature_extractor.sampling_rate
    windows, owners = [], []
    for index, audio in enumerate(audios):
        wave = load_audio(audio if not isinstance(audio, np.ndarray) else {"array": audio, "sampling_rate": rate}, rate)
        for start, end in split_long_audio(wave, rate, chunk_length_s, stride_length_s):
            windows.append(wave[start:end])
            owners.append(index)
    step = batch_size or max(1, len(windows))
    texts: list[str] = []
    for first in range(0, len(windows), step):
        features = processor(audio=windows[first : first + step], sampling_rate=rate)
        ids = generate_ids(model, features["input_features"], features["attention_mask"], config)
        texts.extend(processor.batch_decode(ids))
    return [join_texts(t for t, owner in zip(texts, owners) if owner == index) for index in range(len(audios))]


class WhisperLladaASRPipeline(ChunkPipeline):
    """`pipeline("automatic-speech-recognition", model=..., trust_remote_code=True)` for whisper-llada.

    Inputs: a file path, raw bytes, a 16 kHz numpy array, or `{"raw" | "array": ndarray, "sampling_rate": int}` at any
    rate (resampled with soxr; stereo is downmixed), one at a time, as a list, or from a generator; `batch_size=N`
    decodes N windows at once. Audio longer than 30 s is split in pauses (`chunk_length_s`, default 20 s when needed;
    `stride_length_s`: the stretch at each window's end where the cut is sought; see the module docstring).
    `generate_kwargs` (and the top-level `decoding`, `steps`, `gen_length`, ...) are resolved once into the model's
    generation config (`model.resolve_decoding`: unknown names raise before any audio is read). Audio is read with
    soundfile, so neither ffmpeg nor torchaudio is needed."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def _sanitize_parameters(self, generate_kwargs=None, chunk_length_s=None, stride_length_s=None, **kwargs):
        for name, reason in UNSUPPORTED_OPTIONS.items():
            if kwargs.pop(name, None) not in (None, False):
                raise ValueError(f"`{name}` is not supported by whisper-llada: {reason}.")
        settings = {**(generate_kwargs or {}), **kwargs}  # decoding, steps, gen_length, ...
        generation_config = self.model.resolve_decoding(settings.pop("decoding", None),
                                                        settings.pop("generation_config", None), **settings)
        return ({"chunk_length_s": chunk_length_s, "stride_length_s": stride_length_s},
                {"generation_config": generation_config}, {})

    @property
    def asr_processor(self) -> WhisperLladaProcessor:
        if getattr(self, "_asr_processor", None) is None:
            self._asr_processor = WhisperLladaProcessor(self.feature_extractor, self.tokenizer)
        return self._asr_processor

    def preprocess(self, inputs, chunk_length_s=None, stride_length_s=None):
        rate = self.feature_extractor.sampling_rate
        wave = load_audio(inputs, rate)
        ranges = split_long_audio(wave, rate, chunk_length_s, stride_length_s)
        for number, (start, end) in enumerate(ranges):
            features = self.asr_processor(audio=wave[start:end], sampling_rate=rate)
            yield {"is_last": number == len(ranges) - 1, "input_features": features["input_features"],
                   "attention_mask": features["attention_mask"]}

    def _forward(self, model_inputs, generation_config=None):
        is_last = model_inputs.pop("is_last")
        ids = generate_ids(self.model, model_inputs["input_features"], model_inputs["attention_mask"],
                           generation_config or self.model.resolve_decoding())
        return {"is_last": is_last, "ids": ids}

    def postprocess(self, model_outputs):
        texts = [self.asr_processor.batch_decode(output["ids"].reshape(1, -1))[0] for output in model_outputs]
        return {"text": join_texts(texts)}


__all__ = ["WhisperLladaASRPipeline", "transcribe", "split_long_audio", "generate_ids", "DEFAULT_CHUNK_LENGTH_S"]
