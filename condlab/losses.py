"""The losses, defined once for the whole project.

Both are means, so that a dataset split into batches of sizes ``B_1..B_m`` has the loss
``L = sum_j (B_j / N) L_j`` (the exact weighting; never an equal-weight average of batches).

``cross-entropy``
    ``L = -(1/B) sum_i log softmax(f(x_i))[y_i]``; outputs ``[B, C]`` logits, ``y`` long ``[B]``.
``mse``
    ``L = (1/(B T)) sum_{i,t} (f(x_i)_t - y_it)^2``, the mean over *all* output elements (no 1/2).
    ``y`` of shape ``[B]`` is reshaped to outputs ``[B, 1]``. Integer class labels ``[B]``
    against outputs ``[B, C]`` (C > 1) are one-hot encoded, so ``mse`` also trains classifiers.

The callables contain no data-dependent control flow, so ``torch.func`` transforms apply.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from condlab.errors import UsageError

LossFn = Callable[[Tensor, Tensor], Tensor]

LOSSES: dict[str, str] = {
    "cross-entropy": "mean softmax cross-entropy of logits [B, C] against class labels [B]",
    "mse": "mean squared error over all output elements (class labels are one-hot encoded)",
}


def cross_entropy(outputs: Tensor, y: Tensor) -> Tensor:
    """Mean softmax cross-entropy; ``outputs [B, C]``, ``y`` long ``[B]``."""
    if y.is_floating_point():
        raise UsageError(
            "loss 'cross-entropy' needs integer class labels, got float targets; "
            "use loss 'mse' for regression"
        )
    return F.cross_entropy(outputs, y)


def mse(outputs: Tensor, y: Tensor) -> Tensor:
    """Mean squared error over all elements of ``outputs`` (``y`` reshaped or one-hot encoded)."""
    if not y.is_floating_point() and outputs.dim() == 2 and outputs.shape[1] > 1 and y.dim() == 1:
        # [B] -> [B, C] one-hot, by comparison: F.one_hot reads the labels' range (a data-dependent
        # check), which torch.func.linearize cannot trace
        y = y[:, None] == torch.arange(outputs.shape[1], device=y.device)
    if y.numel() != outputs.numel():
        raise UsageError(
            f"loss 'mse': targets of shape {list(y.shape)} do not fit outputs of shape "
            f"{list(outputs.shape)}; the model needs one output per target column"
        )
    # the value of F.mse_loss(reduction='mean'), written out: F.mse_loss's backward fails under
    # forward-over-reverse AD in torch 2.13 ("ZeroTensors are immutable")
    return ((outputs - y.reshape(outputs.shape).to(outputs.dtype)) ** 2).mean()


_FNS: dict[str, LossFn] = {"cross-entropy": cross_entropy, "mse": mse}


def loss_fn(name: str) -> LossFn:
    """The callable ``(outputs, y) -> scalar mean loss`` named ``name`` (see ``LOSSES``)."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key not in _FNS:
        raise UsageError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return _FNS[key]


def default_loss(task: str) -> str:
    """The loss a task is trained with unless told otherwise."""
    return "cross-entropy" if task == "classification" else "mse"


def check_loss_fits(name: str, task: str) -> str:
    """The canonical loss name, or a UsageError if it cannot be used for ``task``."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    loss_fn(key)
    if key == "cross-entropy" and task != "classification":
        raise UsageError(
            "loss 'cross-entropy' needs a classification dataset, this one is regression; "
            "use loss 'mse'"
        )
    return key


__all__ = ["LOSSES", "LossFn", "check_loss_fits", "cross_entropy", "default_loss", "loss_fn", "mse"]
