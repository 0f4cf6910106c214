"""No confident wrong number: null criterion, kappa resolution, top-only runs, true residuals,
multiplicities, each against a dense float64 truth."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from condlab.cli import app
from condlab.errors import UsageError
from condlab.estimators import condition_number
from condlab.estimators.condition import NOISE_FACTOR, noise_rel
from condlab.measure import EstimatorSettings, measure
from condlab.operators import GGNOperator, HessianOperator, dense_ggn, dense_hessian
from condlab.operators.base import DenseOperator
from condlab.problem import Problem
from condlab.settings import ggn_nullity_bound
from tests.cases import make_case, spectral_matrix

runner = CliRunner()


def run_json(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["results"][0]


def test_one_feature_with_mean_10_default_float32_gives_the_closed_form_kappa():
    """research.md: mean mu, std s and a bias give kappa = (T + sqrt(T^2 - 4 s^2)) / (T - ..)."""
    T = 1 + 10.0**2 + 1.0**2
    root = math.sqrt(T * T - 4)
    truth = (T + root) / (T - root)  # 10402.9
    res = run_json("spectrum", "--model", "linear", "--data", "linreg:d=1,mean=10,exact=true",
                   "--loss", "mse", "--format", "json")
    assert res["dtype"] == "float32"
    assert res["condition_number"] == pytest.approx(truth, rel=0.01)
    assert res["nullity"] == 0 and res["definiteness"] == "positive definite"


def test_a_resolved_small_eigenvalue_is_never_counted_null():
    """kappa 1e7 in float64 is far inside what the arithmetic resolves: no fake null space."""
    lam = torch.logspace(-7, 0, 40, dtype=torch.float64)
    A = spectral_matrix(lam, seed=1)
    for exact in (True, False):
        r = measure(A, EstimatorSettings(top=2, bottom=2, tol=1e-10, exact=exact)).result
        assert r.nullity in (0, None) and r.definiteness == "positive definite"
        assert r.condition_number == pytest.approx(1e7, rel=1e-6)
        assert r.threshold == pytest.approx(NOISE_FACTOR * 2.0**-52, rel=1e-6)  # not tol


def test_kappa_beyond_float32_is_flagged_not_printed():
    lam = torch.cat([torch.logspace(-7, 0, 30, dtype=torch.float64)])
    A32 = spectral_matrix(lam, seed=2, dtype=torch.float32)
    r = measure(A32, EstimatorSettings(top=2, bottom=2, tol=1e-4, exact=True)).result
    assert r.condition_number is None and r.condition_resolved is False
    assert "not resolved in float32; use --dtype float64" in r.condition_definition
    assert 1e4 < r.condition_bound <= 1e7  # a true lower bound
    # the same spectrum in float64 is resolved and exact
    r64 = measure(spectral_matrix(lam, seed=2), EstimatorSettings(top=2, bottom=2, exact=True)).result
    assert r64.condition_resolved and r64.condition_number == pytest.approx(1e7, rel=1e-3)


def test_float32_null_space_and_gap_against_float64_truth():
    """A true null space computed in float32 sits inside the band; a clear positive part is kept."""
    lam = torch.cat([torch.zeros(20), torch.linspace(1e-3, 1.0, 40)]).double()
    A32 = spectral_matrix(lam, seed=3, dtype=torch.float32)
    r = measure(A32, EstimatorSettings(top=2, bottom=3, exact=True)).result
    assert r.nullity == 20 and r.definiteness == "positive semi-definite"
    assert r.condition_number == pytest.approx(1e3, rel=1e-3)


def test_an_eigenvalue_within_its_error_band_is_null_and_ratio_needs_resolution():
    c = condition_number([1.0], [1e-6, 0.5], errors_bottom=[1e-5, 0.0])
    assert c.definiteness == "positive semi-definite" and c.value == pytest.approx(2.0)
    c = condition_number([1.0], [1e-3, 0.5], errors_bottom=[2e-4, 0.0])  # error band 20%
    assert c.value is None and not c.resolved and "tighten --tol" in c.definition
    assert c.bound == pytest.approx(1.0 / 1.2e-3, rel=1e-3)


@pytest.mark.parametrize("bottom", [0, 1])
def test_top_only_run_reports_no_lambda_min_or_kappa(bottom):
    """An indefinite Hessian (mlp at random weights): a top-only run's last Ritz value is no
    eigenvalue, so neither lambda_min nor kappa nor definiteness may come from it."""
    model, X, y, loss, kw = make_case("mlp-ce")
    p = Problem(model, [(X, y)], loss, dtype=torch.float64, **kw)
    A = HessianOperator(p)
    truth = torch.linalg.eigvalsh(A.to_dense())
    assert truth[0] < -1e-6  # indefinite
    r = measure(A, EstimatorSettings(top=1, bottom=bottom, tol=1e-10)).result
    assert r.lambda_max == pytest.approx(float(truth[-1]), rel=1e-8)
    if bottom:
        assert r.lambda_min == pytest.approx(float(truth[0]), rel=1e-8)
        assert r.definiteness == "indefinite"
    else:
        assert r.lambda_min is None and r.condition_number is None and r.definiteness is None
        assert "--bottom 0" in r.condition_definition


def test_true_residuals_are_measured_and_refused_below_the_dtype():
    lam = torch.cat([torch.linspace(0.1, 1.0, 300), torch.tensor([3.0, 5.0])]).double()
    A32 = spectral_matrix(lam, seed=4, dtype=torch.float32)
    with pytest.raises(UsageError, match="below what float32 arithmetic resolves"):
        measure(A32, EstimatorSettings(top=2, bottom=1, tol=1e-9))
    r = measure(A32, EstimatorSettings(top=2, bottom=1, tol=1e-5, max_hvps=300)).result
    truth = torch.linalg.eigvalsh(A32.double())
    res = r.residuals_top + r.residuals_bottom
    vals = r.eigenvalues_top + r.eigenvalues_bottom
    assert all(x > 1e-9 for x in res)  # float32 products: never an exact 0
    for v, rr in zip(vals, res):  # Weyl: an eigenvalue of A within the true residual
        assert float((truth - v).abs().min()) <= rr + 5 * 2.0**-23 * 5.0
    assert r.hvp_count > 0


def test_repeated_eigenvalues_are_flagged_when_not_resolved():
    """-2 four times, bottom-6: a block of 2 sees at most 2 directions of the eigenspace (more
    only by rounding), so a list that goes on past its -2s must say copies may be missing; a
    block of 8 finds all four and says they are resolved; the dense truth agrees. A list the
    cluster fills to its end is right whatever the multiplicity, and says so."""
    lam = torch.cat([torch.full((4,), -2.0), torch.linspace(0.0, 1.0, 200)]).double()
    A = spectral_matrix(lam, seed=5)
    want = [-2.0] * 4 + [0.0, 1 / 199]
    r = measure(A, EstimatorSettings(top=1, bottom=6, tol=1e-10, block_size=2)).result
    assert r.multiplicity_resolved is False and r.block_size == 2
    assert "block size 2" in r.multiplicity_note
    wide = measure(A, EstimatorSettings(top=1, bottom=6, tol=1e-10, block_size=8)).result
    assert wide.multiplicity_resolved and wide.eigenvalues_bottom == pytest.approx(want, abs=1e-9)
    exact = measure(A, EstimatorSettings(top=1, bottom=6, exact=True)).result
    assert exact.multiplicity_resolved and exact.eigenvalues_bottom == pytest.approx(want, abs=1e-9)
    filled = measure(A, EstimatorSettings(top=1, bottom=2, tol=1e-10, block_size=2)).result
    assert filled.multiplicity_resolved and filled.eigenvalues_bottom == pytest.approx([-2.0] * 2)


def test_ggn_rank_bound_holds_for_a_non_sequential_model():
    """P - N (C - 1) for a cross-entropy GGN, any model: a custom LayerNorm residual net."""
    model, X, y, loss, kw = make_case("residual-layernorm-ce")
    p = Problem(model, [(X, y)], loss, dtype=torch.float64, **kw)
    n, why = ggn_nullity_bound(p, "ggn")
    assert n == p.n_params - 9 * 2 and "cross-entropy" in why
    assert ggn_nullity_bound(p, "hessian") is None
    G = dense_ggn(p)
    exact = measure(DenseOperator(G), EstimatorSettings(top=1, bottom=1, exact=True)).result
    assert exact.nullity >= n
    r = measure(GGNOperator(p), EstimatorSettings(top=1, bottom=6, tol=1e-8, block_size=4),
                nullity_bound=(n, why)).result
    assert r.nullity_lower_bound == n and r.multiplicity_resolved is False
    assert f">= {n}" in r.multiplicity_note
    # bottom-3 in a block of 4: the null space fills the list, which is right: 0, 0, 0
    r = measure(GGNOperator(p), EstimatorSettings(top=1, bottom=3, tol=1e-8, block_size=4),
                nullity_bound=(n, why)).result
    assert r.nullity_lower_bound == n and r.multiplicity_resolved
    assert max(abs(v) for v in r.eigenvalues_bottom) <= 1e-8 * r.lambda_max


def test_exact_indefinite_spectrum_counts_abs_and_sums_signed():
    lam = torch.tensor([-2.0, -1.0, -1e-17, 0.0, 1e-17, 1.0, 3.0], dtype=torch.float64)
    r = measure(spectral_matrix(lam, seed=6), EstimatorSettings(top=2, bottom=2, exact=True,
                                                                trace=True)).result
    assert r.nullity == 3 and r.definiteness == "indefinite"
    assert r.trace == pytest.approx(1.0, abs=1e-12)
    assert r.condition_number == pytest.approx(3.0, rel=1e-12)


def test_noise_floor_is_relative_to_the_dtype():
    """The documented floor, 32 eps(dtype) (scripts/bench_null_criterion.py's largest: 25.3), as
    a number: a changed NOISE_FACTOR fails here, not only where it is compared with itself."""
    assert noise_rel(torch.float32) == 32 * 2.0**-23
    assert noise_rel(torch.float64) == 32 * 2.0**-52


# -- structural zeros: diagonals of rounding noise, all-zero blocks -----------------------------
def _bn_batch_problem():
    """Linear -> train-mode BatchNorm: the first bias is cancelled by the batch mean, so its
    curvature is exactly zero and any computed value is rounding noise."""
    model, X, y, loss, kw = make_case("batchnorm-batch-ce")
    return Problem(model, [(X, y)], loss, dtype=torch.float64, **kw)


def test_jacobi_refuses_a_diagonal_of_rounding_noise():
    from condlab.preconditioners import build_preconditioner

    p = _bn_batch_problem()
    H = dense_hessian(p)
    d = H.diagonal().abs()
    noise = d[p.spec.slice("0.bias")]
    assert float(noise.max()) <= 1e-13 * float(d.max())  # the truth: no curvature there
    with pytest.raises(UsageError, match=r"structural zero .* in 0\.bias \(4\).*--eps"):
        build_preconditioner("jacobi", p, hessian=HessianOperator(p))
    pc = build_preconditioner("jacobi", p, hessian=HessianOperator(p), eps=1e-3)
    assert pc.diag.min() >= 1e-3


def test_an_all_zero_block_is_reported_as_zero_not_indefinite():
    p = _bn_batch_problem()
    whole = torch.linalg.eigvalsh(dense_hessian(p)).abs().max()
    sub = p.restrict(["0.bias"])
    assert float(dense_hessian(sub).abs().max()) <= 1e-13 * float(whole)
    r = measure(HessianOperator(sub), EstimatorSettings(top=1, bottom=1, tol=1e-8),
                scale=float(whole)).result
    assert r.definiteness == "zero" and r.condition_number is None
    assert "structurally zero" in r.condition_definition
    assert r.threshold >= NOISE_FACTOR * 2.0**-52 * float(whole) * 0.999


def test_jacobi_uses_the_absolute_diagonal_of_an_indefinite_hessian():
    """Jacobi P = |diag(H)|: negative diagonal entries keep their magnitude, and the
    preconditioned operator is D^-1/2 H D^-1/2 of the dense truth."""
    from condlab.preconditioners import build_preconditioner, preconditioned_operator

    model, X, y, loss, kw = make_case("mlp-ce")
    p = Problem(model, [(X, y)], loss, dtype=torch.float64, **kw)
    H = dense_hessian(p)
    d = H.diagonal()
    assert bool((d < 0).any()) and bool((d > 0).any())
    pc = build_preconditioner("jacobi", p, hessian=HessianOperator(p))
    torch.testing.assert_close(pc.diag, d.abs(), rtol=1e-10, atol=1e-14)
    op = preconditioned_operator(HessianOperator(p), pc)
    s = d.abs().rsqrt()
    torch.testing.assert_close(op.to_dense(), s[:, None] * H * s[None, :], rtol=1e-9, atol=1e-12)
