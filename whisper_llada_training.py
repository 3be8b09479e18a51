"""Training pieces behind train_hf.py: data (filtered records, streaming), the encoder cache, the collator, the budget
callback, the Trainer (trainable-only saving, a projector learning rate, the CTC loss logged on the side) and the
atomic final save. Each takes what it needs, not train_hf.py's arguments."""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

import whisper_llada_data as wld
from build_whisper_llada import DTYPES
from modeling_whisper_llada import WhisperLladaForConditionalGeneration
from processing_whisper_llada import WhisperLladaProcessor, load_audio
from whisper_llada_io import AudioLoadError, describe_source, make_readable

logger = logging.getLogger("train_hf")


def training_token_ids(dataset, processor: WhisperLladaProcessor, blank_id: int) -> list[int]:
    """The sorted token ids of the training transcripts (as the collator tokenizes them) plus `blank_id`. Streamed data
    (e.g. from the Hub) is read once for it before training."""
    ids = {int(blank_id)}
    texts = dataset["text"] if hasattr(dataset, "__len__") else (record["text"] for record in dataset)
    for text in texts:
        ids.update(processor.tokenizer(wld.normalize_transcript(text), add_special_tokens=False)["input_ids"])
    return sorted(ids)


def training_units(dataset, processor: WhisperLladaProcessor, size: int, blank_id: int):
    """A `CTCUnits` set of `size` decoder tokens chosen from the training transcripts (as the collator normalises
    them), without the blank and the special tokens."""
    from processing_ctc_units import CTCUnits

    texts = dataset["text"] if hasattr(dataset, "__len__") else [record["text"] for record in dataset]
    return CTCUnits.choose(processor.tokenizer, [wld.normalize_transcript(t) for t in texts], size,
                           exclude_ids=[blank_id])


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def load_filtered(specs: list[str], stats: collections.Counter, limit: Optional[int] = None, max_seconds: float = 30.0,
                  max_chars: Optional[int] = None, on_bad: str = "skip", shuffle_buffer: int = 0, seed: int = 0):
    """A datasets.Dataset (local specs) or a streamed datasets.IterableDataset (any Hub spec) of filtered records
    (`whisper_llada_data.record_problem`); skipped records are counted in `stats`. Streamed data is shuffled with a
    buffer of `shuffle_buffer` records (0: read in file order) and `seed` (`streamed_dataset`)."""
    if any(str(s).startswith("hub:") for s in specs):
        return streamed_dataset(specs, stats, limit, max_seconds, max_chars, on_bad, shuffle_buffer, seed)
    import datasets

    sources = itertools.chain.from_iterable(wld.load_records(s) for s in specs)
    records = wld.filter_records(sources, max_seconds=max_seconds, max_chars=max_chars, on_bad=on_bad, stats=stats)
    records = itertools.islice(records, limit) if limit is not None else records
    rows = [{"key": r["key"], "audio": os.fspath(r["audio"]), "text": r["text"], "length": float(r["duration"] or 0.0)}
            for r in records]
    if not rows:
        raise ValueError(f"No usable records in {specs} (skipped: {dict(stats)}).")
    return datasets.Dataset.from_list(rows)


class RecordCheck:
    """`datasets` filter of streamed records: keeps the usable ones (`whisper_llada_data.record_problem`), warns about
    and counts the others in `stats` (in the process that reads them), or raises `BadRecordError` (on_bad="error")."""

    def __init__(self, stats: collections.Counter, max_seconds: Optional[float], max_chars: Optional[int],
                 on_bad: str):
        self.stats, self.max_seconds, self.max_chars, self.on_bad = stats, max_seconds, max_chars, on_bad

    def __call__(self, record: dict) -> bool:
        reason, detail, _ = wld.record_problem(record, self.max_seconds, self.max_chars)
        if reason is None:
            return True
        message = f"{describe_source(record.get('audio'))} (key {record.get('key')!r}): {reason}: {detail}"
        if self.on_bad == "error":
            raise wld.BadRecordError(message)
        logger.warning("skipping record %s", message)
        self.stats[reason] += 1
        return False


