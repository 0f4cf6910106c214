"""The end certificate of a single-vector run survives thick restarts (issue 21's GPT-2 runs read
"not converged" with the true residual under tol): bounds.ResidualPolynomial against dense
truths, and its backbone, the residual direction's polynomial tracked through the restarts."""

import pytest
import torch

import condlab.estimators.eigs as eigs
from condlab.measure import EstimatorSettings, measure
from condlab.operators.base import DenseOperator
from tests.cases import spectral_matrix

D64 = torch.float64


def lin(a, b, n):
    return torch.linspace(a, b, n, dtype=D64)


def _run_capturing(A, **kw):
    """``extreme_eigenpairs`` plus what it ended with: the basis, the Ritz pairs of H, the
    certificate (from ``_result``'s arguments) and the start vector (the first product's)."""
    seen, result, matmat = {}, eigs._result, eigs.matmat

    def capture_result(V, ritz, *args):
        seen.update(V=V.clone(), ritz=ritz, matvecs=args[3], cert=args[11])
        return result(V, ritz, *args)

    def capture_matmat(op, Q):
        seen.setdefault("q0", Q[:, 0].clone())
        return matmat(op, Q)

    eigs._result, eigs.matmat = capture_result, capture_matmat
    try:
        r = eigs.extreme_eigenpairs(A, block_size=1, **kw)
    finally:
        eigs._result, eigs.matmat = result, matmat
    return r, seen


@pytest.mark.parametrize("top,bottom,max_basis", [(2, 0, 6), (2, 0, 8), (1, 1, 9), (1, 1, 16),
                                                  (0, 2, 7)])
def test_the_residual_polynomial_is_the_residual_directions_through_restarts(top, bottom, max_basis):
    """Backbone: with the roots (current and every discarded Ritz value) and the betas tracked,
    the final residual direction q has eigen-coordinates x_i^T q = p(lambda_i) x_i^T q_0."""
    lam = torch.cat([lin(-1.0, 1.0, 300), torch.tensor([1.5, 2.0, 3.0, -2.5], dtype=D64)])
    A = spectral_matrix(lam, 4)
    r, seen = _run_capturing(A, top=top, bottom=bottom, tol=1e-9, max_basis=max_basis, seed=4,
                             max_matvecs=3000)
    assert r.restarts >= 1
    poly = seen["cert"].recurrence.sources[1]
    roots = torch.cat([poly.theta, poly.discarded])
    assert len(roots) == seen["matvecs"]  # the degree: every product of the run
    ritz, V = seen["ritz"], seen["V"]
    j = int(poly.coupling.abs().argmax())  # A y_j - theta_j y_j = q (c^T s_j)
    y = V @ ritz.S[:, j]
    q = (A @ y - ritz.theta[j] * y) / poly.coupling[j]
    ev, X = torch.linalg.eigh(A)
    got = (X.T @ q).abs()
    want = poly.log_p(ev).exp() * (X.T @ seen["q0"]).abs()
    # next to a root the computed root's rounding decides the coordinate: compare elsewhere
    far = (ev[:, None] - roots[None, :]).abs().min(dim=1).values > 1e-6
    assert int(far.sum()) > 200
    assert float((got - want).abs()[far].max()) <= 1e-9 * float(want[far].max())


# name: (spectrum, top, bottom); the bottom cluster of 'clustered ends' (six values within
# 1e-3 at 1.0, ||A|| = 60) needs some 1e4 products to certify at 1e-6: the top end only
SPECTRA = {
    "indefinite": (torch.cat([lin(-1.0, 0.0, 100), lin(0.0, 10.0, 200) ** 2 / 10,
                              torch.tensor([-3.0], dtype=D64)]), 1, 1),
    "clustered ends": (torch.cat([1 + lin(0, 1e-3, 6), lin(2, 50, 200), 60 + lin(0, 0.3, 6)]), 1, 0),
    "null space": (torch.cat([torch.zeros(40, dtype=D64), lin(0.1, 4.0, 150),
                              torch.tensor([6.0], dtype=D64)]), 1, 1),
}


