"""Processor for whisper-llada: Whisper log-mel features + the decoder's tokenizer, the LLaDA-Instruct chat prompt with
a speech placeholder, training labels (answer + EOS padding) and transcript decoding."""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, PretrainedConfig, ProcessorMixin

try:
    from .configuration_whisper_llada import DEFAULT_PROMPT
    from .processing_ctc_units import CTCUnits
except ImportError:  # imported as a plain top-level module
    from configuration_whisper_llada import DEFAULT_PROMPT
    from processing_ctc_units import CTCUnits

logger = logging.getLogger(__name__)

SPEECH_PLACEHOLDER = "<|speech|>"

# The chat template of LLaDA-8B-Instruct (tokenizer_config.json), used for small tokenizers built here.
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)
LLADA_SPECIAL_TOKENS = ["<|startoftext|>", "<|mdm_mask|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


class AudioInputError(ValueError):
    """Audio that cannot be transcribed (unreadable, empty, NaN, wrong shape/dtype, too long)."""


def load_audio(source: Any, sampling_rate: int = 16000) -> np.ndarray:
    """Returns mono float32 audio at `sampling_rate` from a path, raw bytes, a numpy array / tensor (assumed to be at
    `sampling_rate`), or a dict: `{"raw" | "array": ndarray, "sampling_rate": int}` or `{"bytes", "path"}` (the
    `datasets` `Audio(decode=False)` form). Raises `AudioInputError` naming the source and what was wrong."""
    name, rate = "<array>", sampling_rate
    if isinstance(source, dict):
        if "raw" in source or "array" in source:
            if "sampling_rate" not in source:
                raise AudioInputError(
                    f"An audio dict needs 'raw' (or 'array') and 'sampling_rate', or 'bytes'/'path'; got keys {sorted(source)}."
                )
            source, rate = source.get("raw", source.get("array")), int(source["sampling_rate"])
        elif source.get("bytes") is not None:
            name, source = source.get("path") or "<bytes>", source["bytes"]
        elif source.get("path"):
            source = source["path"]
        else:
            raise AudioInputError(f"Audio <audio dict> has neither samples nor bytes nor a path: keys {sorted(source)}.")
    if isinstance(source, (str, os.PathLike, bytes, bytearray)):
        audio, rate, name = _read_audio_file(source, name)
    elif isinstance(source, (np.ndarray, torch.Tensor, list, tuple)):
        audio = _as_mono(source, name)
    else:
        raise TypeError(f"Audio must be a path, bytes, an array or an audio dict, got {type(source).__name__}.")
    if audio.size == 0:
        raise AudioInputError(f"Audio {name} is empty.")
    if np.isnan(audio).all():
        raise AudioInputError(f"Audio {name}: all {audio.size} samples are NaN.")
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise AudioInputError(f"Audio {name}: {bad} of {audio.size} samples are NaN or infinite.")
    if rate <= 0:
        raise AudioInputError(f"Audio {name}: invalid sampling rate {rate}.")
    if rate != sampling_rate:
        import soxr

        audio = soxr.resample(audio, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _read_audio_file(source, name: str) -> tuple[np.ndarray, int, str]:
    """Decodes a file path or encoded bytes with soundfile; multi-channel audio is averaged to mono."""
    import soundfile

    if isinstance(source, (bytes, bytearray)):
        name = "<bytes>" if name == "<array>" else name
        if len(source) == 0:
            raise AudioInputError(f"Audio {name} is empty (0 bytes).")
        handle = io.BytesIO(source)
    else:
        name = str(source)
        if not os.path.exists(source):
            raise AudioInputError(f"Audio file not found: {source}")
        if os.path.isdir(source):
            raise AudioInputError(f"Audio path {source} is a directory, not an audio file.")
        if os.path.getsize(source) == 0:
            raise AudioInputError(f"Audio file {source} is empty (0 bytes).")
        handle = source
    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError ...
        detail = str(error).split(": ")[-1] if isinstance(source, (bytes, bytearray)) else str(error)
        raise AudioInputError(f"Could not read audio {name}: unreadable or corrupt ({detail}).") from error
    return data.mean(axis=1), rate, name


MAX_CHANNELS = 8  # a 2-D array is (samples, channels) or (channels, samples) with at most this many channels


def _as_mono(array: Any, name: str) -> np.ndarray:
    """A waveform array as mono float32: 1-D as is; 2-D (samples, channels) or (channels, samples) averaged over the
    channel axis, the short one, which must have at most `MAX_CHANNELS` entries (a batch is a list of arrays)."""
    if torch.is_tensor(array):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype.kind == "i":  # signed integer PCM
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    elif array.dtype.kind == "u":  # unsigned integer PCM (e.g. 8-bit WAV data): centred on the middle value
        middle = (float(np.iinfo(array.dtype).max) + 1.0) / 2.0
        array = (array.astype(np.float32) - middle) / middle
    elif array.dtype.kind != "f":
        raise AudioInputError(f"Audio {name} must be a float (or integer PCM) waveform, got dtype {array.dtype}.")
    elif np.isfinite(array).any() and float(np.max(np.abs(array[np.isfinite(array)]))) > 2.0:
        peak = float(np.max(np.abs(array[np.isfinite(array)])))  # (non-finite samples are refused further on)
        logger.warning(
            "Audio %s: float samples reach %.0f, but float audio is read as [-1, 1]%s. Scale it (e.g. divide "
            "16-bit values by 32768) or pass the integer array itself, which is scaled for you.", name, peak,
            " (this looks like unscaled 16-bit PCM)" if peak <= 32768 else "")
    if array.ndim == 2:  # (channels, samples) or (samples, channels): average over the short axis
        if min(array.shape) > MAX_CHANNELS:
            raise AudioInputError(
                f"Audio {name} has shape {tuple(array.shape)}: a 2-D array is read as one multi-channel clip, "
                f"(samples, channels) or (channels, samples) with at most {MAX_CHANNELS} channels. To pass a batch, "
                "give a list of 1-D arrays."
            )
        array = array.mean(axis=0 if array.shape[0] < array.shape[1] else 1)
    elif array.ndim != 1:
        raise AudioInputError(f"Audio {name} must be 1-D (mono) or 2-D (multi-channel), got shape {array.shape}.")
    return array.astype(np.float32)


def decode_transcript(tokenizer, ids, stop_ids, drop_ids) -> str:
    """Decodes one generated row: cut at the first stop id (EOS/EOT), drop mask/pad ids, skip special tokens."""
    kept = []
    for token in ids:
        if token in stop_ids:
            break
        if token not in drop_ids:
            kept.append(token)
    return tokenizer.decode(kept, skip_special_tokens=True).strip()


class WhisperLladaProcessor(ProcessorMixin):
    """WhisperFeatureExtractor + the decoder's tokenizer.

    - `processor(audio=..., sampling_rate=...)` -> `input_features` (B, n_mels, 3000) + `attention_mask` (B, 3000);
      audio over the encoder's 30 s window is rejected, not silently truncated.
    - `processor(text=[...])` -> `labels`: transcript ids + EOS, padded with EOS (the padding is part of the loss);
      with `ctc_units` (the ids of a `CTCUnits` set), the transcript is spelled in those units, which are then both
      the CTC head's classes and what the decoder writes.
    - `prompt_ids()` -> the chat-prompt ids before and after the speech embeddings (the decoder's chat template, the
      speech right before the user turn's end of turn: `end_of_turn_token`, <|eot_id|> for LLaDA-Instruct).
    - `mask_token` / `end_of_turn_token`: the decoder family's special tokens (decoder_families.py), saved in
      processor_config.json.
    - `batch_decode(ids)` cuts at EOS/EOT and drops mask/pad ids.
    """

    attributes = ["feature_extractor", "tokenizer"]

    def __init__(self, feature_extractor=None, tokenizer=None, prompt: str = DEFAULT_PROMPT,
                 ctc_units: list[int] | None = None, mask_token: str | None = "<|mdm_mask|>",
                 end_of_turn_token: str | None = "<|eot_id|>", **kwargs):
        self.prompt = prompt
        self.ctc_units = None if ctc_units is None else [int(i) for i in ctc_units]
        # the decoder family's special tokens (decoder_families.py): LLaDA's by default
        self.mask_token = mask_token
        self.end_of_turn_token = end_of_turn_token
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @property
    def units(self) -> CTCUnits | None:
        """The `CTCUnits` answers are spelled in (`ctc_units`), or None: the tokenizer's own tokens."""
        if self.ctc_units is None:
            return None
        if getattr(self, "_units", None) is None or self._units.ids != sorted(set(self.ctc_units)):
            self._units = CTCUnits(self.tokenizer, self.ctc_units)
        return self._units

    def to_dict(self) -> dict:
        units = self.__dict__.pop("_units", None)  # a cache holding the tokenizer: not part of the saved config
        try:
            return super().to_dict()
        finally:
            if units is not None:
                self._units = units

    def encode_text(self, text: str) -> list[int]:
        """A transcript's answer ids (no EOS): spelled in `ctc_units` when the processor has them."""
        units = self.units
        if units is not None:
            return units.segment(text)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @classmethod
    def _load_tokenizer_from_pretrained(cls, sub_processor_type, pretrained_model_name_or_path, subfolder="", **kwargs):
        # AutoTokenizer reads the model's config.json to pick a tokenizer class; in a whisper-llada checkpoint that
        # config is remote code, so `WhisperLladaProcessor.from_pretrained(path)` would ask the trust_remote_code
        # question just to load a tokenizer whose tokenizer_config.json already names its class. A bare config
        # skips that lookup.
        kwargs.setdefault("config", PretrainedConfig())
        return super()._load_tokenizer_from_pretrained(sub_processor_type, pretrained_model_name_or_path, subfolder,
                                                       **kwargs)

    # -- special ids -------------------------------------------------------------------------------------------------

    def _token_id(self, token: str) -> int | None:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        return None if token_id is None or token_id == self.tokenizer.unk_token_id else token_id

    @property
    def mask_token_id(self) -> int | None:
        """The decoder's mask token (`mask_token`; None for a family without one)."""
        return self._token_id(self.mask_token) if self.mask_token else None

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def eot_token_id(self) -> int | None:
        """The chat template's end of turn (`end_of_turn_token`), which also ends a transcript."""
        return self._token_id(self.end_of_turn_token) if self.end_of_turn_token else None

    # -- prompt ------------------------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids of the chat prompt before and after the speech embeddings."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("The tokenizer has no chat template; use LLaDA-Instruct's (see LLADA_CHAT_TEMPLATE).")
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": (prompt or self.prompt) + SPEECH_PLACEHOLDER}],
            tokenize=False,
            add_generation_prompt=True,
        )
        if text.count(SPEECH_PLACEHOLDER) != 1:
            raise ValueError("The chat template must keep the speech placeholder exactly once.")
        before, after = text.split(SPEECH_PLACEHOLDER)
        encode = lambda part: self.tokenizer(part, add_special_tokens=False)["input_ids"]  # noqa: E731
        return encode(before), encode(after)

    # -- audio and labels --------------------------------------------------------------------------------------------

    def __call__(self, audio=None, text=None, sampling_rate: int | None = None, return_tensors="pt", **kwargs):
        if audio is None and text is None:
            raise ValueError("WhisperLladaProcessor needs `audio` and/or `text`.")
        output = BatchFeature()
        if audio is not None:
            output.update(self.extract_features(audio, sampling_rate))
        if text is not None:
            output["labels"] = self.make_labels(text, max_length=kwargs.get("max_label_length"))
        return output

    def extract_features(self, audio, sampling_rate: int | None = None) -> BatchFeature:
        fe = self.feature_extractor
        rate = sampling_rate or fe.sampling_rate
        # one array is one clip (a 2-D array is multi-channel and downmixed, as the pipeline does); a batch is a list
        single = isinstance(audio, (str, os.PathLike, bytes, bytearray, dict, np.ndarray, torch.Tensor))
        items = [audio] if single else list(audio)
        if sampling_rate is None and any(isinstance(item, (np.ndarray, torch.Tensor, list)) for item in items):
            logger.warning(
                "WhisperLladaProcessor: audio arrays were passed without `sampling_rate`; they are read as %d Hz. Pass "
                "sampling_rate=... (audio at another rate is transcribed as garbage; files carry their own rate).",
                fe.sampling_rate)
        waves = []
        for index, item in enumerate(items):
            wave = load_audio(item if not isinstance(item, (np.ndarray, torch.Tensor)) else
                              {"array": item, "sampling_rate": rate}, fe.sampling_rate)
            if len(wave) > fe.n_samples:
                raise AudioInputError(
                    f"Audio item {index} is {len(wave) / fe.sampling_rate:.2f} s long ({len(wave)} samples at "
                    f"{fe.sampling_rate} Hz); the Whisper encoder sees at most {fe.n_samples / fe.sampling_rate:g} s "
                    f"({fe.n_samples} samples). Split it into shorter segments (the ASR pipeline and transcribe() do "
                    "that for you)."
                )
            waves.append(wave)
        return self.features_of_waves(waves)

    def features_of_waves(self, waves: list[np.ndarray]) -> BatchFeature:
        """Features of waveforms already read (`load_audio`: mono float32 at the feature extractor's rate, at most
        30 s): `input_features` (B, n_mels, 3000) and `attention_mask` (B, 3000)."""
        fe = self.feature_extractor
        return fe(waves, sampling_rate=fe.sampling_rate, return_attention_mask=True, return_tensors="pt")

    def make_labels(self, text, max_length: int | None = None) -> torch.LongTensor:
        """Answer ids + EOS, right-padded with EOS to the longest (or `max_length`, truncating)."""
        texts = [text] if isinstance(text, str) else list(text)
        eos = self.eos_token_id
        rows = []
        for index, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"Transcript {index} is empty or not a string: {t!r}.")
            ids = self.encode_text(t.strip()) + [eos]
            rows.append(ids[:max_length] if max_length else ids)
        width = max_length or max(len(r) for r in rows)
        return torch.tensor([r + [eos] * (width - len(r)) for r in rows], dtype=torch.long)

    # -- decoding ----------------------------------------------------------------------------------------------------

    def batch_decode(self, ids, **kwargs) -> list[str]:
        if torch.is_tensor(ids):
            ids = ids.tolist()
        stop = {i for i in (self.eos_token_id, self.eot_token_id) if i is not None}
        drop = {i for i in (self.mask_token_id, self.tokenizer.pad_token_id) if i is not None}
        return [decode_transcript(self.tokenizer, row, stop, drop) for row in ids]

    def decode(self, ids, **kwargs) -> str:
        if torch.is_tensor(ids):
            ids = ids.tolist()
        return self.batch_decode([ids])[0]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_features", "attention_mask", "labels"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Registers the class for `AutoProcessor` first, so that processor_config.json carries the `auto_map` and
        `AutoProcessor.from_pretrained(..., trust_remote_code=True)` builds this class (not a bare tokenizer)."""
        self.register_for_auto_class()
        return super().save_pretrained(save_directory, *args, **kwargs)


def build_llada_style_tokenizer(tokenizer_file: str):
    """A fast tokenizer for small LLaDA-architecture decoders: any `tokenizer.json` (e.g. Whisper tiny.en's) plus
    LLaDA's special tokens (<|mdm_mask|>, <|eot_id|>, header tokens, BOS) and LLaDA-Instruct's chat template.
    EOS/pad is the base tokenizer's <|endoftext|>."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)
    tokenizer.add_special_tokens(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "additional_special_tokens": LLADA_SPECIAL_TOKENS[1:]}
    )
    tokenizer.chat_template = LLADA_CHAT_TEMPLATE
    return tokenizer


