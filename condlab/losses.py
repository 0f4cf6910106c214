"""The losses, defined once for the whole project, and how batches of each are weighted.

Every loss is a mean, ``L_b = S_b / n_b`` with ``S_b`` a sum of per-item terms over batch ``b``
and ``n_b`` its normalizer (the *count*). Over a dataset split into batches the mean loss is
``L = sum_b (n_b / n) L_b`` with ``n = sum_b n_b``: each batch is weighted by its count, never
an equal-weight average of batches. The count is what the loss divides by:

``cross-entropy``
    ``-(1/n) sum_i log softmax(f(x_i))[y_i]`` over labels ``y_i != ignore_index``; outputs
    ``[B, C]``, ``y`` long ``[B]``. Count: the labels that are not ``ignore_index`` (the
    samples, when none is ignored).
``sequence-cross-entropy``
    The same over every position: outputs ``[B, T, V]``, ``y`` long ``[B, T]``; the mean over
    the tokens with ``y != ignore_index`` (padding), as ``nn.CrossEntropyLoss`` computes it on
    the flattened ``[B*T, V]`` logits. Count: the non-ignored tokens. ``y[:, t]`` is the target
    of position ``t`` (for a causal LM, the next token: ``y[:, t] = x[:, t+1]``).
``mse``
    ``(1/(B T)) sum_{i,t} (f(x_i)_t - y_it)^2``, the mean over *all* output elements (no 1/2).
    ``y`` of shape ``[B]`` is reshaped to outputs ``[B, 1]``. Integer class labels ``[B]``
    against outputs ``[B, C]`` (C > 1) are one-hot encoded. Count: the samples (``T`` is fixed).
``bce``
    Binary cross-entropy with logits, ``softplus(z) - y z``, the mean over all output elements;
    ``y`` float in [0, 1] of the outputs' shape (``[B]`` against ``[B, 1]`` is reshaped).
    Count: the samples.

With ``label_smoothing = e`` the cross-entropies use the target ``(1 - e) onehot(y) + e / C``,
as ``nn.CrossEntropyLoss(label_smoothing=e)`` does.

A user's loss ``package.module:fn`` is ``fn(outputs, targets) -> scalar mean``; its batches are
weighted by samples unless ``fn.batch_weighting`` is ``"tokens"`` (count the targets that are
not ``ignore_index``). The callables contain no data-dependent control flow, so ``torch.func``
transforms (vmap, jvp, linearize) apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from condlab.errors import UsageError

LossFn = Callable[[Tensor, Tensor], Tensor]

LOSSES: dict[str, str] = {
    "cross-entropy": "mean softmax cross-entropy of logits [B, C] against class labels [B]",
    "sequence-cross-entropy": "token-mean cross-entropy of logits [B, T, V] against ids [B, T], "
    "ignore_index positions left out",
    "mse": "mean squared error over all output elements (class labels are one-hot encoded)",
    "bce": "binary cross-entropy with logits, mean over all output elements",
}
WEIGHTINGS = ("samples", "tokens")
IGNORE_INDEX = -100


def _cross_entropy(outputs: Tensor, y: Tensor, ignore_index: int, smoothing: float) -> Tensor:
    """Mean cross-entropy over the labels that are not ``ignore_index``; class dim last."""
    logp = torch.log_softmax(outputs.reshape(-1, outputs.shape[-1]), dim=-1)  # [M, C]
    y = y.reshape(-1)
    keep = y != ignore_index
    nll = -logp.gather(1, torch.where(keep, y, 0)[:, None])[:, 0]  # [M]
    if smoothing:
        nll = (1 - smoothing) * nll - smoothing * logp.mean(dim=1)
    # a batch with every label ignored has count 0 and weight 0: its loss is 0, not 0/0
    return (nll * keep).sum() / keep.sum().clamp_min(1)


def _need_int(name: str, y: Tensor) -> None:
    if y.is_floating_point():
        raise UsageError(
            f"loss {name!r} needs integer class labels, got float targets; "
            "use loss 'mse' (or 'bce') for real-valued targets"
        )


@dataclass(frozen=True)
class Loss:
    """A mean loss ``fn(outputs, targets)`` and the count that weights its batches."""

    name: str
    fn: LossFn
    weighting: str = "samples"  # or "tokens": targets that are not ignore_index
    ignore_index: int = IGNORE_INDEX
    label_smoothing: float = 0.0
    custom: bool = False

    def __call__(self, outputs: Tensor, y: Tensor) -> Tensor:
        return self.fn(outputs, y)

    def count(self, y: Tensor) -> int:
        """The normalizer of one batch's mean: its weight in the dataset's mean loss."""
        if self.weighting == "tokens":
            return int((y != self.ignore_index).sum())
        return int(y.shape[0])

    def describe(self) -> str:
        """One line for the output: the loss and how batches are weighted."""
        smooth = f", label smoothing {self.label_smoothing:g}" if self.label_smoothing else ""
        if self.weighting == "samples":
            what = "samples"
        else:
            unit = "labels" if self.name == "cross-entropy" else "tokens"
            what = f"{unit} not equal to the ignore index {self.ignore_index}"
        mean = "token mean" if self.name == "sequence-cross-entropy" else "mean"
        return f"loss: {self.name} ({mean}{smooth}); batches weighted by their {what}"


def _builtin(name: str, ignore_index: int, smoothing: float) -> LossFn:
    if name in ("cross-entropy", "sequence-cross-entropy"):

        def ce(outputs: Tensor, y: Tensor) -> Tensor:
            _need_int(name, y)
            return _cross_entropy(outputs, y, ignore_index, smoothing)

        return ce
    return {"mse": mse, "bce": bce}[name]


def cross_entropy(outputs: Tensor, y: Tensor) -> Tensor:
    """Mean softmax cross-entropy; ``outputs [B, C]``, ``y`` long ``[B]``."""
    _need_int("cross-entropy", y)
    return _cross_entropy(outputs, y, IGNORE_INDEX, 0.0)


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


def bce(outputs: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy with logits, mean over all elements: ``softplus(z) - y z``."""
    if y.numel() != outputs.numel():
        raise UsageError(
            f"loss 'bce': targets of shape {list(y.shape)} do not fit outputs of shape "
            f"{list(outputs.shape)}; give one 0/1 target per output"
        )
    y = y.reshape(outputs.shape).to(outputs.dtype)
    return (F.softplus(outputs) - y * outputs).mean()


