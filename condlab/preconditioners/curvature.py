"""P from curvature diagonals (GN^-1, GN^-1/2, Jacobi) and the eigenbasis of G."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.operators.base import LinearOperator
from condlab.operators.curvature import GGNOperator, HessianOperator
from condlab.operators.diagonal import (
    DiagonalEstimate,
    exact_diagonal,
    exact_ggn_diagonal,
    hutchinson_diagonal,
)
from condlab.preconditioners.base import (
    DIAG_ESTIMATORS,
    MAX_EIGEN_PARAMS,
)

if TYPE_CHECKING:
    from condlab.problem import Problem


# -- from curvature ---------------------------------------------------------------------------
def _check_estimator(estimator: str) -> None:
    if estimator not in DIAG_ESTIMATORS:
        raise UsageError(
            f"unknown --diag-estimator {estimator!r}; choose one of {', '.join(DIAG_ESTIMATORS)}"
        )


def gn_diagonal(
    problem: Problem | None = None,
    *,
    estimator: str = "exact",
    probes: int = 100,
    seed: int = 0,
    ggn: LinearOperator | Tensor | None = None,
) -> DiagonalEstimate:
    """``diag(G) [P]`` of the Gauss-Newton matrix.

    ``exact``: from per-sample Jacobians (``exact_ggn_diagonal``: ``C`` vector-Jacobian
    products per sample), or ``torch.diagonal`` / unit-vector products of a given ``ggn``.
    ``hutchinson``: ``E[z * (G z)]`` over ``probes`` Rademacher vectors (Sophia-style), ``probes``
    GGN products; ``stderr`` says how far off it may be.
    """
    _check_estimator(estimator)
    if estimator == "hutchinson":
        return hutchinson_diagonal(
            ggn if ggn is not None else GGNOperator(problem), probes, seed=seed
        )
    values = exact_diagonal(ggn) if ggn is not None else exact_ggn_diagonal(problem)
    return DiagonalEstimate(values, "exact")


def hessian_diagonal(
    problem: Problem | None = None,
    *,
    estimator: str = "exact",
    probes: int = 100,
    seed: int = 0,
    hessian: LinearOperator | Tensor | None = None,
) -> DiagonalEstimate:
    """``diag(H) [P]``: exact from ``P`` Hessian-vector products on unit blocks (``P / 64``
    vmapped passes over the data), or Hutchinson's ``E[z * (H z)]`` from ``probes`` HVPs."""
    _check_estimator(estimator)
    H = hessian if hessian is not None else HessianOperator(problem)
    if estimator == "hutchinson":
        return hutchinson_diagonal(H, probes, seed=seed)
    return DiagonalEstimate(exact_diagonal(H), "exact")


def _dense(A: LinearOperator | Tensor) -> Tensor:
    M = A if isinstance(A, Tensor) else A.to_dense()
    return (M + M.T) / 2


def ggn_eigenbasis(
    problem: Problem | None = None,
    *,
    ggn: LinearOperator | Tensor | None = None,
    max_params: int = MAX_EIGEN_PARAMS,
) -> tuple[Tensor, Tensor]:
    """``(eigenvalues [P], U [P, P])`` of the dense GGN, ascending (paper B's eigenbasis)."""
    P = ggn.shape[0] if ggn is not None else problem.n_params
    if P > max_params:
        raise UsageError(
            f"--basis eigen decomposes the dense [P, P] Gauss-Newton matrix; this model has "
            f"{P} parameters, above the limit of {max_params}; use --basis identity or "
            "select fewer parameters with --params"
        )
    return torch.linalg.eigh(_dense(ggn if ggn is not None else GGNOperator(problem)))
