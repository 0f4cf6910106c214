"""Block Lanczos finds repeated eigenvalues with their multiplicity (up to the block size).

Prescribed spectra with a null space of 120, pairs, triples and near-coincident clusters at both
ends, each with a bulk of distinct eigenvalues so that the Krylov space does not run out (which
would hand single-vector Lanczos the copies through breakdowns). Every reported pair is checked
against the true residual ``||A y - theta y||``.
"""

import pytest
import torch
from torch import nn

from condlab.estimators import extreme_eigenpairs
from condlab.operators import GGNOperator, dense_ggn
from condlab.problem import Problem
from tests.cases import spectral_matrix  # noqa: E402  (one helper for every test file)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def lin(a, b, n):
    return torch.linspace(a, b, n, dtype=torch.float64)


# name: (spectrum, expected top (descending), expected bottom (ascending), block size)
CASES = {
    "null space of 120, pair and triple on top": (
        torch.cat([torch.zeros(120, dtype=torch.float64), lin(0.05, 1.0, 200), t(2, 2, 3, 3, 3, 5)]),
        t(5, 3, 3, 3, 2, 2),
        t(0, 0, 0, 0),
        4,
    ),
    "pairs and triples at both ends": (
        torch.cat([t(-2, -2, -1, -1, -1), lin(-0.5, 1.0, 250), t(4, 4, 4, 6, 6)]),
        t(6, 6, 4, 4, 4),
        t(-2, -2, -1, -1, -1),
        3,
    ),
    "clusters below the tolerance at both ends": (
        torch.cat([-1 - 1e-13 * lin(0, 3, 4), lin(-0.5, 1.0, 250), 3 + 1e-13 * lin(0, 3, 4)]),
        t(3, 3, 3, 3),
        t(-1, -1, -1, -1),
        4,
    ),
}


