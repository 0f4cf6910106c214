"""Stopping when the eigenvalues are known, not when the vectors are (issue 22 item 2): with a
certified gap a value's error is r^2 / gap, far below the residual, so stop_on='values' stops
once every listed value's backed error (and the ends' certificate) meets tol * ||A||. Checked
against dense truths; and the true residuals that come from the kept products A V."""

import pytest
import torch

from condlab.errors import UsageError
from condlab.estimators import extreme_eigenpairs
from tests.cases import spectral_matrix

D64 = torch.float64


def lin(a, b, n):
    return torch.linspace(a, b, n, dtype=D64)


# name: (spectrum, top, bottom, tol)
SPECTRA = {
    "separated": (torch.cat([lin(0.5, 1.0, 150), torch.tensor([2.0, 3.0, 5.0, 0.1, 0.2], dtype=D64)]), 3, 2, 1e-8),
    "indefinite": (torch.cat([lin(-1.0, 1.0, 200), torch.tensor([-2.0, -1.5, 1.6, 2.5, 4.0], dtype=D64)]), 3, 2, 1e-7),
    "null space and repeats": (torch.cat([torch.zeros(40, dtype=D64), torch.full((3,), 5.0, dtype=D64),
                                          lin(0.1, 4.0, 150)]), 3, 3, 1e-7),
}


@pytest.mark.parametrize("name", list(SPECTRA))
def test_stopping_on_values_keeps_every_value_within_tol_of_the_truth(name):
    lam, top, bottom, tol = SPECTRA[name]
    asc = lam.sort().values
    fewer = 0
    for seed in range(2):
        A = spectral_matrix(lam, seed)
        kw = dict(top=top, bottom=bottom, tol=tol, seed=seed, max_matvecs=1500)
        by_value = extreme_eigenpairs(A, stop_on="values", **kw)
        by_residual = extreme_eigenpairs(A, **kw)
        assert by_value.stop_rule == "values" and by_residual.stop_rule == "residuals"
        assert by_value.matvecs <= by_residual.matvecs
        fewer += by_value.matvecs < by_residual.matvecs
        for r in (by_value, by_residual):
            rounding = 1e-13 * float(asc.abs().max())
            assert ((r.eigenvalues_top - asc.flip(0)[:top]).abs() <= r.errors_top + rounding).all()
            assert ((r.eigenvalues_bottom - asc[:bottom]).abs() <= r.errors_bottom + rounding).all()
        # converged now means the value: every flagged value within tol * ||A|| of the truth
        r = by_value
        for got, want, ok in ((r.eigenvalues_top, asc.flip(0), r.converged_top),
                              (r.eigenvalues_bottom, asc, r.converged_bottom)):
            for v, w, c in zip(got.tolist(), want.tolist(), ok.tolist()):
                assert not c or abs(v - w) <= r.threshold * (1 + 1e-9), (v, w)
        assert r.converged, r.stop_reason
        # the multiplicity flags keep their meaning: the same copies and flags either way
        assert torch.equal(r.may_miss_top, by_residual.may_miss_top)
        assert torch.equal(r.may_miss_bottom, by_residual.may_miss_bottom)
    # not vacuous: certified gaps let the values stop early; a null space or a triple that
    # fills the block has no counted component, so its values wait for their residuals
    assert fewer >= 1 or name == "null space and repeats"


def test_the_stop_reason_names_the_bound():
    lam, top, bottom, tol = SPECTRA["separated"]
    r = extreme_eigenpairs(spectral_matrix(lam, 1), top=top, bottom=bottom, tol=tol, seed=1,
                           stop_on="values")
    assert r.stop_reason.startswith("converged on values") and "kato-temple" in r.stop_reason
    late = [k for k, res in zip(r.error_kinds_bottom, r.residuals_bottom) if res > r.threshold]
    assert late and set(late) <= {"kato-temple", "cluster", "bracket"}
    with pytest.raises(UsageError, match="stop_on"):
        extreme_eigenpairs(spectral_matrix(lam, 1), top=1, bottom=0, stop_on="vectors")


@pytest.mark.parametrize("max_basis", [None, 12])
def test_true_residuals_from_the_kept_products_are_the_true_residuals(max_basis):
    """A y = (A V) s from the products of the run: no product for the check (float64, restarts
    or not), the residuals those of the dense A, and checked_products = A Y."""
    lam = torch.cat([lin(-1.0, 1.0, 200), torch.tensor([1.5, 3.0, -2.0], dtype=D64)])
    A = spectral_matrix(lam, 2)
    seen = []

    def count(V):
        seen.append(V.shape[1])
        return A @ V

    from condlab.operators.base import DenseOperator

    class Counted(DenseOperator):
        def _matmat(self, V):
            return count(V)

    r = extreme_eigenpairs(Counted(A), top=2, bottom=1, tol=1e-8, seed=2, return_vectors=True,
                           max_basis=max_basis, block_size=1, max_matvecs=2000)
    assert r.residual_kind == "true" and r.matvecs == sum(seen)
    assert set(seen) == {1}  # single-vector steps only: no block of top + bottom for the check
    assert max_basis is None or r.restarts >= 1
    Y = torch.cat([r.vectors_top, r.vectors_bottom], dim=1)
    theta = torch.cat([r.eigenvalues_top, r.eigenvalues_bottom])
    true = torch.linalg.vector_norm(A @ Y - Y * theta, dim=0)
    got = torch.cat([r.residuals_top, r.residuals_bottom])
    assert torch.allclose(got, true, rtol=1e-6, atol=1e-13 * 3.0)
    assert torch.allclose(r.checked_products, A @ Y, atol=1e-12)
