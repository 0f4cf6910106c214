"""Data-parallel runs with structured inputs (HF-style ``{"input_ids", "attention_mask"}`` dicts
and ``(ids, mask)`` tuples) give the single-process numbers.

A tiny token model with padding (masked attention, padded targets ignored by the token-mean
``sequence-cross-entropy``) in two gloo processes (``torch.multiprocessing`` spawn) against one
process: uneven shards, and one batch regrouped into one per rank.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from condlab.distributed import local_batches, regroup, shutdown
from condlab.load.structure import batch_len
from condlab.losses import make_loss
from condlab.problem import Problem
from tests.distributed.test_distributed import _products

WORLD = 2
VOCAB, T = 7, 5


class MaskedTokenLM(nn.Module):
    """Embedding -> one attention head that skips padded keys -> LayerNorm -> logits [B, T, V]."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 4)
        self.qkv = nn.Linear(4, 12)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, VOCAB)

    def forward(self, input_ids, attention_mask):
        h = self.embed(input_ids)
        q, k, v = self.qkv(h).split(4, dim=-1)
        scores = q @ k.transpose(-2, -1) / 2.0
        scores = scores.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
        return self.head(self.ln(h + torch.softmax(scores, dim=-1) @ v))


class TupleLM(MaskedTokenLM):
    """The same model called positionally: ``model(ids, mask)``."""


def _data(n: int = 11):
    """Token ids, an attention mask with 0..2 padded positions at the end, targets -100 there."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n, T), generator=g)
    pad = torch.randint(0, 3, (n,), generator=g)
    mask = (torch.arange(T)[None, :] < (T - pad)[:, None]).long()
    y = torch.randint(0, VOCAB, (n, T), generator=g).masked_fill(mask == 0, -100)
    return ids, mask, y


def _model(cls):
    torch.manual_seed(1)
    return cls().double()


def _scenario(name: str):
    """(model, batches) for ``name``: dict or tuple inputs, in uneven batches or one batch."""
    ids, mask, y = _data()
    structure, sizes = {
        "dict-uneven": ("dict", (3, 4, 2, 2)),
        "dict-one-batch": ("dict", (11,)),
        "tuple-uneven": ("tuple", (5, 1, 5)),
    }[name]
    batches, s = [], 0
    for k in sizes:
        X = (
            {"input_ids": ids[s : s + k], "attention_mask": mask[s : s + k]}
            if structure == "dict"
            else (ids[s : s + k], mask[s : s + k])
        )
        batches.append((X, y[s : s + k]))
        s += k
    return _model(MaskedTokenLM if structure == "dict" else TupleLM), batches


SCENARIOS = ["dict-uneven", "dict-one-batch", "tuple-uneven"]
LOSS = "sequence-cross-entropy"


def _problem(model, batches, *, first=0, n_total=None, count_total=None) -> Problem:
    return Problem(model, batches, LOSS, dtype=torch.float64, n_total=n_total,
                   count_total=count_total, batch_offset=first)


def test_structured_batches_regroup_at_the_same_sample_boundaries():
    _, batches = _scenario("dict-uneven")
    parts = regroup(batches, 3)
    assert [batch_len(X) for X, _ in parts] == [4, 4, 3]
    ids = torch.cat([X["input_ids"] for X, _ in batches])
    mask = torch.cat([X["attention_mask"] for X, _ in batches])
    assert torch.equal(torch.cat([X["input_ids"] for X, _ in parts]), ids)
    assert torch.equal(torch.cat([X["attention_mask"] for X, _ in parts]), mask)
    assert torch.equal(torch.cat([y for _, y in parts]), torch.cat([y for _, y in batches]))
    _, tup = _scenario("tuple-uneven")
    mine, first = local_batches(tup, coupled=False, rank_=1, world=2)
    assert first == 1 and isinstance(mine[0][0], tuple) and [batch_len(X) for X, _ in mine] == [1, 5]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name in SCENARIOS:
            model, batches = _scenario(name)
            n_total = sum(batch_len(X) for X, _ in batches)
            count_total = sum(make_loss(LOSS).count(y) for _, y in batches)
            mine, first = local_batches(batches, coupled=False)
            p = _problem(model, mine, first=first, n_total=n_total, count_total=count_total)
            res = _products(p)
            if rank == 0:
                torch.save(res, Path(out_dir) / f"{name}.pt")
    finally:
        shutdown()


def test_two_processes_match_one_on_structured_token_batches(tmp_path):
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for name in SCENARIOS:
        model, batches = _scenario(name)
        want = _products(_problem(model, batches))
        got = torch.load(tmp_path / f"{name}.pt")
        for key, w in want.items():
            scale = w.abs().max().clamp_min(1e-300)
            assert (got[key] - w).abs().max() <= 1e-10 * scale, (name, key)
    # the padding matters: the loss is the mean over the unpadded positions only
    _, mask, _ = _data()
    assert make_loss(LOSS).count(_data()[2]) == int(mask.sum()) < mask.numel()


@pytest.mark.parametrize("name", SCENARIOS)
def test_one_process_loss_is_the_token_mean(name):
    """The single-process reference itself: the token-mean cross-entropy over all batches."""
    model, batches = _scenario(name)
    ids, mask, y = _data()
    out = model(input_ids=ids, attention_mask=mask)
    want = nn.functional.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1), ignore_index=-100)
    got = float(_problem(model, batches).loss().detach())
    assert math.isclose(got, float(want.detach()), rel_tol=1e-12)
