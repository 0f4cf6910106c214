"""A training-loop hook: the rows of ``condlab track`` measured live, every ``every`` steps.

    tracker = condlab.Tracker(model, "cross-entropy", batches, every=100, csv="track.csv")
    for step in range(steps):
        ...; optimizer.step()
        tracker.step(optimizer)          # measures after steps every, 2 every, ...

At a measured step the model's current weights, the fixed ``batches`` and the optimizer's live
state (``lr``, ``beta1``; with ``precond=("optimizer",)`` its diagonal preconditioner) are
measured exactly as ``condlab spectrum`` / ``condlab track`` measure a checkpoint of them, so a
sweep over checkpoints saved at the same steps reproduces the rows. Training is not disturbed:
the model is deep-copied (its weights, buffers, mode and ``.grad`` are untouched), the optimizer
is only read, and every random draw comes from condlab's own generators (the global CPU and CUDA
RNG states are unchanged).
"""

from __future__ import annotations

import dataclasses
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
from condlab.spectrum import run_spectrum
from condlab.tracking.rows import COLUMNS, is_adaptive, optimizer_hparams, result_rows

TENSORBOARD_SCALARS = ("lambda_max", "kappa", "stability_ratio", "trace")


def _dataset(batches: Sequence[tuple[Tensor, Tensor]], loss: str) -> tuple[Dataset, int | None]:
    if not batches:
        raise UsageError("Tracker needs at least one batch of (inputs, targets) to measure on")
    X = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    classify = loss == "cross-entropy"
    ds = Dataset(X=X, y=y, task="classification" if classify else "regression",
                 num_classes=int(y.max()) + 1 if classify else None, name="training batches",
                 spec={"name": "training batches"})
    return ds, (int(batches[0][0].shape[0]) if len(batches) > 1 else None)


class Tracker:
    """Records sharpness, kappa and the preconditioned sharpness along a training run.

    ``loss``: ``"cross-entropy"`` or ``"mse"``; ``batches``: fixed ``(X, y)`` batches the
    curvature is measured on (its mean loss, weighted by batch size). ``csv``: a file to append
    rows to (``resume=True`` continues an existing one written with the same options);
    ``tensorboard``: a log folder or a ``SummaryWriter`` for scalars (skipped with a warning when
    tensorboard is not installed). ``precond``: settings beside the baseline, as ``--precond``;
    default ``("optimizer",)`` when the optimizer holds a diagonal preconditioner (Adam, RMSprop,
    AdaGrad), else none. Every other keyword is a ``condlab spectrum`` option (``top``,
    ``bottom``, ``tol``, ``max_hvps``, ``curvature``, ``trace``, ``probes``, ``params``, ``norm``,
    ..., same names); ``dtype`` and ``device`` default to the model's. ``warm``: start Lanczos
    from the previous measurement's Ritz vectors.
    """

    def __init__(self, model: nn.Module, loss: str, batches: Sequence[tuple[Tensor, Tensor]], *,
                 every: int = 100, csv: str | Path | None = None, resume: bool = False,
                 tensorboard: Any = None, precond: Sequence[str] | None = None, warm: bool = True,
                 **options: Any):
        keys = by_name(TRACKER)  # the hook's own keywords, typed and checked as declared
        every = keys["every"].parse(every, "Tracker")
        precond = keys["precond"].parse(precond, "Tracker")
        p = next(model.parameters(), None)
        if p is None:
            raise UsageError("the model has no parameters to measure")
        values = {"dtype": str(p.dtype).replace("torch.", ""), "device": str(p.device), **options,
                  "model": type(model).__name__, "loss": loss}
        self.cfg: SpectrumConfig = build(SpectrumConfig, values, source="Tracker options")
        self.model, self.every, self.warm = model, every, warm
        self.precond = None if precond is None else tuple(precond)
        self.dataset, self.batch_size = _dataset(batches, loss)
        self.count = 0
        self.rows: list[dict] = []  # every row recorded, in order
        self.vectors: dict | None = None
        self.log = self._open_csv(csv, resume) if csv is not None else None
        self.writer = self._writer(tensorboard)

    def _open_csv(self, path, resume: bool):
        from condlab.compare.csvlog import open_log

        config = {**self.cfg.to_dict(), "every": self.every, "precond": list(self.precond or ["auto"])}
        log, _ = open_log(Path(path), config, resume=resume, force=False, columns=COLUMNS, what="track")
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
        append the rows to the CSV and TensorBoard, and return them (else ``[]``)."""
        self.count = self.count + 1 if step is None else int(step)
        if self.count % self.every:
            return []
        return self.measure(optimizer)

    def measure(self, optimizer: torch.optim.Optimizer | None = None) -> list[dict]:
        """Measure now, at step ``self.count``, whatever ``every`` says."""
        state = optimizer.state_dict() if optimizer is not None else None  # read, never written
        lr, beta1 = optimizer_hparams(state)
        cfg = self.cfg
        precond = self.precond
        if precond is None:
            precond = ("optimizer",) if is_adaptive(state) else ()
        cfg = dataclasses.replace(
            cfg, precond=tuple(cfg.precond) + tuple(n for n in precond if n not in cfg.precond),
            lr=cfg.lr if cfg.lr is not None else lr, beta1=cfg.beta1 if cfg.beta1 is not None else beta1,
            batch_size=cfg.batch_size or self.batch_size,
        )
        inputs = Inputs(self.model, self.dataset, cfg.loss, state, "training loop")
        report = run_spectrum(cfg, inputs=inputs, threads=torch.get_num_threads(),
                              starts=self.vectors if self.warm else None)
        self.vectors = report.vectors
        rows = result_rows(self.count, "", report.results, cfg.lr, cfg.beta1, is_adaptive(state))
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
        return rows

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.writer is not None and hasattr(self.writer, "flush"):
            self.writer.flush()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
