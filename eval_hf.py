#!/usr/bin/env python
"""Evaluate whisper-llada checkpoints: WER and RTFx per model, decoding and split, in one resumable table.

    python eval_hf.py --model PATH_OR_ID [...] --data DIR_OR_MANIFEST_OR_HUB [...] --decoding A B C D AR [...] \\
        --output_dir OUT [--batch_size N] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--plot]

With no arguments: the bundled demo model (`demo/model`) on the bundled clips (`demo/audio/manifest.jsonl`), decodings
CTC A B C D first_pass deliberation AR where each applies, into `outputs/demo_eval` (offline). The library behind it: `whisper_llada_eval`
(splits, models, jobs, decoding, scoring) and `whisper_llada_report` (hypotheses files, results.json / results.md).
README ("Evaluation") describes the data, decoding, resume and output formats.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from whisper_llada_eval import (  # noqa: E402
    DTYPES,
    DecodingRequest,
    EvalError,
    EvalOptions,
    EvalRequest,
    check_spec,
    evaluate,
)
from whisper_llada_report import (  # noqa: E402
    interruption_summary,
    markdown_table,
    plot_wer_rtfx,
    skipped_summary,
    write_model_card,
)

logger = logging.getLogger("eval_hf")

DEMO_MODEL = ROOT / "demo" / "model"
DEMO_MANIFEST = ROOT / "demo" / "audio" / "manifest.jsonl"
DEMO_OUTPUT = Path("outputs") / "demo_eval"
# each where it applies: CTC and D with a CTC head, first_pass and deliberation with a first pass, AR for causal decoders
DEFAULT_DECODINGS = ["CTC", "A", "B", "C", "D", "first_pass", "deliberation", "AR"]
# the no-argument demo run, in <= 300 s on 2 cores also in float32: C (128 decoder passes) on 1 clip, B (8) on 5
DEMO_LIMITS = {"C": 1, "B": 5}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval_hf.py",
        description="WER and RTFx of whisper-llada models per split and decoding configuration. Without arguments: "
        "the bundled demo model on the bundled clips, decodings CTC A B C D first_pass deliberation AR where each "
        "applies, into outputs/demo_eval.",
        epilog="README (Evaluation) describes the data, decoding, resume and output formats.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", nargs="+", default=None, metavar="PATH_OR_ID",
                        help="model directories or Hub ids, all in one table (default: demo/model)")
    parser.add_argument("--data", nargs="+", default=None, metavar="SPEC",
                        help="splits: LibriSpeech dir, .jsonl manifest, hub:NAME[:CONFIG[:SPLIT]], or NAME=SPEC "
                        "(default: the bundled demo clips)")
    parser.add_argument("--decoding", nargs="+", default=None, metavar="CONFIG",
                        help="presets (A B C; CTC and D with a CTC head; first_pass and deliberation with a first "
                        "pass), 'B,kv_cache=dual', explicit 'steps=16,gen_length=128,block_length=32', or AR / "
                        "'AR,num_beams=4' for causal-decoder models (default: all of them, each where it applies)")
    parser.add_argument("--limit", nargs="+", default=None, metavar="DECODING=N",
                        help="decode DECODING on only N utterances of each split, spread evenly over it (the table "
                        "says 'n of N utt.'); 'all' for no limit. Default: none, except the no-argument demo run, "
                        f"which limits {', '.join(f'{k}={v}' for k, v in DEMO_LIMITS.items())} to finish in minutes")
    parser.add_argument("--first_pass", default=None, metavar="SOURCE",
                        help="also decode D from another recogniser's first-pass transcripts (deliberation), a row 'D + "
                        "first pass' with the model's deliberation settings: whisper:SOURCE (a Whisper Hub id, folder "
                        "or package:NAME/SUBDIR, decoded in this run with its word confidences, with a row of its own) "
                        "or a .jsonl file of {\"key\", \"hypothesis\"} lines")
    parser.add_argument("--output_dir", default=None, help=f"where results go (default: {DEMO_OUTPUT})")
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per generate() call (default: 8)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="model dtype (default: bfloat16 on cuda and on CPUs with native bf16 (AVX512-BF16/AMX), "
                             "else float32)")
    parser.add_argument("--max_utterances", type=int, default=None, help="evaluate only the first N of each split")
    parser.add_argument("--steps", type=int, default=None, help="explicit extra decoding: total steps")
    parser.add_argument("--gen_length", type=int, default=None, help="explicit extra decoding: answer length")
    parser.add_argument("--block_length", type=int, default=None, help="explicit extra decoding: block length")
    parser.add_argument("--threshold", type=float, default=None,
                        help="approximate: also commit every masked token at least this confident (all "
                        "masked-diffusion rows that do not set it)")
    parser.add_argument("--kv_cache", choices=["prefix", "dual"], default=None, help="approximate: KV caching")
    parser.add_argument("--early_stop", action="store_true", help="approximate: stop a row after its EOS")
    parser.add_argument("--long_audio", choices=["chunk", "truncate", "error"], default="chunk",
                        help="audio over the encoder's 30 s window: chunk (default: long-form transcription, windows "
                        "cut at pauses), truncate (first 30 s only) or error (refuse)")
    parser.add_argument("--on_bad_data", choices=["skip", "error"], default="skip",
                        help="missing/unreadable audio or empty transcripts: skip (default; counted and named) or "
                        "error (stop at the first one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="decode and time everything afresh, replacing this run's hypotheses files")
    parser.add_argument("--model_card", default=None, metavar="DIR",
                        help="write/update the model card DIR/README.md from this run's results")
    parser.add_argument("--warmup_batches", type=int, default=1,
                        help="untimed batches before the first timing (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed, matters only for temperature > 0 (default: 0)")
    parser.add_argument("--plot", action="store_true", help="also write wer_vs_rtfx.png")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    return parser


def decoding_request(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DecodingRequest:
    """--decoding (default: DEFAULT_DECODINGS unless --steps/--gen_length/--block_length ask for one explicit row),
    plus that explicit row, each checked for syntax; the approximation flags go along."""
    explicit = [f"{k}={v}" for k in ("steps", "gen_length", "block_length") if (v := getattr(args, k)) is not None]
    specs = list(args.decoding or ([] if explicit else DEFAULT_DECODINGS))
    if explicit:
        specs.append(",".join(explicit))
    if len(set(specs)) != len(specs):
        parser.error(f"duplicate decoding configurations: {specs}")
    for spec in specs:
        try:
            check_spec(spec)
        except ValueError as error:
            parser.error(str(error))
    limits = parse_limits(args, parser, specs)
    return DecodingRequest(specs, defaults=args.decoding is None and not explicit, threshold=args.threshold,
                           kv_cache=args.kv_cache, early_stop=args.early_stop, limits=limits)


def parse_limits(args: argparse.Namespace, parser: argparse.ArgumentParser, specs: list[str]) -> dict[str, int]:
    """--limit DECODING=N ... (or 'all'); the no-argument demo run's DEMO_LIMITS when --limit is not given."""
    if args.limit is None:
        demo_run = args.model is None and args.data is None and args.decoding is None
        return {k: v for k, v in DEMO_LIMITS.items() if k in specs} if demo_run else {}
    limits = {}
    for item in args.limit:
        if item == "all":
            continue
        spec, _, number = item.rpartition("=")
        if spec not in specs or not number.isdigit() or int(number) < 1:
            parser.error(f"--limit {item}: expected DECODING=N with DECODING one of {specs} and N >= 1, or 'all'")
        limits[spec] = int(number)
    return limits


