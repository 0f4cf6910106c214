"""Lanczos: the Lanczos relation, orthonormality, exactness at full depth, breakdown."""

import pytest
import torch

from condlab.errors import UsageError
from condlab.estimators import lanczos
from condlab.operators.base import DenseOperator
from tests.cases import spectral_matrix  # noqa: E402  (one helper for every test file)


def outlier_spectrum(P=120):
    """A few large outliers over a bulk: plain Lanczos loses orthogonality here fast."""
    return torch.cat([torch.tensor([100.0, 50.0, 20.0]), torch.linspace(0.0, 1.0, P - 3)])


def test_lanczos_relation_holds():
    A = spectral_matrix(outlier_spectrum())
    dec = lanczos(A, 40, seed=1)
    T = dec.tridiagonal()
    e_m = torch.zeros(40, dtype=torch.float64)
    e_m[-1] = 1.0
    gap = A @ dec.Q - dec.Q @ T - torch.outer(dec.residual, e_m)
    assert gap.norm() <= 1e-12 * torch.linalg.matrix_norm(A, 2)
    assert dec.residual.norm() == pytest.approx(float(dec.betas[-1]), rel=1e-12)
    assert (dec.Q.T @ dec.residual).abs().max() < 1e-12 * dec.residual.norm()
    assert dec.matvecs == 40 and dec.breakdowns == 0


def test_basis_is_orthonormal_to_working_precision():
    A = spectral_matrix(outlier_spectrum())
    dec = lanczos(A, 100, seed=2)
    eye = torch.eye(100, dtype=torch.float64)
    assert (dec.Q.T @ dec.Q - eye).abs().max() < 1e-12


def test_first_vector_is_the_normalized_start_vector():
    A = spectral_matrix(torch.linspace(-1, 1, 30))
    v0 = torch.arange(30, dtype=torch.float64) + 1.0
    dec = lanczos(A, 5, v0=v0)
    torch.testing.assert_close(dec.Q[:, 0], v0 / v0.norm(), rtol=0, atol=1e-15)


def test_full_depth_recovers_every_eigenvalue():
    lam = torch.cat([torch.tensor([-3.0, -1e-3]), torch.logspace(-4, 1, 38, dtype=torch.float64)])
    A = spectral_matrix(lam, seed=3)
    dec = lanczos(A, 40, seed=3)
    torch.testing.assert_close(dec.ritz_values(), lam.sort().values, rtol=0, atol=1e-12)


def test_breakdown_continues_and_keeps_multiplicities():
    lam = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64).repeat_interleave(
        10
    )  # 3 distinct, each 10 times
    A = spectral_matrix(lam, seed=4)
    dec = lanczos(A, 30, seed=4)
    assert dec.breakdowns >= 9  # every 3-dimensional Krylov space is invariant
    assert (dec.betas[:-1] == 0).sum() >= 9
    torch.testing.assert_close(dec.ritz_values(), lam.sort().values, rtol=0, atol=1e-12)
    assert (dec.Q.T @ dec.Q - torch.eye(30, dtype=torch.float64)).abs().max() < 1e-12


def test_start_vector_in_an_eigenspace_breaks_down_at_once():
    lam = torch.linspace(1, 2, 20, dtype=torch.float64)
    A = spectral_matrix(lam, seed=5)
    v = torch.linalg.eigh(A).eigenvectors[:, 7]
    dec = lanczos(A, 4, v0=v, seed=5)
    assert dec.betas[0] == 0 and dec.breakdowns >= 1
    assert dec.alphas[0] == pytest.approx(float(lam[7]), abs=1e-13)


def test_same_seed_same_numbers_and_generator_equals_seed():
    A = spectral_matrix(outlier_spectrum(), seed=6)
    a, b = lanczos(A, 20, seed=7), lanczos(A, 20, seed=7)
    c = lanczos(A, 20, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.alphas, b.alphas) and torch.equal(a.Q, b.Q)
    assert torch.equal(a.alphas, c.alphas) and c.seed is None and a.seed == 7
    assert not torch.equal(a.alphas, lanczos(A, 20, seed=8).alphas)


def test_linear_operator_in_float32():
    A = spectral_matrix(outlier_spectrum(), seed=9, dtype=torch.float32)
    op = DenseOperator(A)
    dec = lanczos(op, 60, seed=9)
    assert op.matvecs == 60 and dec.Q.dtype == torch.float32
    assert (dec.Q.T @ dec.Q - torch.eye(60)).abs().max() < 1e-5


@pytest.mark.parametrize("num_matvecs", [0, 31])
def test_bad_depth_is_a_usage_error(num_matvecs):
    with pytest.raises(UsageError):
        lanczos(torch.eye(30, dtype=torch.float64), num_matvecs)


def test_bad_start_vector_is_a_usage_error():
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(UsageError):
        lanczos(A, 3, v0=torch.ones(4, dtype=torch.float64))
    with pytest.raises(UsageError):
        lanczos(A, 3, v0=torch.zeros(5, dtype=torch.float64))
