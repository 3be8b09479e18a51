"""What an evaluation (eval_hf.py, `whisper_llada_eval`) writes: the resumable hypotheses files and the run's report.

    hypotheses_<decoding>_<split>.jsonl   one JSON line per decoded utterance, appended batch by batch
                                          (`HypothesesFile`; `hypotheses_<model>_...` with several models)
    <same>.meta.json                      its run signature: a rerun resumes the file only if the signatures match
    results.json                          this run's report: status, one row per (model, decoding, split), skipped
                                          records; a row cut short by Ctrl-C or a failure is kept as `"partial": true`
    results.md                            the report as a table (`markdown_table`); `wer_vs_rtfx.png` (`plot_wer_rtfx`)

The report dict is built by `new_report` and filled by `whisper_llada_eval.run_jobs`; everything here reads it.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeling_causal_decoder import AR_PRESET
from whisper_llada_io import write_atomic

logger = logging.getLogger("eval_hf")


# ----------------------------------------------------------------------------------------------------------------------
# Hypotheses files and their run signatures
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class HypothesesFile:
    """One (model, decoding, split)'s hypotheses: a JSON-lines file appended batch by batch and, beside it, the run
    signature (everything that affects its content or timing) that a resumed run must match."""

    path: Path
    signature: dict

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(self.path.name[: -len(".jsonl")] + ".meta.json")

    def read(self) -> dict[str, dict]:
        """The finished utterances of an earlier (possibly killed) run, by key. A partly written last line is cut off
        and unreadable lines are dropped, so that appending continues a clean file."""
        if not self.path.exists():
            return {}
        *lines, tail = self.path.read_bytes().split(b"\n")  # after the last newline: nothing, or a line cut by a kill
        done: dict[str, dict] = {}
        dirty = bool(tail)
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                done[str(entry["key"])] = entry
            except (ValueError, KeyError, TypeError):
                dirty = True
        if dirty:
            logger.warning("%s: dropping a partly written or unreadable line", self.path)
            write_atomic(self.path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in done.values()))
        return done

    def append(self, entries: list[dict]) -> None:
        """One write per batch; the run signature is written with the first batch (no empty files on a crash)."""
        if not self.path.exists():
            write_atomic(self.meta_path, json.dumps({"run_signature": self.signature}, indent=2) + "\n")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            handle.flush()

    def resume_problem(self, overwrite: bool) -> str | None:
        """None if the file can be resumed (or there is none; with `overwrite` the old files are deleted), otherwise
        why it cannot."""
        if overwrite or (self.path.exists() and self.path.stat().st_size == 0):
            self.path.unlink(missing_ok=True)
            self.meta_path.unlink(missing_ok=True)
            return None
        if not self.path.exists():
            return None
        try:
            old = json.loads(self.meta_path.read_text(encoding="utf-8"))["run_signature"]
        except (OSError, ValueError, KeyError, TypeError):
            return (f"{self.path.name}: no readable run signature ({self.meta_path.name}): written by an older "
                    "eval_hf.py or edited")
        differences = signature_differences(old, self.signature)
        return f"{self.path.name}: written by a different run: {'; '.join(differences)}" if differences else None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


def signature_differences(old: dict, new: dict) -> list[str]:
    """`["dtype: float32 -> float16", ...]` for the settings that differ."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    return [f"{key}: {old_flat.get(key, '(not recorded)')} -> {new_flat.get(key, '(not recorded)')}"
            for key in sorted(set(old_flat) | set(new_flat)) if old_flat.get(key) != new_flat.get(key)]


# ----------------------------------------------------------------------------------------------------------------------
# The report: results.json and results.md
# ----------------------------------------------------------------------------------------------------------------------


def new_report(models: list[str], labels: list[str], splits: dict[str, str], skipped: dict[str, list[dict]],
               device: torch.device, dtype_name: str, batch_size: int, long_audio: str,
               max_utterances: int | None, processes: int = 1) -> dict:
    """An empty report of a run: `splits` maps each split's name to its spec, `skipped` to its skipped records."""
    device_name = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)")
    return {
        "status": "running",
        "results": [],
        "skipped": skipped,
        "model": " + ".join(models),
        "model_label": " + ".join(labels),
        "models": list(models),
        "device": device_name,
        "dtype": dtype_name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "batch_size": batch_size,
        "processes": processes,
        "long_audio": long_audio,
        "splits": dict(splits),
        "max_utterances": max_utterances,
        "resumed": False,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "rtfx_note": "RTFx = audio_seconds / processing_seconds over all scored utterances; each batch's seconds are "
        "kept with its hypotheses, so a resumed run counts the batches timed before the interruption too.",
    }


