"""Streamed training data (the reference recipe's hub:openslr/librispeech_asr:clean:train.100), on a local parquet repo
laid out like the Hub's (4 shards x 4 records, in speaker order as the Hub's files are): shuffled with a seed, every
record read once per pass by the Trainer's own dataloader with 2 DataLoader workers and with 2 processes (gloo), the
same order for the same seed, another order on the next pass."""

import collections
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import DEMO_AUDIO, ROOT, read_jsonl

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SHARDS, PER_SHARD = 4, 4


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory):
    """hub:<repo>:clean:train.100 with 16 records in file order key-00 ... key-15."""
    repo = tmp_path_factory.mktemp("librispeech_asr")
    (repo / "clean").mkdir()
    clips = read_jsonl(DEMO_AUDIO / "manifest.jsonl")
    audio = (DEMO_AUDIO / clips[10]["audio_filepath"]).read_bytes()  # 4.2 s, the shortest clip
    for shard in range(SHARDS):
        keys = [f"key-{shard * PER_SHARD + i:02d}" for i in range(PER_SHARD)]
        table = pa.table({"file": [k + ".flac" for k in keys], "audio": [{"bytes": audio, "path": k + ".flac"}
                                                                       for k in keys],
                          "text": [f"TEXT OF {k}" for k in keys], "id": keys})
        pq.write_table(table, str(repo / "clean" / f"train.100-{shard:05d}-of-{SHARDS:05d}.parquet"))
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: clean\n  data_files:\n  - split: train.100\n"
                                    "    path: clean/train.100-*\n---\n")
    return f"hub:{repo}:clean:train.100"


class KeyCollator:
    """Returns the batch's keys (as the real collator sees the records)."""

    def __call__(self, rows):
        return {"keys": [row["key"] for row in rows]}


def passes(spec: str, seed: int, workers: int, tmp_path, epochs: int = 2) -> list[list[str]]:
    """The keys the Trainer's train dataloader yields, pass by pass (set_epoch as the Trainer does)."""
    import torch

    from conftest import tiny_whisper_llada
    from train_hf import WhisperLladaTrainingArguments
    from whisper_llada_training import WhisperLladaTrainer, load_filtered

    stats = collections.Counter()
    stream = load_filtered([spec], stats, shuffle_buffer=6, seed=seed)
    args = WhisperLladaTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                         dataloader_num_workers=workers, use_cpu=True, max_steps=4,
                                         remove_unused_columns=False, report_to="none",
                                         accelerator_config={"dispatch_batches": False})
    torch.manual_seed(0)
    trainer = WhisperLladaTrainer(model=tiny_whisper_llada(), args=args, data_collator=KeyCollator(),
                                  train_dataset=stream)
    loader = trainer.get_train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out.append([key for batch in loader for key in batch["keys"]])
    assert not stats  # no bad records here
    return out


FILE_ORDER = [f"key-{i:02d}" for i in range(SHARDS * PER_SHARD)]


def test_streamed_records_are_shuffled_read_once_per_pass_and_reshuffled(hub_repo, tmp_path):
    first, second = passes(hub_repo, 0, 2, tmp_path)
    for keys in (first, second):  # two workers: each reads its own shards, every record once
        assert sorted(keys) == FILE_ORDER
    assert first != FILE_ORDER and second != first  # shuffled, and reshuffled on the next pass
    assert passes(hub_repo, 0, 2, tmp_path, epochs=1)[0] == first  # the same seed, the same order
    assert passes(hub_repo, 1, 0, tmp_path, epochs=1)[0] != first  # another seed (and no workers): another order


RANK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
    import test_streaming
    from pathlib import Path
    keys = test_streaming.passes(sys.argv[2], 0, 2, Path(sys.argv[3]) / os.environ["RANK"])
    Path(sys.argv[3], f"rank{os.environ['RANK']}.json").write_text(json.dumps(keys))
""")


def test_two_processes_each_read_their_own_part_once_per_pass(hub_repo, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29531", str(script), str(ROOT), hub_repo, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        zero, one = ranks[0][epoch], ranks[1][epoch]
        assert zero and one and not set(zero) & set(one)  # each rank its own records ...
        assert sorted(zero + one) == FILE_ORDER  # ... and together every record once per pass


def test_a_projector_learning_rate_gets_its_own_group_after_the_others(tmp_path):
    """--projector_learning_rate: the projector in its own group, placed last, so that the rate the Trainer logs (the
    first group's) is --learning_rate's, not the projector's (0 with a frozen-by-rate projector)."""
    from conftest import tiny_whisper_llada
    from train_hf import WhisperLladaTrainingArguments
    from whisper_llada_training import WhisperLladaTrainer

    args = WhisperLladaTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=1,
                                         learning_rate=3e-4, projector_learning_rate=0.0, report_to="none")
    from build_whisper_llada import apply_lora

    model = tiny_whisper_llada()
    apply_lora(model, {"r": 2, "lora_alpha": 4})  # the decoder's adapters train at --learning_rate
    trainer = WhisperLladaTrainer(model=model, args=args, data_collator=KeyCollator())
    groups = trainer.create_optimizer().param_groups
    projector = {id(p) for p in model.projector.parameters() if p.requires_grad}
    assert groups[0]["lr"] == 3e-4 and not projector & {id(p) for p in groups[0]["params"]}
    assert all(g["lr"] == 0.0 for g in groups if projector & {id(p) for p in g["params"]})
    assert projector <= {id(p) for g in groups for p in g["params"]}
