"""Definiteness, nullity and kappa never contradict what condlab proved.

Each case is checked against an independent float64 truth: a dense GGN / Hessian by plain
autograd (one backward per row, tests/cases.py) or a matrix with a prescribed spectrum.
"""

import pytest
import torch

from condlab.config import SpectrumConfig
from condlab.estimators import condition_number
from condlab.estimators.condition import NOISE_FACTOR
from condlab.measure import EstimatorSettings, measure
from condlab.operators.base import DenseOperator
from condlab.pipeline import run_spectrum
from condlab.report.records import SpectrumResult
from tests.cases import double_backward_ggn, double_backward_hessian, mean_loss

NOISE_SAFETY = 4.0  # condlab.estimators.noise: imported where used, so old code fails per test


EPS64 = 2.0**-52


def spectral_matrix(eigenvalues, seed=0):
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=gen, dtype=torch.float64))
    return (Q * lam) @ Q.T


def _truth(report, curvature):
    """The baseline's dense float64 curvature by double backward, from the run's own model/data."""
    from condlab.inputs import read_inputs as load
    from condlab.problem import make_problem

    cfg = SpectrumConfig(**{k: v for k, v in report.config.items() if k != "tol"})
    problem = make_problem(load(cfg), cfg)
    model = problem.model
    X, y = problem.batches[0]
    params = [p for p in model.parameters() if p.requires_grad]
    if curvature == "ggn":
        M = double_backward_ggn(lambda: model(X), lambda o: mean_loss(o, y, "cross-entropy"), params)
    else:
        M = double_backward_hessian(lambda: mean_loss(model(X), y, "cross-entropy"), params)
    return torch.linalg.eigvalsh((M + M.T) / 2)


# -- item 1: a proven null space is never "positive definite" ----------------------------------
@pytest.mark.slow
def test_a_ggn_with_a_rank_bound_is_never_positive_definite_at_one_vector_ends():
    """wine MLP 13-40-40-3 on 64 samples: rank <= 128, 2,323 parameters. Today: "positive
    definite", nullity 0 and kappa 3.8e8 "relative error <= 2e-5" from one unconverged bottom
    Ritz value."""
    cfg = SpectrumConfig(model="mlp", model_args={"widths": [40, 40]}, data="wine",
                         max_samples=64, curvature="ggn", dtype="float64", top=1, bottom=1)
    rep = run_spectrum(cfg, threads=1)
    r = rep.results[0]
    truth = _truth(rep, "ggn")
    true_null = int((truth.abs() <= 1e-10 * truth.abs().max()).sum())
    assert r.nullity_lower_bound == 2323 - 128 <= true_null  # the theorem holds on the truth
    assert r.definiteness == "positive semi-definite"
    assert r.condition_number is None and r.condition_error is None
    assert "eigenvalues are exactly 0" in r.condition_definition or (
        "within the null band" in r.condition_definition)  # the residual bound reaches the band
    assert r.nullity is None  # only a lower bound: the table prints ">= 2195"


def test_a_proven_nullity_caps_the_bottom_list_by_interlacing():
    """With more bottom Ritz values than the null space, kappa_+ is bounded below by
    theta_top / theta_(n+1) and reported as a bound, not a value with an error."""
    c = condition_number([10.0], [1e-3, 2e-3, 0.5], proven_nullity=(2, "rank"),
                         errors_top=[0.0], errors_bottom=[1e-4, 1e-4, 1e-9])
    assert c.definiteness == "positive semi-definite" and c.value is None
    assert c.bound == pytest.approx(10.0 / 0.5) and c.nullity == 2 and c.nullity_is_lower_bound
    short = condition_number([10.0], [1e-3, 2e-3], proven_nullity=(2, "rank"))
    assert short.bound is None and short.value is None and "beyond the 2 listed" in short.definition
    assert short.resolved and not c.resolved  # '-' with its reason, not an arithmetic limit
    none = condition_number([10.0], [1e-3, 2e-3], proven_nullity=(0, "rank"))
    assert none.definiteness == "positive definite" and none.value == pytest.approx(1e4)


