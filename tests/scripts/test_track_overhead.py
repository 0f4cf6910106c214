"""scripts/track_overhead.py trains its three copies in lockstep from the same seed: the tracker
disturbs no copy's training (the cold and warm copies measure the same weights: their first,
cold, measurements are equal bit for bit, and later ones agree to the tolerance), and every
measurement is accounted for. No timing is asserted."""

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "track_overhead.py"


def test_the_three_copies_train_alike_and_every_measurement_is_counted():
    run = runpy.run_path(str(SCRIPT))["run"]  # its definitions, not its main
    out = run("mlp", steps=6, every=3, samples=64)
    assert set(out) == {None, "cold", "warm"}
    assert "measurements" not in out[None] and out[None]["train_s"] > 0
    cold, warm = out["cold"], out["warm"]
    for r in (cold, warm):
        assert r["measurements"] == 2 == len(r["hvps"]) == len(r["cpu"])
        assert r["track_s"] > 0 and all(h >= 2 for h in r["hvps"])
        assert [row["setting"] for row in r["rows"]] == ["baseline", "optimizer"] * 2
    first = slice(0, 2)  # both cold: the same weights, the same solve
    assert [r["lambda_max"] for r in cold["rows"][first]] == [r["lambda_max"] for r in warm["rows"][first]]
    for a, b in zip(cold["rows"][2:], warm["rows"][2:], strict=True):
        assert a["lambda_max"] == pytest.approx(b["lambda_max"], rel=3e-3)


def test_stages_split_the_warm_measurements_and_put_every_function_back():
    import condlab.operators.curvature as curvature
    import condlab.tracking.top as top
    from condlab.estimators.lanczos import cgs2

    before = (top.cgs2, curvature._grad_with_outputs, curvature.HessianOperator._linear_map)
    run = runpy.run_path(str(SCRIPT))["run"]
    out = run("mlp", steps=6, every=3, samples=64, stages=True)
    first, later = out["stages"]
    assert {"memory plan", "products", "gram-schmidt"} <= set(first)
    assert {"graph", "products", "settings"} <= set(later) and "memory plan" not in later
    assert sum(later.values()) <= out["warm"]["cpu"][1]  # own times within the measurement
    assert (top.cgs2, curvature._grad_with_outputs, curvature.HessianOperator._linear_map) == before
    assert top.cgs2 is cgs2
