"""bench_hf.py: the GPU benchmark's code path on tiny shapes (CPU), variant selection, and merging of rows measured in
several runs. No timing is asserted: speed numbers live in BENCHMARKS.md."""

import json

import pytest

import bench_hf
from conftest import WHISPER_TINY, needs_shared


def test_gpu_benchmark_runs_on_tiny_shapes():
    args = bench_hf.build_parser().parse_args(
        ["gpu", "--tiny", "--device", "cpu", "--num_utterances", "3", "--batch_sizes", "1", "2",
         "--variants", "A", "D", "C+dual"])
    rows = bench_hf.run_gpu(args)
    # batch size 1, then the first larger size that fits; every variant (D through the CTC head); exactness labelled
    assert [(r["variant"], r["batch_size"], r["exact"]) for r in rows] == [
        ("A", 1, "yes"), ("A", 2, "yes"), ("D", 1, "anchored"), ("D", 2, "anchored"), ("C+dual", 1, "approx."),
        ("C+dual", 2, "approx.")]
    assert all(r["rtfx"] > 0 for r in rows)


def test_unknown_variant_is_rejected_by_name(tiny_model):
    with pytest.raises(SystemExit, match="unknown --variants \\['E'\\]"):
        bench_hf.select_variants(tiny_model, bench_hf.GPU_VARIANTS, ["A", "E"])
    assert [c.name for c in bench_hf.select_variants(tiny_model, bench_hf.GPU_VARIANTS, ["C", "A"])] == ["A", "C"]
    # a row is also selected by its spec, as --help lists them
    assert [c.name for c in bench_hf.select_variants(tiny_model, bench_hf.GPU_VARIANTS,
                                                      ["C,kv_cache=dual", "B+dual"])] == ["B+dual", "C+dual"]
    # D needs a CTC head: not offered by a model without one
    assert "D" not in [c.name for c in bench_hf.select_variants(tiny_model, bench_hf.GPU_VARIANTS, None)]


def row(variant: str, batch: int, rtfx: float) -> dict:
    return {"variant": variant, "exact": "approx." if "+" in variant else "yes", "batch_size": batch, "rtfx": rtfx,
            "peak_gib": 1.0,
            "command": f"python bench_hf.py gpu --variants {variant}", "date": "2026-11-24"}


def test_gpu_rows_merge_across_runs_with_the_same_setup(tmp_path):
    path = tmp_path / "results.json"
    bench_hf.merge_gpu_results(path, "H100", [row("C", 1, 5.0), row("C", 16, 50.0)])
    merged = bench_hf.merge_gpu_results(path, "H100", [row("A", 1, 100.0), row("C", 1, 6.0)])
    # table order (A before C); the re-measured variant C replaces all of its earlier rows
    assert [(r["variant"], r["batch_size"], r["rtfx"]) for r in merged] == [("A", 1, 100.0), ("C", 1, 6.0)]
    assert json.loads(path.read_text())["results"] == merged
    other = bench_hf.merge_gpu_results(path, "H200", [row("B", 1, 40.0)])
    assert [r["variant"] for r in other] == ["B"]  # another device (or synthetic set) starts afresh
    assert not list(tmp_path.glob(".results.json.*"))  # no temp file left behind


@needs_shared(WHISPER_TINY)
def test_cpu_benchmark_writes_its_section_with_the_dtype_of_both_models(tiny_checkpoint, manifest, tmp_path,
                                                                       monkeypatch):
    """`bench_hf.py cpu` (here a tiny random model, row A only, bfloat16) writes outputs/bench_cpu.md and leaves
    BENCHMARKS.md alone; with --update_benchmarks it replaces only its own BENCHMARKS.md section."""
    target = tmp_path / "BENCHMARKS.md"
    stale = "# Benchmarks\n\n<!-- bench:cpu -->\nSTALE ROWS\n<!-- /bench:cpu -->\n\nkept\n"
    target.write_text(stale)
    monkeypatch.setattr(bench_hf, "BENCHMARKS", target)
    monkeypatch.chdir(tmp_path)
    command = ["cpu", "--model", str(tiny_checkpoint), "--data", str(manifest), "--whisper", str(WHISPER_TINY),
               "--variants", "A", "--dtype", "bfloat16", "--threads", "1"]
    bench_hf.main(command)
    assert target.read_text() == stale and "demo whisper-llada A" in (tmp_path / "outputs" / "bench_cpu.md").read_text()
    bench_hf.main(["--update_benchmarks", *command])
    text = target.read_text()
    assert "STALE ROWS" not in text and text.endswith("kept\n") and "bfloat16 (both models)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "WER" not in line]
    assert [line.split(" | ")[0] for line in rows] == ["| Whisper tiny.en (AR greedy, transformers generate)",
                                                       "| demo whisper-llada A"]
