"""Data-parallel measurement with ``torch.distributed`` (torchrun; gloo on CPU, nccl on GPUs).

The fixed batches ``b = 0..B-1`` of the mean loss ``L = sum_b (n_b / N) L_b`` are cut into
contiguous shards, one per rank (uneven when they do not divide). A curvature product is the
local sum ``sum_{b in shard} (n_b / N) A_b V`` followed by an all-reduce, with ``N`` the number
of samples over *all* ranks, so every rank gets the single-process product up to the order of
floating-point additions. The all-reduce hands every rank the same bits (gloo's and nccl's
algorithms reduce each element in one place and send the sum to all; tests/test_distributed.py
checks it on three ranks), and the estimators draw their vectors from seeded CPU
generators, so Lanczos and Hutchinson run the same arithmetic, and take the same branches, on
every rank; only rank 0 prints and writes files.

Also here: the memory side of scaling out. :class:`StreamedBatches` keeps the data on the host
and moves one batch at a time to the device; :func:`peak_memory_mb` reports the peak.
"""

from __future__ import annotations

import atexit
import os
import resource
import sys
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from condlab.errors import CondlabError, UsageError

Batch = tuple  # (inputs, targets): tensors, or dicts/tuples of tensors with the samples first


# -- the process group -----------------------------------------------------------------------
def is_distributed() -> bool:
    """Whether this process is one of several in an initialized process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process prints and writes: rank 0 of the process group (or, before it joins
    one, of the torchrun job, ``RANK``), or the only process."""
    if is_distributed():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def backend_for_env() -> str:
    """gloo for CPU tensors and, where CUDA is available, nccl for CUDA tensors.

    ``CONDLAB_BACKEND`` overrides it (e.g. ``gloo`` to run several ranks on one GPU, which nccl
    refuses).
    """
    override = os.environ.get("CONDLAB_BACKEND")
    if override:
        return override
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_from_env() -> None:
    """Join the process group that torchrun describes (``WORLD_SIZE > 1``); a no-op otherwise.

    Each rank uses GPU ``LOCAL_RANK`` (``--device cuda`` then means that GPU). Idempotent.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; run a single process")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend=backend_for_env())
    atexit.register(shutdown)


def shutdown() -> None:
    """Leave the process group (registered to run at exit by :func:`init_from_env`).

    gloo's worker threads release a finished collective's tensors a moment after it returns,
    and need the GIL to do so; a process that starts to exit in that moment aborts ("terminate
    called without an active exception"). Sleeping first lets them finish.
    """
    if dist.is_available() and dist.is_initialized():
        time.sleep(0.1)  # releases the GIL
        dist.destroy_process_group()


# -- collectives -----------------------------------------------------------------------------
def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks in place (identity in a single process); every rank gets the same bits.

    A strided ``x`` (vmap's ``out_dims=1`` returns one) is reduced through a contiguous copy:
    gloo reduces a non-contiguous tensor's own copy and leaves ``x`` as it was."""
    if is_distributed():
        if not x.is_contiguous():
            y = x.contiguous()
            dist.all_reduce(y, op=dist.ReduceOp.SUM)
            return x.copy_(y)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max(x: Tensor) -> Tensor:
    """Elementwise maximum of ``x`` over ranks, in place (identity in a single process)."""
    if is_distributed():
        y = x if x.is_contiguous() else x.contiguous()  # see all_reduce_sum
        dist.all_reduce(y, op=dist.ReduceOp.MAX)
        if y is not x:
            x.copy_(y)
    return x


def raise_if_any(error: Exception | None) -> None:
    """Raise on *every* rank if any rank has an ``error`` (a collective: all ranks must call it).

    A rank that found the problem raises its own error; the others raise a
    :class:`CondlabError` with the first failing rank's message, so no rank is left waiting in
    a later collective and rank 0 can report what went wrong.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    found: list = [None] * world_size()
    local = None if error is None else (str(error), getattr(error, "exit_code", 1))
    dist.all_gather_object(found, local)
    if error is not None:
        raise error
    failed = [f for f in found if f is not None]
    if failed:
        message, code = failed[0]
        raise (UsageError if code == UsageError.exit_code else CondlabError)(message)


# -- sharding --------------------------------------------------------------------------------
def shard_bounds(n: int, rank_: int, world: int) -> tuple[int, int]:
    """``[lo, hi)``: rank ``rank_``'s contiguous share of ``n`` items (sizes differ by <= 1)."""
    return (n * rank_) // world, (n * (rank_ + 1)) // world


def shard(batches: Sequence, rank_: int | None = None, world: int | None = None) -> list:
    """The contiguous share of ``batches`` for ``rank_`` (uneven when they do not divide)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    lo, hi = shard_bounds(len(batches), rank_, world)
    return list(batches[lo:hi])


def regroup(batches: Sequence[Batch], k: int) -> list[Batch]:
    """The same samples, in order, in ``k`` nearly equal batches (fewer if there are fewer samples).

    Inputs and targets may be structured (dicts or tuples of tensors, samples first): every
    tensor in them is cut at the same sample boundaries.
    """
    from condlab.load.structure import batch_len, concat, take

    X = concat([Xb for Xb, _ in batches])
    y = concat([yb for _, yb in batches])
    parts = torch.arange(batch_len(X)).tensor_split(k)  # the first n % k parts one larger
    return [
        (take(X, slice(int(i[0]), int(i[-1]) + 1)), take(y, slice(int(i[0]), int(i[-1]) + 1)))
        for i in parts
        if len(i)
    ]


def local_batches(
    batches: Sequence[Batch],
    *,
    coupled: bool,
    rank_: int | None = None,
    world: int | None = None,
) -> tuple[list[Batch], int]:
    """This rank's batches and the global index of its first one.

    With fewer batches than ranks the samples are first regrouped into ``world`` batches, which
    leaves the operator unchanged (it weights each batch by ``n_b / N``), unless the batches
    ``coupled`` their samples (BatchNorm on batch statistics, fixed dropout masks): then the
    grouping is part of the operator and fewer batches than ranks is refused.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if world == 1:
        return list(batches), 0
    if len(batches) < world:
        if coupled:
            raise UsageError(
                f"{len(batches)} batch(es) for {world} processes: with BatchNorm on batch "
                "statistics or fixed dropout masks the batches are part of the operator and "
                f"cannot be regrouped; pass a --batch-size that gives at least {world} batches, "
                "or run fewer processes"
            )
        batches = regroup(batches, world)
    lo, hi = shard_bounds(len(batches), rank_, world)
    return list(batches[lo:hi]), lo


# -- memory ----------------------------------------------------------------------------------
class StreamedBatches(Sequence):
    """Batches held where they were given (the host) and moved to ``device`` one at a time.

    ``batches[b]`` and iteration give device tensors, so only the batch in use (and what the
    product builds from it) occupies device memory. On the CPU this is a plain view.
    """

    def __init__(self, batches: Sequence[Batch], device: torch.device):
        self.host = list(batches)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.host)

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[i] for i in range(*b.indices(len(self)))]
        from condlab.load.structure import map_tensors

        X, y = self.host[b]
        return map_tensors(X, lambda t: t.to(self.device)), map_tensors(y, lambda t: t.to(self.device))


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory of the process so far, in MiB, the largest over ranks.

    On CUDA the peak of tensors allocated on ``device`` (``torch.cuda.max_memory_allocated``);
    otherwise the peak resident set size of the process (``getrusage``), which includes the
    Python interpreter and torch itself. A collective when distributed.
    """
    device = torch.device(device)
    if device.type == "cuda":
        mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
    if is_distributed():
        t = all_reduce_max(torch.tensor([mb], dtype=torch.float64))
        mb = float(t[0])
    return round(mb, 1)
