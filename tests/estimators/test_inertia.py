"""Negative eigenvalues: counted exactly and by SLQ, and conserved by a diagonal preconditioner
(Sylvester's law of inertia), against dense matrices with a known spectrum."""

from __future__ import annotations

import pytest
import torch

from condlab.measure import EstimatorSettings, measure
from condlab.operators.base import DenseOperator
from condlab.preconditioners.base import Preconditioner
from condlab.preconditioners.build import preconditioned_operator

D64 = torch.float64


def _indefinite(n=40, negatives=7, seed=0):
    """Symmetric, eigenvalues: ``negatives`` in [-3, -0.01], the rest in [0.1, 100], random basis."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    neg = -torch.logspace(-2, 0.5, negatives, dtype=D64)
    pos = torch.logspace(-1, 2, n - negatives, dtype=D64)
    ev = torch.cat([neg, pos])
    return Q @ torch.diag(ev) @ Q.T, ev, g


def _exact(op):
    s = EstimatorSettings(top=1, bottom=1, exact=True, null_threshold=1e-10)
    return measure(op, s).result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagonal_preconditioner_keeps_the_negative_count(seed):
    H, ev, g = _indefinite(seed=seed)
    p = torch.logspace(-3, 3, H.shape[0], dtype=D64)[torch.randperm(H.shape[0], generator=g)]
    pc = Preconditioner("p", p, "test", 0.0, "test")
    base = _exact(DenseOperator(H))
    pre = _exact(preconditioned_operator(DenseOperator(H), pc))
    assert base.details["negative_count"] == 7
    assert pre.details["negative_count"] == 7  # Sylvester: congruence keeps the inertia
    assert pre.lambda_max > 10 * base.lambda_max  # P (1e-3 .. 1e3) really changes the spectrum
    # a shift after the preconditioner is not a congruence of H + lam I: counts can differ
    lam = 0.05
    shifted = _exact(preconditioned_operator(DenseOperator(H), pc, weight_decay=lam, decay="decoupled"))
    dense = torch.diag(p.rsqrt()) @ H @ torch.diag(p.rsqrt()) + lam * torch.eye(len(p), dtype=D64)
    assert shifted.details["negative_count"] == int((torch.linalg.eigvalsh(dense) < 0).sum())
    assert _exact(DenseOperator(H + lam * torch.eye(len(p), dtype=D64))).details[
        "negative_count"
    ] == int((ev + lam < 0).sum())


def test_negative_mass_exact():
    H, ev, _ = _indefinite()
    r = _exact(DenseOperator(H))
    assert r.details["negative_mass"] == pytest.approx(float(ev[ev < 0].abs().sum() / ev.abs().sum()))
    assert r.details["negative_count_stderr"] == 0.0


def test_slq_counts_the_negatives_of_a_separated_spectrum():
    """SLQ with as many nodes as distinct eigenvalues is exact per probe: 7 of 40 below 0."""
    H, ev, _ = _indefinite()
    s = EstimatorSettings(top=1, bottom=1, density=True, density_probes=200, density_steps=40)
    r = measure(DenseOperator(H), s).result
    n, se = r.details["negative_count"], r.details["negative_count_stderr"]
    assert se > 0 and r.details["negative_method"].startswith("SLQ")
    assert abs(n - 7) < 4 * se + 0.5
    psd = measure(DenseOperator(H @ H), s).result  # positive definite: no node below 0
    assert psd.details["negative_count"] == 0.0 and psd.details["negative_mass"] == 0.0