def streamed_dataset(specs: list[str], stats: collections.Counter, limit: Optional[int] = None,
                     max_seconds: float = 30.0, max_chars: Optional[int] = None, on_bad: str = "skip",
                     shuffle_buffer: int = 0, seed: int = 0):
    """Training records streamed as one `datasets.IterableDataset`: the Hub specs streamed (local specs too, as
    iterable datasets), shuffled (`shuffle_buffer` > 0: the shard order and a buffer of that many records, with
    `seed`; `set_epoch(n)` reshuffles pass n), bad records skipped and counted (`RecordCheck`), the first `limit`.
    DataLoader workers each read their own shards (datasets splits them), and under several processes the Trainer
    gives each rank its own shards (train_hf sets dispatch_batches=False: accelerate shards a datasets stream with at
    least as many shards as processes; with fewer, every rank reads the stream and keeps its own batches)."""
    import datasets

    parts = []
    for spec in specs:
        if str(spec).startswith("hub:"):
            name, config, split = wld.parse_hub_spec(str(spec))
            hub = wld.hub_dataset(name, config, split, streaming=True)
            parts.append(hub.map(wld.hub_record, remove_columns=list(hub.column_names or [])))
        else:
            rows = [{"key": r["key"], "audio": os.fspath(r["audio"]), "text": r["text"], "duration": r["duration"]}
                    for r in wld.load_records(spec)]
            parts.append(datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=min(len(rows), 8) or 1))
    stream = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    stream = stream.filter(RecordCheck(stats, max_seconds, max_chars, on_bad))
    stream = stream.map(lambda record: {"length": float(record.get("duration") or 0.0)})
    return stream.take(limit) if limit is not None else stream


def encoder_fingerprint(model: WhisperLladaForConditionalGeneration) -> str:
    """Identifies the encoder weights (name + config + a sample of every tensor) for the cache directory name."""
    digest = hashlib.sha1(model.config.encoder_config.to_json_string(use_diff=False).encode())
    for name, tensor in model.encoder.state_dict().items():
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:64].float().cpu().numpy().tobytes())
        digest.update(np.float64(flat.float().sum().item()).tobytes())
    stem = os.path.basename(str(model.config.encoder_name_or_path or "encoder").rstrip("/")) or "encoder"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{digest.hexdigest()[:12]}"


class EncoderCache:
    """On-disk cache of the frozen encoder's output frames: DIR/<fingerprint>/<key>.pt holding
    {"frames": (T_i, d_enc) trimmed to the audio's stacked length, "mel_frames": int}."""

    def __init__(self, directory: str, model: WhisperLladaForConditionalGeneration, dtype: Optional[str] = None):
        self.model = model
        self.directory = Path(directory) / encoder_fingerprint(model)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = DTYPES[dtype] if dtype else None
        self.encoder_calls = 0  # forward calls of the encoder made by the cache
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))
        if safe != str(key):
            safe += "-" + hashlib.sha1(str(key).encode()).hexdigest()[:8]
        return self.directory / f"{safe}.pt"

    @torch.no_grad()
    def compute(self, features: torch.Tensor, attention_mask: torch.Tensor) -> list[dict]:
        encoder = self.model.encoder
        was_training = encoder.training
        encoder.eval()
        try:
            device = next(encoder.parameters()).device
            frames = encoder(features.to(device, encoder.dtype)).last_hidden_state
        finally:
            encoder.train(was_training)
        self.encoder_calls += 1
        lengths = self.model.speech_lengths(attention_mask, frames.shape[0], frames.device)
        k = self.model.config.stack_factor
        mel = attention_mask.long().sum(-1).tolist()
        out = []
        for row in range(frames.shape[0]):
            kept = frames[row, : int(lengths[row]) * k].cpu()
            out.append({"frames": kept.to(self.dtype) if self.dtype else kept.clone(), "mel_frames": int(mel[row])})
        return out

    def load(self, key: str) -> Optional[dict]:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a partial/corrupt entry: recompute it
            return None

    def store(self, key: str, entry: dict) -> None:
        path = self.path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(entry, tmp)
        os.replace(tmp, path)  # atomic: safe with several ranks writing the same entry


