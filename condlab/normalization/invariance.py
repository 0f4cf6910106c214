"""Invariances that a normalization layer gives the weights before it, and the null space they
make in the curvature.

A Linear/Conv (rows ``w_j``, biases ``b_j``) followed directly (Dropout/Identity may sit between)
by a normalization inside an ``nn.Sequential``. Two classes of null direction ``v``:

- exact (``H v = 0`` and ``G v = 0`` at every point, any ``eps``): a straight line along which the
  loss is constant for every ``theta`` (``L(theta + t v) = L(theta)``), because the norm subtracts a
  mean. BatchNorm with batch statistics: each bias ``b_j``. LayerNorm / GroupNorm after a Linear:
  per group, ``W_g += 1 a^T, b_g += c 1`` (``fan_in + 1`` directions, ``fan_in`` without a bias);
  after a Conv, the group's bias shift.
- GGN-only (``J v = 0`` so ``G v = 0`` at every point; ``H v = 0`` only at a critical point): a
  symmetry whose direction depends on ``theta``. Differentiating ``L(T_t theta) = L(theta)`` gives
  ``H v = -A^T grad L``, zero only where the gradient is. Radial scaling of what a norm divides
  by its spread, ``L(c w_g) = L(w_g)``: a BatchNorm unit's (row, bias) with batch statistics, one
  per unit; a LayerNorm/GroupNorm group's rows and biases, one per group. These are exact only
  as ``eps -> 0``: with ``eps > 0`` the radial derivative of the outputs is the normalized output
  times ``eps / (var + eps)``, a GGN eigenvalue of order ``(eps / var)^2`` relative, not zero.
  BatchNorm with running statistics (``bn_mode='eval'``) is a fixed per-unit affine map, so its
  ``gamma, beta`` duplicate the row's scale and the bias: ``(c w_j, c b_j, gamma_j / c)`` and
  ``(b_j + t, beta_j - gamma_j t / sigma_j)``, ``1 + [bias]`` per unit (none without an affine),
  exact for any ``eps``.

Per BatchNorm unit with a bias the GGN therefore loses 2 dimensions in either mode; the Hessian
(away from critical points) 1 with batch statistics and 0 with running statistics. Predictions
are lower bounds: other symmetries (ReLU rescaling, dead units, more parameters than outputs
times samples) add to the measured nullity. Unrecognized pairings are not counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from condlab.errors import UsageError
from condlab.normalization.insert import LAYERS, PASSTHROUGH

_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_NORMS = (*_BNS, nn.LayerNorm, nn.GroupNorm)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _pairs(model: nn.Module):
    """``(layer name, layer, norm name, norm)`` for each Linear/Conv -> norm in a Sequential."""
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq._modules.items())
        for i, (key, layer) in enumerate(items):
            if not isinstance(layer, LAYERS):
                continue
            j = i + 1
            while j < len(items) and isinstance(items[j][1], PASSTHROUGH):
                j += 1
            if j < len(items) and isinstance(items[j][1], _NORMS):
                yield _join(seq_name, key), layer, _join(seq_name, items[j][0]), items[j][1]


def _counts(layer: nn.Module, norm: nn.Module, bn_mode: str) -> tuple[str, int, int, int] | None:
    """``(kind, groups, exact, ggn_only)`` null directions of ``layer -> norm``, or None."""
    linear = isinstance(layer, nn.Linear)
    width = layer.out_features if linear else layer.out_channels
    bias = int(layer.bias is not None)
    fan_in = layer.weight[0].numel() if linear else 0  # the per-sample shift of a Linear group
    if isinstance(norm, _BNS):
        if norm.num_features != width:
            return None
        if bn_mode == "batch" or not norm.track_running_stats or norm.running_mean is None:
            return "batch", width, width * bias, width
        return "batch-eval", width, 0, width * (1 + bias) if norm.affine else 0
    if isinstance(norm, nn.LayerNorm):
        spatial = 0 if linear else layer.weight.ndim - 2
        shape = tuple(norm.normalized_shape)
        if len(shape) != 1 + spatial or shape[0] != width:
            return None
        kind, groups = "layer", 1
    elif isinstance(norm, nn.GroupNorm) and norm.num_channels == width:
        kind, groups = "group", norm.num_groups
    else:
        return None
    size = width // groups
    radial = (
        groups if (size > 1 or not linear) else 0
    )  # a lone unit's output is constant: all shift
    return kind, groups, groups * (fan_in + bias), radial


def scale_invariant_groups(model: nn.Module, *, bn_mode: str = "batch") -> list[dict]:
    """Weights made scale-invariant by the normalization that follows them.

    One dict per (layer, norm) pair whose loss is invariant to scaling the layer (BatchNorm only
    with batch statistics): ``name`` (the weight), ``bias`` (name or None), ``norm``, ``kind``
    (batch | layer | group), ``rows`` (output units or channels), ``groups`` (separately
    scale-invariant groups: one per row for BatchNorm, one per norm group otherwise),
    ``null_exact`` and ``null_ggn`` (see the module docstring) and ``eps``.
    """
    return [g for g in _groups(model, bn_mode) if g["kind"] != "batch-eval"]


def _groups(model: nn.Module, bn_mode: str) -> list[dict]:
    if bn_mode not in ("eval", "batch"):
        raise UsageError(f"unknown BatchNorm mode {bn_mode!r}; choose one of eval, batch")
    out = []
    for name, layer, norm_name, norm in _pairs(model):
        counts = _counts(layer, norm, bn_mode)
        if counts is None:
            continue
        kind, groups, exact, ggn_only = counts
        out.append(
            {
                "name": f"{name}.weight",
                "bias": f"{name}.bias" if layer.bias is not None else None,
                "norm": norm_name,
                "kind": kind,
                "rows": int(layer.weight.shape[0]),
                "groups": groups,
                "null_exact": exact,
                "null_ggn": ggn_only,
                "eps": float(norm.eps),
            }
        )
    return out


def predicted_nullity(model: nn.Module, *, curvature: str = "ggn", bn_mode: str = "batch") -> int:
    """Null directions the normalizations create: ``exact + ggn-only`` (GGN) or ``exact`` (Hessian
    away from critical points). Radial ones are exact only as eps -> 0 (module docstring)."""
    if curvature not in ("ggn", "hessian"):
        raise UsageError(f"unknown curvature {curvature!r}; choose one of hessian, ggn")
    groups = _groups(model, bn_mode)
    return sum(g["null_exact"] + (g["null_ggn"] if curvature == "ggn" else 0) for g in groups)


def _threshold(eigenvalues: Tensor, rtol: float) -> tuple[Tensor, float]:
    lam = torch.as_tensor(eigenvalues).double().flatten()
    if lam.numel() == 0:
        raise UsageError("no eigenvalues to measure")
    return lam, rtol * float(lam.abs().max())


def measured_nullity(eigenvalues: Tensor, rtol: float = 1e-10) -> int:
    """``#{i : |lambda_i| <= rtol * max |lambda|}``."""
    lam, tau = _threshold(eigenvalues, rtol)
    return int((lam.abs() <= tau).sum())


