r"""Condition numbers of a symmetric matrix from its extreme eigenvalues, with their definition.

Quantity: with ``threshold = threshold_rel * max(|lambda_max|, |lambda_min|)`` (eigenvalues
within ``+-threshold`` of 0 count as zero; for a Hessian this is ``threshold_rel * lambda_max``):

- positive definite (``lambda_min > threshold``): ``kappa = lambda_max / lambda_min``;
- positive semi-definite (``|lambda_min| <= threshold``): the positive-part condition number
  ``kappa_+ = lambda_max / lambda_min+``, ``lambda_min+`` = smallest eigenvalue above the
  threshold. From Lanczos this is the smallest reported bottom eigenvalue above the threshold:
  single-vector Lanczos finds a repeated (null) eigenvalue once, so the bottom Ritz values read
  ``0, lambda_min+, ..``;
- indefinite (``lambda_min < -threshold < threshold < lambda_max``): ``kappa_+`` needs
  ``lambda_min+``, which is interior to the spectrum; it is computed only from an exact spectrum
  (dense ``eigvalsh``), otherwise the value is None. ``negative_ratio = |lambda_min| / lambda_max``
  says how negative the curvature is;
- negative (semi-)definite and zero matrices mirror the above.

The nullity (eigenvalues with ``|lambda| <= threshold``) is exact from an exact spectrum, else
whatever the caller passes (e.g. an SLQ estimate from ``density_mass``), else None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from condlab.errors import UsageError


@dataclass(frozen=True)
class Condition:
    """A condition number, the sentence that defines it, and the eigenvalues it came from."""

    value: float | None  # None when undefined from the given eigenvalues (see definition)
    definition: str
    definiteness: str  # 'positive definite' | 'positive semi-definite' | 'indefinite' | ...
    lambda_max: float
    lambda_min: float
    lambda_min_positive: float | None  # smallest eigenvalue > threshold, when known
    threshold: float  # absolute: threshold_rel * max(|lambda_max|, |lambda_min|)
    nullity: int | None  # eigenvalues with |lambda| <= threshold, when known
    nullity_is_lower_bound: bool
    negative_ratio: float | None = None  # |lambda_min| / lambda_max when lambda_min < -threshold
    threshold_rel: float = 1e-6
    exact: bool = False  # computed from a full spectrum


def _values(x) -> Tensor:
    """Finite entries of a sequence or tensor as float64 (ghost slots are NaN)."""
    t = torch.as_tensor(x if x is not None else [], dtype=torch.float64).reshape(-1).cpu()
    return t[torch.isfinite(t)]


def _nullity_words(nullity: int | None, lower_bound: bool) -> str:
    if nullity is None:
        return "nullity not estimated"
    return f"{'at least ' if lower_bound else ''}{nullity} eigenvalues within +-threshold"


def condition_number(
    eigenvalues_top: Sequence[float] | Tensor,
    eigenvalues_bottom: Sequence[float] | Tensor,
    *,
    threshold_rel: float = 1e-6,
    lambda_max: float | None = None,
    lambda_min: float | None = None,
    exact_spectrum: Tensor | None = None,
    nullity: int | None = None,
    nullity_is_lower_bound: bool = False,
) -> Condition:
    """The condition number that fits the definiteness of ``A``, with its definition.

    ``eigenvalues_top`` (descending) and ``eigenvalues_bottom`` (ascending) are Lanczos
    estimates; ``lambda_max``/``lambda_min`` override their ends; ``exact_spectrum [P]`` (all
    eigenvalues) overrides everything and makes the result exact. ``nullity`` is used when no
    exact spectrum is given.
    """
    if not threshold_rel >= 0:
        raise UsageError(f"threshold_rel must be >= 0, got {threshold_rel}")
    exact = exact_spectrum is not None
    top, bottom = _values(eigenvalues_top), _values(eigenvalues_bottom)
    if exact:
        spectrum = _values(exact_spectrum)
        if spectrum.numel() == 0:
            raise UsageError("exact_spectrum is empty")
        top, bottom = spectrum.sort(descending=True).values, spectrum.sort().values
        lmax, lmin = float(spectrum.max()), float(spectrum.min())
    else:
        if lambda_min is None and bottom.numel() == 0:
            raise UsageError("a condition number needs the bottom eigenvalues (or lambda_min)")
        if lambda_max is None and top.numel() == 0:
            raise UsageError("a condition number needs the top eigenvalues (or lambda_max)")
        both = torch.cat([top, bottom])
        lmax = float(lambda_max) if lambda_max is not None else float(both.max())
        lmin = float(lambda_min) if lambda_min is not None else float(both.min())
    t = threshold_rel * max(abs(lmax), abs(lmin))
    if exact:
        nullity, nullity_is_lower_bound = int((spectrum.abs() <= t).sum()), False

    def result(value, definition, definiteness, lmin_pos=None, ratio=None, null=nullity):
        return Condition(
            value=value,
            definition=definition,
            definiteness=definiteness,
            lambda_max=lmax,
            lambda_min=lmin,
            lambda_min_positive=lmin_pos,
            threshold=t,
            nullity=null,
            nullity_is_lower_bound=nullity_is_lower_bound and null is not None,
            negative_ratio=ratio,
            threshold_rel=threshold_rel,
            exact=exact,
        )

    null_words = _nullity_words(nullity, nullity_is_lower_bound)
    src = " (exact spectrum)" if exact else ""
    if lmax <= t and lmin >= -t:
        msg = f"undefined: every eigenvalue is within the threshold {t:.2g} of 0"
        return result(None, msg, "zero")
    if lmin > t:
        msg = f"lambda_max / lambda_min (positive definite){src}"
        return result(lmax / lmin, msg, "positive definite", lmin, null=0)
    if lmax < -t:
        msg = f"lambda_min / lambda_max (negative definite){src}"
        return result(lmin / lmax, msg, "negative definite", null=0)
    above = bottom[bottom > t]
    lmin_pos = float(above.min()) if above.numel() else None
    if lmin >= -t:  # positive semi-definite
        if lmin_pos is None:
            msg = (
                f"undefined from these eigenvalues: every reported bottom eigenvalue is within the "
                f"threshold {t:.2g} of 0; ask for more bottom eigenvalues or the exact spectrum"
            )
            return result(None, msg, "positive semi-definite")
        msg = (
            f"positive part: lambda_max / lambda_min+, lambda_min+ = smallest eigenvalue > "
            f"{t:.2g} (threshold){src}; {null_words}"
        )
        return result(lmax / lmin_pos, msg, "positive semi-definite", lmin_pos)
    ratio = abs(lmin) / lmax if lmax > 0 else None
    if lmax <= t:  # negative semi-definite: mirror of the positive case
        below = top[top < -t]
        lmax_neg = float(below.max()) if below.numel() else None
        msg = (
            f"negative part: lambda_min / lambda_max-, lambda_max- = largest eigenvalue < "
            f"{-t:.2g} (threshold){src}; {null_words}"
        )
        value = lmin / lmax_neg if lmax_neg is not None else None
        return result(value, msg, "negative semi-definite")
    if exact and lmin_pos is not None:
        n_neg = int((spectrum < -t).sum())
        msg = (
            f"positive part: lambda_max / lambda_min+, lambda_min+ = smallest eigenvalue > "
            f"{t:.2g} (threshold) (exact spectrum); indefinite: {n_neg} eigenvalues below "
            f"-threshold and {null_words} are left out"
        )
        return result(lmax / lmin_pos, msg, "indefinite", lmin_pos, ratio)
    msg = (
        f"undefined: indefinite (lambda_min = {lmin:.3g} < -{t:.2g} = -threshold), so the "
        f"smallest positive eigenvalue is interior to the spectrum and Lanczos at the ends does "
        f"not reach it; use --exact or --damping (|lambda_min| / lambda_max = {ratio:.3g})"
    )
    return result(None, msg, "indefinite", ratio=ratio)
