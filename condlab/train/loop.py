"""A minimal, exactly reproducible training loop with a callback, and ``condlab train`` configs.

Each step draws the next mini-batch of a random permutation of the samples (a fresh permutation
every epoch, from a generator seeded with ``seed``; the last batch of an epoch may be smaller),
or the full dataset when ``batch_size`` is None, and takes one optimizer step on the mean loss
of that batch (see ``condlab.losses``). ``torch.manual_seed(seed)`` fixes dropout masks, so the
same seed gives bit-identical weights on the same machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from condlab.errors import CondlabError, UsageError
from condlab.load.checkpoint import make_checkpoint
from condlab.load.data import Dataset, load_dataset, make_batches
from condlab.load.models import build_model, resolve_model_spec
from condlab.losses import check_loss_fits, default_loss, loss_fn
from condlab.options import TRAIN, parse_mapping
from condlab.train.optimizers import build_optimizer, resolve_hparams

Callback = Callable[[int, nn.Module, Optimizer, float], Any]
CONFIG_KEYS = tuple(o.name for o in TRAIN)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The trained model and optimizer, the per-step losses and the final full-dataset loss.

    ``history[i] = {"step": t, "loss": l}``: ``l`` is the loss of the batch of update ``t``
    (1-based), evaluated before that update. ``final_loss`` is the mean loss over all samples
    after the last update, in eval mode (BatchNorm running statistics, no dropout).
    """

    model: nn.Module
    optimizer: Optimizer
    history: list[dict]
    final_loss: float


def _dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return (p.dtype, p.device) if p is not None else (torch.get_default_dtype(), torch.device("cpu"))


def dataset_loss(model: nn.Module, dataset: Dataset, loss: str, chunk: int = 4096) -> float:
    """``L = sum_b (n_b / N) L_b``: the mean loss over all samples, without gradients."""
    f, (dtype, device) = loss_fn(loss), _dtype_device(model)
    total = 0.0
    with torch.no_grad():
        for X, y in make_batches(dataset, chunk):
            y = y.to(device, dtype) if y.is_floating_point() else y.to(device)
            total += float(f(model(X.to(device, dtype)), y)) * len(X)
    return total / len(dataset)


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    loss: str,
    optimizer: str,
    hparams: dict | None,
    steps: int,
    batch_size: int | None,
    seed: int,
    callback: Callback | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` updates; ``callback(step, model, optimizer, loss)``
    runs after each update. Raises CondlabError when the loss becomes NaN or Inf.
    """
    loss = check_loss_fits(loss, dataset.task)
    f = loss_fn(loss)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UsageError(f"steps must be an integer >= 0, got {steps!r}")
    n = len(dataset)
    batches = make_batches(dataset, batch_size)  # validates batch_size
    B = len(batches[0][0])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = build_optimizer(optimizer, model.parameters(), hparams)
    lr = opt.param_groups[0]["lr"]
    dtype, device = _dtype_device(model)
    X = dataset.X.to(device, dtype)
    y = dataset.y.to(device, dtype) if dataset.y.is_floating_point() else dataset.y.to(device)
    was_training, history = model.training, []
    model.train()
    order, pos = None, n
    try:
        for t in range(1, steps + 1):
            if B >= n:
                xb, yb = X, y
            else:
                if pos >= n:
                    order, pos = torch.randperm(n, generator=gen).to(device), 0
                idx = order[pos : pos + B]
                xb, yb, pos = X[idx], y[idx], pos + B
            opt.zero_grad(set_to_none=True)
            value = f(_forward(model, xb, t), yb)
            lv = float(value.detach())
            if not math.isfinite(lv):
                raise CondlabError(
                    f"the training loss became {lv} at step {t} ({optimizer}, lr={lr:g}); "
                    f"lower the learning rate (try lr={lr / 10:g})"
                )
            value.backward()
            opt.step()
            history.append({"step": t, "loss": lv})
            if callback is not None:
                callback(t, model, opt, lv)
    finally:
        model.train(was_training)
    model.eval()
    try:
        final = dataset_loss(model, dataset, loss)
    finally:
        model.train(was_training)
    if not math.isfinite(final):
        raise CondlabError(
            f"the loss after {steps} steps is {final} ({optimizer}, lr={lr:g}); "
            f"lower the learning rate (try lr={lr / 10:g})"
        )
    return TrainResult(model=model, optimizer=opt, history=history, final_loss=final)


def _forward(model: nn.Module, X: torch.Tensor, step: int) -> torch.Tensor:
    if step > 1:
        return model(X)
    try:
        return model(X)
    except (RuntimeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CondlabError(
            f"samples of shape {list(X.shape[1:])} do not fit the model ({msg}); "
            "check the data and the model's input size"
        ) from e


def train_from_config(
    cfg: dict, *, callback: Callback | None = None, where: str = "the train config"
) -> tuple[TrainResult, dict]:
    """Run a ``condlab train`` config and return the result and a condlab checkpoint dict.

    Keys: ``model`` (spec; required), ``data`` (spec; required), ``loss`` (default by task),
    ``optimizer`` (``{name, **hparams}`` or a name; default adam), ``steps`` (300),
    ``batch_size`` (None: full batch), ``seed`` (0; initialization, batches and synthetic
    data), ``max_samples`` (None), ``dtype`` (float32 | float64): :data:`condlab.options.TRAIN`,
    each value parsed to its type (``where`` names the file in errors); unknown keys are errors.
    ``callback`` is passed to ``train``.
    """
    cfg = parse_mapping(TRAIN, cfg, where, required=("model", "data"))
    seed, steps = cfg["seed"], cfg["steps"]
    dtype = DTYPES[cfg["dtype"]]
    opt_cfg = cfg.get("optimizer", "adam")
    opt_cfg = {"name": opt_cfg} if isinstance(opt_cfg, str) else opt_cfg
    if not isinstance(opt_cfg, dict) or not isinstance(opt_cfg.get("name"), str):
        raise UsageError(f"optimizer must be a name or a mapping with a 'name', got {opt_cfg!r}")
    opt_name = opt_cfg["name"]
    hparams = resolve_hparams(opt_name, {k: v for k, v in opt_cfg.items() if k != "name"})

    data = load_dataset(cfg["data"], max_samples=cfg.get("max_samples"), seed=seed).to(dtype)
    loss = check_loss_fits(cfg.get("loss") or default_loss(data.task), data.task)
    spec = resolve_model_spec(cfg["model"])
    model = build_model(spec, data.input_shape, data.num_outputs, seed=seed).to(dtype)
    result = train(
        model, data, loss=loss, optimizer=opt_name, hparams=hparams, steps=steps,
        batch_size=cfg.get("batch_size"), seed=seed, callback=callback,
    )
    ckpt = make_checkpoint(
        model_spec=spec,
        model=result.model,
        input_shape=data.input_shape,
        num_outputs=data.num_outputs,
        loss=loss,
        data=data.spec,
        optimizer={"name": opt_name, "hparams": hparams, "state_dict": result.optimizer.state_dict()},
        train={
            "steps": steps,
            "seed": seed,
            "batch_size": cfg.get("batch_size"),
            "dtype": str(dtype).removeprefix("torch."),
            "final_loss": result.final_loss,
            "losses": [h["loss"] for h in result.history],
        },
    )
    return result, ckpt


__all__ = [
    "CONFIG_KEYS",
    "Callback",
    "TrainResult",
    "dataset_loss",
    "loss_fn",
    "train",
    "train_from_config",
]