# -- item 4: a GGN of a convex loss is never "indefinite" --------------------------------------
def test_a_ggn_under_exact_is_never_indefinite_whatever_the_band():
    """A band far below the rounding noise (--null-threshold 1e-30) made today's code call the
    exact GGN indefinite; PSD by construction, its negative eigenvalues are noise."""
    cfg = SpectrumConfig(model="mlp", model_args={"widths": [4], "activation": "gelu"},
                         data="digits", max_samples=12, curvature="ggn", dtype="float64", top=2,
                         bottom=2, exact=True, null_threshold=1e-30)
    rep = run_spectrum(cfg, threads=1)
    r = rep.results[0]
    truth = _truth(rep, "ggn")
    assert r.definiteness == "positive semi-definite" and r.details["negative_count"] == 0
    assert r.threshold >= -r.lambda_min > 0
    true_null = int((truth.abs() <= 1e-10 * truth.abs().max()).sum())
    assert r.nullity == true_null == 237  # truth: null <= 2e-16, the rest >= 1.7e-5 (relative)
    assert r.details["noise"]["semidefinite"].startswith("the GGN of cross-entropy")


def test_a_hessian_is_not_assumed_semidefinite():
    A = spectral_matrix([-1e-3, 0.0, 0.0, 1.0], seed=2)
    r = measure(A, EstimatorSettings(top=1, bottom=1, exact=True)).result
    assert r.definiteness == "indefinite" and r.details["negative_count"] == 1
    r = measure(A, EstimatorSettings(top=1, bottom=1, exact=True),
                semidefinite="told so").result  # the band reaches |lambda_min|: all null
    assert r.definiteness == "positive semi-definite" and r.nullity == 3


