"""Single-vector Lanczos verified on the deflated operator (condlab.estimators.verify, issue 22
item 1): the default top list costs single-vector products where the end is simple and keeps
the block's guarantee everywhere. Against dense truths with prescribed spectra: pairs and
triples inside the list, a pair at its boundary, a near-cluster 1e-8 apart, an indefinite
spectrum, a null space at the bottom. Where the verification fails the list and flags are the
block run's exactly; where it passes they are right, with Li & Li errors that hold."""

import math

import pytest
import torch

from condlab.estimators import extreme_eigenpairs
from condlab.estimators.eigs import _verifies
from condlab.estimators.verify import deflated_verification, li_li
from condlab.measure import EstimatorSettings, measure
from condlab.operators.base import DenseOperator
from tests.cases import spectral_matrix

D64 = torch.float64


def t(*values):
    return torch.tensor(values, dtype=D64)


def lin(a, b, n):
    return torch.linspace(a, b, n, dtype=D64)


BULK = lin(-1.0, 3.0, 240)
# name: (spectrum, tol, the strategy that must run: 'verify' proves the single-vector list,
# 'fallback' is the block's list after a failed proof; None: either, by whether rounding seeded
# the second copy of a separated pair in the single-vector run, as it often does)
CASES = {
    "distinct outliers": (torch.cat([t(10, 8, 6.5, 5, 4), BULK]), 1e-8, "verify"),
    "indefinite": (torch.cat([t(-9, -6, 6, 5, 4.5, 3.6, 3.3), lin(-3.0, 3.0, 240)]), 1e-8, "verify"),
    "pair inside the list": (torch.cat([t(10, 8, 8, 5, 4), BULK]), 1e-8, None),
    "triple inside the list, near the bulk": (torch.cat([t(10, 3.4, 3.4, 3.4, 3.2), BULK]), 1e-6,
                                              "fallback"),
    "pair at the list's boundary": (torch.cat([t(10, 8, 6, 5, 4, 4), BULK]), 1e-8, "fallback"),
    "near-cluster 1e-8 apart": (torch.cat([t(10, 8, 6, 4 + 1e-8, 4), BULK]), 1e-6, None),
}
FIELDS = ("eigenvalues_top", "residuals_top", "converged_top", "copies_top", "may_repeat_top",
          "may_miss_top", "errors_top")


@pytest.mark.parametrize("name", list(CASES))
def test_default_top_list_is_right_and_flags_keep_their_meaning(name):
    lam, tol, expected = CASES[name]
    want = lam.sort(descending=True).values[:5]
    for seed in range(2):
        A = spectral_matrix(lam, seed)
        r = extreme_eigenpairs(A, top=5, bottom=0, tol=tol, seed=seed, stop_on="values")
        block = extreme_eigenpairs(A, top=5, bottom=0, tol=tol, seed=seed, stop_on="values",
                                   strategy="block")
        assert r.strategy == (expected or r.strategy) in ("verify", "fallback"), r.verification
        assert r.converged, (r.stop_reason, r.verification)
        assert r.matvecs == sum(n for _, n in r.stages)
        rounding = 1e-13 * float(lam.abs().max())
        # every copy at its place, within the stated error
        assert ((r.eigenvalues_top - want).abs() <= r.errors_top + rounding).all()
        if r.strategy == "fallback":  # exactly the block run, whose products come on top
            for field in FIELDS:
                assert torch.equal(getattr(r, field), getattr(block, field)), field
            assert r.block_size == block.block_size == 5
            assert r.stages[-1] == ("block", block.matvecs) and r.matvecs > block.matvecs
        else:  # proven: no copy hides anywhere, at fewer products than the block
            assert not bool(r.may_repeat_top.any()) and not bool(r.may_miss_top.any())
            assert r.certified_top and ((r.eigenvalues_top - want).abs() <= r.threshold).all()
            assert "li-li" in r.error_kinds_top  # the single run's own bracket where smaller
            assert r.matvecs < block.matvecs
            assert [s for s, _ in r.stages] == ["single-vector", "verification"]


