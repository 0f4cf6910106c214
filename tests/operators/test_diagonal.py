"""Diagonal preconditioning, change of basis and operator diagonals against explicit matrices."""

import pytest
import torch
from torch import nn

from condlab.errors import UsageError
from condlab.operators import DenseOperator, GGNOperator, HessianOperator, dense_ggn, dense_hessian
from condlab.operators.diagonal import (
    BasisOperator,
    PreconditionedOperator,
    RunningMoments,
    check_diagonal,
    exact_diagonal,
    exact_ggn_diagonal,
    hutchinson_diagonal,
)
from condlab.problem import Problem
from tests.cases import CASES, make_case

D64 = torch.float64


def _spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    return Q @ torch.diag(torch.logspace(-1, 2, n, dtype=D64)) @ Q.T, g


@pytest.mark.parametrize("inner,outer", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3), (0.2, 0.5)])
@pytest.mark.parametrize("wrap", [lambda A: A, DenseOperator])
def test_preconditioned_operator_matches_explicit_matrix(inner, outer, wrap):
    A, g = _spd(7)
    p = torch.rand(7, generator=g, dtype=D64) * 10 + 0.1
    S = torch.diag(p.rsqrt())
    want = S @ (A + inner * torch.eye(7, dtype=D64)) @ S + outer * torch.eye(7, dtype=D64)
    op = PreconditionedOperator(wrap(A), p, inner_shift=inner, outer_shift=outer)
    torch.testing.assert_close(op.to_dense(block_size=3), want, rtol=1e-13, atol=1e-13)
    v = torch.randn(7, generator=g, dtype=D64)
    torch.testing.assert_close(op @ v, want @ v, rtol=1e-13, atol=1e-13)


def test_basis_operator_and_the_spectrum_of_the_full_preconditioner():
    A, g = _spd(6, seed=1)
    U, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D64))
    p = torch.rand(6, generator=g, dtype=D64) + 0.5
    B = BasisOperator(A, U)
    torch.testing.assert_close(B.to_dense(), U.T @ A @ U, rtol=1e-13, atol=1e-13)
    # P^-1/2 U^T A U P^-1/2 has the spectrum of M^1/2 A M^1/2 with M = U P^-1 U^T
    got = torch.linalg.eigvalsh(PreconditionedOperator(B, p).to_dense())
    M_half = U @ torch.diag(p.rsqrt()) @ U.T
    want = torch.linalg.eigvalsh(M_half @ A @ M_half)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "bad,count,word",
    [
        (torch.tensor([1.0, 0.0, 2.0, 0.0]), "2 are <= 0", "--eps"),
        (torch.tensor([1.0, -3.0, 2.0, 1.0]), "1 are <= 0", "min -3"),
        (torch.tensor([1.0, float("nan"), 2.0, float("inf")]), "2 are NaN or Inf", "--eps"),
    ],
)
def test_bad_diagonals_are_counted_and_suggest_eps(bad, count, word):
    with pytest.raises(UsageError, match=count) as err:
        check_diagonal(bad.double())
    assert word in str(err.value) and "of its 4 coordinates" in str(err.value)
    with pytest.raises(UsageError):
        PreconditionedOperator(torch.eye(4, dtype=D64), bad.double())


def test_exact_diagonal_of_dense_and_operator():
    A, _ = _spd(9, seed=2)
    torch.testing.assert_close(exact_diagonal(A), torch.diagonal(A))
    torch.testing.assert_close(exact_diagonal(DenseOperator(A), block_size=4), torch.diagonal(A))


def _problem(name, n=9, **extra):
    model, X, y, loss, kwargs = make_case(name, n=n)
    batches = [(X[:4], y[:4]), (X[4:6], y[4:6]), (X[6:], y[6:])]  # uneven (BN needs >= 2)
    return Problem(model, batches, loss, dtype=D64, **kwargs, **extra)


@pytest.mark.parametrize("name", list(CASES))
def test_exact_ggn_diagonal_matches_dense_ggn(name):
    p = _problem(name)
    want = torch.diagonal(dense_ggn(p))
    torch.testing.assert_close(exact_ggn_diagonal(p), want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(exact_ggn_diagonal(p, max_elements=1), want, rtol=1e-12, atol=1e-14)


def test_exact_ggn_diagonal_with_fixed_dropout_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 3)).double()
    X, y = torch.randn(8, 3, dtype=D64), torch.randint(0, 3, (8,))
    p = Problem(
        model, [(X[:5], y[:5]), (X[5:], y[5:])], "cross-entropy", dtype=D64, dropout_mode="fixed"
    )
    assert p.uses_dropout
    want = torch.diagonal(GGNOperator(p).to_dense())
    torch.testing.assert_close(exact_ggn_diagonal(p), want, rtol=1e-12, atol=1e-14)


def test_exact_diagonal_of_the_hessian_operator():
    p = _problem("mlp-ce")
    want = torch.diagonal(dense_hessian(p))
    torch.testing.assert_close(
        exact_diagonal(HessianOperator(p), block_size=5), want, rtol=1e-12, atol=1e-14
    )


def test_hutchinson_is_within_its_error_and_reports_it():
    A, _ = _spd(12, seed=3)
    probes = 4000
    est = hutchinson_diagonal(DenseOperator(A), probes, seed=7)
    assert est.estimator == "hutchinson" and est.samples == probes and est.seed == 7
    true_sd = ((A.square().sum(1) - torch.diagonal(A).square()) / probes).sqrt()
    assert ((est.values - torch.diagonal(A)).abs() < 5 * true_sd).all()
    ratio = est.stderr / true_sd
    assert ((ratio > 0.8) & (ratio < 1.2)).all()
    # deterministic given the seed, different for another seed
    again = hutchinson_diagonal(DenseOperator(A), probes, seed=7)
    assert torch.equal(again.values, est.values)
    assert not torch.equal(hutchinson_diagonal(A, probes, seed=8).values, est.values)


def test_hutchinson_is_exact_on_a_diagonal_matrix():
    d = torch.logspace(0, 3, 5, dtype=D64)
    est = hutchinson_diagonal(torch.diag(d), 3, seed=0)
    torch.testing.assert_close(est.values, d, rtol=1e-15, atol=0)
    assert (est.stderr <= 1e-14 * d).all()
    with pytest.raises(UsageError, match="at least 2"):
        hutchinson_diagonal(torch.diag(d), 1)


def test_running_moments_merge_blocks_exactly():
    g = torch.Generator().manual_seed(0)
    S = torch.randn(23, 4, generator=g, dtype=D64) * 3 + 1e6  # a large mean: no cancellation
    stats = RunningMoments()
    for rows in (slice(0, 1), slice(1, 8), slice(8, 9), slice(9, 23)):
        stats.add(S[rows])
    assert stats.n == 23
    torch.testing.assert_close(stats.mean, S.mean(0), rtol=1e-15, atol=0)
    torch.testing.assert_close(stats.variance, S.var(0), rtol=1e-9, atol=0)