# -- the measured noise band --------------------------------------------------------------------
def _noisy(eigenvalues, noise, seed=0):
    """A prescribed spectrum evaluated with unsymmetric rounding-like noise of size ``noise``."""
    A = spectral_matrix(eigenvalues, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    return A, A + noise * torch.randn(A.shape, generator=g, dtype=torch.float64) / A.shape[0] ** 0.5


def test_the_measured_noise_widens_the_band_to_count_a_noisy_null_space_exactly():
    """Null eigenvalues moved by ~1e-12 (4000x the fixed 32 eps band): today's band counts
    most of them as spectrum; the antisymmetric part measures the noise and the band holds
    all 8, while the smallest genuine eigenvalue 1e-6 stays out."""
    from condlab.estimators.noise import dense_noise
    lam = [0.0] * 8 + [1e-6, 1e-3, 0.1, 1.0] * 4
    A, noisy = _noisy(lam, 1e-12)
    r = measure(DenseOperator(noisy), EstimatorSettings(top=1, bottom=2, exact=True)).result
    assert r.nullity == 8
    assert r.lambda_min_positive == pytest.approx(1e-6, rel=1e-4)
    rec = r.details["noise"]
    assert rec["measured"] == pytest.approx(dense_noise(noisy))
    assert rec["band"] == pytest.approx(NOISE_SAFETY * rec["measured"]) and rec["band"] > 1e-12
    assert rec["fixed_floor"] == pytest.approx(NOISE_FACTOR * EPS64 * 1.0, rel=1e-6)


def test_an_exactly_symmetric_operator_keeps_the_fixed_floor():
    A = spectral_matrix([0.0, 30 * EPS64, 34 * EPS64, 1.0], seed=3)  # 30 / 34 eps: either side
    A = (A + A.T) / 2
    r = measure(A, EstimatorSettings(top=1, bottom=1, exact=True)).result
    assert r.details["noise"]["set_by"] == "32 eps ||A|| floor"
    assert r.threshold == pytest.approx(NOISE_FACTOR * EPS64 * 1.0, rel=1e-9)
    assert r.nullity == 2  # 0 and 30 eps within, 34 eps (1 eps of eigh error aside) outside


def test_block_noise_reads_the_antisymmetric_part_of_the_ritz_block():
    from condlab.estimators.noise import block_noise
    g = torch.Generator().manual_seed(5)
    Y, _ = torch.linalg.qr(torch.randn(50, 4, generator=g, dtype=torch.float64))
    S = torch.randn(4, 4, generator=g, dtype=torch.float64)
    anti = (S - S.T) / 2
    AY = Y @ ((S + S.T) / 2 + anti)  # Y^T A Y = S
    i, j = torch.triu_indices(4, 4, 1).unbind()
    expect = 2 * 50**0.5 * float(anti[i, j].square().mean().sqrt())
    assert block_noise(Y, AY, 50) == pytest.approx(expect, rel=1e-12)
    assert block_noise(Y[:, :1], AY[:, :1], 50) == 0.0
    sym = Y @ ((S + S.T) / 2)
    assert block_noise(Y, sym, 50) == pytest.approx(0.0, abs=1e-14)


def test_lanczos_rows_report_the_measured_noise_of_their_ritz_block():
    _, noisy = _noisy([0.0] * 4 + list(torch.linspace(0.01, 1, 60).tolist()), 1e-9, seed=1)
    r = measure(DenseOperator(noisy), EstimatorSettings(top=3, bottom=3, tol=1e-6)).result
    rec = r.details["noise"]
    assert rec["measured"] > 1e-11 and rec["band"] >= NOISE_SAFETY * rec["measured"] * 0.999
    assert r.threshold == pytest.approx(rec["band"])


def test_null_band_proofs_only_widen_and_say_so():
    from condlab.estimators.condition import null_band
    spec = torch.tensor([-3e-9, 1e-12, 2e-9, 0.5, 1.0], dtype=torch.float64)
    t, how, _ = null_band(anorm=1.0, dtype=torch.float64)
    assert t == NOISE_FACTOR * EPS64 and "floor" in how
    t, how, _ = null_band(anorm=1.0, dtype=torch.float64, noise=1e-10)
    assert t == pytest.approx(NOISE_SAFETY * 1e-10) and "measured" in how
    t, how, _ = null_band(anorm=1.0, dtype=torch.float64, noise=1e-18)
    assert t == NOISE_FACTOR * EPS64  # a measured noise below the floor never narrows it
    t, how, _ = null_band(anorm=1.0, dtype=torch.float64, spectrum=spec, proven_nullity=(3, "r"))
    assert t == pytest.approx(3e-9) and "rank bound" in how
    t, how, _ = null_band(anorm=1.0, dtype=torch.float64, spectrum=spec, proven_nullity=(2, "r"))
    assert t == pytest.approx(2e-9)  # the two nearest 0 by magnitude: 1e-12 and 2e-9
    t, _, _ = null_band(anorm=1.0, dtype=torch.float64, spectrum=spec, proven_nullity=(2, "r"),
                        semidefinite="psd")
    assert t == pytest.approx(3e-9)  # PSD: |lambda_min| = 3e-9 is noise first
    t, how, rec = null_band(anorm=1.0, dtype=torch.float64, spectrum=spec,
                            inertia=(0, 3, 2, "congruent"))
    assert t == pytest.approx(3e-9) and "Sylvester" in how and rec["inertia"]["zero"] == 3
    t, how, _ = null_band(anorm=2.0, dtype=torch.float64, threshold_rel=1e-6, noise=1.0)
    assert t == pytest.approx(2e-6) and how == "--null-threshold"


# -- item 9: a preconditioner in its own eigenbasis, Sylvester and Ostrowski --------------------
def test_gn_in_its_eigenbasis_is_exactly_lambda_over_lambda_plus_eps():
    """A small CNN's GGN with --basis eigen --precond gn --eps 1e-14 --exact is exactly
    diag(lambda / (lambda + eps)): PSD, the GGN's nullity, kappa_+ near 1. Today: noise / eps
    read as spectrum (indefinite, kappa 1e9 or more)."""
    cfg = SpectrumConfig(model="cnn", model_args={"channels": [4]}, data="digits", max_samples=6,
                         curvature="ggn", dtype="float64", top=1, bottom=1, exact=True,
                         basis="eigen", precond=("gn",), eps=1e-14)
    rep = run_spectrum(cfg, threads=1)
    base, gn = rep.results
    truth = _truth(rep, "ggn")
    null = truth.abs() <= 1e-9 * truth.abs().max()  # the gap: noise 1e-17, genuine >= 1e-8
    pos = truth[~null]
    assert base.nullity == int(null.sum()) == gn.nullity
    assert gn.definiteness == "positive semi-definite" and gn.details["negative_count"] == 0
    f = pos / (pos + 1e-14)
    kappa = float(f.max() / f.min())
    assert gn.condition_number == pytest.approx(kappa, rel=max(gn.condition_error, 1e-12))
    assert abs(gn.condition_number - kappa) <= gn.condition_error * kappa + 1e-12


def test_a_preconditioned_hessian_in_the_eigenbasis_keeps_the_baselines_inertia():
    """Sylvester: P^-1/2 U^T H U P^-1/2 has H's negative/null/positive counts; today the rows
    counted noise rescaled by 1 / P as negative eigenvalues."""
    cfg = SpectrumConfig(model="mlp", model_args={"widths": [4]}, data="digits", max_samples=16,
                         curvature="hessian", dtype="float64", top=1, bottom=1, exact=True,
                         basis="eigen", precond=("gn", "jacobi"), eps=1e-12)
    rep = run_spectrum(cfg, threads=1)
    truth = _truth(rep, "hessian")
    scale = truth.abs().max()
    true_neg = int((truth < -1e-9 * scale).sum())
    true_null = int((truth.abs() <= 1e-9 * scale).sum())
    for r in rep.results:
        assert r.details["negative_count"] == true_neg, r.setting
        assert r.nullity == true_null, r.setting
        if r.preconditioner:
            assert r.details["ostrowski"]["holds"]


def _row(kappa, err=1e-6, lo=1.0, hi=1.0, definiteness="positive definite", **kw):
    return SpectrumResult(
        setting="x", curvature="ggn", preconditioner="gn", normalization=None, n_params=5,
        n_samples=1, condition_number=kappa, condition_error=err, definiteness=definiteness,
        condition_definition="def", details={"diag_summary": {"min": lo, "max": hi}}, **kw)


def test_ostrowski_caps_kappa_by_the_spread_of_p():
    from condlab.preconditioners.build import ostrowski_check
    base = _row(100.0, err=0.01)
    assert ostrowski_check(_row(100.0 * 1.01 * 50, lo=2.0, hi=100.0), base).condition_number
    cut = ostrowski_check(_row(100.0 * 1.01 * 50 * 1.001, err=1e-6, lo=2.0, hi=100.0), base)
    assert cut.condition_number is None and not cut.details["ostrowski"]["holds"]
    assert cut.details["ostrowski"]["kappa_cap"] == pytest.approx(5050.0)
    assert "Ostrowski" in cut.details["trust_notes"][0]
    other = ostrowski_check(_row(1e9, definiteness="positive semi-definite"), base)
    assert other.condition_number == 1e9 and "ostrowski" not in other.details


def test_congruence_proof_only_for_a_congruence_of_an_exact_baseline():
    from condlab.preconditioners.build import congruence_proof
    base = SpectrumResult(setting="baseline", curvature="hessian", preconditioner=None,
                          normalization=None, n_params=10, n_samples=1, nullity=3,
                          details={"negative_count": 2, "negative_method": "exact (dense)"})
    proof = congruence_proof(base)
    assert proof["sylvester"][:3] == (2, 3, 5) and proof["nullity_bound"][0] == 3
    assert congruence_proof(base, damping=0.1) == {}
    assert congruence_proof(base, weight_decay=0.1, decay="decoupled") == {}
    assert congruence_proof(base, weight_decay=0.1, decay="coupled")["sylvester"][1] == 3
    lanczos = SpectrumResult(setting="b", curvature="hessian", preconditioner=None,
                             normalization=None, n_params=10, n_samples=1, nullity=3,
                             details={"negative_count": 2.0, "negative_method": "SLQ estimate"})
    assert congruence_proof(lanczos) == {}


def test_eigenbasis_rules_that_depend_on_a_rotation_inside_the_null_space_are_flagged():
    from condlab.preconditioners import build_preconditioner

    G = spectral_matrix([0.0, 0.0, 0.0, 0.5, 1.0, 2.0], seed=4)
    H = spectral_matrix([-0.1, 0.2, 0.3, 0.5, 1.0, 2.0], seed=5)
    jac = build_preconditioner("jacobi", ggn=G, hessian=H, basis="eigen", eps=1e-3)
    assert jac.meta["basis_arbitrary"] == 3 and "arbitrary rotation" in jac.meta["basis_note"]
    gn = build_preconditioner("gn", ggn=G, basis="eigen", eps=1e-3)
    assert "basis_arbitrary" not in gn.meta
    one = build_preconditioner("jacobi", ggn=spectral_matrix([0.0, 0.4, 0.5, 0.6, 1.0, 2.0]),
                               hessian=H, basis="eigen", eps=1e-3)
    assert "basis_arbitrary" not in one.meta  # a simple null eigenvalue: its vector is fixed


def test_the_input_normalized_linear_model_counts_its_92_null_directions():
    """--model linear --data digits --norm input --exact in float64: 650 parameters, 92 null
    directions (softmax's shift invariance and the pixels that are constant over the data) in
    both rows, the measured noise recorded far below the band."""
    cfg = SpectrumConfig(model="linear", data="digits", norm=("input",), dtype="float64", top=2,
                         bottom=2, exact=True)
    for r in run_spectrum(cfg, threads=1).results:
        assert r.nullity == 92, r.setting
        noise = r.details["noise"]
        assert 0 < noise["measured"] < noise["band"] / 10


def test_softmax_regression_hessian_at_one_vector_ends_is_not_positive_definite():
    """Linear softmax regression on digits: its Hessian is PSD with 65 null directions from the
    softmax shift (and more from constant pixels). Today: kappa 2.7e7 'positive definite' from
    one unconverged bottom Ritz value."""
    from condlab.normalization.invariance import shift_nullity_bound

    cfg = SpectrumConfig(model="linear", data="digits", max_samples=200, dtype="float64", top=1,
                         bottom=1)
    rep = run_spectrum(cfg, threads=1)
    r = rep.results[0]
    truth = _truth(rep, "hessian")
    true_null = int((truth.abs() <= 1e-10 * truth.abs().max()).sum())
    assert r.nullity_lower_bound == 65 <= true_null
    assert r.definiteness == "positive semi-definite" and r.condition_number is None
    from condlab.inputs import read_inputs
    from condlab.problem import make_problem

    sub = make_problem(read_inputs(cfg), cfg).restrict(["0.bias"])
    assert shift_nullity_bound(sub)[0] == 1  # a block holds only its own directions


def test_weight_decay_removes_the_proven_null_space():
    """H + 0.1 I has no null space: positive definite with kappa = (l_max + 0.1) / 0.1-ish, and
    no nullity bound is claimed (truth: the dense Hessian's extreme eigenvalues, shifted)."""
    cfg = SpectrumConfig(model="linear", data="digits", max_samples=200, dtype="float64", top=1,
                         bottom=1, weight_decay=0.1, decay="coupled")
    rep = run_spectrum(cfg, threads=1)
    r = rep.results[0]
    truth = _truth(rep, "hessian") + 0.1
    assert r.nullity_lower_bound is None and r.definiteness == "positive definite"
    kappa = float(truth.max() / truth.min())
    # a value within its error, or (nothing certifies the bottom end) a lower bound "kappa >="
    if r.condition_number is not None:
        assert abs(r.condition_number - kappa) <= r.condition_error * kappa
    else:
        assert r.condition_bound <= kappa * (1 + 1e-12) and r.condition_bound > 0.99 * kappa