def test_single_vector_alone_misses_a_copy_that_the_verification_catches():
    """Not vacuous: single-vector Lanczos lists the triple near the bulk twice and a bulk value
    in its place; the deflated run sees the third copy within a few products and fails."""
    lam = CASES["triple inside the list, near the bulk"][0]
    A = spectral_matrix(lam, 0)
    one = extreme_eigenpairs(A, top=5, bottom=0, tol=1e-6, seed=0, block_size=1,
                             return_vectors=True, stop_on="values")
    assert float(one.eigenvalues_top[3]) < 3.3  # wrong: 3.4 listed twice, 3.2 in its place
    Y = one.vectors_top
    ver = deflated_verification(A, Y, A @ Y, one.eigenvalues_top, one.eigenvalues_top[:0],
                                one.threshold, generator=torch.Generator().manual_seed(5),
                                max_products=100)
    assert not ver.passed and ver.products <= 15, ver.reason
    assert ver.rho_max > float(one.eigenvalues_top[-1])  # A_perp reaches past the list
    assert bool(torch.isinf(ver.errors_top).all())


def test_the_deflated_run_projects_out_the_list():
    """With the exact top-5 vectors of a distinct spectrum the proof passes; the bound on the
    deflated operator lies between its true top (the 6th eigenvalue) and the list's end."""
    lam = torch.cat([t(10, 8, 6.5, 5, 4), BULK])
    gen = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=gen, dtype=D64))
    A = (Q * lam) @ Q.T
    Y = Q[:, :5]  # chosen, not computed: the eigenvectors of the five outliers
    ver = deflated_verification(A, Y, A @ Y, lam[:5], lam[:0], 1e-7, generator=gen,
                                max_products=60)
    assert ver.passed, ver.reason
    assert 3.0 <= ver.upper < 4.0 and ver.rho_max <= 3.0 + 1e-9
    assert ver.norm_e < 1e-12 and (ver.errors_top <= 1e-10).all()


def test_li_li_bound_holds_and_is_attained():
    """|lambda_j([[M, E^T], [E, N]]) - mu_j| <= 2 e^2 / (eta + sqrt(eta^2 + 4 e^2)) against a
    dense eigendecomposition; with one row and column it is an equality."""
    gen = torch.Generator().manual_seed(7)
    for e in (1e-3, 0.1, 1.0):
        M = torch.diag(t(9.0, 7.5, 6.0))
        N = spectral_matrix(lin(-2.0, 4.0, 40), seed=2)
        E = torch.randn(40, 3, generator=gen, dtype=D64)
        E *= e / torch.linalg.matrix_norm(E, ord=2)
        A = torch.cat([torch.cat([M, E.T], 1), torch.cat([E, N], 1)])
        lam = torch.linalg.eigvalsh(A).flip(0)[:3]
        eta = M.diagonal() - 4.0
        bound = li_li(e, eta)
        assert ((lam - M.diagonal()).abs() <= bound * (1 + 1e-10)).all()
        assert (bound <= torch.minimum(torch.full_like(eta, e), e * e / eta) + 1e-15).all()
    mu, nu, e = 3.0, 1.0, 0.5  # 2x2: lambda - mu = sqrt(eta^2 / 4 + e^2) - eta / 2, exactly
    lam = float(torch.linalg.eigvalsh(t(mu, e, e, nu).reshape(2, 2))[-1])
    torch.testing.assert_close(li_li(e, t(mu - nu)), t(lam - mu), rtol=1e-14, atol=0)
    assert torch.isinf(li_li(e, t(0.0, -1.0))).all()  # no gap: no bound


def test_both_ends_verified_on_an_indefinite_spectrum():
    lam = torch.cat([t(-9, -6, -5, 6, 5, 4.5), lin(-3.0, 3.0, 240)])
    asc = lam.sort().values
    A = spectral_matrix(lam, 4)
    r = extreme_eigenpairs(A, top=3, bottom=3, tol=1e-8, seed=1, strategy="verify")
    assert r.strategy == "verify" and r.certified_top and r.certified_bottom, r.verification
    assert ((r.eigenvalues_top - asc.flip(0)[:3]).abs() <= r.errors_top + 1e-12).all()
    assert ((r.eigenvalues_bottom - asc[:3]).abs() <= r.errors_bottom + 1e-12).all()
    assert r.lambda_min_lower <= -9.0 <= float(r.eigenvalues_bottom[0])
    assert not bool(r.may_miss_bottom.any() or r.may_repeat_bottom.any())