def row_summaries(results: list[dict], split_names: list[str]) -> list[dict]:
    """Per model and decoding: mean WER over its splits, RTFx over all splits (total audio / total processing
    seconds), and its partial splits ({split: (decoded, planned)})."""
    rows: dict[tuple[str, str], dict] = {}
    for result in results:
        model = result.get("model_label") or result.get("model", "")
        row = rows.setdefault((model, result["decoding"]), {"model": model, "decoding": result["decoding"], "wer": {},
                                                           "audio": 0.0, "processing": 0.0, "settings": result,
                                                           "partial": {}})
        row["wer"][result["split"]] = result["wer"]
        if result.get("partial"):
            row["partial"][result["split"]] = (result["num_utterances"], result.get("planned_utterances"))
        elif (result.get("split_utterances") or 0) > (result.get("planned_utterances") or 0):
            row.setdefault("subset", {})[result["split"]] = (result["num_utterances"], result["split_utterances"])
        if result.get("rtfx") is not None:
            row["audio"] += result["audio_seconds"]
            row["processing"] += result["processing_seconds"]
    summaries = []
    for row in rows.values():
        wers = [w for s in split_names if (w := row["wer"].get(s)) is not None]
        summaries.append({
            "model": row["model"],
            "decoding": row["decoding"],
            "wer": {s: row["wer"].get(s) for s in split_names},
            "avg_wer": sum(wers) / len(wers) if wers else None,
            "avg_rtfx": row["audio"] / row["processing"] if row["processing"] > 0 else None,
            "settings": row["settings"],
            "partial": row["partial"],
            "subset": row.get("subset", {}),
        })
    return summaries


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(report: dict) -> str:
    """results.md: rows model/decoding; columns its settings, WER per split, avg WER, avg RTFx; then the notes."""
    split_names = list(report["splits"])
    header = ["model", "decoding", "steps / gen / block", *split_names, "avg WER", "avg RTFx"]
    lines = [
        f"WER (%) after Whisper's English normaliser; RTFx = audio seconds / processing seconds. "
        f"Device {report['device']}, {report['dtype']}, batch size {report['batch_size']}"
        f"{', ' + str(report['processes']) + ' processes (RTFx: audio / the slowest process decoding seconds)' if report.get('processes', 1) > 1 else ''}"
        f", {report['date']}"
        f"{'' if report['status'] == 'complete' else ' (' + report['status'] + ')'}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---"] + ["---:"] * (len(split_names) + 2)) + "|",
    ]
    summaries = row_summaries(report["results"], split_names)
    for row in summaries:
        s = row["settings"]
        steps = " / ".join("–" if s.get(k) is None else str(s[k]) for k in ("steps", "gen_length", "block_length"))
        cells = [row["model"], row["decoding"], steps]
        for name in split_names:
            done, some = row["partial"].get(name), row["subset"].get(name)
            cells.append(_cell(row["wer"][name], 2) + (f" (partial: {done[0]} of {done[1]})" if done else "")
                         + (f" ({some[0]} of {some[1]} utt.)" if some else ""))
        mark = " (partial)" if row["partial"] else ""
        cells += [_cell(row["avg_wer"], 2) + mark, _cell(row["avg_rtfx"], 1) + mark]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _table_notes(report, any(row["partial"] for row in summaries)), ""]
    return "\n".join(lines)


def _table_notes(report: dict, partial: bool) -> str:
    skipped = sum(len(items) for items in report["skipped"].values())
    long = {}  # per split: utterances over 30 s (the same in every row of the split)
    for r in report["results"]:
        long[r["split"]] = max(long.get(r["split"], 0), r["chunked_utterances"] + r["truncated_utterances"])
    how = {"chunk": "transcribed long-form (chunked)", "truncate": "truncated to the first 30 s"}
    return (
        "avg WER: mean of the row's per-split WERs in this run. avg RTFx: total audio seconds / total processing "
        "seconds over the splits (feature extraction + encoder + decoding + detokenisation)."
        + (" AR rows: autoregressive decoding (greedy, or beam search with num_beams) of a causal-decoder model."
           if any(r.get("preset") == AR_PRESET for r in report["results"]) else "")
        + (" partial: the run stopped while decoding that split; its numbers cover the utterances decoded so far "
           "(rerun the same command to finish it)." if partial else "")
        + (" (n of N utt.): that row decoded n utterances spread over the split (--limit), not comparable with the "
           "others' WER; `--limit all` decodes every row on everything." if any(
               (r.get("split_utterances") or 0) > (r.get("planned_utterances") or 0) for r in report["results"])
           else "")
        + (f" {skipped} unreadable or unusable utterance(s) were skipped (results.json: skipped)." if skipped else "")
        + (f" {sum(long.values())} utterance(s) over 30 s {how.get(report['long_audio'], '')}." if any(long.values())
           else "")
    )


