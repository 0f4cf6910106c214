"""Data-parallel runs give the single-process numbers.

Three levels: the sharding rules as plain functions; the Problem and its operators in three gloo
processes (``torch.multiprocessing`` spawn) against one process, with uneven shards, an empty
shard, fixed dropout masks and BatchNorm on batch statistics; and ``condlab spectrum`` under
``torchrun --nproc-per-node 2`` against the same command in one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from typer.testing import CliRunner

from condlab.cli import app
from condlab.distributed import (
    StreamedBatches,
    local_batches,
    peak_memory_mb,
    regroup,
    shard,
    shard_bounds,
    shutdown,
)
from condlab.errors import CondlabError, UsageError
from condlab.losses import make_loss
from condlab.operators import GGNOperator, HessianOperator
from condlab.problem import Problem, couples_samples
from tests.cases import make_case

ROOT = Path(__file__).resolve().parents[2]
WORLD = 3  # processes in the library-level run: shards of 1 and 2 batches, and an empty one


# -- sharding rules ------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(5, 2), (7, 3), (2, 3), (0, 2), (8, 4)])
def test_shards_are_contiguous_and_cover_everything(n, world):
    parts = [shard(list(range(n)), r, world) for r in range(world)]
    assert sum(parts, []) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(shard_bounds(n, r, world)[0] == sum(map(len, parts[:r])) for r in range(world))


def _batches(X, y, sizes):
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [(X[s : s + k], y[s : s + k]) for s, k in zip(starts, sizes)]


def test_one_batch_is_regrouped_for_every_rank():
    X, y = torch.arange(10.0)[:, None], torch.arange(10)
    parts = [local_batches([(X, y)], coupled=False, rank_=r, world=3) for r in range(3)]
    assert [first for _, first in parts] == [0, 1, 2]
    assert [int(b[0][0].shape[0]) for b, _ in parts] == [4, 3, 3]
    assert torch.equal(torch.cat([b[0][0] for b, _ in parts]), X)
    assert len(regroup([(X[:2], y[:2])], 3)) == 2  # fewer samples than ranks: no empty batches


def test_coupled_batches_are_never_regrouped():
    X, y = torch.randn(6, 3), torch.zeros(6, dtype=torch.long)
    with pytest.raises(UsageError, match="--batch-size that gives at least 3 batches"):
        local_batches([(X, y)], coupled=True, rank_=0, world=3)
    mine, first = local_batches(_batches(X, y, (2, 2, 2)), coupled=True, rank_=2, world=3)
    assert first == 2 and torch.equal(mine[0][0], X[4:])
    bn = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    drop = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    assert couples_samples(bn, "batch", "eval") and not couples_samples(bn, "eval", "fixed")
    assert couples_samples(drop, "eval", "fixed") and not couples_samples(drop, "eval", "eval")


def test_streamed_batches_move_one_batch_at_a_time():
    host = [(torch.randn(2, 3), torch.arange(2)), (torch.randn(1, 3), torch.arange(1))]
    s = StreamedBatches(host, torch.device("cpu"))
    assert len(s) == 2 and torch.equal(s[1][0], host[1][0]) and len(list(s)) == 2
    assert s[:1][0][0] is host[0][0]  # already on the device: no copy


def test_peak_memory_is_reported_in_mib():
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, a peak never shrinks
    assert peak_memory_mb("cpu") == pytest.approx(kib / 1024, rel=0.05)
    assert peak_memory_mb("cpu") > 50  # torch alone holds more than 50 MiB resident


# -- the library in three processes --------------------------------------------------------------
def _dropout_mlp():
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.4), nn.Linear(5, 3)).double()


def _scenario(name: str):
    """(model, batches, loss, Problem kwargs, shard by bounds instead of local_batches)."""
    if name == "dropout-fixed":
        model, X, y, loss, kw = make_case("mlp-ce", n=25)
        torch.manual_seed(3)
        return _dropout_mlp(), _batches(X, y, (4, 5, 4, 3, 5, 4)), loss, {"dropout_mode": "fixed"}, False
    case, sizes, extra, empty = {
        "uneven-ce": ("mlp-ce", (5, 7, 3, 6, 4), {}, False),
        "regrouped-mse": ("mlp-mse", (25,), {}, False),
        "params-subset": ("residual-layernorm-ce", (6, 6, 6, 7), {"params": ["head.*"]}, False),
        "batchnorm-batch-empty-rank": ("batchnorm-batch-ce", (12, 13), {}, True),
    }[name]
    model, X, y, loss, kw = make_case(case, n=25)
    return model, _batches(X, y, sizes), loss, {**kw, **extra}, empty


SCENARIOS = ["uneven-ce", "regrouped-mse", "params-subset", "batchnorm-batch-empty-rank", "dropout-fixed"]


def _products(p: Problem) -> dict[str, torch.Tensor]:
    V = torch.randn(p.n_params, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return {
        "hessian": HessianOperator(p, block_size=2) @ V,
        "ggn": GGNOperator(p) @ V,
        "gradient": p.gradient(),
        "loss": p.loss().reshape(1),
    }


def _single_process(name: str) -> dict[str, torch.Tensor]:
    model, batches, loss, kw, _ = _scenario(name)
    return _products(Problem(model, batches, loss, dtype=torch.float64, **kw))


def _same_everywhere(t: torch.Tensor) -> bool:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return all(torch.equal(p, parts[0]) for p in parts)


def _expect_error_everywhere(make, match: str) -> None:
    with pytest.raises(CondlabError, match=match):
        make()


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # the all-reduce hands every rank the same bits
        x = torch.randn(10_000, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
        dist.all_reduce(x)
        assert _same_everywhere(x)
        for name in SCENARIOS:
            model, batches, loss, kw, empty = _scenario(name)
            n_total = sum(int(X.shape[0]) for X, _ in batches)
            count_total = sum(make_loss(loss).count(y) for _, y in batches)
            if empty:  # 2 batches on 3 ranks: rank 0 holds none
                lo, hi = shard_bounds(len(batches), rank, world)
                mine, first = batches[lo:hi], lo
            else:
                coupled = couples_samples(model, kw.get("bn_mode", "eval"), kw.get("dropout_mode", "eval"))
                mine, first = local_batches(batches, coupled=coupled)
            p = Problem(
                model, mine, loss, dtype=torch.float64, n_total=n_total, count_total=count_total,
                batch_offset=first, **kw,
            )
            res = _products(p)
            assert all(_same_everywhere(t) for t in res.values()), name
            if rank == 0:
                torch.save(res, Path(out_dir) / f"{name}.pt")
        # a data error on one rank is raised on every rank (none waits in a collective)
        model, X, y, loss, _ = make_case("mlp-ce", n=15)
        batches = shard(_batches(X, y, (5, 5, 5)))
        if rank == world - 1:
            batches = [(batches[0][0], torch.full_like(batches[0][1], 7))]
        _expect_error_everywhere(lambda: Problem(model, batches, loss, n_total=15), r"outside 0\.\.2: the model has 3 classes")
        if rank == 1:
            batches = [(torch.randn(5, 4, dtype=torch.float64), batches[0][1])]
        _expect_error_everywhere(lambda: Problem(model, batches, loss, n_total=15), "do not fit the model")
        assert _same_everywhere(torch.tensor([peak_memory_mb()]))
    finally:
        shutdown()


def test_three_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for name in SCENARIOS:
        got, want = torch.load(tmp_path / f"{name}.pt"), _single_process(name)
        for key, w in want.items():
            scale = w.abs().max().clamp_min(1e-300)
            assert (got[key] - w).abs().max() <= 1e-12 * scale, (name, key)


# -- condlab spectrum under torchrun -------------------------------------------------------------
SPECTRUM = [
    "spectrum", "--model", "mlp", "--data", "iris", "--dtype", "float64", "--batch-size", "60",
    "--top", "3", "--bottom", "2", "--trace", "--trace-method", "hutchinson", "--probes", "20",
    "--format", "json",
]  # iris: batches of 60, 60 and 30 samples; rank 0 holds 60 of them, rank 1 holds 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _numbers(doc: dict) -> list[tuple]:
    return [
        (r["eigenvalues_top"], r["eigenvalues_bottom"], r["trace"], r["trace_stderr"], r["n_samples"])
        for r in doc["results"]
    ]


def test_torchrun_two_processes_print_the_one_process_numbers():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "condlab",
    ]
    proc = subprocess.run(
        [*launch, *SPECTRUM], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)  # one document: only rank 0 printed
    one = CliRunner().invoke(app, SPECTRUM)
    assert one.exit_code == 0, one.output
    one = json.loads(one.stdout)
    for (top2, bot2, tr2, se2, n2), (top1, bot1, tr1, se1, n1) in zip(_numbers(two), _numbers(one)):
        assert n2 == n1 == 150
        scale = max(abs(v) for v in top1)
        assert all(abs(a - b) <= 1e-10 * scale for a, b in zip(top2 + bot2, top1 + bot1, strict=True))
        assert abs(tr2 - tr1) <= 1e-10 * scale and abs(se2 - se1) <= 1e-10 * scale
    assert len(two["results"]) == len(one["results"]) == 1