_FNS: dict[str, LossFn] = {"cross-entropy": cross_entropy, "mse": mse, "bce": bce}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-") if isinstance(name, str) else name


def is_custom(name: str) -> bool:
    """Whether ``name`` is an import path ``package.module:fn`` rather than a built-in loss."""
    return isinstance(name, str) and ":" in name


def make_loss(
    name: str,
    *,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
) -> Loss:
    """The loss ``name`` (see the module docstring) or a user's ``package.module:fn``."""
    if isinstance(label_smoothing, bool) or not 0 <= label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {label_smoothing!r}")
    if is_custom(name):
        fn = _import_loss(name)
        weighting = getattr(fn, "batch_weighting", "samples")
        if weighting not in WEIGHTINGS:
            raise UsageError(
                f"loss {name!r}: batch_weighting={weighting!r}; set it to 'samples' or 'tokens'"
            )
        return Loss(name, fn, weighting, int(ignore_index), 0.0, custom=True)
    key = _key(name)
    if key not in LOSSES:
        raise UsageError(
            f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}, or 'package.module:fn'"
        )
    if label_smoothing and key not in ("cross-entropy", "sequence-cross-entropy"):
        raise UsageError(f"--label-smoothing applies to the cross-entropies, not loss {key!r}")
    ce = key in ("cross-entropy", "sequence-cross-entropy")
    weighting = "tokens" if ce else "samples"
    return Loss(
        key, _builtin(key, int(ignore_index), float(label_smoothing)), weighting,
        int(ignore_index), float(label_smoothing),
    )


def _import_loss(path: str) -> LossFn:
    from condlab.load.models import import_object

    fn = import_object(path, what="loss")
    if not callable(fn):
        raise UsageError(f"loss {path!r} is a {type(fn).__name__}, not a function (outputs, targets)")
    return fn


def loss_fn(name: str) -> LossFn:
    """The callable ``(outputs, y) -> scalar mean loss`` named ``name`` (see ``LOSSES``)."""
    return make_loss(name).fn


def default_loss(task: str) -> str:
    """The loss a task is trained with unless told otherwise."""
    return "cross-entropy" if task == "classification" else "mse"


