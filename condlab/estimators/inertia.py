r"""The inertia of a symmetric operator: how many eigenvalues are negative, and how heavy they are.

Quantity: with an absolute ``threshold`` (eigenvalues within ``+-threshold`` of 0 count as zero),
``negative_count = #{i: lambda_i < -threshold}`` and the negative mass
``sum_{lambda_i < -threshold} |lambda_i| / sum_i |lambda_i|`` (0: positive semi-definite, 1:
negative semi-definite).

Sylvester's law of inertia: for an invertible ``S``, ``S^T A S`` has as many negative, zero and
positive eigenvalues as ``A``. A diagonal preconditioner ``P^-1/2 A P^-1/2`` (``S = P^-1/2``)
therefore never creates or removes negative curvature; it only rescales it. (A shift ``+ lam I``
applied *after* the preconditioner is another matter: it covers ``A``'s negatives in ``A + lam I``
but not the rescaled ones in ``P^-1/2 A P^-1/2 + lam I``.)

Estimators: exact from a dense spectrum; from stochastic Lanczos quadrature (SLQ) the count is
``P`` times the mean quadrature weight of the Ritz nodes below ``-threshold`` (probe noise as its
stderr, plus about one node's weight of quadrature error when a node straddles ``-threshold``;
a cluster of eigenvalues near 0, as in a trained network's Hessian, is not resolved and its
sign split is a guess) and the mass the same ratio of ``sum tau |theta|``.
"""

from __future__ import annotations

import math

from torch import Tensor


def inertia_from_spectrum(evals: Tensor, threshold: float) -> dict:
    """``{negative_count, negative_mass, method}`` from every eigenvalue of the operator."""
    ev = evals.detach().double().reshape(-1)
    neg = ev < -threshold
    total = float(ev.abs().sum())
    mass = float(ev[neg].abs().sum()) / total if total > 0 else 0.0
    return {
        "negative_count": int(neg.sum()),
        "negative_count_stderr": 0.0,
        "negative_mass": mass,
        "negative_method": "exact (dense eigendecomposition)",
        "negative_threshold": float(threshold),
    }


def inertia_from_quadrature(nodes: Tensor, weights: Tensor, dim: int, threshold: float) -> dict:
    """The same estimated by SLQ from its ``[probes, m]`` Gauss nodes and weights."""
    nodes, weights = nodes.double(), weights.double()
    below = nodes < -threshold
    per_probe = (weights * below).sum(dim=1)
    k = per_probe.numel()
    stderr = float(dim * per_probe.std() / math.sqrt(k)) if k > 1 else float("nan")
    abs_mass = (weights * nodes.abs()).sum(dim=1)
    neg_mass = (weights * nodes.abs() * below).sum(dim=1)
    mass = float(neg_mass.mean() / abs_mass.mean()) if float(abs_mass.mean()) > 0 else 0.0
    return {
        "negative_count": float(dim * per_probe.mean()),
        "negative_count_stderr": stderr,
        "negative_mass": mass,
        "negative_method": f"SLQ estimate, {k} probes x {nodes.shape[1]} nodes; eigenvalues "
        "nearer 0 than the nodes' spacing are not resolved: --exact counts them",
        "negative_threshold": float(threshold),
    }

