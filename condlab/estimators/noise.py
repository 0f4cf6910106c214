r"""The rounding noise of the operator actually measured, estimated from products already made.

A curvature operator evaluated in floating point is ``A + E``; the eigenvalues it yields may be
off by ``||E||`` (Weyl). ``E`` is not symmetric, while ``A`` is, so the antisymmetric part of
what was computed is pure noise and is measured for free:

- dense (``--exact``): ``M`` holds every column ``A e_j``; ``||(M - M^T) / 2||_2`` is the
  spectral norm of ``(E - E^T) / 2``. For rounding errors without a preferred symmetry the
  symmetric part ``(E + E^T) / 2`` (the part that moves eigenvalues) has the same size; on the
  digits linear model, MLP Hessian / GGN and a GELU GGN in float32 the true
  ``||(M + M^T)/2 - A_64||_2`` was 1.1 to 3.3 times this (``scripts/bench_noise_band.py``);
- Krylov: the block ``S = Y^T (A Y)`` of the ``k`` returned Ritz vectors (the products the
  true residuals already made). Its antisymmetric entries ``(S_ij - S_ji) / 2`` are bilinear
  noise ``y_i^T E_a y_j``; their root mean square ``sigma`` times ``2 sqrt(P)`` (the spectral
  norm of a ``P x P`` matrix of such entries) estimates ``||E||``. From few vectors (``k = 2``:
  one entry) it is a rough estimate, so it only ever widens the fixed band below.

The band is ``max(NOISE_FACTOR eps ||A||, NOISE_SAFETY * noise)``: the fixed factor measured
on real operators stays a floor; the per-run estimate (times ``NOISE_SAFETY`` = 4, above the
largest true/estimate ratio seen) widens it for operators noisier than that, such as
``P^-1/2 A P^-1/2`` with a tiny ``P`` (the preconditioner scales the noise by ``1 / P``, and
the products of the measured operator carry that scaling, so no separate factor is applied).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NOISE_SAFETY = 4.0  # band >= NOISE_SAFETY x the measured noise (largest true/measured seen: 3.3)


def dense_noise(M: Tensor) -> float:
    """``||(M - M^T) / 2||_2`` of a dense operator matrix before it is symmetrized."""
    if M.shape[0] < 2:
        return 0.0
    D = (M.double() - M.double().T) / 2
    return float(torch.linalg.matrix_norm(D, ord=2))


def block_noise(Y: Tensor, AY: Tensor, dim: int) -> float:
    """The noise ``||E||`` estimated from ``S = Y^T (A Y)`` of ``k`` orthonormal-ish vectors:
    ``2 sqrt(dim)`` times the RMS of ``(S_ij - S_ji) / 2`` over ``i < j``; 0 when ``k < 2``.
    Y's columns are normalized first (Ritz vectors are unit vectors up to rounding)."""
    k = Y.shape[1]
    if k < 2:
        return 0.0
    Yd, AYd = Y.double(), AY.double()
    norms = torch.linalg.vector_norm(Yd, dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    S = (Yd / norms).T @ (AYd / norms)
    i, j = torch.triu_indices(k, k, 1).unbind()
    anti = (S[i, j] - S[j, i]) / 2
    sigma = float(anti.square().mean().sqrt())
    return 2.0 * math.sqrt(dim) * sigma


def noise_record(band: float, fixed: float, measured: float | None, how: str, extra: dict | None
                 = None) -> dict:
    """The JSON record of how the null band was set (details ``noise``)."""
    rec = {
        "band": float(band),
        "fixed_floor": float(fixed),
        "measured": None if measured is None else float(measured),
        "safety": NOISE_SAFETY,
        "set_by": how,
    }
    rec.update(extra or {})
    return rec