def check_loss_fits(name: str, task: str) -> str:
    """The canonical loss name, or a UsageError if it cannot be used for ``task``."""
    if is_custom(name):
        return name
    key = _key(name)
    make_loss(key)
    if key in ("cross-entropy", "sequence-cross-entropy") and task != "classification":
        raise UsageError(
            f"loss {key!r} needs class labels, but these targets were taken as regression (float "
            "values, or integers with more than 20 distinct values): if they are class labels "
            "pass --task classification, else use --loss mse"
        )
    return key


# losses convex in the model's outputs: their GGN J^T H_loss J is positive semi-definite
CONVEX_LOSSES = ("cross-entropy", "sequence-cross-entropy", "mse", "bce")


def semidefinite_reason(curvature: str, loss_name: str) -> str | None:
    """Why the curvature is positive semi-definite by construction, or None.

    A GGN ``sum_n J_n^T H_n J_n`` with ``H_n`` the Hessian of a loss convex in the outputs
    (every built-in loss) is PSD; so are its congruences ``S^T G S`` (preconditioners, an
    eigenbasis), principal blocks (a layer) and ``+ lam I`` shifts with ``lam >= 0``. A user's
    loss or the Hessian carries no such guarantee."""
    if curvature == "ggn" and loss_name in CONVEX_LOSSES:
        return f"the GGN of {loss_name}, a loss convex in the outputs"
    return None


__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "Loss",
    "LossFn",
    "WEIGHTINGS",
    "bce",
    "CONVEX_LOSSES",
    "check_loss_fits",
    "cross_entropy",
    "default_loss",
    "is_custom",
    "loss_fn",
    "make_loss",
    "mse",
    "semidefinite_reason",
    "shift_copied_labels",
]


# -- the next-token convention (trust) ----------------------------------------------------------
def _copied(ids, y, ignore_index: int) -> bool:
    """``y`` is the token ids themselves (Hugging Face's ``labels = input_ids``), padding aside."""
    if not isinstance(ids, Tensor) or not isinstance(y, Tensor) or ids.is_floating_point():
        return False
    if y.is_floating_point() or y.shape != ids.shape or y.ndim != 2 or y.shape[1] < 2:
        return False
    kept = y != ignore_index
    return bool(kept.any()) and bool(((y == ids) | ~kept).all())


def _shift(y: Tensor, ignore_index: int) -> Tensor:
    """``y[:, t] <- y[:, t + 1]``, the last position ignored: what a HF causal LM does inside."""
    out = torch.full_like(y, ignore_index)
    out[:, :-1] = y[:, 1:]
    return out


def shift_copied_labels(dataset, ignore_index: int = IGNORE_INDEX):
    """``(dataset, note)``: per-position labels equal to the input ids shifted to next tokens.

    condlab's convention (``sequence-cross-entropy``): ``y[:, t]`` is the target of position
    ``t``, already shifted (``y[:, t] = x[:, t + 1]`` for a causal LM). Hugging Face models take
    ``labels = input_ids`` and shift inside; passed as they are, condlab would measure "predict
    the current token", another loss (e.g. lambda_max 9.33 instead of 19.8 on a character
    GPT-2). Labels equal to the inputs (``input_ids`` of dict samples, or the token tensor),
    ``ignore_index`` positions aside, are therefore shifted one position left with the last
    position ignored, and the note says so; ``note`` is None when nothing was shifted.
    """
    import dataclasses

    def ids_of(X):
        return X.get("input_ids") if isinstance(X, dict) else X

    batches = dataset.meta.get("batches") or []
    if dataset.y is not None:
        if not _copied(ids_of(dataset.X), dataset.y, ignore_index):
            return dataset, None
        meta = dict(dataset.meta)
        if batches:  # a DataLoader's batches hold the same labels
            meta["batches"] = [(X, _shift(y, ignore_index)) for X, y in batches]
        new = dataclasses.replace(dataset, y=_shift(dataset.y, ignore_index), meta=meta)
    elif batches and all(_copied(ids_of(X), y, ignore_index) for X, y in batches):
        meta = {**dataset.meta, "batches": [(X, _shift(y, ignore_index)) for X, y in batches]}
        new = dataclasses.replace(dataset, meta=meta)
    else:
        return dataset, None
    note = ("labels equal to the input ids (the Hugging Face convention labels = input_ids) "
            "were shifted to the next token, y[:, t] = ids[:, t+1], the last position ignored; "
            "condlab's sequence-cross-entropy takes labels already shifted")
    return new, note