class DeliberationExamples:
    """Editor examples of first-pass transcripts for the collator (`TrainingRecipe.deliberation_*`): the first pass's
    hypotheses of each training utterance (tools/first_pass_hypotheses.py: greedy, beam N-best and samples), one of
    them drawn per example, its uncertain and some random words masked with slack slots
    (`generation_llada.deliberation_example`)."""

    def __init__(self, hypotheses: dict[str, list], processor: WhisperLladaProcessor, recipe, mask_id: int,
                 eos_id: int, delete_id: int, hints: bool = False, seed: int = 0):
        self.hypotheses, self.processor, self.recipe, self.hints = hypotheses, processor, recipe, hints
        self.mask_id, self.eos_id, self.delete_id = mask_id, eos_id, delete_id
        self.random = np.random.default_rng(seed)

    @classmethod
    def for_model(cls, model, processor: WhisperLladaProcessor, path: Optional[str]) -> Optional["DeliberationExamples"]:
        """The examples a model's recipe asks for (None when `deliberation_prob` is 0); one clear error when they need
        a hypotheses file or a delete token (the CTC blank) that is not there."""
        recipe = model.config.recipe
        if not recipe.deliberation_prob:
            return None
        if not path:
            raise ValueError("--deliberation_prob needs --first_pass_hypotheses (tools/first_pass_hypotheses.py).")
        if model.config.ctc_blank_id is None:
            raise ValueError("--deliberation_prob: the editor writes the CTC blank where a slot is not needed; this "
                             "model has no CTC head (--ctc_blank_id).")
        return cls(read_first_pass_hypotheses(path), processor, recipe, model.config.mask_token_id,
                   model.config.eos_token_id, model.config.ctc_blank_id, hints=model.config.first_pass_hints)

    def example(self, key: str, reference: str, width: int) -> Optional[tuple[torch.Tensor, ...]]:
        """(inputs (width,), targets (width,), hints (width,)) of one deliberation example for utterance `key` (None:
        no hypotheses, or this sample is not drawn as one)."""
        from generation_deliberation import spell_words
        from generation_llada import deliberation_example

        found = self.hypotheses.get(key)
        if not found or self.random.random() >= self.recipe.deliberation_prob:
            return None
        words, confidences = found[int(self.random.integers(len(found)))]
        if not words:
            return None
        threshold = self.random.random() * self.recipe.deliberation_threshold
        extra = self.random.random() * self.recipe.deliberation_random_mask
        masked = [c < threshold or self.random.random() < extra for c in confidences]
        if not any(masked):  # every example teaches something
            masked[int(self.random.integers(len(masked)))] = True
        encode = self.processor.encode_text
        reference_words = reference.split()
        return deliberation_example(reference_words, words, spell_words(encode, words),
                                    spell_words(encode, reference_words), masked, self.recipe.deliberation_slack,
                                    width, self.mask_id, self.eos_id, self.delete_id)


def read_first_pass_hypotheses(path: str) -> dict[str, list[tuple[list[str], list[float]]]]:
    """{utterance key: [(words, confidences), ...]} of a tools/first_pass_hypotheses.py file: the greedy transcript,
    the beam N-best and the samples, distinct word sequences only."""
    import json

    out = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                entry = json.loads(line)
                found = [entry["greedy"], *entry.get("beam", []),
                         *(h for group in entry.get("samples", {}).values() for h in group)]
                distinct = {}
                for hypothesis in found:
                    distinct.setdefault(tuple(hypothesis["words"]), [float(c) for c in hypothesis["confidences"]])
                out[str(entry["key"])] = [(list(words), confidences) for words, confidences in distinct.items()]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}, line {number}: expected a JSON object with key, greedy, beam and samples "
                                 "(tools/first_pass_hypotheses.py)") from None
    return out


