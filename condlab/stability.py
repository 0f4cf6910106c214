"""What a preconditioned update does on a quadratic: its stability threshold and fixed points.

Stability. On ``L = 1/2 x^T A x`` the update ``x <- x - eta P^-1 grad L`` is linear; in the
eigenbasis of ``P^-1/2 A P^-1/2`` it decouples into scalar recurrences with curvature ``a``.
It converges iff every ``a`` is below a threshold, so what matters is the *preconditioned
sharpness* ``lambda_max(P^-1 A) = lambda_max(P^-1/2 A P^-1/2)`` (use the operator from
``preconditioned_operator``, weight decay included):

- ``gd``: ``x <- (1 - eta a) x`` is stable iff ``a < 2 / eta``.
- ``momentum`` (heavy ball, torch.optim.SGD: ``m <- beta m + g``, ``x <- x - eta m``): the
  characteristic polynomial ``z^2 - (1 + beta - eta a) z + beta`` has its roots in the unit
  disc iff ``a < (2 + 2 beta) / eta`` (derived).
- ``adam`` (EMA momentum: ``m <- beta1 m + (1 - beta1) g``, ``x <- x - eta P^-1 m`` with ``P``
  frozen): the same with ``eta (1 - beta1)``, so ``a < (2 + 2 beta1) / ((1 - beta1) eta)``
  (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"). Exact for no or
  coupled weight decay; with decoupled decay (``- eta lam x`` outside the momentum) it is an
  approximation.

A run "at the edge of stability" (Cohen et al. 2021) has its sharpness hovering at the
threshold: ``edge_of_stability`` calls a ratio ``sharpness / threshold`` within ``EDGE_BAND``
the edge.

Fixed points (research.md, paper A). On ``L = 1/2 (p - p*)^T H (p - p*)`` with a fixed
diagonal step ``M`` (``M = P^-1``):

- AdamW, ``p <- p - eta (M g + lam p)``:   ``H (p - p*) + lam M^-1 p = 0``
  so ``p = (H + lam M^-1)^-1 H p*``, the minimizer of ``L + (lam/2) p^T M^-1 p``.
- Adam + L2, ``p <- p - eta M (g + lam p)``: ``p = (H + lam I)^-1 H p*``, independent of ``M``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from condlab.errors import UsageError

METHODS = ("gd", "momentum", "adam")
EDGE_BAND = (0.9, 1.1)


def stability_threshold(method: str, lr: float, beta1: float = 0.9) -> float:
    """The largest stable (preconditioned) sharpness: ``2/eta``, ``(2 + 2 beta)/eta`` or
    ``(2 + 2 beta1)/((1 - beta1) eta)`` for ``gd``, ``momentum``, ``adam`` (see module doc)."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"--lr must be a positive number, got {lr}")
    if method == "gd":
        return 2.0 / lr
    if not 0 <= beta1 < 1:
        raise UsageError(f"--beta1 must be in [0, 1), got {beta1}")
    if method == "momentum":
        return (2.0 + 2.0 * beta1) / lr
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def edge_of_stability(
    sharpness: float, threshold: float, band: tuple[float, float] = EDGE_BAND
) -> dict[str, float | str]:
    """``{sharpness, threshold, ratio, regime}``: regime is ``stable`` below ``band[0]``,
    ``edge`` for ``band[0] <= ratio <= band[1]``, ``unstable`` above (a quadratic model at
    these weights would diverge; a real run self-stabilizes there)."""
    ratio = float(sharpness) / float(threshold)
    regime = "stable" if ratio < band[0] else ("edge" if ratio <= band[1] else "unstable")
    return {
        "sharpness": float(sharpness),
        "threshold": float(threshold),
        "ratio": ratio,
        "regime": regime,
        "band": tuple(band),
    }


def _as_matrix(M: Tensor) -> Tensor:
    return torch.diag(M) if M.ndim == 1 else M


def adamw_fixed_point(H: Tensor, M: Tensor, lam: float, p_star: Tensor) -> Tensor:
    """``(H + lam M^-1)^-1 H p*``: where AdamW with a frozen step ``M`` ([P] or [P, P]) stops."""
    return torch.linalg.solve(H + lam * torch.linalg.inv(_as_matrix(M)), H @ p_star)


def coupled_l2_fixed_point(H: Tensor, lam: float, p_star: Tensor) -> Tensor:
    """``(H + lam I)^-1 H p*``: where Adam + L2 stops, whatever the preconditioner."""
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return torch.linalg.solve(H + lam * eye, H @ p_star)
