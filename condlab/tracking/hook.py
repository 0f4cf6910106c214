"""A training-loop hook: the rows of ``condlab track`` measured live, every ``every`` steps.

    tracker = condlab.Tracker(model, "cross-entropy", [(X, y)], every=100, csv="track.csv")
    for step in range(steps):
        ...; optimizer.step()
        tracker.step(optimizer)          # measures after steps every, 2 every, ...

By default a measurement is what edge-of-stability studies plot: ``lambda_max`` of the Hessian
and, when the optimizer holds a diagonal preconditioner (Adam, RMSprop, AdaGrad), of its
``P^-1 H`` (``lambda_max(P^-1/2 H P^-1/2)``), each by single-vector Lanczos started from the
previous measurement's top two Ritz vectors and stopped once the eigenvalue is known to ``tol``
(:mod:`condlab.tracking.top`): a handful of products while the top eigenvectors move little.
``kappa=True`` (or ``bottom=k``, or any other ``condlab spectrum`` option the fast path does
not serve) adds ``lambda_min`` and kappa through the full ``condlab spectrum`` solver.

The measurement batch is the first batch given (one training batch) unless ``samples=N`` takes
the first N samples of all of them. Each row reports its products (``hvps``), its ``seconds``
and ``in_steps``: those seconds over the mean duration of a training step, the time since the
last measurement over the ``step`` calls since.

At a measured step the model's current weights, the fixed measurement batch and the
optimizer's live state (``lr``, ``beta1``, its diagonal preconditioner) are measured exactly as
``condlab track`` measures a checkpoint of them with the same options, so a sweep over
checkpoints saved at the same steps reproduces the rows. Training is not disturbed: the
weights and buffers are copied (never written), the model's mode and ``.grad`` are untouched,
the optimizer is only read, and every random draw comes from condlab's own generators (the
global CPU and CUDA RNG states are unchanged).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from condlab.config import SpectrumConfig, build
from condlab.errors import UsageError
from condlab.inputs import Inputs
from condlab.load.data import Dataset
from condlab.options import TRACKER, by_name
from condlab.tracking.rows import COLUMNS, is_adaptive, optimizer_hparams, result_rows
from condlab.tracking.sharpness import fast, measure_step, prepare

TENSORBOARD_SCALARS = ("lambda_max", "kappa", "stability_ratio", "trace")
TOL = 1e-3  # lambda_max alone to 0.1%: far below a measurement batch's own sampling error
HOOK_COLUMNS = COLUMNS + ("seconds", "in_steps")  # a training loop's rows also say what they cost


def _dataset(batches: Sequence[tuple[Tensor, Tensor]], loss: str,
             samples: int | None = None) -> tuple[Dataset, int | None]:
    """The measurement set: the first batch, or the first ``samples`` samples of all of them
    (in batches of the first batch's size)."""
    if not batches:
        raise UsageError("Tracker needs at least one batch of (inputs, targets) to measure on")
    if samples is None:
        batches = batches[:1]
    X = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    if samples is not None:
        if samples > len(y):
            raise UsageError(f"Tracker samples={samples} but the batches hold {len(y)} samples; "
                             "pass more batches or a smaller samples")
        X, y = X[:samples], y[:samples]
    classify = loss == "cross-entropy"
    ds = Dataset(X=X, y=y, task="classification" if classify else "regression",
                 num_classes=int(y.max()) + 1 if classify else None, name="training batches",
                 spec={"name": "training batches"})
    first = int(batches[0][0].shape[0])
    return ds, (first if len(y) > first else None)


class Tracker:
    """Records the sharpness and the preconditioned sharpness along a training run.

    ``loss``: ``"cross-entropy"`` or ``"mse"``; ``batches``: fixed ``(X, y)`` batches; the
    curvature is measured on the first (one training batch) or, with ``samples=N``, on the first
    N samples of all of them (in batches of the first one's size; the mean loss, weighted by
    batch size). ``csv``: a file to append rows to (``resume=True`` continues an existing one
    written with the same options); ``tensorboard``: a log folder or a ``SummaryWriter`` for
    scalars (skipped with a warning when tensorboard is not installed). ``precond``: settings
    beside the baseline, as ``--precond``; default ``("optimizer",)`` when the optimizer holds a
    diagonal preconditioner (Adam, RMSprop, AdaGrad), else none. ``kappa=True``: also
    ``lambda_min`` and kappa (``bottom=1`` unless given; the full solver, many more products).
    Every other keyword is a ``condlab spectrum`` option (``top``, ``bottom``, ``tol``,
    ``max_hvps``, ``curvature``, ``trace``, ``params``, ``norm``, ..., same names; here ``top``
    defaults to 1, ``bottom`` to 0 and, for lambda_max alone, ``tol`` to 1e-3, else the dtype's
    default); ``dtype`` and ``device`` default to the model's.
    ``warm``: start Lanczos from the previous measurement's Ritz vectors.
    """

    def __init__(self, model: nn.Module, loss: str, batches: Sequence[tuple[Tensor, Tensor]], *,
                 every: int = 100, csv: str | Path | None = None, resume: bool = False,
                 tensorboard: Any = None, precond: Sequence[str] | None = None, warm: bool = True,
                 kappa: bool = False, samples: int | None = None, **options: Any):
        keys = by_name(TRACKER)  # the hook's own keywords, typed and checked as declared
        every = keys["every"].parse(every, "Tracker")
        precond = keys["precond"].parse(precond, "Tracker")
        kappa = keys["kappa"].parse(kappa, "Tracker")
        samples = keys["samples"].parse(samples, "Tracker")
        p = next(model.parameters(), None)
        if p is None:
            raise UsageError("the model has no parameters to measure")
        ends = {"top": 1, "bottom": 1 if kappa else 0}
        values = {"dtype": str(p.dtype).replace("torch.", ""), "device": str(p.device), **ends,
                  **options, "model": type(model).__name__, "loss": loss}
        self.cfg: SpectrumConfig = build(SpectrumConfig, values, source="Tracker options")
        if fast(self.cfg) and options.get("tol") is None:  # lambda_max alone: to 0.1%
            self.cfg = dataclasses.replace(self.cfg, tol=TOL)
        self.model, self.every, self.warm = model, every, warm
        self.precond = None if precond is None else tuple(precond)
        self.dataset, self.batch_size = _dataset(batches, loss, samples)
        self.count = 0
        self.rows: list[dict] = []  # every row recorded, in order
        self.measurements: list[dict] = []  # one per measurement: products, seconds, in steps
        self.vectors: dict | None = None
        self.log = self._open_csv(csv, resume) if csv is not None else None
        self.writer = self._writer(tensorboard)
        self._cfg_key, self._cfg = None, None  # the measurement config of the last optimizer hparams
        # the fast path's Problem (the model copied and checked), built now and moved to each
        # measured step's weights; its cost is the set-up, not a measurement's
        wall, cpu = time.perf_counter(), time.process_time()
        self.kept = None
        if fast(self.cfg):
            inputs = Inputs(model, self.dataset, self.cfg.loss, None, "training loop")
            self.kept = prepare(self._with_batches(self.cfg), inputs)
        self.setup = {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
        self._mark = (time.perf_counter(), time.process_time())  # the end of the last measurement
        self._steps = 0  # training steps counted since

    def _open_csv(self, path, resume: bool):
        from condlab.compare.csvlog import open_log

        config = {**self.cfg.to_dict(), "every": self.every, "precond": list(self.precond or ["auto"])}
        log, _ = open_log(Path(path), config, resume=resume, force=False, columns=HOOK_COLUMNS,
                          what="track")
        return log

    def _writer(self, tensorboard):
        if tensorboard is None or hasattr(tensorboard, "add_scalar"):
            return tensorboard
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed (pip install tensorboard): no TensorBoard "
                          "scalars; the CSV and rows are still written", stacklevel=3)
            return None
        return SummaryWriter(str(tensorboard))

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, step: int | None = None) -> list[dict]:
        """Count one training step (or set it: ``step``); at a multiple of ``every`` measure,
        append the rows to the CSV and TensorBoard, and return them (else ``[]``). The time since
        the previous call counts as one training step. No clock is read between measurements
        (a CPU clock read is a system call: 0.7 us in a tight loop, more after a training step): the
        training steps since the last measurement take the time since it, shared equally."""
        self._steps += 1
        self.count = self.count + 1 if step is None else int(step)
        if self.count % self.every:
            return []
        return self.measure(optimizer)

    def _with_batches(self, cfg: SpectrumConfig) -> SpectrumConfig:
        return dataclasses.replace(cfg, batch_size=cfg.batch_size or self.batch_size)

    def _config(self, state: dict | None) -> tuple[SpectrumConfig, bool]:
        """The measurement's config (the Tracker's, with the optimizer's lr, beta1 and, for an
        adaptive one, its preconditioner) and whether the optimizer is adaptive; built and
        checked again only when those change."""
        lr, beta1 = optimizer_hparams(state)
        adaptive = is_adaptive(state)
        if self._cfg_key != (lr, beta1, adaptive):
            cfg = self.cfg
            precond = self.precond
            if precond is None:
                precond = ("optimizer",) if adaptive else ()
            self._cfg = self._with_batches(dataclasses.replace(
                cfg, precond=tuple(cfg.precond) + tuple(n for n in precond if n not in cfg.precond),
                lr=cfg.lr if cfg.lr is not None else lr,
                beta1=cfg.beta1 if cfg.beta1 is not None else beta1))
            self._cfg_key = (lr, beta1, adaptive)
        return self._cfg, adaptive

    def measure(self, optimizer: torch.optim.Optimizer | None = None) -> list[dict]:
        """Measure now, at step ``self.count``, whatever ``every`` says."""
        wall, cpu = time.perf_counter(), time.process_time()
        train = (wall - self._mark[0], cpu - self._mark[1], self._steps)  # since the last one
        state = optimizer.state_dict() if optimizer is not None else None  # read, never written
        cfg, adaptive = self._config(state)
        inputs = Inputs(self.model, self.dataset, cfg.loss, state, "training loop")
        kept = self.kept if fast(cfg) else None
        if kept is not None:  # the Problem built once, moved to today's weights
            kept.at(self.model)
        results, self.vectors = measure_step(cfg, inputs, self.vectors if self.warm else None,
                                             kept=kept, threads=torch.get_num_threads())
        rows = result_rows(self.count, "", results, cfg.lr, cfg.beta1, adaptive)
        self._timed(rows, results, time.perf_counter() - wall, time.process_time() - cpu, train)
        self.rows.extend(rows)
        if self.log is not None:
            for row in rows:
                self.log.write(row)
            self.log.sync()
        if self.writer is not None:
            for row in rows:
                for key in TENSORBOARD_SCALARS:
                    if row.get(key) is not None:
                        self.writer.add_scalar(f"condlab/{row['setting']}/{key}", row[key], self.count)
        self._mark, self._steps = (time.perf_counter(), time.process_time()), 0
        return rows

    def _timed(self, rows: list[dict], results, seconds: float, cpu: float, train: tuple) -> None:
        """Each row's seconds (its solve; the first row also the shared set-up, so a step's rows
        add up to the measurement) and in training steps (``train``: the wall and CPU seconds
        since the last measurement and the steps counted); one entry in ``measurements``."""
        wall_step, cpu_step, n = train
        step_s = wall_step / n if n else None
        step_cpu = cpu_step / n if n else None
        shares = [r.seconds for r in results]
        shares[0] += max(0.0, seconds - sum(shares))
        for row, share in zip(rows, shares, strict=True):
            row["seconds"] = share
            row["in_steps"] = share / step_s if step_s else None
        self.measurements.append({
            "step": self.count, "hvps": sum(r.hvp_count for r in results), "seconds": seconds,
            "cpu_seconds": cpu, "step_seconds": step_s, "step_cpu_seconds": step_cpu,
            "in_steps": seconds / step_s if step_s else None,
            "cpu_in_steps": cpu / step_cpu if step_cpu else None, "train_steps": n,
        })

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.writer is not None and hasattr(self.writer, "flush"):
            self.writer.flush()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