def output_dir_problem(path: Path) -> str | None:
    """Why results cannot be written to `path` (created if missing), or None; checked before any model is loaded."""
    if path.exists() and not path.is_dir():
        return "exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot be created ({error.strerror or error})"
    probe = path / f".eval_hf-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        return f"is not writable ({error.strerror or error})"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; adds `request` (EvalRequest) and `options` (EvalOptions)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max_utterances must be >= 1")
    if args.warmup_batches < 0:
        parser.error("--warmup_batches must be >= 0")
    if args.model is None:
        if not DEMO_MODEL.exists():
            parser.error(f"the bundled demo model {DEMO_MODEL} is missing; pass --model")
        models, labels = [str(DEMO_MODEL)], ["demo/model"]
    elif len(set(args.model)) != len(args.model):
        parser.error(f"duplicate models: {args.model}")
    else:
        models, labels = list(args.model), list(args.model)
    if args.model_card is not None and not (Path(args.model_card).expanduser() / "config.json").is_file():
        parser.error(f"--model_card {args.model_card}: not a model folder (no config.json)")
    args.output_dir = args.output_dir or str(DEMO_OUTPUT)
    problem = output_dir_problem(Path(args.output_dir))
    if problem:
        raise SystemExit(f"error: --output_dir {args.output_dir}: {problem}")
    args.request = EvalRequest(models, labels, args.data or [f"demo={DEMO_MANIFEST}"],
                               decoding_request(args, parser), args.device, args.dtype, args.first_pass)
    args.options = EvalOptions(batch_size=args.batch_size, long_audio=args.long_audio, on_bad_data=args.on_bad_data,
                               overwrite=args.overwrite, warmup_batches=args.warmup_batches, seed=args.seed,
                               progress=not args.no_progress, max_utterances=args.max_utterances)
    return args


def main(argv: list[str] | None = None) -> int:
    """0 on success, 130 after Ctrl-C (one line saying what was written where), `error: ...` (1) for bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("whisper_llada_data").setLevel(logging.WARNING)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = evaluate(args.request, args.options, out_dir)
    except KeyboardInterrupt as interrupt:  # EvalInterrupted carries the report written so far
        print("\n" + interruption_summary(getattr(interrupt, "report", None), out_dir), file=sys.stderr, flush=True)
        return 130
    except EvalError as error:
        raise SystemExit(f"error: {error}") from None
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch: rank 0 merged, scored and reports
        return 0
    if args.plot and plot_wer_rtfx(report, out_dir / "wer_vs_rtfx.png"):
        logger.info("wrote %s", out_dir / "wer_vs_rtfx.png")
    if args.model_card:
        logger.info("wrote %s", write_model_card(args.model_card, report))
    print(markdown_table(report))
    summary = skipped_summary(report)
    if summary:
        print(summary)
    logger.info("wrote %s and %s", out_dir / "results.json", out_dir / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
