"""scripts/track_lockstep.py: the three ways of taking two columns compute the same two products
(so the timings compare like with like), the rows' product counts are the Tracker's own, and
the lockstep cost is the stated formula. No timing is asserted."""

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "track_lockstep.py"


@pytest.fixture(scope="module")
def script():
    import sys

    path = list(sys.path)
    yield runpy.run_path(str(SCRIPT))  # its definitions, not its main
    sys.path[:] = path


def test_the_ways_agree_and_the_counts_are_the_trackers(script):
    out = script["run"]("mlp", steps=6, every=3, samples=64, reps=1)
    assert len(out["counts"]) == len(out["times"]) == 2 and out["step_s"] > 0
    for t in out["times"]:
        assert t["mismatch"] < 1e-5  # float32: the same products up to rounding
        assert all(t[k] > 0 for k in ("single", "batched", "doubled", "build_single", "build_doubled"))
    first = out["counts"][0]
    assert first["cold"] == first["warm"]  # both start cold at the same weights
    for m in out["counts"]:
        assert min(*m["cold"], m["bare"], *m["warm"]) >= 1


def test_lockstep_cost_is_pairs_plus_the_longer_rows_rest(script):
    lockstep = script["_lockstep"]
    assert lockstep(11, 8, 2.0, 1.0) == 8 * 2.0 + 3 * 1.0
    assert lockstep(3, 5, 1.7, 1.7) == pytest.approx(3 * 1.7 + 2 * 1.7)
