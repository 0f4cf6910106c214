"""A minimal, exactly reproducible training loop with a callback, and ``condlab train`` configs.

Each step draws the next mini-batch of a random permutation of the samples (a fresh permutation
every epoch, from a generator seeded with ``seed``; the last batch of an epoch may be smaller),
or the full dataset when ``batch_size`` is None, or (data from a user's DataLoader) the next of
its fixed batches in order, and takes one optimizer step on the mean loss of that batch (any
loss of ``condlab.losses``, a user's ``package.module:fn`` included). Inputs may be dicts or
tuples of tensors (the model is called ``model(**X)`` / ``model(*X)``); integer inputs stay
integers. ``torch.manual_seed(seed)`` fixes dropout masks, so the
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
from condlab.load.models import resolve_model_spec
from condlab.load.structure import batch_len, map_tensors, select_output, signature, take
from condlab.losses import Loss, check_loss_fits, loss_fn, make_loss
from condlab.options import TRAIN, parse_mapping
from condlab.problem_options import DTYPES as FLOAT_TYPES
from condlab.train.optimizers import build_optimizer, resolve_hparams

Callback = Callable[[int, nn.Module, Optimizer, float], Any]
CONFIG_KEYS = tuple(o.name for o in TRAIN)
DTYPES = {name: getattr(torch, name) for name in FLOAT_TYPES}  # name -> torch dtype


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


def _to(obj, dtype: torch.dtype, device: torch.device):
    """Tensors in ``obj`` on ``device``; floating ones cast to ``dtype``, integers kept."""
    return map_tensors(obj, lambda t: t.to(device, dtype) if t.is_floating_point() else t.to(device))


def _call(model: nn.Module, X) -> torch.Tensor:
    """``model(X)``, ``model(**X)`` or ``model(*X)``; a dict / HF output gives its ``logits``."""
    out = model(**X) if isinstance(X, dict) else model(*X) if isinstance(X, tuple) else model(X)
    return select_output(out, None)


def _loss(loss: str | Loss) -> Loss:
    return loss if isinstance(loss, Loss) else make_loss(loss)


def dataset_loss(model: nn.Module, dataset: Dataset, loss: str | Loss, chunk: int = 4096) -> float:
    """``L = sum_b (n_b / n) L_b``: the mean loss over all samples (``n_b`` the loss's count:
    samples, or targets for a token-mean loss), without gradients."""
    f, (dtype, device) = _loss(loss), _dtype_device(model)
    total, count = 0.0, 0
    batches = make_batches(dataset, None if dataset.batches else chunk)
    with torch.no_grad():
        for X, y in batches:
            n_b = f.count(y)
            if n_b:
                total += float(f(_call(model, _to(X, dtype, device)), _to(y, dtype, device))) * n_b
            count += n_b
    return total / max(count, 1)


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    loss: str | Loss,
    optimizer: str,
    hparams: dict | None,
    steps: int,
    batch_size: int | None,
    seed: int,
    callback: Callback | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` updates; ``callback(step, model, optimizer, loss)``
    runs after each update. ``loss`` is a loss name (``condlab.losses``) or a built
    :class:`~condlab.losses.Loss`. Raises CondlabError when the loss becomes NaN or Inf.
    """
    f = loss if isinstance(loss, Loss) else make_loss(check_loss_fits(loss, dataset.task))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UsageError(f"steps must be an integer >= 0, got {steps!r}")
    batches = make_batches(dataset, batch_size)  # validates batch_size
    fixed = bool(dataset.batches)  # a user's DataLoader: its batches, in order
    n = len(dataset)
    B = batch_len(batches[0][0])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = build_optimizer(optimizer, model.parameters(), hparams)
    lr = opt.param_groups[0]["lr"]
    dtype, device = _dtype_device(model)
    if not fixed:
        X, y = _to(dataset.X, dtype, device), _to(dataset.y, dtype, device)
    was_training, history = model.training, []
    model.train()
    order, pos = None, n
    try:
        for t in range(1, steps + 1):
            if fixed:
                xb, yb = (_to(v, dtype, device) for v in batches[(t - 1) % len(batches)])
            elif B >= n:
                xb, yb = X, y
            else:
                if pos >= n:
                    order, pos = torch.randperm(n, generator=gen).to(device), 0
                idx = order[pos : pos + B]
                xb, yb, pos = take(X, idx), y[idx], pos + B
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
        final = dataset_loss(model, dataset, f)
    finally:
        model.train(was_training)
    if not math.isfinite(final):
        raise CondlabError(
            f"the loss after {steps} steps is {final} ({optimizer}, lr={lr:g}); "
            f"lower the learning rate (try lr={lr / 10:g})"
        )
    return TrainResult(model=model, optimizer=opt, history=history, final_loss=final)


def _forward(model: nn.Module, X, step: int) -> torch.Tensor:
    if step > 1:
        return _call(model, X)
    try:
        return _call(model, X)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        shape = list(X.shape[1:]) if isinstance(X, torch.Tensor) else signature(X)
        raise CondlabError(
            f"samples of shape {shape} do not fit the model ({msg}); "
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

    from condlab.inputs import default_loss_for, model_for_data

    data = load_dataset(cfg["data"], max_samples=cfg.get("max_samples"), seed=seed).to(dtype)
    loss = check_loss_fits(cfg.get("loss") or default_loss_for(data), data.task)
    f = make_loss(loss, ignore_index=cfg["ignore_index"], label_smoothing=cfg["label_smoothing"])
    raw = {"name": cfg["model"]} if isinstance(cfg["model"], str) else dict(cfg["model"])
    model, data, spec, n_out = model_for_data(raw, data, seed=seed, dtype=dtype)
    model, spec = model.to(dtype), resolve_model_spec(spec)
    input_shape = () if not isinstance(data.X, torch.Tensor) else data.input_shape
    result = train(
        model, data, loss=f, optimizer=opt_name, hparams=hparams, steps=steps,
        batch_size=cfg.get("batch_size"), seed=seed, callback=callback,
    )
    ckpt = make_checkpoint(
        model_spec=spec,
        model=result.model,
        input_shape=input_shape,
        num_outputs=n_out,
        loss=loss,
        data=data.spec,
        optimizer={"name": opt_name, "hparams": hparams, "state_dict": result.optimizer.state_dict()},
        train={
            "steps": steps,
            "seed": seed,
            "batch_size": cfg.get("batch_size"),
            "dtype": str(dtype).removeprefix("torch."),
            "ignore_index": f.ignore_index,
            "label_smoothing": f.label_smoothing,
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
