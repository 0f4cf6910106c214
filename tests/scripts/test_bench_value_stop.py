"""scripts/bench_value_stop.py: its Li & Li bound is the formula and holds against a prescribed
spectrum at every depth it prints, and its 'backed' column is the bound against tol. No timing."""

import math

import pytest
import torch

from condlab.operators.base import DenseOperator
from tests.cases import script_module, spectral_matrix


@pytest.fixture(scope="module")
def bench():
    yield from script_module("bench_value_stop")


def test_li_li_is_the_formula_and_below_both_simple_bounds(bench):
    for e, eta in ((1e-3, 0.05), (0.2, 0.01), (1e-8, 1.0)):
        got = bench.li_li(e, eta)
        assert got == pytest.approx(2 * e * e / (eta + math.sqrt(eta * eta + 4 * e * e)), rel=1e-15)
        assert got <= min(e, e * e / eta) * (1 + 1e-15)
    assert bench.li_li(1e-3, 0.0) == math.inf


def test_the_printed_bound_holds_at_every_depth(bench):
    lam = torch.cat([torch.tensor([10.0, 9.0, 8.5, 8.0, 7.6, 6.0, 5.9]),
                     torch.linspace(-1.0, 5.0, 193)]).double()
    A = DenseOperator(spectral_matrix(lam, seed=3))
    reference = sorted(lam.tolist(), reverse=True)[:7]
    rows = bench.depths(A, range(8, 31, 2), reference)
    assert [r["k"] for r in rows] == list(range(8, 31, 2))
    for r in rows:
        # U = lambda_6 is a floor (interlacing: lambda_max(A_perp) >= lambda_6), so the printed
        # bound is the best a verification could back; once Y holds the top-5 space to e, the
        # true lambda_max(A_perp) is within O(e^2 / gap) of lambda_6 and the bound holds
        if r["e"] <= 1e-3:
            assert r["error"] <= r["li_li"] * (1 + 1e-3) + 1e-14
            assert r["eta_best"] == pytest.approx((7.6 - 6.0) / 10.0, abs=1e-5)
    assert rows[0]["li_li"] > bench.TOL >= rows[-1]["li_li"]  # the table can say both
    table = bench.table("prescribed", rows, 30)
    assert table.count("| yes |") + table.count("| no |") == len(rows)
    first = next(r for r in rows if r["li_li"] <= bench.TOL)
    line = bench.summary([("prescribed", rows, 30)]).splitlines()[-1]
    assert line.startswith(f"| prescribed | 30 | {first['products']} ")
    assert f"{first['li_li']:.1e}" in line
