"""Extreme eigenpairs on matrices with prescribed spectra: accuracy, residuals, restarts, budgets.

Single-vector behaviour (``block_size=1``) and the block engine on the same cases; repeated
eigenvalues found with their multiplicity are in test_block_eigs.py.
"""

import math

import pytest
import torch

from condlab.errors import UsageError
from condlab.estimators import extreme_eigenpairs
from condlab.estimators.eigs import _ghost_mask
from condlab.operators.base import DenseOperator
from tests.cases import spectral_matrix  # noqa: E402  (one helper for every test file)


def lin(a, b, n):
    return torch.linspace(a, b, n, dtype=torch.float64)


def hessian_like(P=400):
    """A small copy of the MLP Hessian spectrum (see scripts/check_lanczos_budget.py)."""
    top = torch.tensor([0.167480, 0.125386, 0.104591, 0.073875, 0.068216], dtype=torch.float64)
    bottom = torch.tensor([-0.000301, -0.000270, -0.000245], dtype=torch.float64)
    n_neg, n_null = P // 5, P // 7
    negs = -0.000241 * (torch.arange(n_neg, 0, -1, dtype=torch.float64) / n_neg) ** 5
    i = torch.arange(1, P - 8 - n_neg - n_null + 1, dtype=torch.float64)
    bulk = 0.068 * ((i + 5) / 6) ** -1.6
    return torch.cat([top, bottom, negs, lin(-1e-8, 1e-8, n_null), bulk]).sort().values


# name: (spectrum, top, bottom)
CASES = {
    "separated": (torch.cat([lin(0.0, 1.0, 150), torch.tensor([2.0, 3.0, 5.0])]), 3, 2),
    "clusters": (
        torch.cat([1 + lin(0, 1e-2, 50), 3 + lin(0, 1e-2, 50), 8 + lin(0, 1e-2, 50)]),
        4,
        4,
    ),
    "negative": (torch.cat([lin(-4.0, -3.0, 5), lin(-1.0, 1.0, 140), lin(2.0, 2.5, 5)]), 3, 3),
    "top only": (lin(1.0, 100.0, 200), 5, 0),
    "bottom only": (torch.logspace(-3, 0, 200, dtype=torch.float64), 0, 3),
    "hessian-like": (hessian_like(300), 5, 3),
}