class SpeechCollator:
    """Batches records with the processor: labels from `normalize_transcript(text)`; `input_features` +
    `attention_mask` from the audio, or, with an encoder cache, `encoder_outputs` (zero-padded cached frames) + the
    mel `attention_mask`.
    Each record's audio is checked when it is loaded: audio that fails to decode, or that is longer than
    `max_seconds` (at most the encoder's 30 s window; a manifest's `duration` may under-state it), is dropped from the
    batch, named in a warning and counted in `stats` (skip mode), or raises `BadRecordError` naming the file."""

    def __init__(self, processor: WhisperLladaProcessor, cache: Optional[EncoderCache] = None,
                 max_label_length: Optional[int] = None, on_bad: str = "skip",
                 stats: Optional[collections.Counter] = None, max_seconds: Optional[float] = None,
                 editor: Optional[DeliberationExamples] = None):
        self.processor = processor
        self.editor = editor
        self.cache = cache
        self.max_label_length = max_label_length
        self.on_bad = on_bad
        self.stats = stats if stats is not None else collections.Counter()
        self.bad_records: set[tuple] = set()  # (key, source) of the records found unusable so far
        fe = processor.feature_extractor
        window = fe.n_samples / fe.sampling_rate
        self.max_seconds = min(max_seconds, window) if max_seconds is not None else window
        self.answer_rates: list[float] = []  # answer tokens + EOS per second of each record batched (all passes)
        self.seconds_read: list[float] = []  # the audio seconds of each record batched

    def _audio(self, rows: list[dict]) -> tuple[list[dict], list[np.ndarray]]:
        kept, waves = [], []
        rate = self.processor.feature_extractor.sampling_rate
        for row in rows:
            try:
                wave = load_audio(row["audio"], rate)
            except AudioLoadError as error:
                self._bad(row, wld.REASON_UNREADABLE_AUDIO, str(error), error)
                continue
            seconds = len(wave) / rate
            if seconds > self.max_seconds:
                stated = f" (the data says {row['length']:.2f} s)" if row.get("length") else ""
                detail = f"audio lasts {seconds:.2f} s{stated} > max_seconds={self.max_seconds:g}"
                self._bad(row, wld.REASON_AUDIO_TOO_LONG, detail)
                continue
            waves.append(wave)
            kept.append(row)
        return kept, waves

    def _bad(self, row: dict, reason: str, detail: str, error: Optional[Exception] = None) -> None:
        """Raises (error mode) or warns and counts (skip mode) for a record found unusable at load time."""
        message = f"{describe_source(row['audio'])} (key {row.get('key')!r}): {reason}: {detail}"
        if self.on_bad == "error":
            raise wld.BadRecordError(message) from error
        key = (row.get("key"), describe_source(row["audio"]))
        if key not in self.bad_records:  # a record is read once per epoch: count (and name) it once
            self.bad_records.add(key)
            logger.warning("skipping record %s", message)
            self.stats[reason] += 1

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.cache is None:
            rows, waves = self._audio(rows)
            if not rows:
                raise ValueError("every record of this batch had unusable audio (unreadable or too long)")
            features = self.processor.features_of_waves(waves)
            batch = {"input_features": features.input_features, "attention_mask": features.attention_mask}
        else:
            entries = {row["key"]: self.cache.load(row["key"]) for row in rows}
            missing = [row for row in rows if entries[row["key"]] is None]
            self.cache.hits += len(rows) - len(missing)
            if missing:
                self.cache.misses += len(missing)
                good, waves = self._audio(missing)
                bad = {row["key"] for row in missing} - {row["key"] for row in good}
                rows = [row for row in rows if row["key"] not in bad]
                if good:
                    features = self.processor(audio=waves, sampling_rate=self.processor.feature_extractor.sampling_rate)
                    for row, entry in zip(good, self.cache.compute(features.input_features, features.attention_mask)):
                        self.cache.store(row["key"], entry)
                        entries[row["key"]] = entry
            if not rows:
                raise ValueError("every record of this batch had unusable audio (unreadable or too long)")
            frames = [entries[row["key"]]["frames"] for row in rows]
            width = max(f.shape[0] for f in frames)
            padded = frames[0].new_zeros(len(frames), width, frames[0].shape[-1])
            n_mel = self.processor.feature_extractor.nb_max_frames
            mask = torch.zeros(len(frames), n_mel, dtype=torch.long)
            for i, (f, row) in enumerate(zip(frames, rows)):
                padded[i, : f.shape[0]] = f
                mask[i, : entries[row["key"]]["mel_frames"]] = 1
            batch = {"encoder_outputs": padded, "attention_mask": mask}
        texts = [wld.normalize_transcript(row["text"]) for row in rows]
        batch["labels"] = self.processor(text=texts, max_label_length=self.max_label_length)["labels"]
        self._record_rates(texts, batch["attention_mask"])
        if self.editor is not None:
            self._editor_examples(batch, rows, texts)
        return batch

    def _record_rates(self, texts: list[str], mel_mask: torch.Tensor) -> None:
        """Each record's answer rate (its tokens + EOS per second of audio: 100 mel frames a second), as read: what
        `tokens_per_second` is recorded from when the data is streamed and its durations are not known before."""
        seconds = mel_mask.long().sum(-1).tolist()
        for text, frames in zip(texts, seconds):
            if frames > 0:
                self.answer_rates.append((len(self.processor.encode_text(text)) + 1) / (frames / 100.0))
                self.seconds_read.append(frames / 100.0)

    def _editor_examples(self, batch: dict, rows: list[dict], texts: list[str]) -> None:
        """Rows drawn as deliberation examples get their start (`editor_inputs`, -1 in the other rows) and their
        targets in place of the labels."""
        labels = batch["labels"]
        inputs, hints = torch.full_like(labels, -1), torch.full_like(labels, -1)
        for index, (row, text) in enumerate(zip(rows, texts)):
            example = self.editor.example(row["key"], text, labels.shape[1])
            if example is not None:
                inputs[index], labels[index], hints[index] = example
        if bool((inputs >= 0).any()):
            batch["editor_inputs"] = inputs
            if self.editor.hints:
                batch["editor_hints"] = hints