def write_report(out_dir: Path, report: dict) -> None:
    write_atomic(out_dir / "results.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomic(out_dir / "results.md", markdown_table(report))


def plot_wer_rtfx(report: dict, path: Path) -> bool:
    """wer_vs_rtfx.png: each row's average WER against its RTFx; False (and a warning) when no row has both."""
    rows = [r for r in row_summaries(report["results"], list(report["splits"]))
            if r["avg_wer"] is not None and r["avg_rtfx"]]
    if not rows:
        logger.warning("--plot: no row has both a WER and an RTFx; no plot written")
        return False
    several = len({r["model"] for r in rows}) > 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        axes.scatter(row["avg_rtfx"], row["avg_wer"])
        text = f"{row['model']}: {row['decoding']}" if several else row["decoding"]
        axes.annotate(text, (row["avg_rtfx"], row["avg_wer"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    rtfx = [r["avg_rtfx"] for r in rows]
    if max(rtfx) / min(rtfx) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("RTFx (higher is faster)")
    axes.set_ylabel(f"average WER (%) over {len(report['splits'])} split(s)")
    axes.set_title(f"{report['model_label']} ({report['device']}, {report['dtype']})", fontsize=9)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_model_card(directory: str, report: dict) -> Path:
    """DIR/README.md from this run's results: the rows of the model loaded from DIR (by its resolved folder in the
    rows' run signatures), or all rows when none is."""
    from modelcard_whisper_llada import is_generated_card
    from modelcard_whisper_llada import write_model_card as write_card

    resolved = str(Path(directory).expanduser().resolve())
    own = [r for r in report["results"] if r["run_signature"]["model"]["path"] == resolved]
    path = write_card(directory, results={**report, "results": own or report["results"]})
    if not is_generated_card(path):
        logger.warning("%s was not written by whisper-llada: left as is (modelcard_whisper_llada.py --overwrite)", path)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Summaries printed at the end of a run
# ----------------------------------------------------------------------------------------------------------------------


def skipped_summary(report: dict) -> str:
    """The skipped records, one line each (empty when none)."""
    items = [(split, item) for split, skipped in report["skipped"].items() for item in skipped]
    if not items:
        return ""
    lines = [f"Skipped {len(items)} utterance(s) (not scored; results.json: skipped):"]
    lines += [f"  {split}: {item['audio']} (key {item['key']}): {item['reason']}: {item['detail']}"
              for split, item in items]
    return "\n".join(lines)


def interruption_summary(report: dict | None, out_dir: Path) -> str:
    """One line after Ctrl-C: what results.json/results.md hold (complete rows, the partial row) and where the
    hypotheses to resume from are."""
    if report is None:
        return (f"interrupted before decoding started: nothing of this run was written to {out_dir}; rerun the same "
                "command to start")
    complete = [r for r in report["results"] if not r.get("partial")]
    partial = [r for r in report["results"] if r.get("partial")]
    where = f"{out_dir / 'results.json'} and results.md hold {len(complete)} complete row(s)"
    for row in partial:
        model = f"{row['model_label']}, " if len(report["models"]) > 1 else ""
        where += (f" and a partial row ({model}{row['decoding']} / {row['split']}: {row['num_utterances']} of "
                  f"{row['planned_utterances']} utterances, from {row['hypotheses_file']})")
    return (f"interrupted: {where}; every decoded utterance is kept in {out_dir}/hypotheses_*.jsonl; rerun the same "
            "command to resume")


__all__ = ["HypothesesFile", "signature_differences", "new_report", "row_summaries", "markdown_table",
           "write_report", "plot_wer_rtfx", "write_model_card", "skipped_summary", "interruption_summary"]
