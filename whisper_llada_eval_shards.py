"""Evaluation over several processes: `torchrun --nproc_per_node N eval_hf.py ...` (or `accelerate launch`) splits
each split's utterances over the processes, balanced by duration; each process decodes its share into its own
hypotheses file (`hypotheses_<decoding>_<split>.rank<r>-of-<N>.jsonl`, resumable per shard), and rank 0 merges them
into the run's hypotheses files and scores them into one results.json / results.md. A sharded row's RTFx is the
audio of the split over the slowest process's decoding seconds (the wall time of the sharded decoding).

    Shards.from_env()        rank and world size from torchrun / accelerate's environment; the process group
    share(records, shards)   this rank's records: longest first, each to the rank with the least audio so far
    shard_job(job, shards)   the job restricted to this rank's share, with its own hypotheses file
    merge_shards(job, ...)   rank 0: every rank's entries as one `JobProgress`, processing seconds of the slowest
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from whisper_llada_eval_inputs import SplitData
from whisper_llada_report import HypothesesFile


@dataclass
class Shards:
    """This process's place among the evaluation's processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Shards":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world > 1

    def start(self, device: torch.device) -> torch.device:
        """Joins the process group (NCCL on GPUs, gloo on CPUs); returns this rank's device (cuda:LOCAL_RANK)."""
        if not self.active:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def common(self, value: str) -> str:
        """Rank 0's `value`, on every rank (e.g. the run's id, which tells this run's hypotheses from resumed ones)."""
        if not (self.active and torch.distributed.is_initialized()):
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def stop(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def share(records: list[dict], shards: Shards, rank: int | None = None) -> list[dict]:
    """`rank`'s records (default this process's): the split's records longest first, each given to the rank with the
    least audio so far (ties to the lowest rank): every rank computes the same partition."""
    totals = [0.0] * shards.world
    mine = []
    target = shards.rank if rank is None else rank
    for record in sorted(records, key=lambda r: (-(r.get("duration") or 0.0), str(r["key"]))):
        owner = min(range(shards.world), key=lambda r: (totals[r], r))
        totals[owner] += record.get("duration") or 0.0
        if owner == target:
            mine.append(record)
    return mine


def shard_file(path, shards: Shards, rank: int):
    return path.with_name(path.name[: -len(".jsonl")] + f".rank{rank}-of-{shards.world}.jsonl")


def shard_job(job, shards: Shards):
    """The job restricted to this rank's share of its split, writing its own hypotheses file (whose run signature
    names the shard)."""
    data = SplitData(job.data.split, share(job.data.records, shards), job.data.skipped)
    signature = {**job.hypotheses.signature, "shard": {"rank": shards.rank, "world": shards.world,
                                                        "utterances": len(data.records)}}
    hypotheses = HypothesesFile(shard_file(job.hypotheses.path, shards, shards.rank), signature)
    return dataclasses.replace(job, data=data, hypotheses=hypotheses)


def merge_shards(job, shards: Shards, progress_class, this_run: str | None = None):
    """Rank 0: the entries of every rank's hypotheses file as one progress, written to the job's own hypotheses file
    (in the split's order); the processing seconds of the sharded decoding are the slowest rank's. Entries whose batch
    was not decoded by `this_run` (the run's id, every rank's batch ids start with it) count as resumed."""
    done, seconds = {}, []
    for rank in range(shards.world):
        part = HypothesesFile(shard_file(job.hypotheses.path, shards, rank), {}).read()
        done.update(part)
        batches = {e.get("batch_id"): e.get("batch_seconds") or 0.0 for e in part.values()}
        seconds.append(sum(batches.values()))
    ordered = {r["key"]: done[r["key"]] for r in job.data.records if r["key"] in done}
    resumed = sum(this_run is not None and not str(e.get("batch_id", "")).startswith(this_run)
                  for e in ordered.values())
    job.hypotheses.path.unlink(missing_ok=True)
    job.hypotheses.meta_path.unlink(missing_ok=True)
    slowest = max(seconds) if seconds else 0.0
    entries = [{**e, "batch_id": "sharded", "batch_seconds": round(slowest, 6)} for e in ordered.values()]
    if entries:
        job.hypotheses.append(entries)
    return progress_class(ordered, resumed, timed=len(ordered) - resumed), slowest


__all__ = ["Shards", "share", "shard_job", "merge_shards", "shard_file"]