@pytest.mark.parametrize("max_basis", [6, 10, 24])
@pytest.mark.parametrize("name", list(SPECTRA))
def test_restarted_runs_certify_end_bounds_that_hold_and_are_tight(name, max_basis):
    lam, top, bottom = SPECTRA[name]
    lmax, lmin = float(lam.max()), float(lam.min())
    for seed in range(2):
        r = eigs.extreme_eigenpairs(spectral_matrix(lam, seed), top=top, bottom=bottom, tol=1e-6,
                                    seed=seed, block_size=1, max_basis=max_basis, max_matvecs=3000)
        assert r.restarts >= 1
        assert r.lambda_max_upper >= lmax - 1e-12 and r.lambda_min_lower <= lmin + 1e-12
        assert abs(float(r.eigenvalues_top[0]) - lmax) <= float(r.errors_top[0]) + 1e-12
        # the old certificate froze before the first restart; now the run goes on until certified
        assert r.certified_top and r.certified_bottom, (r.certificate_top, r.certificate_bottom)
        assert r.stop_reason.startswith("converged"), r.stop_reason
        assert r.lambda_max_upper - lmax <= r.threshold
        if bottom:
            assert abs(float(r.eigenvalues_bottom[0]) - lmin) <= float(r.errors_bottom[0]) + 1e-12
            assert lmin - r.lambda_min_lower <= r.threshold


def test_a_small_basis_top1_reads_converged_through_measure():
    """Issue 21's symptom in small: top-1 with a 6-column basis (several restarts) met the
    residual but read not converged, its end bound frozen at the start block's recurrence."""
    lam = torch.cat([lin(0.0, 1.0, 400), torch.tensor([1.2], dtype=D64)])
    m = measure(DenseOperator(spectral_matrix(lam, 7)),
                EstimatorSettings(top=1, bottom=0, tol=1e-6, seed=7, block_size=1, max_basis=6))
    r = m.result
    assert r.converged, r.details["certificate_top"]
    assert r.details["lambda_max_upper"] >= 1.2 - 1e-12
    assert abs(r.eigenvalues_top[0] - 1.2) <= 1.2e-6


def test_float32_restarted_bound_holds():
    """A float32 operator and basis: the relation drifts at the arithmetic's rounding, and the
    measured drift (true against Krylov residuals) widens the roots; the bound still holds."""
    lam = torch.cat([lin(-1.0, 1.0, 300), torch.tensor([1.05, 1.4], dtype=D64)])
    for seed in range(3):
        r = eigs.extreme_eigenpairs(spectral_matrix(lam, seed, dtype=torch.float32), top=1,
                                    bottom=1, tol=1e-4, seed=seed, block_size=1, max_basis=8,
                                    max_matvecs=2000)
        assert r.restarts >= 1
        assert r.lambda_max_upper >= 1.4 - 1e-6 and r.lambda_min_lower <= -1.0 + 1e-6
        if r.certified_top:
            assert r.lambda_max_upper - 1.4 <= r.threshold + 1e-6


def test_warm_started_restarted_single_vector_bounds_hold():
    """A warm start (Anderson's factor on the first column) with restarts: the residual
    polynomial's certificate still bounds both ends against the dense truth."""
    lam = torch.cat([lin(-2.0, -1.9, 3), lin(0.0, 1.0, 300), torch.tensor([4.0, 4.5], dtype=D64)])
    A = spectral_matrix(lam, 3)
    warm = torch.linalg.eigh(A).eigenvectors[:, -1] + 0.1 * torch.randn(
        len(lam), generator=torch.Generator().manual_seed(0), dtype=D64)
    for seed in range(3):
        r = eigs.extreme_eigenpairs(A, top=1, bottom=1, tol=1e-8, seed=seed, block_size=1,
                                    max_basis=8, start=warm, max_matvecs=2000)
        assert r.restarts >= 1
        assert r.lambda_max_upper >= 4.5 - 1e-12 and r.lambda_min_lower <= -2.0 + 1e-12
        assert abs(float(r.eigenvalues_top[0]) - 4.5) <= float(r.errors_top[0]) + 1e-12
        assert abs(float(r.eigenvalues_bottom[0]) + 2.0) <= float(r.errors_bottom[0]) + 1e-12