def test_null_space_at_the_bottom_is_the_block_runs():
    """A null space of 60: by default the bottom list is one block run (the verification would
    fail there); forced, the verification fails and the block's list and flags come back."""
    lam = torch.cat([torch.zeros(60, dtype=D64), lin(0.1, 4.0, 150), t(6, 6, 7)])
    A = spectral_matrix(lam, 1)
    kw = dict(top=0, bottom=3, tol=1e-8, seed=2)
    block = extreme_eigenpairs(A, strategy="block", **kw)
    auto = extreme_eigenpairs(A, **kw)
    forced = extreme_eigenpairs(A, strategy="verify", **kw)
    assert auto.strategy == "block" and auto.matvecs == block.matvecs
    assert forced.strategy == "fallback", forced.verification
    for r in (auto, forced):
        for field in ("eigenvalues_bottom", "copies_bottom", "may_repeat_bottom", "may_miss_bottom",
                      "errors_bottom"):
            assert torch.equal(getattr(r, field), getattr(block, field)), field
    assert (block.eigenvalues_bottom.abs() <= block.threshold).all()
    assert bool(block.may_repeat_bottom.all()) and block.block_size == 3


def test_the_policy_keeps_blocks_where_they_pay():
    common = dict(block_size=None, start=None, certify=True, true_residuals=True)
    assert _verifies("auto", "cpu", 5, 0, 5, **common)
    assert not _verifies("auto", "cuda", 5, 0, 5, **common)  # a block costs about one product
    assert not _verifies("auto", "cpu", 5, 3, 5, **common)  # a bottom list: the block
    assert not _verifies("auto", "cpu", 1, 0, 1, **common)  # nothing to repeat
    assert not _verifies("block", "cpu", 5, 0, 5, **common)
    assert not _verifies("auto", "cpu", 5, 0, 5, **{**common, "block_size": 5})
    assert not _verifies("auto", "cpu", 5, 0, 5, **{**common, "start": torch.ones(3)})


def test_measure_records_the_strategy_and_its_products():
    lam = CASES["distinct outliers"][0]
    m = measure(DenseOperator(spectral_matrix(lam, 0)),
                EstimatorSettings(top=5, bottom=0, tol=1e-8, seed=0))
    d, r = m.result.details, m.result
    assert d["strategy"] == "verify" and r.multiplicity_resolved
    assert sum(n for _, n in d["stages"]) == r.hvp_count
    assert d["block_size"] == 1 and not any(d["may_miss_top"])
    torch.testing.assert_close(t(*r.eigenvalues_top), lam[:5], rtol=0, atol=1e-7)


@pytest.mark.parametrize("kw, words", [
    (dict(strategy="fast"), "strategy must be one of"),
    (dict(strategy="verify", block_size=2), "strategy 'verify' chooses the block"),
    (dict(neighbours=-1, return_vectors=True), "neighbours must be >= 0"),
    (dict(neighbours=2), "needs return_vectors=True"),
])
def test_bad_strategy_arguments_are_one_line_usage_errors(kw, words):
    from condlab.errors import UsageError

    A = DenseOperator(spectral_matrix(t(3, 2, 1, 0, -1, -2), 0))
    with pytest.raises(UsageError, match=words):
        extreme_eigenpairs(A, top=2, bottom=0, **kw)


def test_li_li_is_the_torch_formula_bit_for_bit():
    """li_li runs in numpy; the same numbers as the torch original, edge cases included."""
    def plain(e, eta):
        eta = eta.to(torch.float64)
        out = 2 * e * e / (eta + torch.sqrt(eta * eta + 4 * e * e))
        out = torch.where(eta > 0, torch.minimum(out, torch.full_like(out, e)),
                          torch.full_like(out, math.inf))
        return torch.where((eta > 0) & (e == 0), torch.zeros_like(out), out)

    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, -1.0, math.inf, -math.inf, math.nan, 1e-300, 1e300],
                           dtype=torch.float64)
    for e in (0.0, 1e-300, 1e-12, 0.3, 7.0, 1e200):
        eta = torch.cat([special, 10.0 ** torch.empty(200, dtype=torch.float64).uniform_(
            -15, 5, generator=g)])
        got, want = li_li(e, eta), plain(e, eta)
        assert got.dtype == want.dtype and torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(nan=-7.0), want.nan_to_num(nan=-7.0))