# ----------------------------------------------------------------------------------------------------------------------
# Callbacks and trainer
# ----------------------------------------------------------------------------------------------------------------------


class BudgetCallback(TrainerCallback):
    """Stops training once `minutes` have passed or `stop_at_step` is reached (all ranks agree); the learning-rate
    schedule still spans `max_steps`, and the Trainer then saves as usual."""

    def __init__(self, minutes: Optional[float] = None, stop_at_step: Optional[int] = None):
        self.seconds = minutes * 60.0 if minutes else None
        self.stop_at_step = stop_at_step
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        over_time = self.seconds is not None and time.time() - self.start > self.seconds
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([1.0 if over_time else 0.0], device=args.device if args.device.type != "mps" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            over_time = bool(flag.item() > 0)
        over_steps = self.stop_at_step is not None and state.global_step >= self.stop_at_step
        if over_time or over_steps:
            if over_time:
                logger.warning("time budget of %.1f min reached at step %d: stopping", self.seconds / 60,
                               state.global_step)
            else:
                logger.warning("stop_at_step %d reached (schedule spans %d steps): stopping", self.stop_at_step,
                               state.max_steps)
            control.should_training_stop = True
            control.should_save = True
        return control


class WhisperLladaTrainer(Trainer):
    """A Trainer that saves through `model.save_pretrained` (keeping `checkpoint_weights="trainable"`) also when the
    Trainer would pass an explicit state dict (DDP wrappers), and always writes the processor."""

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the projector in its own parameter group when --projector_learning_rate is
        set (the schedule scales both groups alike), after the others: the Trainer logs the first group's rate, which
        is then --learning_rate's."""
        lr = self.args.projector_learning_rate
        if lr is None or self.optimizer is not None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            key = ("projector" if name.startswith("projector.") else "rest", name in decay)
            groups.setdefault(key, []).append(param)
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [{"params": params, "weight_decay": self.args.weight_decay if use_decay else 0.0,
              **({"lr": lr} if part == "projector" else {})}
             for (part, use_decay), params in sorted(groups.items(), key=lambda item: item[0][0] == "projector")],
            **optimizer_kwargs,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        """The Trainer's loss; the auxiliary CTC loss, when there is one, is averaged on the side and logged as
        `ctc_loss` (training) or `eval_ctc_loss` (evaluation) next to the total."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        ctc = outputs.get("ctc_loss") if isinstance(outputs, dict) else getattr(outputs, "ctc_loss", None)
        if ctc is not None:
            sums = self.__dict__.setdefault("_ctc_sums", {})
            total, count = sums.get(model.training, (0.0, 0))
            sums[model.training] = (total + float(ctc.detach()), count + 1)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        sums = self.__dict__.get("_ctc_sums", {})
        for training, key in ((True, "loss"), (False, "eval_loss")):
            total, count = sums.pop(training, (0.0, 0))
            if count and key in logs:
                logs[("" if training else "eval_") + "ctc_loss"] = round(total / count, 4)
            elif count:
                sums[training] = (total, count)
        super().log(logs, *args, **kwargs)

    def _issue_warnings_after_load(self, load_result) -> None:
        """On resume, the frozen base weights that `save_pretrained` leaves out of a checkpoint are missing by design
        (they stay as loaded); only a missing weight the checkpoint should hold is worth a warning."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        saved = model.checkpoint_state_dict() if hasattr(model, "checkpoint_state_dict") else None
        if saved is not None:
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if k in saved]
        super()._issue_warnings_after_load(load_result)

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained(output_dir, safe_serialization=True)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        make_readable(output_dir)  # safetensors leaves model.safetensors at mode 0600


