"""Evaluation of whisper-llada models: WER and RTFx per (model, decoding, split), resumable. eval_hf.py is its
command line; the steps, each over small dataclasses:

    load_splits   data specs -> `SplitData` (`whisper_llada_eval_inputs`: durations, bad records skipped and named)
    load_models   paths or Hub ids -> `LoadedModel` (`whisper_llada_eval_inputs`: model, processor, identity)
    plan_jobs     one `Job` per (model, decoding, split); decodings resolved per model (`model.resolve_decoding`),
                  long audio and the hypotheses files' run signatures checked before anything is decoded
    decode_job    the job's pending utterances, longest first, in timed batches through `transcribe`; appended
    score_job     WER after Whisper's English normaliser and RTFx from the per-batch timings: one results.json row
    run_jobs      all jobs, the report rewritten after each (`whisper_llada_report`); Ctrl-C or a failure keeps the
                  job in progress as a partial row
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decoder_families import generation_config_classes
from pipeline_whisper_llada import decoder_window_s, split_long_audio, transcribe
from processing_whisper_llada import load_audio
from text_normalization import normalize_text, word_error_counts
from whisper_llada_eval_inputs import AUDIO_ERRORS, EvalError, LoadedModel, SplitData, check_model_argument, \
    cpu_has_native_bf16, load_models, load_splits, resolve_device, safe_name, spread_subset
from whisper_llada_io import describe_source
from whisper_llada_eval_first_pass import check_first_pass, first_pass_texts, write_first_pass
from whisper_llada_eval_shards import Shards, merge_shards, shard_job
from whisper_llada_report import HypothesesFile, new_report, write_report

logger = logging.getLogger("eval_hf")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C while decoding, raised after the report (`report`, with the rows so far) was written."""

    def __init__(self, report: dict):
        super().__init__()
        self.report = report


@dataclass
class EvalOptions:
    """How a run decodes, and what it does with bad data and with the hypotheses of earlier runs."""

    batch_size: int = 8  # utterances per transcribe call
    long_audio: str = "chunk"  # over the encoder's window: "chunk" (long-form), "truncate" or "error"
    on_bad_data: str = "skip"  # "skip" (counted and named) or "error" (stop at the first one)
    overwrite: bool = False  # delete this run's hypotheses files and decode everything afresh
    warmup_batches: int = 1  # untimed batches per model before the first timing
    seed: int = 0  # torch seed (matters only when sampling)
    progress: bool = True  # tqdm bar
    max_utterances: int | None = None  # the first N usable records of each split


@dataclass
class DecodingRequest:
    """The decodings asked for: spec strings for `model.resolve_decoding` ("B", "B,kv_cache=dual", "AR,num_beams=4",
    "steps=16,gen_length=128,block_length=32"), whether they are the defaults (then one that fits no model, or D on a
    model without a CTC head, is skipped silently), and the approximations for every masked-diffusion decoding whose
    spec does not set them itself."""

    specs: list[str]
    defaults: bool = False
    threshold: float | None = None
    kv_cache: str | None = None
    early_stop: bool = False
    limits: dict[str, int] = field(default_factory=dict)  # spec -> decode only N utterances of each split (spread)

    def approximations(self, config) -> dict[str, Any]:
        """The global approximations a resolved `config` has (LLaDA's sampler has all three) and did not set
        explicitly."""
        values = {"threshold": self.threshold, "kv_cache": self.kv_cache, "early_stop": self.early_stop or None}
        return {name: value for name, value in values.items()
                if value is not None and hasattr(config, name) and name not in config.explicit}


@dataclass
class EvalRequest:
    """What to evaluate: models (paths or Hub ids, with their names in the table), splits (data specs), decodings,
    and where (device "cpu"/"cuda[:N]", None: cuda if available; dtype a `DTYPES` name, None: bfloat16 on cuda and
    on a CPU with native bf16, float32 otherwise)."""

    models: list[str]
    labels: list[str]
    data: list[str]
    decodings: DecodingRequest
    device: str | None = None
    dtype: str | None = None
    first_pass: str | None = None  # D also from these first-pass transcripts: whisper:PATH_OR_ID or a .jsonl file


