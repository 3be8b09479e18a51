"""eval_hf.py over several processes (torchrun): each process decodes its share of each split (balanced by duration)
into its own hypotheses file, rank 0 merges and scores them: the same hypotheses and WER as one process."""

import json
import os
import subprocess
import sys

from conftest import needs_whisper_tokenizer, ROOT, read_jsonl, run_eval
from whisper_llada_eval_shards import Shards, share

pytestmark = needs_whisper_tokenizer


def test_shares_are_balanced_by_duration_and_cover_the_split_once():
    records = [{"key": f"u{i}", "duration": d} for i, d in enumerate([9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 3.0])]
    shards = Shards(0, 3)
    parts = [share(records, shards, rank) for rank in range(3)]
    assert sorted(r["key"] for part in parts for r in part) == sorted(r["key"] for r in records)
    totals = [sum(r["duration"] for r in part) for part in parts]
    assert max(totals) - min(totals) <= 2.0  # longest first, each to the least loaded rank


def test_two_processes_give_the_one_process_hypotheses_and_wer(tiny_ctc_checkpoint, manifest, tmp_path):
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path / "one", "--decoding", "A", "D", "--batch_size", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               str(ROOT / "eval_hf.py"), "--model", str(tiny_ctc_checkpoint), "--data", str(manifest),
               "--output_dir", str(tmp_path / "two"), "--device", "cpu", "--dtype", "float32", "--decoding", "A", "D",
               "--batch_size", "2", "--warmup_batches", "0", "--no_progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["processes"] == 2 and two["status"] == "complete" and "2 processes" in (tmp_path / "two" /
                                                                                         "results.md").read_text()
    for a, b in zip(one["results"], two["results"]):
        assert (a["decoding"], a["wer"], a["num_utterances"]) == (b["decoding"], b["wer"], b["num_utterances"])
    for name in ("hypotheses_A_three_clips.jsonl", "hypotheses_D_three_clips.jsonl"):
        single = {e["key"]: e["hypothesis"] for e in read_jsonl(tmp_path / "one" / name)}
        merged = {e["key"]: e["hypothesis"] for e in read_jsonl(tmp_path / "two" / name)}
        assert merged == single and len(merged) == 3
        shards = [read_jsonl(tmp_path / "two" / name.replace(".jsonl", f".rank{r}-of-2.jsonl")) for r in range(2)]
        assert all(shards) and sum(map(len, shards)) == 3  # each process wrote its own part
    # rerunning resumes every shard: nothing left to decode, the same table
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    rerun = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [r["wer"] for r in rerun["results"]] == [r["wer"] for r in two["results"]]