def print_skip_summary(title: str, stats: collections.Counter) -> None:
    total = sum(stats.values())
    detail = ", ".join(f"{k}={v}" for k, v in sorted(stats.items())) or "none"
    print(f"[data] {title}: skipped {total} record(s) ({detail})", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# The end of a run
# ----------------------------------------------------------------------------------------------------------------------


def end_distributed() -> None:
    """Under torchrun/accelerate: waits for every rank (rank 0 may still be writing the model), then tears the process
    group down. Exiting with a live gloo/NCCL group can abort a rank at interpreter shutdown ("terminate called
    without an active exception"), which fails the whole launch although training finished."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ExistingModelError(FileExistsError):
    """The run would overwrite a model that is already there (see `check_model_dirs`)."""


def model_files(directory: Union[str, Path]) -> list[str]:
    """Names of the files in `directory` that make it a saved model (empty when it is none)."""
    return [name for name in MODEL_FILES if os.path.isfile(os.path.join(directory, name))]


def check_model_dirs(output_dir: str, final_model_dir: Optional[str], resuming: bool, overwrite: bool) -> str:
    """The final model's directory (default <output_dir>/final). Refuses, before anything is loaded, to overwrite a
    model already in it, or in `output_dir` (where the Trainer saves the last weights) unless the run resumes from a
    checkpoint, without `overwrite` (--overwrite_final_model true)."""
    final_model_dir = final_model_dir or os.path.join(output_dir, "final")
    targets = [("--final_model_dir", final_model_dir)]
    if not resuming:
        targets.append(("--output_dir", output_dir))
    for flag, directory in targets:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ExistingModelError(f"{flag} {directory} exists and is not a directory.")
        found = model_files(directory)
        if found and not overwrite:
            raise ExistingModelError(
                f"{flag} {directory} already holds a model ({', '.join(found)}); refusing to overwrite it. Pass "
                f"--overwrite_final_model true to replace it, or choose another {flag}."
            )
    return final_model_dir


def restore_dtypes(model: torch.nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Casts every parameter and buffer of `model` back to the dtype recorded in `dtypes` (by name)."""
    for name, param in model.named_parameters():
        if name in dtypes and param.dtype != dtypes[name]:
            param.data = param.data.to(dtypes[name])
    for module_name, module in model.named_modules():
        for key, buffer in module._buffers.items():
            name = f"{module_name}.{key}" if module_name else key
            if buffer is not None and name in dtypes and buffer.dtype != dtypes[name]:
                module._buffers[key] = buffer.to(dtypes[name])


def save_final(model, processor, directory: str, dtype: Optional[str] = None) -> None:
    """Writes the model (optionally cast, e.g. float16) + processor, without optimizer state, atomically: everything
    goes into a temporary directory next to `directory` first, which then becomes `directory` (a new or empty one);
    into an existing directory the finished files are moved one by one with `os.replace` (config.json last, stale
    weight shards removed, a README.md there kept), so no half-written file is ever visible there. Files get the
    umask's default permissions (`make_readable`); a model card (README.md) is written unless one is there."""
    from modelcard_whisper_llada import write_model_card

    target = Path(directory).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    # each tensor's dtype, restored after a cast save (e.g. a float32 projector next to bfloat16 base models)
    dtypes = {name: t.dtype for name, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    try:
        if dtype:
            model.to(DTYPES[dtype])
        try:
            model.save_pretrained(staging, safe_serialization=True)
        finally:
            if dtype:
                restore_dtypes(model, dtypes)
        processor.save_pretrained(staging)
        if not (target / "README.md").exists():
            write_model_card(staging)
        make_readable(staging)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if not target.exists():
            os.rename(staging, target)
        else:
            names = sorted((p.name for p in staging.iterdir()), key=lambda n: (n == "config.json", n))
            for name in names:
                if name == "README.md" and (target / name).exists():
                    continue  # as save_pretrained does: keep a model card already there (results, or your own)
                if (target / name).is_dir() and not (target / name).is_symlink():
                    shutil.rmtree(target / name)
                os.replace(staging / name, target / name)
            for stale in target.iterdir():
                if stale.name not in names and stale.is_file() and stale.name.startswith(("model", "pytorch_model")) \
                        and stale.name.endswith((".safetensors", ".safetensors.index.json", ".bin")):
                    stale.unlink()
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    print(f"[train] final model written to {directory} ({size / 2**20:.1f} MiB)", flush=True)