def check_spec(spec: str) -> None:
    """Raises ValueError for a decoding string that no decoder family's generation config can parse (before any model
    is loaded; the values are checked per model by `model.resolve_decoding`); the first family that reads such
    strings says what is wrong."""
    errors = []
    for config_class in generation_config_classes():
        if not config_class.handles(spec):
            continue
        try:
            config_class.parse(spec)
            return
        except (ValueError, TypeError) as error:
            errors.append(error)
    if errors:
        raise errors[0]
    raise ValueError(f"decoding {spec!r}: no decoder family reads it")


# ----------------------------------------------------------------------------------------------------------------------
# Jobs: one (model, decoding, split) each, planned and checked before anything is decoded
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One (model, decoding, split): one row of results.json and one hypotheses file."""

    loaded: LoadedModel
    config: Any  # the resolved generation config of the model's family (`name`, `settings()`)
    data: SplitData
    hypotheses: HypothesesFile
    split_utterances: int = 0  # the whole split's usable utterances (more than `data` holds under --limit)
    first_pass: dict | None = None  # D from a first-pass transcript: {key: FirstPassHypothesis} (--first_pass)

    @property
    def name(self) -> str:
        """The row's decoding: the config's name; "D + first pass" when D starts from a first-pass transcript (with the
        model's deliberation settings when it records them: `refined_decoding`)."""
        return "D + first pass" if self.first_pass is not None else self.config.name


def decoding_kind(model) -> type:
    """The class of the model's resolved generation configs (its decoder family's, as the
    checkpoint's own code defines it); its `handles(spec)` says which decoding strings apply to the model."""
    return type(model.resolve_decoding())


def is_masked_diffusion(kind: type) -> bool:
    """Whether a generation config class is a diffusion one (not the AR-LLM baseline's)."""
    return not kind.handles("AR")


def refined_decoding(loaded: LoadedModel, resolved: list[tuple[str, Any]]) -> list[tuple[str, Any, bool]]:
    """The "D + first pass" row of a model (`--first_pass`): D from the first pass's transcripts, with the settings the
    model records for deliberation (its own first pass refined) when its decodings have them, else with those of the
    first D asked for. None when no D was asked for (or the model's decoder has no D)."""
    anchored = [(spec, config) for spec, config in resolved if getattr(config, "anchored", False)]
    if not anchored:
        return []
    spec, config = anchored[0]
    if "deliberation" in (getattr(loaded.model.generation_config, "preset_settings", None) or {}):
        config = loaded.model.resolve_decoding("deliberation")
    return [(spec, config, True)]


def resolve_decodings(loaded: LoadedModel, request: DecodingRequest) -> list[tuple[str, Any]]:
    """(spec, resolved config) for each spec that applies to the model (the specs its decoder family's generation
    config reads, with the global approximations it has; "AR" ones to causal-decoder models); D only with a CTC head.
    Without --decoding, a model that none of the default decodings fits (DiffusionGemma without a CTC head) is
    evaluated with its own default decoding."""
    kind = decoding_kind(loaded.model)
    resolved = []
    for spec in request.specs:
        if not kind.handles(spec):
            continue
        try:
            config = loaded.model.resolve_decoding(spec)
            extra = request.approximations(config)
            if extra:
                config = loaded.model.resolve_decoding(config, **extra)
        except (ValueError, TypeError) as error:
            raise EvalError(f"model {loaded.label}, decoding {spec}: {error}") from error
        from_first_pass = getattr(config, "first_pass", False)
        reads_ctc = not from_first_pass and (getattr(config, "anchored", False) or getattr(config, "ctc_reading", False))
        if reads_ctc and loaded.model.config.ctc_blank_id is None:
            if request.defaults:
                continue
            raise EvalError(f"model {loaded.label}, decoding {spec}: {config.name} reads the CTC head's greedy reading "
                            "of the speech, and this model has none (config.ctc_blank_id is None)")
        if from_first_pass and not getattr(loaded.model.config, "first_pass", None):
            if request.defaults:
                continue
            raise EvalError(f"model {loaded.label}, decoding {spec}: {config.name} runs the model's first pass, and "
                            "this model names none (config.first_pass)")
        resolved.append((spec, config))
    if not resolved and request.defaults:  # a family none of the default presets fits: the model's own default
        config = loaded.model.resolve_decoding()
        resolved.append((config.name, config))
    names = [config.name for _, config in resolved]
    if len(set(names)) != len(names):
        raise EvalError(f"model {loaded.label}: decodings {request.specs} give duplicate rows {names}")
    return resolved


def run_signature(loaded: LoadedModel, config, data: SplitData, options: EvalOptions, dtype_name: str,
                  device: torch.device) -> dict:
    """Everything that affects a hypotheses file's content or timing: model identity, dtype, device type, decoding
    settings, data (spec, number and hash of the keys), long-audio mode, batch size and, when sampling, the seed."""
    keys = sorted(r["key"] for r in data.records)
    spec = data.split.spec
    if not spec.startswith("hub:") and Path(spec).expanduser().exists():
        spec = str(Path(spec).expanduser().resolve())
    settings = config.settings()
    signature = {
        "model": loaded.identity,
        "dtype": dtype_name,
        "device_type": device.type,
        "decoding": {k: v for k, v in settings.items() if k != "decoding"},  # the preset is in the settings it gives
        "data": {"spec": spec, "utterances": len(keys),
                 "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]},
        "long_audio": options.long_audio,
        "batch_size": options.batch_size,
    }
    if settings.get("temperature"):
        signature["seed"] = options.seed
    return signature


def check_long_audio(models: list[LoadedModel], splits: list[SplitData]) -> None:
    """`--long_audio error`: refuses to start when an utterance is longer than the encoder's window, naming them."""
    window = min(m.processor.feature_extractor.chunk_length for m in models)
    long = [f"{r['audio'] if isinstance(r['audio'], str) else r['key']} ({r['duration']:.1f} s)"
            for data in splits for r in data.records if r["duration"] > window]
    if long:
        raise EvalError(f"{len(long)} utterance(s) longer than the encoder's {window} s window (--long_audio "
                        f"error): {', '.join(long[:10])}{' ...' if len(long) > 10 else ''}")


def plan_jobs(models: list[LoadedModel], splits: list[SplitData], request: DecodingRequest, options: EvalOptions,
              out_dir: Path, dtype_name: str, device: torch.device,
              first_pass: tuple[str, dict[str, dict[str, str]]] | None = None) -> list[Job]:
    """Every (model, decoding, split), with every decoding resolved, long audio checked and every hypotheses file
    checked for resuming; raises EvalError before anything is decoded."""
    jobs: list[Job] = []
    used = set()
    for loaded in models:
        resolved = resolve_decodings(loaded, request)
        if not resolved:
            fits = "A, B, C, D or explicit steps" if is_masked_diffusion(decoding_kind(loaded.model)) else "AR"
            raise EvalError(f"none of the decodings {request.specs} applies to model {loaded.label} ({fits})")
        refined = refined_decoding(loaded, resolved) if first_pass else []
        for spec, config, from_first_pass in [(spec, config, False) for spec, config in resolved] + refined:
            used.add(spec)
            for full in splits:
                data = spread_subset(full, request.limits.get(spec))
                limited = f"-{len(data.records)}of{len(full.records)}" if data is not full else ""
                stem = (f"{'D-first-pass' if from_first_pass else safe_name(config.name)}_"
                        f"{safe_name(data.split.name)}{limited}")
                name = f"hypotheses_{loaded.tag}_{stem}.jsonl" if loaded.tag else f"hypotheses_{stem}.jsonl"
                signature = run_signature(loaded, config, data, options, dtype_name, device)
                texts = None
                if from_first_pass:
                    signature["first_pass"] = first_pass[0]
                    signature["first_pass_form"] = getattr(loaded.model.config, "transcript_form", None)
                    texts = dict(first_pass[1].get(data.split.name, {}))
                jobs.append(Job(loaded, config, data, HypothesesFile(out_dir / name, signature), len(full.records),
                                texts))
    paths = [job.hypotheses.path.name for job in jobs]
    if len(set(paths)) != len(paths):
        raise EvalError(f"two models would write the same hypotheses files ({paths}); give them distinct names")
    unused = [spec for spec in request.specs if spec not in used]
    if unused and not request.defaults:
        raise EvalError(f"decodings {unused} apply to none of the models (AR needs a causal-decoder model, the others "
                        "a LLaDA-decoder model)")
    if options.long_audio == "error":
        check_long_audio(models, splits)
    problems = [p for job in jobs if (p := job.hypotheses.resume_problem(options.overwrite))]
    if problems:
        raise EvalError(f"{out_dir} holds hypotheses this run cannot resume:\n  " + "\n  ".join(problems)
                        + "\nRerun with --overwrite to decode afresh (this run's hypotheses files are replaced), or "
                        "choose another --output_dir.")
    return jobs


# ----------------------------------------------------------------------------------------------------------------------
# Decoding with timing, and scoring
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class JobProgress:
    """A job's hypotheses so far (its file's entries by key), and how many were resumed from an earlier run or
    decoded and timed in this one."""

    done: dict[str, dict]
    resumed: int
    timed: int = 0

    @classmethod
    def start(cls, job: Job) -> "JobProgress":
        done = job.hypotheses.read()
        return cls(done, sum(r["key"] in done for r in job.data.records))


def read_batch_audio(job: Job, batch: list[dict], options: EvalOptions) -> tuple[list[dict], list[np.ndarray], list[dict]]:
    """The batch's readable records, their waveforms (`truncate`: cut to the encoder's window) and per-utterance
    info (duration decoded, chunked, windows, truncated); unreadable ones are skipped."""
    rate = job.loaded.processor.feature_extractor.sampling_rate
    max_samples = job.loaded.processor.feature_extractor.n_samples
    kept, waves, info = [], [], []
    for record in batch:
        try:
            wave = load_audio(record["audio"], rate)
        except AUDIO_ERRORS as error:
            job.data.skip(record, "unreadable_audio", str(error), options.on_bad_data)
            continue
        long = len(wave) > max_samples
        if long and options.long_audio == "error":
            raise EvalError(f"{describe_source(record['audio'])} (key {record['key']}): {len(wave) / rate:.1f} s of "
                            f"audio is longer than the encoder's {max_samples / rate:.0f} s window "
                            "(--long_audio error)")
        truncated = long and options.long_audio == "truncate"
        wave = wave[:max_samples] if truncated else wave
        windows = 1 if truncated else len(split_long_audio(wave, rate, window_s=decoder_window_s(job.config)))
        kept.append(record)
        waves.append(wave)
        info.append({"duration": round(len(wave) / rate, 4), "chunked": windows > 1, "windows": windows,
                     "truncated": truncated})
    return kept, waves, info


def synchronize(device: torch.device) -> None:
    """Waits for the GPU's queued work, so that timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_job(job: Job, progress: JobProgress, options: EvalOptions, run_id: str) -> None:
    """Decodes the job's utterances not yet in its hypotheses file, longest first, in timed batches; each batch is
    appended to the file and to `progress` as soon as it is done."""
    loaded, device = job.loaded, job.loaded.model.device
    skipped = job.data.skipped_keys
    pending = sorted((r for r in job.data.records if r["key"] not in progress.done and r["key"] not in skipped),
                     key=lambda r: r["duration"], reverse=True)
    if progress.resumed:
        logger.info("%s / %s: resuming, %d of %d utterances already in %s", job.name, job.data.split.name,
                    progress.resumed, len(job.data.records), job.hypotheses.path.name)
    from tqdm.auto import tqdm

    with tqdm(total=len(job.data.records), initial=progress.resumed, desc=f"{job.name} {job.data.split.name}",
              unit="utt", disable=not options.progress) as bar:
        for number, start in enumerate(range(0, len(pending), options.batch_size)):
            batch, waves, info = read_batch_audio(job, pending[start : start + options.batch_size], options)
            bar.update(len(pending[start : start + options.batch_size]) - len(batch))
            if not batch:
                continue
            firsts = None if job.first_pass is None else [job.first_pass.get(r["key"]) for r in batch]
            while loaded.warmups_left > 0:  # untimed: first-call costs (CUDA context, kernels, allocator)
                transcribe(loaded.model, loaded.processor, waves, batch_size=options.batch_size,
                           generation_config=job.config, hypotheses=firsts)
                loaded.warmups_left -= 1
            synchronize(device)
            stats: dict = {}
            begin = time.perf_counter()
            texts = transcribe(loaded.model, loaded.processor, waves, batch_size=options.batch_size,
                               generation_config=job.config, hypotheses=firsts, stats=stats)
            synchronize(device)
            elapsed = time.perf_counter() - begin
            if stats.get("cut_answers"):
                logger.warning("%s / %s: %d answer(s) of this batch filled their whole length without an end of text "
                               "(the transcript may be cut): a larger gen_length, or tokens_per_second, avoids it",
                               job.name, job.data.split.name, stats["cut_answers"])
            entries = [{
                "key": record["key"],
                "audio": describe_source(record["audio"]),
                "reference": record["text"],
                "hypothesis": text,
                "reference_normalized": normalize_text(record["text"]),
                "hypothesis_normalized": normalize_text(text),
                **extra,
                "batch_id": f"{run_id}-{number}",
                "batch_seconds": round(elapsed, 6),
                "batch_size": len(batch),
                "batch_cut_answers": stats.get("cut_answers", 0),
            } for record, text, extra in zip(batch, texts, info)]
            job.hypotheses.append(entries)
            progress.done.update((e["key"], e) for e in entries)
            progress.timed += len(batch)
            bar.update(len(batch))


def score_job(job: Job, progress: JobProgress, partial: bool = False) -> dict:
    """One results.json row: WER, RTFx (all the job's utterances, from the per-batch timings), counts and settings;
    `partial`: the job was cut short, the numbers cover the utterances decoded so far."""
    entries = [progress.done[r["key"]] for r in job.data.records if r["key"] in progress.done]
    counts = word_error_counts([normalize_text(e["reference"]) for e in entries],
                               [normalize_text(e["hypothesis"]) for e in entries])
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    batches = {e.get("batch_id"): e.get("batch_seconds") or 0.0 for e in entries}
    audio_seconds = sum(e["duration"] for e in entries)
    processing_seconds = sum(batches.values())
    settings = job.config.settings()
    return {
        "model": job.loaded.path,
        "model_label": job.loaded.label,
        "decoding": job.name,
        "split": job.data.split.name,
        "partial": partial,
        "num_utterances": len(entries),
        "planned_utterances": len(job.data.records),
        "split_utterances": job.split_utterances,  # more than planned: --limit decoded a spread subset
        "wer": 100.0 * errors / counts["reference_words"] if counts["reference_words"] else None,
        "rtfx": audio_seconds / processing_seconds if processing_seconds > 0 else None,
        "audio_seconds": audio_seconds,
        "processing_seconds": processing_seconds,
        "timed_utterances": progress.timed,
        "resumed_utterances": progress.resumed,
        "resumed": progress.resumed > 0,
        "chunked_utterances": sum(bool(e.get("chunked")) for e in entries),
        "truncated_utterances": sum(bool(e.get("truncated")) for e in entries),
        "skipped_utterances": len(job.data.skipped),
        "cut_answers": sum({e.get("batch_id"): e.get("batch_cut_answers") or 0 for e in entries}.values()),
        **{k: counts[k] for k in ("reference_words", "substitutions", "deletions", "insertions", "empty_references")},
        "preset": settings.pop("decoding"),
        **settings,
        "batch_size": job.hypotheses.signature["batch_size"],
        "hypotheses_file": job.hypotheses.path.name,
        "run_signature": job.hypotheses.signature,
    }


# ----------------------------------------------------------------------------------------------------------------------
# A whole run
# ----------------------------------------------------------------------------------------------------------------------


def run_jobs(jobs: list[Job], report: dict, options: EvalOptions, out_dir: Path) -> dict:
    """Decodes and scores the jobs in order, rewriting results.json/results.md after each. On Ctrl-C or a failure
    the job in progress is written as a partial row (if any of it is decoded) before the error goes on (Ctrl-C as
    `EvalInterrupted`)."""
    run_id = f"{datetime.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"  # batch ids: unique across runs
    job, progress = None, None  # the job in progress, until its row is in the report
    try:
        for job in jobs:
            progress = JobProgress.start(job)
            decode_job(job, progress, options, run_id)
            row = score_job(job, progress)
            report["results"].append(row)
            report["resumed"] |= row["resumed"]
            progress = None
            write_report(out_dir, report)
            logger.info("%s%s / %s: WER %s, RTFx %s (%d utterances%s)", f"{job.loaded.label}: " if job.loaded.tag
                        else "", row["decoding"], row["split"], "–" if row["wer"] is None else f"{row['wer']:.2f}",
                        "–" if row["rtfx"] is None else f"{row['rtfx']:.1f}", row["num_utterances"],
                        f", {row['resumed_utterances']} resumed" if row["resumed"] else "")
    except BaseException as error:
        if progress is not None and progress.done:
            report["results"].append(score_job(job, progress, partial=True))
        report["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        write_report(out_dir, report)
        if isinstance(error, KeyboardInterrupt):
            raise EvalInterrupted(report) from error
        raise
    report["status"] = "complete"
    write_report(out_dir, report)
    return report


def run_sharded(jobs: list[Job], report: dict, options: EvalOptions, out_dir: Path, shards: Shards) -> dict:
    """Under torchrun / accelerate launch: this rank decodes its share of every job into its own hypotheses file
    (resumable per shard); after all ranks are done, rank 0 merges and scores them into the report."""
    local = [shard_job(job, shards) for job in jobs]
    problems = [p for job in local if (p := job.hypotheses.resume_problem(options.overwrite))]
    if problems:
        raise EvalError(f"{out_dir} holds shard hypotheses this run cannot resume:\n  " + "\n  ".join(problems)
                        + "\nRerun with --overwrite, or choose another --output_dir.")
    this_run = shards.common(f"{datetime.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")  # rank 0's, for all
    for job in local:
        decode_job(job, JobProgress.start(job), options, f"{this_run}-rank{shards.rank}")
    shards.barrier()
    if shards.rank == 0:
        for job in jobs:
            progress, _ = merge_shards(job, shards, JobProgress, this_run)
            report["results"].append(score_job(job, progress))
        report["status"] = "complete"
        write_report(out_dir, report)
    shards.stop()
    return report


def evaluate(request: EvalRequest, options: EvalOptions, out_dir: Path) -> dict:
    """The whole evaluation: splits read, models loaded, jobs planned and checked, then decoded and scored; returns
    the report (also in out_dir/results.json and results.md). Under torchrun / accelerate launch the utterances are
    split over the processes (`whisper_llada_eval_shards`)."""
    shards = Shards.from_env()
    device = shards.start(resolve_device(request.device))
    dtype_name = request.dtype or ("bfloat16" if device.type == "cuda" or cpu_has_native_bf16() else "float32")
    torch.manual_seed(options.seed)
    for model in request.models:  # a mistyped folder fails at once, before the data is read
        check_model_argument(model)
    if request.first_pass:
        check_first_pass(request.first_pass)
    splits = load_splits(request.data, options.max_utterances, options.on_bad_data)
    first_pass, first_rows = None, []
    if request.first_pass:
        texts, first_rows = first_pass_texts(request.first_pass, splits, device, DTYPES[dtype_name],
                                             options.batch_size)
        first_pass = (request.first_pass, texts)
        write_first_pass(out_dir, texts)
    models = load_models(request.models, request.labels, DTYPES[dtype_name], device, options.warmup_batches)
    jobs = plan_jobs(models, splits, request.decodings, options, out_dir, dtype_name, device, first_pass)
    report = new_report(request.models, request.labels, {d.split.name: d.split.spec for d in splits},
                        {d.split.name: d.skipped for d in splits}, device, dtype_name, options.batch_size,
                        options.long_audio, options.max_utterances, processes=shards.world)
    report["results"].extend(first_rows)  # the first pass alone (Whisper decoded in this run)
    if shards.active:
        options = dataclasses.replace(options, progress=options.progress and shards.rank == 0)
        return run_sharded(jobs, report, options, out_dir, shards)
    return run_jobs(jobs, report, options, out_dir)


__all__ = ["EvalError", "EvalInterrupted", "EvalOptions", "DecodingRequest", "EvalRequest", "DTYPES", "check_spec",
           "Job", "resolve_decodings", "plan_jobs", "JobProgress", "decode_job", "score_job", "run_jobs", "evaluate"]