# ChatML (SmolLM2, Qwen, ...) without a default system message: the user turn, then the assistant header.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def mask_predictor_tokenizer(tokenizer, mask_token_id: int, mask_token: str = "<|mdm_mask|>", chat_template=None):
    """A causal LM's fast tokenizer made fit for a masked-diffusion decoder converted from that LM: the unused special
    token `mask_token_id` (e.g. one of SmolLM2's code/Jupyter tokens, ids 3-16) is renamed `<|mdm_mask|>`, so the
    vocabulary (and the embedding matrix) keep their size. `chat_template` replaces the tokenizer's (default: keep it)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    entry = next((t for t in state["added_tokens"] if t["id"] == mask_token_id), None)
    if entry is None or not entry.get("special"):
        raise ValueError(f"Token id {mask_token_id} is not a special token of this tokenizer: pick an unused special id.")
    old = entry["content"]
    entry["content"] = mask_token
    vocab = state["model"].get("vocab")
    if isinstance(vocab, dict) and vocab.get(old) == mask_token_id:
        del vocab[old]
        vocab[mask_token] = mask_token_id
    converted = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token or tokenizer.eos_token,
        unk_token=tokenizer.unk_token,
    )
    converted.chat_template = chat_template or tokenizer.chat_template
    if converted.convert_tokens_to_ids(mask_token) != mask_token_id:
        raise ValueError(f"Renaming token {mask_token_id} ({old!r}) to {mask_token!r} failed.")
    return converted


__all__ = ["WhisperLladaProcessor", "load_audio", "build_llada_style_tokenizer", "mask_predictor_tokenizer",
           "AudioInputError", "CHATML_TEMPLATE"]
