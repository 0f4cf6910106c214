"""Each reproduction config at its --quick size, fixed seeds: the direction of every finding.

The absolute figures are not checked (they belong to docs/reproductions.md, from the full
size); only that each claim listed in docs/reproductions.md comes out the way the paper says.
"""

from pathlib import Path

import pytest

from condlab.compare import compare, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _findings(name: str) -> dict[str, object]:
    report = compare(load_config(CONFIGS / f"compare_{name}.yaml", quick=True))
    return {f.claim: f for f in report.findings}


def _one(findings: dict, start: str):
    hits = [f for claim, f in findings.items() if claim.startswith(start)]
    assert len(hits) == 1, (start, list(findings))
    return hits[0]


@pytest.mark.parametrize("name", ["b_linreg", "b_logreg"])
def test_paper_b_quadrants(name):
    f = _findings(name)
    # full batch, identity basis: Adam beats both GN^-1 and GN^-1/2 (block-wise covariance)
    for gn in ("GN^-1 ", "GN^-1/2 "):
        assert _one(f, f"B: full batch, identity basis: Adam needs fewer steps than {gn}").agrees
    # stochastic regime: Adam's P proportional to GN^-1/2's in the eigenbasis, where diag(G) varies
    eigen = _one(f, "B: mini-batch, eigen basis")
    assert eigen.agrees
    # identity basis: diag(G) is flat for block-wise covariance, the check is reported only
    assert _one(f, "B: mini-batch, identity basis").agrees is None
    quadrant = _one(f, "B: full batch, eigenbasis")
    if name == "b_linreg":  # Newton on a quadratic
        assert quadrant.agrees
    else:  # reported; it does not reproduce on this instance (docs/reproductions.md)
        assert isinstance(quadrant.agrees, bool)


def test_paper_a_decay():
    f = _findings("a_decay")
    assert _one(f, "A: Adam + L2 converges to the L2 minimizer").agrees
    assert _one(f, "A: AdamW converges to (H + lam M^-1)^-1 H p*").agrees
    assert _one(f, "A: coupled L2 is preconditioned too").agrees
    assert _one(f, "A: AdamW's operator").agrees is None


def test_paper_a_normalization():
    f = _findings("a_norm")
    for what in ("input standardization", "BatchNorm"):
        assert _one(f, f"A: {what} lowers kappa of the last layer's curvature block").agrees
        for opt in ("sgd", "adam"):
            assert _one(f, f"A: {what} speeds up {opt}:").agrees


def test_paper_c_intrinsic_learning_rate():
    f = _findings("c")
    assert _one(f, "C: runs with equal lr*wd reach the same effective lr").agrees
    angle = _one(f, "C (derived): the angular update per step (root mean square)")
    assert angle.agrees and abs(angle.value - 1) < 0.1
    assert _one(f, "C (derived): the equilibrium effective lr scales as").agrees
    assert _one(f, "C (derived): ||w||^2 at equilibrium scales as").agrees
    steps = _one(f, "C: steps to equilibrium scale as 1/(lr*wd)")
    assert steps.agrees and -1.4 < steps.value < -0.6
