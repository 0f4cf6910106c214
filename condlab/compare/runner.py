"""Train every run of a comparison and emit its rows; resume from rows already written.

A run is (variant, optimizer entry, lr, seed), in that nesting order. Each starts from the
seed's ``theta_0`` and takes ``steps`` updates ``theta, state = opt.update(g, state, theta)``
with ``g`` the gradient of the mini-batch (or full-batch) mean loss. Step ``t`` (0 = before the
first update) gets a row when ``t % log_every == 0``, when conditioning is tracked at ``t``,
and at the last step. A run stops early, with status ``diverged``, when ``theta`` or the
training loss is not finite or the loss has grown from its start by more than
``(divergence - 1) * max(|initial loss|, its drop so far)`` (:func:`diverged`: judged by the
run's own loss history, so a loss with an offset, negative or at 0, is judged as fairly as a
positive one; for a positive loss the rule is ``loss > divergence * initial loss``).

Resuming: a run whose rows end at its last step (or in ``diverged``) is not run again; a run
cut short is rerun from its start (every random draw is seeded, so the trajectory is the same)
and only rows after its last written step are emitted; tracking is skipped for the steps
already written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from condlab.compare.config import CompareConfig, OptimizerEntry, Variant
from condlab.compare.csvlog import normalize
from condlab.compare.setup import DTYPES, Data, Setup, load_data
from condlab.train.diag_optimizers import make_optimizer

SMALL = 5e7  # parameters x samples below which one torch thread is fastest
# on_event(kind, payload): kind "run" (payload: RunSpec, index, total) or "row" (the row dict)
Event = Callable[[str, dict], None]


@dataclass(frozen=True)
class RunSpec:
    variant: Variant
    entry: OptimizerEntry
    lr: float
    seed: int

    @property
    def key(self) -> tuple:
        return (self.variant.label, self.entry.label, self.lr, self.seed)

    def describe(self) -> str:
        v = "" if self.variant.label == "default" else f"[{self.variant.label}] "
        return f"{v}{self.entry.label} lr={self.lr:g} seed={self.seed}"


def plan(cfg: CompareConfig) -> list[RunSpec]:
    return [RunSpec(v, e, lr, s) for v in cfg.variants for e in cfg.optimizers
            for lr in e.lrs for s in cfg.seeds]


def row_key(row: dict) -> tuple:
    return (row["variant"], row["optimizer"], row["lr"], row["seed"])


def _set_threads(threads: int | None, setup: Setup) -> None:
    """``threads`` torch CPU threads; None: one thread for small problems (parameters x training
    samples < 5e7, as ``condlab spectrum`` does), where threading costs more than it saves."""
    from condlab.inputs import set_threads

    if threads is not None:
        set_threads(threads)
    elif setup.problem.n_params * len(setup.data.train) < SMALL:
        torch.set_num_threads(1)


def diverged(loss: float, start: float, lowest: float, factor: float) -> bool:
    """Whether a run whose loss began at ``start`` and has been as low as ``lowest`` has
    diverged at ``loss``: not finite, or grown by more than ``(factor - 1) * scale`` from its
    start, the scale being ``max(|start|, start - lowest)`` (its own size or its progress; a loss
    that starts at 0 and has not dropped yet is judged only by finiteness)."""
    if not math.isfinite(loss):
        return True
    scale = max(abs(start), start - lowest)
    return scale > 0 and loss - start > (factor - 1) * scale


def run_all(
    cfg: CompareConfig,
    *,
    existing: Iterable[dict] = (),
    emit: Callable[[dict], None] | None = None,
    on_event: Event | None = None,
    threads: int | None = None,
) -> list[dict]:
    """Every row of the comparison, in order: ``existing`` ones kept, new ones ``emit``-ted."""
    done: dict[tuple, list[dict]] = {}
    for row in existing:
        done.setdefault(row_key(row), []).append(row)
    dtype = DTYPES[cfg.dtype]
    data_cache: dict[str, Data] = {}
    setups: dict[tuple, Setup] = {}
    rows: list[dict] = []
    specs = plan(cfg)
    for i, spec in enumerate(specs):
        old = done.get(spec.key, [])
        rows.extend(old)
        if on_event is not None:
            on_event("run", {"spec": spec, "index": i, "total": len(specs),
                             "resumed": len(old)})
        if old and (old[-1]["step"] >= cfg.steps or old[-1]["status"] == "diverged"):
            continue
        problem = cfg.problem(spec.variant)
        if spec.variant.label not in data_cache:
            data_cache[spec.variant.label] = load_data(problem, dtype)
        skey = (spec.variant.label, spec.seed)
        if skey not in setups:
            setups[skey] = Setup(problem, data_cache[spec.variant.label], spec.seed, dtype, cfg.track)
            if len(setups) == 1:
                _set_threads(threads, setups[skey])
        last = old[-1]["step"] if old else -1

        def out(row: dict) -> None:
            row = normalize(row)
            rows.append(row)
            if emit is not None:
                emit(row)
            if on_event is not None:
                on_event("row", row)

        low = min((r["train_loss"] for r in old), default=None)  # its history before a resume
        run_one(cfg, spec, setups[skey], skip_until=last, emit=out, lowest=low)
    return rows


def run_one(cfg: CompareConfig, spec: RunSpec, setup: Setup, *, skip_until: int,
            emit: Callable[[dict], None], lowest: float | None = None) -> None:
    """Train one run and ``emit`` its rows after step ``skip_until`` (``lowest``: the lowest
    loss of its rows already written, for the divergence guard)."""
    entry = spec.entry
    basis = setup.eigenbasis if entry.basis == "eigen" else None
    opt = make_optimizer(entry.name, {**entry.hparams, "lr": spec.lr}, basis=basis)
    curvature = setup.curvature(opt.hparams, basis) if entry.name in ("gn", "gn-sqrt") else None
    head = {"variant": spec.variant.label, "optimizer": entry.label, "method": entry.name,
            "basis": entry.basis, "batch_size": setup.batch_size, "lr": spec.lr,
            "weight_decay": opt.hparams.get("weight_decay", 0.0), "tuned": entry.tuned,
            "seed": spec.seed}
    theta = setup.theta0.clone()
    state = opt.init(theta)
    batches = setup.batches()
    tracker, track = setup.tracker, cfg.track
    loss0 = None
    previous = None
    for t in range(cfg.steps + 1):
        if t > 0:
            X, y = next(batches)
            previous = theta
            theta, state = opt.update(setup.gradient(theta, X, y), state, theta,
                                      curvature=curvature)
        tracked = track.due(t, cfg.steps)
        if not (tracked or t % cfg.log_every == 0 or t == cfg.steps):
            continue
        if t <= skip_until and t > 0:
            continue
        ev = setup.evaluate(theta)
        loss = ev["train_loss"]
        loss0 = loss if loss0 is None else loss0
        lowest = loss if lowest is None or not loss >= lowest else lowest
        bad = not bool(theta.isfinite().all()) or diverged(loss, loss0, lowest, cfg.divergence)
        if t <= skip_until:
            continue  # step 0 of a resumed run: only its initial loss was needed
        row = {**head, "step": t, "status": "diverged" if bad else "ok", **ev}
        if not bad:
            row.update(tracker.weights(theta, previous, spec.lr))
            if tracked:
                row.update(tracker.conditioning(theta, opt, state))
        emit(row)
        if bad:
            return
