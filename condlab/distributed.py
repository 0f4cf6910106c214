"""Data-parallel measurement with ``torch.distributed`` (torchrun; gloo on CPU, nccl on GPUs).

Each rank holds a contiguous shard of the fixed batches. A curvature product is the local sum
``sum_{b in shard} (n_b / N) A_b v`` followed by an all-reduce, with ``N`` the number of samples
over all ranks, so every rank gets exactly the single-process product. Estimators run the same
seeded arithmetic on every rank and so agree; only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process prints and writes (rank 0, or the only process)."""
    return rank() == 0


def init_from_env() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("CONDLAB_BACKEND") != "gloo" else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks in place (identity in a single process)."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def shard(batches: Sequence, rank_: int | None = None, world: int | None = None) -> list:
    """The contiguous share of ``batches`` for ``rank_`` (uneven when they do not divide)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    n = len(batches)
    lo, hi = (n * rank_) // world, (n * (rank_ + 1)) // world
    return list(batches[lo:hi])