@pytest.mark.parametrize("block_size", [1, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_prescribed_spectra(name, block_size):
    lam, top, bottom = CASES[name]
    A = spectral_matrix(lam, seed=1)
    r = extreme_eigenpairs(
        A, top=top, bottom=bottom, tol=1e-8, max_matvecs=400, seed=1, block_size=block_size
    )
    truth = lam.sort().values
    norm_a = float(truth.abs().max())
    assert r.converged and bool(r.converged_top.all()) and bool(r.converged_bottom.all())
    assert r.eigenvalues_top.shape == (top,) and r.eigenvalues_bottom.shape == (bottom,)
    torch.testing.assert_close(r.eigenvalues_top, truth.flip(0)[:top], rtol=0, atol=1e-8 * norm_a)
    torch.testing.assert_close(r.eigenvalues_bottom, truth[:bottom], rtol=0, atol=1e-8 * norm_a)
    assert (r.residuals_top <= 1e-8 * norm_a).all() and (r.residuals_bottom <= 1e-8 * norm_a).all()
    assert r.lambda_max == pytest.approx(float(truth[-1]), abs=1e-8 * norm_a)
    assert r.lambda_min == pytest.approx(float(truth[0]), abs=1e-8 * norm_a)
    assert r.block_size == block_size
    if block_size == 1:  # a block Krylov space grows b columns per power of A: more products
        assert r.matvecs <= len(lam)  # certifying the log-spaced bottom takes the full depth


@pytest.mark.parametrize("block_size", [1, 3])
def test_ritz_residual_formula_is_the_true_residual(block_size):
    lam = torch.cat([lin(-2.0, -1.5, 3), lin(0.0, 1.0, 150), lin(3.0, 4.0, 4)])
    A = spectral_matrix(lam, seed=2)
    for max_basis in (None, 25):  # (block) tridiagonal and thick-restarted H
        r = extreme_eigenpairs(
            A, top=3, bottom=3, tol=1e-3, max_basis=max_basis, seed=2, return_vectors=True,
            block_size=block_size,
        )
        for theta, res, Y in [
            (r.eigenvalues_top, r.residuals_top, r.vectors_top),
            (r.eigenvalues_bottom, r.residuals_bottom, r.vectors_bottom),
        ]:
            true = (A @ Y - Y * theta).norm(dim=0)
            torch.testing.assert_close(res, true, rtol=1e-6, atol=1e-13)
            assert (res > 1e-10).any()  # a stopped run: the residuals are not all ~0
            torch.testing.assert_close(
                Y.T @ Y, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-10
            )


@pytest.mark.parametrize("block_size", [1, 4])
def test_restarted_run_gives_the_same_answer(block_size):
    lam = hessian_like(300)
    A = spectral_matrix(lam, seed=3)
    kw = dict(top=5, bottom=3, tol=1e-8, max_matvecs=2000, seed=3, block_size=block_size)
    full = extreme_eigenpairs(A, **kw)
    small = extreme_eigenpairs(A, max_basis=40, **kw)
    assert full.restarts == 0 and small.restarts > 0 and small.max_basis == 40
    assert full.converged and small.converged
    atol = 1e-8 * float(lam.abs().max())
    torch.testing.assert_close(small.eigenvalues_top, full.eigenvalues_top, rtol=0, atol=atol)
    torch.testing.assert_close(small.eigenvalues_bottom, full.eigenvalues_bottom, rtol=0, atol=atol)


def test_hessian_like_matvec_budget():
    """Budgets on a 400-dim copy of the MLP spectrum (P = 2410 lives in the script)."""
    A = spectral_matrix(hessian_like(400), seed=4)
    for seed in range(3):
        # the Lanczos recurrence's own budget: without the after-run true-residual block
        kw = dict(tol=1e-6, seed=seed, block_size=1, true_residuals=False)
        top = extreme_eigenpairs(A, top=5, bottom=0, **kw)
        bottom = extreme_eigenpairs(A, top=0, bottom=3, **kw)
        restarted = extreme_eigenpairs(A, top=5, bottom=3, max_basis=60, **kw)
        assert top.converged and bottom.converged and restarted.converged
        assert top.matvecs <= 25  # measured 21-22
        assert bottom.matvecs <= 150  # measured 106-114
        assert restarted.matvecs <= 180 and restarted.restarts > 0  # measured 118-131


def test_same_seed_same_numbers():
    A = spectral_matrix(hessian_like(200), seed=5)
    runs = [extreme_eigenpairs(A, top=3, bottom=2, seed=6, max_basis=30) for _ in range(2)]
    via_gen = extreme_eigenpairs(
        A, top=3, bottom=2, max_basis=30, generator=torch.Generator().manual_seed(6)
    )
    for r in (runs[1], via_gen):
        assert torch.equal(r.eigenvalues_top, runs[0].eigenvalues_top)
        assert torch.equal(r.residuals_bottom, runs[0].residuals_bottom)
        assert r.matvecs == runs[0].matvecs
    assert runs[0].seed == 6 and via_gen.seed is None
    other = extreme_eigenpairs(A, top=3, bottom=2, seed=7, max_basis=30)
    assert not torch.equal(other.residuals_bottom, runs[0].residuals_bottom)


@pytest.mark.parametrize("kept", [True, False])
def test_budget_exhausted_reports_unconverged(kept, monkeypatch):
    """``kept``: the true residuals come from the kept products A V (no product); otherwise
    they take one block of top + bottom products beyond the budget."""
    from condlab import memory

    if not kept:
        monkeypatch.setattr(memory, "PRODUCTS_KEPT_BYTES", 0)
    A = spectral_matrix(hessian_like(300), seed=8)
    for block_size, used in ((1, 30), (4, 28)):  # a block that would pass the budget is not run
        r = extreme_eigenpairs(
            A, top=5, bottom=3, tol=1e-10, max_matvecs=30, seed=8, block_size=block_size
        )
        assert r.matvecs == used + (0 if kept else 8)  # max_matvecs caps the run
        assert not r.converged and not bool(r.converged_bottom.any())
        assert not (r.certified_top and r.certified_bottom)
        assert torch.equal(r.converged_bottom, r.residuals_bottom <= r.threshold)
        assert r.threshold == pytest.approx(1e-10 * r.lambda_max)


def test_the_first_products_are_kept_where_the_whole_basis_would_not_fit(monkeypatch):
    """A V is kept for the basis' first columns within PRODUCTS_KEPT_BYTES: a run that stops
    inside them takes no product for its true residuals (a 0.5M-parameter MLP's top-5 took 5
    more, 22 against 17, when a basis of 247 columns could not keep them all), and one that
    outgrows them drops them and runs exactly as a run that keeps none."""
    from condlab import memory

    A = spectral_matrix(hessian_like(300), seed=8)
    P, kw = 300, dict(top=5, bottom=0, tol=1e-8, seed=8, block_size=1, max_basis=120)

    def run(columns):
        monkeypatch.setattr(memory, "PRODUCTS_KEPT_BYTES", columns * P * 8)
        return extreme_eigenpairs(A, return_vectors=True, **kw)

    none, whole, first = run(0), run(120), run(60)
    assert none.max_basis == whole.max_basis == first.max_basis == 120  # the same basis
    steps = whole.matvecs
    assert 5 < steps <= 60 and none.matvecs == steps + 5 and first.matvecs == steps
    torch.testing.assert_close(first.eigenvalues_top, none.eigenvalues_top, rtol=0, atol=0)
    Y = first.vectors_top  # its residuals are true ones, from the kept products
    true = torch.linalg.vector_norm(A @ Y - Y * first.eigenvalues_top, dim=0)
    torch.testing.assert_close(first.residuals_top, true, rtol=0, atol=1e-12 * first.lambda_max)
    assert bool((first.residuals_top <= first.threshold).all()) and first.converged
    assert steps - 3 < memory.PRODUCTS_KEPT_MIN_COLUMNS
    few = run(steps - 3)  # fewer than the minimum: none kept (memory held for nothing)
    monkeypatch.setattr(memory, "PRODUCTS_KEPT_MIN_COLUMNS", 1)
    short = run(steps - 3)  # kept, then outgrown: the same run as keeping none, bit for bit
    for r in (few, short):
        assert r.matvecs == none.matvecs
        for name in ("eigenvalues_top", "residuals_top", "errors_top"):
            assert torch.equal(getattr(r, name), getattr(none, name))


def test_doubly_repeated_top_eigenvalue_is_not_reported_twice_as_one_vector():
    lam = torch.cat([torch.tensor([5.0, 5.0, 4.0, 3.5], dtype=torch.float64), lin(0.0, 1.0, 150)])
    A = spectral_matrix(lam, seed=9)
    r = extreme_eigenpairs(A, top=3, bottom=0, tol=1e-10, seed=9, return_vectors=True, block_size=1)
    Y = r.vectors_top
    torch.testing.assert_close(Y.T @ Y, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-10)
    assert r.converged and r.eigenvalues_top[0] == pytest.approx(5.0, abs=1e-9)
    for theta, y in zip(r.eigenvalues_top, Y.T):  # every reported pair is a true eigenpair
        assert (A @ y - theta * y).norm() <= 1e-9
    assert ((r.eigenvalues_top - 5.0).abs() < 1e-6).sum() <= 2  # at most the two true copies


def test_ghost_guard_flags_a_repeated_vector():
    Y = torch.linalg.qr(torch.randn(50, 3, dtype=torch.float64)).Q
    Y = torch.cat([Y, -Y[:, 1:2]], dim=1)  # column 3 repeats column 1
    assert _ghost_mask(Y).tolist() == [False, False, False, True]


def null_space_matrix(positive, n_null=120, seed=10):
    return spectral_matrix(torch.cat([torch.zeros(n_null, dtype=torch.float64), positive]), seed)


def test_null_space_collapses_to_one_ritz_value():
    """60% zeros: bottom-3 read 0, lambda_1+, lambda_2+ (single-vector Lanczos, see docstring)."""
    small, large = torch.tensor([0.05, 0.1], dtype=torch.float64), torch.tensor([2.0, 3.0])
    positive = torch.cat([small, lin(0.5, 1.0, 76), large.double()])
    r = extreme_eigenpairs(
        null_space_matrix(positive), top=2, bottom=3, tol=1e-8, seed=10, block_size=1
    )
    assert r.converged and r.matvecs < 60  # long before the 81-dim Krylov space is exhausted
    expected = torch.cat([torch.zeros(1, dtype=torch.float64), positive[:2]])
    torch.testing.assert_close(r.eigenvalues_bottom, expected, rtol=0, atol=1e-9)


def test_null_space_may_repeat_but_every_value_is_genuine():
    """Near exhaustion, rounding can seed a second null direction: a genuine copy, not a ghost."""
    positive = lin(0.05, 1.0, 80)
    A = null_space_matrix(positive)
    r = extreme_eigenpairs(A, top=0, bottom=4, tol=1e-8, seed=10, return_vectors=True, block_size=1)
    Y = r.vectors_bottom
    torch.testing.assert_close(Y.T @ Y, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-10)
    truth = torch.cat([torch.zeros(1, dtype=torch.float64), positive])
    gaps = (r.eigenvalues_bottom[:, None] - truth[None, :]).abs().min(dim=1).values
    assert r.converged and (gaps < 1e-9).all()
    assert r.eigenvalues_bottom[0].abs() < 1e-9
    assert r.eigenvalues_bottom[r.eigenvalues_bottom > 1e-8][0] == pytest.approx(0.05, abs=1e-9)


def test_small_problem_runs_to_full_depth_with_multiplicities():
    lam = torch.tensor([-1.0, 2.0, 2.0, 2.0, 3.0, 7.0, 7.0, 9.0], dtype=torch.float64)
    A = spectral_matrix(lam, seed=11)
    r = extreme_eigenpairs(A, top=5, bottom=5, seed=11)
    assert r.matvecs == 8 and r.converged
    torch.testing.assert_close(r.eigenvalues_top, lam.flip(0)[:5], rtol=0, atol=1e-12)
    torch.testing.assert_close(r.eigenvalues_bottom, lam[:5], rtol=0, atol=1e-12)


def test_linear_operator_and_float32():
    A = spectral_matrix(lin(-1.0, 1.0, 100) ** 3, seed=12).to(torch.float32)
    op = DenseOperator(A)
    r = extreme_eigenpairs(op, top=2, bottom=2, tol=1e-4, seed=12)
    assert op.matvecs == r.matvecs and r.converged
    truth = torch.linalg.eigvalsh(A.double())
    torch.testing.assert_close(r.eigenvalues_bottom, truth[:2], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(top=-1, bottom=2),
        dict(top=0, bottom=0),
        dict(top=2, bottom=2, tol=0.0),
        dict(top=101, bottom=0),
        dict(top=2, bottom=2, max_basis=5),
        dict(top=2, bottom=2, max_matvecs=3),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        extreme_eigenpairs(torch.eye(100, dtype=torch.float64), **kwargs)


def test_a_true_residual_that_misses_tol_keeps_the_run_going_within_its_budget(monkeypatch):
    """When the Krylov estimate met tol but a true residual did not (stop_reason 'rounding'),
    the run iterates on against a tighter estimate instead of stopping with products left; the
    final pairs are the true ones and the budget still bounds the run."""
    import dataclasses

    import condlab.estimators.eigs as eigs

    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64, generator=g))
    lam = torch.cat([torch.tensor([10.0, 9.0]), torch.linspace(0.0, 5.0, 298, dtype=torch.float64)])
    A = (Q * lam) @ Q.T
    kw = dict(top=1, bottom=0, tol=1e-8, max_basis=40, seed=0)
    plain = eigs.extreme_eigenpairs(A, **kw).matvecs  # one pass, its true-residual check included
    real, calls = eigs._result, []

    def first_misses(*args, **kwargs):
        r = real(*args, **kwargs)
        calls.append(r.matvecs)
        if len(calls) == 1:  # as if the recurrence had drifted: the first check reads a miss
            return dataclasses.replace(r, stop_reason="rounding: (simulated)")
        return r

    monkeypatch.setattr(eigs, "_result", first_misses)
    r = eigs.extreme_eigenpairs(A, **kw)
    assert len(calls) == 2 and calls[0] == plain < calls[1]  # it went on, with more products
    assert r.stop_reason.startswith("converged") and r.converged
    assert abs(r.lambda_max - 10.0) <= 1e-8 * 10.0
    calls.clear()
    r = eigs.extreme_eigenpairs(A, **kw, max_matvecs=plain)
    assert len(calls) == 1  # no room for another block: it stops and says why
    assert r.stop_reason.startswith("rounding")


def test_near_is_the_torch_test_bit_for_bit():
    """The per-step 'values near' test runs in numpy; the same answer as the torch original on
    ties, clusters, infinite and NaN residuals."""
    from condlab.estimators.eigs import _near, _Ritz

    def plain(ritz, top, bottom, threshold):
        theta, r = ritz.theta, ritz.residuals
        k = len(theta)
        idx = torch.cat([torch.arange(bottom), torch.arange(k - top, k)])
        gaps = (theta[idx, None] - theta[None, :]).abs()
        gaps[torch.arange(len(idx)), idx] = math.inf
        gap = gaps.min(dim=1).values
        return bool(((r[idx] <= threshold) | (r[idx] ** 2 <= threshold * gap)).all())

    g = torch.Generator().manual_seed(0)
    seen = set()
    for trial in range(400):
        k = int(torch.randint(4, 30, (1,), generator=g))
        theta = torch.randn(k, generator=g, dtype=torch.float64).sort().values
        if trial % 3 == 0:
            theta[1] = theta[0]  # a repeated Ritz value: zero gap
        r = 10.0 ** torch.empty(k, dtype=torch.float64).uniform_(-9, -1, generator=g)
        if trial % 7 == 0:
            r[0] = math.inf if trial % 2 else math.nan
        top, bottom = int(torch.randint(0, 3, (1,), generator=g)), int(torch.randint(1, 3, (1,), generator=g))
        thr = 10.0 ** float(torch.empty(1).uniform_(-8, -3, generator=g))
        ritz = _Ritz(theta, torch.eye(k, dtype=torch.float64), r)
        want = plain(ritz, top, bottom, thr)
        assert _near(ritz, top, bottom, thr) == want
        seen.add(want)
    assert seen == {True, False}


def _exact_stop_test(H, k, C, top, bottom, scale):
    """The stop test's two conditions as the loop computes them from the exact Ritz pairs."""
    from condlab.estimators.eigs import _near, _ritz

    ritz = _ritz(H, k, C, tridiagonal=False)
    res = ritz.residuals
    threshold = scale * float(ritz.theta.abs().max())
    met = bool((res[:bottom] <= threshold).all() and (res[k - top:] <= threshold).all())
    return met, _near(ritz, top, bottom, threshold)


def _band_problem(k, b, seed, cluster=False):
    """A block tridiagonal ``H [k, k]`` with ``b``-wide blocks (a block Lanczos run's, before a
    restart) and its coupling ``C``; ``cluster``: two decoupled copies of one half (every
    eigenvalue twice, nearly: 1e-14 apart)."""
    from tests.estimators.test_bounds import _block_recurrence

    H, C, widths = _block_recurrence(blocks=k // b, b=b, seed=seed)
    if cluster:
        h = k // 2
        H[h:, h:] = H[:h, :h] + 1e-14 * torch.eye(h, dtype=torch.float64)
        H[h:, :h] = 0.0
        H[:h, h:] = 0.0
    C = torch.zeros(k, b, dtype=torch.float64)
    C[-b:] = 10.0 ** torch.empty(b, b, dtype=torch.float64).uniform_(
        -9, -1, generator=torch.Generator().manual_seed(seed))
    return H, C, widths


@pytest.mark.parametrize("b", [1, 3])
def test_the_screen_never_rules_out_a_step_the_exact_test_passes(b):
    """The per-step screen (bisection and inverse iteration on the band) says 'cannot stop'
    only where the exact eigendecomposition's test fails, over thresholds around the wanted
    residuals, clusters and both ends; and it rules out most steps far from stopping."""
    from condlab.estimators.eigs import _ritz, _screen

    ruled_out = checked = 0
    for seed in range(6):
        H, C, widths = _band_problem(72 if b == 3 else 70, b, seed)
        k = H.shape[0]
        for top, bottom in ((0, 3), (5, 0), (2, 2)):
            ritz = _ritz(H, k, C, tridiagonal=False)
            wanted = torch.cat([ritz.residuals[:bottom], ritz.residuals[k - top:]])
            amax = float(ritz.theta.abs().max())
            # thresholds from far below to above the wanted residuals, and right at them
            scales = [float(w) / amax * f for w in wanted for f in (0.5, 1.0, 1 + 1e-12, 2.0)]
            scales += [1e-14, 1e-3, 1.0]
            for scale in scales:
                screen = _screen(H, k, C, widths, top, bottom, scale)
                met, near = _exact_stop_test(H, k, C, top, bottom, scale)
                checked += 1
                if screen is None:
                    continue
                assert (not met or screen[0]) and (not near or screen[1]), (seed, top, bottom, scale)
                ruled_out += not screen[0]
    assert ruled_out > checked // 4  # it does rule steps out


@pytest.mark.parametrize("b", [1, 3])
def test_the_screen_steps_aside_at_a_cluster(b):
    from condlab.estimators.eigs import _screen

    H, C, widths = _band_problem(72 if b == 3 else 70, b, 0, cluster=True)
    assert _screen(H, H.shape[0], C, widths, 0, 3, 1e-12) is None  # no gap to bound a vector by


@pytest.mark.parametrize("spectrum", ["hessian-like", "clusters"])
@pytest.mark.parametrize("block_size", [1, 3])
@pytest.mark.parametrize("stop_on", ["values", "residuals"])
def test_a_screened_run_is_the_unscreened_run_bit_for_bit(monkeypatch, spectrum, block_size,
                                                          stop_on):
    import scipy.linalg  # noqa: F401  (the screen runs where scipy is loaded)

    import condlab.estimators.eigs as eigs

    assert eigs._screens()
    bulk = torch.linspace(0.001, 1.0, 242, dtype=torch.float64) ** 3
    lam = {"hessian-like": torch.cat([torch.tensor([50.0, 31.0, 30.0, 12.0, 7.0, 5.0, -1e-4,
                                                    -1e-4 + 1e-9], dtype=torch.float64), bulk]),
           "clusters": torch.cat([torch.tensor([9.0, 9.0, 9.0, 4.0], dtype=torch.float64),
                                  bulk, bulk[:3]])}[spectrum]  # the bottom three twice each
    A = spectral_matrix(lam, seed=4)
    runs, runs_screen_from = [], eigs.SCREEN_FROM
    for screen_from in (runs_screen_from, 10**9):
        monkeypatch.setattr(eigs, "SCREEN_FROM", screen_from)
        runs.append(extreme_eigenpairs(A, top=2, bottom=3, tol=1e-9, block_size=block_size,
                                       stop_on=stop_on, seed=1, max_matvecs=600))
    a, b = runs
    assert a.matvecs == b.matvecs > runs_screen_from + 4  # the screen had steps to rule on
    for f in ("eigenvalues_top", "eigenvalues_bottom", "residuals_top", "residuals_bottom",
              "errors_top", "errors_bottom", "converged_top", "converged_bottom",
              "may_repeat_top", "may_repeat_bottom", "may_miss_top", "may_miss_bottom"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.stop_reason == b.stop_reason


def test_a_long_run_in_a_fresh_process_does_not_import_scipy_for_the_screen():
    """The screen's LAPACK comes from scipy, whose import costs a short process more than the
    screen saves: a process that has not loaded it runs the exact test every step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import condlab

    code = """if True:
        import sys, torch
        from condlab.estimators import extreme_eigenpairs
        torch.set_num_threads(1)
        lam = torch.linspace(0.001, 1.0, 300, dtype=torch.float64) ** 3
        Q, _ = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64))
        r = extreme_eigenpairs((Q * lam) @ Q.T, top=0, bottom=3, tol=1e-9, seed=0)
        assert r.matvecs > 100, r.matvecs  # past the basis where the screen would start
        print("scipy" in sys.modules)
    """
    root = str(Path(condlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