def _true_residuals(A, Y, theta):
    A, Y = A.double(), Y.double()
    return torch.linalg.vector_norm(A @ Y - Y * theta, dim=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_every_copy_up_to_the_block_size(name, dtype):
    lam, want_top, want_bottom, b = CASES[name]
    A = spectral_matrix(lam, seed=1).to(dtype)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    r = extreme_eigenpairs(
        A, top=len(want_top), bottom=len(want_bottom), tol=tol, block_size=b,
        max_matvecs=2000, seed=2, return_vectors=True,
    )
    norm_a = float(lam.abs().max())
    assert r.converged and r.block_size == b
    torch.testing.assert_close(r.eigenvalues_top, want_top, rtol=0, atol=tol * norm_a)
    torch.testing.assert_close(r.eigenvalues_bottom, want_bottom, rtol=0, atol=tol * norm_a)
    eps = torch.finfo(dtype).eps
    for Y, theta, res in (
        (r.vectors_top, r.eigenvalues_top, r.residuals_top),
        (r.vectors_bottom, r.eigenvalues_bottom, r.residuals_bottom),
    ):
        true = _true_residuals(A, Y, theta)
        assert (true <= r.threshold + 100 * eps * norm_a).all()
        torch.testing.assert_close(res, true, rtol=1e-3, atol=100 * eps * norm_a)
        Yd = Y.double()  # the copies are distinct vectors, not one vector found twice
        torch.testing.assert_close(
            Yd.T @ Yd, torch.eye(Y.shape[1], dtype=torch.float64), rtol=0, atol=100 * eps
        )


def test_single_vector_lanczos_misses_copies_that_blocks_find():
    """b = 1 finds a null space next to the bulk's edge once or twice (rounding seeds copies of
    well-separated ends, so pairs and triples at the ends are often found anyway)."""
    lam, want_top, want_bottom, _ = CASES["null space of 120, pair and triple on top"]
    A = spectral_matrix(lam, seed=1)
    single = extreme_eigenpairs(A, top=6, bottom=4, tol=1e-8, block_size=1, seed=2)
    assert single.converged and single.block_size == 1
    assert float(single.eigenvalues_bottom[-1]) > 0.04  # a positive value in a zero's place
    assert bool(single.may_repeat_bottom.all())  # b = 1: any value may hide more copies


def test_clusters_that_fill_the_block_are_flagged():
    lam, _, _, _ = CASES["null space of 120, pair and triple on top"]
    A = spectral_matrix(lam, seed=1)
    r = extreme_eigenpairs(A, top=6, bottom=4, tol=1e-8, block_size=4, seed=2)
    assert r.may_repeat_bottom.tolist() == [True] * 4  # 120 zeros: 4 or more found
    assert (r.copies_bottom >= 4).all()
    assert r.copies_top.tolist() == [1, 3, 3, 3, 2, 2]  # the triple fits in a block of 4
    assert r.may_repeat_top.tolist() == [False] * 6
    # the zeros fill the whole bottom list: more copies could not change any listed value
    assert r.may_miss_bottom.tolist() == [False] * 4
    assert r.may_miss_top.tolist() == [False] * 6


def test_a_cluster_larger_than_the_block_before_the_end_of_the_list_is_flagged():
    """A null space of 120 next to the bulk, bottom-4 with single-vector Lanczos: the list holds
    0 once or twice, then positive values in the place of zeros; every value but the last is
    flagged as possibly missing copies."""
    lam, _, want_bottom, _ = CASES["null space of 120, pair and triple on top"]
    A = spectral_matrix(lam, seed=1)
    r = extreme_eigenpairs(A, top=0, bottom=4, tol=1e-8, block_size=1, seed=2)
    assert r.converged
    assert float(r.eigenvalues_bottom[-1]) > 0.04  # wrong: a positive value in a zero's place
    # b = 1: every value may hide copies; only the last cluster cannot displace anything
    assert r.may_miss_bottom.tolist() == [True, True, True, False]
    # the default block holds as many vectors as values asked for: the list is right
    d = extreme_eigenpairs(A, top=0, bottom=4, tol=1e-8, seed=2)
    assert d.block_size == 4 and d.converged
    torch.testing.assert_close(d.eigenvalues_bottom, want_bottom, rtol=0, atol=d.threshold)
    assert not bool(d.may_miss_bottom.any())


@pytest.mark.parametrize(
    ("P", "top", "bottom", "device", "expected"),
    [(1000, 5, 3, "cpu", 5), (1000, 1, 0, "cpu", 1), (1000, 0, 3, "cpu", 3),
     (1000, 20, 3, "cpu", 8), (1000, 20, 3, "cuda", 16), (24, 5, 5, "cpu", 3)],
)
def test_default_block_size_holds_the_longer_list(P, top, bottom, device, expected):
    from condlab.estimators.eigs import default_block_size

    assert default_block_size(P, top, bottom, device) == expected


def test_rank_deficient_start_and_breakdowns():
    """A block larger than the number of distinct eigenvalues: directions drop out and fresh
    ones continue the search; depth P then gives every eigenvalue with its multiplicity."""
    lam = torch.cat([torch.full((30,), 2.0), torch.full((20,), -1.0), torch.zeros(40)])
    A = spectral_matrix(lam.double(), seed=3)
    r = extreme_eigenpairs(A, top=8, bottom=8, tol=1e-10, block_size=8, seed=3, max_matvecs=90)
    assert r.converged and r.breakdowns > 0
    torch.testing.assert_close(r.eigenvalues_top, torch.full((8,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(r.eigenvalues_bottom, torch.full((8,), -1.0, dtype=torch.float64))


def test_block_size_validation():
    from condlab.errors import UsageError

    A = spectral_matrix(lin(0, 1, 60))
    with pytest.raises(UsageError, match="block_size"):
        extreme_eigenpairs(A, top=2, bottom=2, block_size=0)
    with pytest.raises(UsageError, match="block_size"):
        extreme_eigenpairs(A, top=2, bottom=2, block_size=8, max_basis=12)


def test_basis_in_float32_on_a_float64_operator():
    lam, want_top, want_bottom, b = CASES["pairs and triples at both ends"]
    A = spectral_matrix(lam, seed=1)
    r = extreme_eigenpairs(
        A, top=5, bottom=5, tol=1e-5, block_size=b, seed=2, basis_dtype=torch.float32,
        basis_device="cpu", return_vectors=True,
    )
    assert r.converged and r.vectors_top.dtype == torch.float64
    torch.testing.assert_close(r.eigenvalues_top, want_top, rtol=0, atol=1e-5 * 6)
    torch.testing.assert_close(r.eigenvalues_bottom, want_bottom, rtol=0, atol=1e-5 * 6)
    true = _true_residuals(A, r.vectors_bottom, r.eigenvalues_bottom)
    assert (true <= 1e-5 * 6).all()


def test_cross_entropy_ggn_bottom_three_are_zero():
    """The GGN of cross-entropy has rank <= N (C - 1): bottom-3 read 0, 0, 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4))  # P = 114
    X = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    problem = Problem(model, [(X, y)], "cross-entropy", dtype=torch.float64)
    G = GGNOperator(problem)
    r = extreme_eigenpairs(G, top=2, bottom=3, tol=1e-8, seed=0, return_vectors=True)  # b = 3
    dense = dense_ggn(problem)
    exact = torch.linalg.eigvalsh(dense)
    assert r.converged
    assert (r.eigenvalues_bottom.abs() <= r.threshold).all()
    torch.testing.assert_close(r.eigenvalues_top, exact.flip(0)[:2], rtol=0, atol=r.threshold)
    true = _true_residuals(dense, r.vectors_bottom, r.eigenvalues_bottom)
    assert (true <= r.threshold).all()
    assert r.block_size == 3 and bool(r.may_repeat_bottom.all())  # 90 null dims fill the block
    assert not bool(r.may_miss_bottom.any())  # ... and the list: more copies change nothing