def positive_condition_number(eigenvalues: Tensor, rtol: float = 1e-10) -> float:
    """``kappa_+ = lambda_max / min{lambda_i > tau}``, ``tau = rtol * max |lambda|``.

    The condition number over the positive part: the null space (and, for an indefinite Hessian,
    the negative eigenvalues) are left out. NaN if no eigenvalue exceeds ``tau``.
    """
    lam, tau = _threshold(eigenvalues, rtol)
    pos = lam[lam > tau]
    return float(pos.max() / pos.min()) if pos.numel() else math.nan


def softmax_shift_nullity(model, loss: str) -> int:
    """Null directions of cross-entropy's shift invariance (research.md): adding ``c u^T`` to a
    final Linear head ``W`` (``c`` = all-ones over classes) leaves the softmax unchanged, one
    direction per input column of ``[h, 1]``. Counted for a Sequential ending in a Linear."""
    if loss != "cross-entropy" or not isinstance(model, nn.Sequential) or not len(model):
        return 0
    head = model[-1]
    if not isinstance(head, nn.Linear) or head.out_features < 2 or not head.weight.requires_grad:
        return 0
    return head.in_features + (1 if head.bias is not None else 0)


def shift_nullity_bound(problem) -> tuple[int, str] | None:
    """A proven lower bound on the nullity from cross-entropy's shift invariance, or None.

    For a Sequential ending in a Linear head ``W`` (``C >= 2`` classes), moving ``W`` along
    ``1_C u^T`` (and the bias along ``1_C``) adds the same number to every logit of every
    sample, which softmax cross-entropy (with or without label smoothing) ignores: the loss is
    constant along these ``in + 1`` directions at every weight, so ``H d = 0`` and ``G d = 0``
    exactly. Counted over the head's parameters the problem measures (a ``--params`` subset or a
    layer's block holds only its own). A theorem, unlike :func:`predicted_nullity`.
    """
    model = problem.model
    if problem.loss_name != "cross-entropy" or not isinstance(model, nn.Sequential) or not len(model):
        return None
    name, head = list(model.named_children())[-1]
    if not isinstance(head, nn.Linear) or head.out_features < 2:
        return None
    chosen = set(problem.spec.names)
    n = (head.in_features if f"{name}.weight" in chosen else 0) + (
        1 if head.bias is not None and f"{name}.bias" in chosen else 0)
    if not n:
        return None
    return n, (f"softmax cross-entropy ignores a shift of every logit: the head '{name}': "
               f"{n} directions 1_C u^T (and its bias along 1_C) are null at every weight")
