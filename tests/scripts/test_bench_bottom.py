"""scripts/bench_bottom.py's Chebyshev filter is the polynomial it claims, counts every product
of A, and its filtered Lanczos finds the bottom of a prescribed spectrum. No timing is asserted."""

import math

import pytest
import torch

from condlab.operators.base import DenseOperator
from tests.cases import script_module, spectral_matrix


@pytest.fixture(scope="module")
def bench():
    yield from script_module("bench_bottom")


EIGENVALUES = torch.cat([torch.tensor([-3.0, -2.5, -2.4]), torch.linspace(-1.0, 10.0, 117)])


def _chebyshev(d: int, x: torch.Tensor) -> torch.Tensor:
    inside = torch.cos(d * torch.acos(x.clamp(-1, 1)))
    outside = x.sign() ** d * torch.cosh(d * torch.acosh(x.abs().clamp_min(1)))
    return torch.where(x.abs() <= 1, inside, outside)


def test_the_filter_is_the_chebyshev_polynomial_of_the_operator(bench):
    lam = EIGENVALUES.double()
    M = spectral_matrix(lam)
    A = DenseOperator(M)
    F = bench.ChebyshevFilter(A, 7, cut=-1.0, upper=10.0, lower=-3.0)
    V = torch.randn(len(lam), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w, Q = torch.linalg.eigh(M)
    p = _chebyshev(7, (w - 4.5) / 5.5) / math.cosh(7 * math.acosh(7.5 / 5.5))
    torch.testing.assert_close(F @ V, Q @ (p[:, None] * (Q.T @ V)), rtol=1e-12, atol=1e-12)
    assert A.matvecs == 14  # d products per column
    torch.testing.assert_close(F.AV, M @ V)  # the first product is kept


def test_filtered_lanczos_finds_the_bottom_of_a_prescribed_spectrum(bench, monkeypatch):
    lam = EIGENVALUES.double()
    A = DenseOperator(spectral_matrix(lam, seed=2))
    monkeypatch.setattr(bench, "TOL", 1e-9)
    out = bench.filtered_bottom(A, 10.0, -3.0, 4, cut=-1.0, max_steps=60)
    assert out["converged"]
    torch.testing.assert_close(torch.tensor(out["values"], dtype=torch.float64), lam[:3],
                               rtol=0, atol=1e-8)
    assert max(out["residuals"]) <= 1e-9 * 10.0
    assert A.matvecs == 4 * out["steps"]  # every product of A counted, none beside the filter
