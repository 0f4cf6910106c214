"""The checks a Problem passes before it is measured: the inputs fit the model, the outputs fit
the loss and the targets, class labels are in range, weights and loss are finite.

Each failure is one :class:`condlab.errors.CondlabError` naming what does not fit and how to fix
it. Kept apart from :class:`condlab.problem.Problem`, which is the loss as a function of theta.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from condlab.distributed import all_reduce_max, raise_if_any
from condlab.errors import CondlabError
from condlab.load.structure import tensors

_CROSS_ENTROPIES = ("cross-entropy", "sequence-cross-entropy")


def check_problem(p) -> None:
    """Refuse a problem that cannot be measured, before any curvature product: a NaN/Inf
    weight, outputs that do not fit the loss or the targets, class labels out of range, a
    NaN/Inf loss. Distributed: every rank raises together."""
    for name, t in {**p.spec.unflatten(p.theta), **p.fixed}.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CondlabError(f"the model's tensor {name!r} holds NaN or Inf; the checkpoint is broken")
    out, error = None, None
    if p.batches:  # a rank of a distributed run may hold no batches: it checks nothing here
        out, error = _check_outputs(p)
    raise_if_any(error)  # distributed: every rank raises, none waits in a collective
    _check_labels(p, out)
    value = p.loss(first_outputs=out)  # the first batch's outputs: computed above
    if not torch.isfinite(value):
        raise CondlabError("the loss at these weights is NaN or Inf; check the weights and the data")

def _check_labels(p, out: Tensor | None) -> None:
    """Class labels are used as given: each must be one of the model's classes ``0..C-1``
    (cross-entropy, and mse on one-hot encoded labels)."""
    ce = p.loss_name in _CROSS_ENTROPIES
    classes = ce or (
        out is not None and out.ndim == 2 and out.shape[1] > 1
        and not p.batches.host[0][1].is_floating_point() and p.batches.host[0][1].ndim == 1
    )
    # [labels in question, classes] over all ranks (a rank without batches adds nothing)
    span, bad = torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    if out is not None and classes:
        ys = torch.cat([yb.reshape(-1) for _, yb in p.batches.host])
        if ce:  # the cross-entropies leave the ignore index (padding) out
            ys = ys[ys != p.loss_spec.ignore_index]
        bad = torch.unique(ys[(ys < 0) | (ys >= out.shape[-1])])
        span = torch.tensor([int(bad.numel() > 0), out.shape[-1]])
    any_bad, num_classes = all_reduce_max(span).tolist()
    if any_bad:
        named = ", ".join(str(v) for v in bad[:5].tolist()) + (" ..." if len(bad) > 5 else "")
        raise CondlabError(
            f"class label(s) {named or 'on another rank'} outside 0..{num_classes - 1}: the "
            f"model has {num_classes} classes; labels are used as given (shift 1-based labels "
            "to 0-based, or give the model one output per class)"
        )

def _check_outputs(p) -> tuple[Tensor | None, CondlabError | None]:
    """The outputs on the first local batch, or the error that says why they do not fit."""
    X, y = p.batches[0]
    try:
        with torch.no_grad():
            out = p.outputs(p.theta, X, 0)
    except CondlabError as e:
        return None, e
    except Exception as e:  # shape errors surface as RuntimeError / ValueError
        return None, CondlabError(_misfit(p, X, e))
    name = p.loss_name
    if name == "cross-entropy" and (out.ndim != 2 or y.ndim != 1):
        hint = "; use --loss sequence-cross-entropy for [N, T, V] outputs" if out.ndim == 3 else ""
        return None, CondlabError(
            f"cross-entropy needs model outputs [N, classes] and labels [N], got outputs "
            f"{list(out.shape)} and labels {list(y.shape)}{hint}"
        )
    if name == "sequence-cross-entropy" and (
        out.ndim != y.ndim + 1 or tuple(out.shape[:-1]) != tuple(y.shape)
    ):
        return None, CondlabError(
            f"sequence-cross-entropy needs outputs [N, T, V] and targets [N, T], got outputs "
            f"{list(out.shape)} and targets {list(y.shape)}; check --output-key and --target-key"
        )
    if name in ("mse", "bce") and y.is_floating_point() and y.numel() != out.numel():
        return None, CondlabError(
            f"{name} targets have {y[0].numel()} values per sample but the model outputs "
            f"{out[0].numel()}; match the model's output size to the targets"
        )
    if not p.loss_spec.custom:  # the built-ins are scalar means on these shapes
        return out, None
    try:
        with torch.no_grad():
            value = p._loss(out, y)
    except CondlabError as e:
        return None, e
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, CondlabError(
            f"loss {name!r} fails on outputs {list(out.shape)} and targets {list(y.shape)}: "
            f"{msg}; check --loss, --output-key and --target-key"
        )
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        return None, CondlabError(
            f"loss {name!r} returned {shape}, not a scalar; it must return the mean loss "
            "of the batch (reduce with .mean())"
        )
    return out, None

def _misfit(p, X, e: Exception) -> str:
    """Why inputs ``X`` do not fit the model: token ids out of range, or shapes."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    ids = [t for t in tensors(X) if not t.is_floating_point() and t.numel()]
    rows = sorted({m.num_embeddings for m in p.model.modules() if isinstance(m, nn.Embedding)})
    if ids and rows and isinstance(e, IndexError | RuntimeError) and "index" in msg.lower():
        lo = min(int(t.min()) for t in ids)
        hi = max(int(t.max()) for t in ids)
        return (
            f"token ids span {lo}..{hi} but the model's embeddings have "
            f"{', '.join(map(str, rows))} rows; ids must lie in 0..{rows[-1] - 1} at most "
            "(a larger vocab in the model, or a tokenizer that matches it)"
        )
    if ids and not rows and ("dtype" in msg or "Long" in msg):
        return (
            f"the model takes float inputs but the data hold integers ({msg}); integer "
            "arrays stay integers (token ids): store float features as a float array"
        )
    shapes = {k: list(v.shape[1:]) for k, v in X.items()} if isinstance(X, dict) else (
        [list(t.shape[1:]) for t in X] if isinstance(X, tuple) else list(X.shape[1:])
    )
    return (
        f"data with samples of shape {shapes} do not fit the model ({msg}); "
        "check --data and the model's input size"
    )
