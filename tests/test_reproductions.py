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
    # full batch, identity basis: with GN without momentum, Adam (beta1 0.9) beats both; with
    # the momentum matched (GN with beta1 0.9) the finding flips on logistic regression (and,
    # at this quick size, on linear regression: docs/reproductions.md has the full-size race)
    for gn in ("GN^-1 ", "GN^-1/2 "):
        claim = f"B: full batch, identity basis: Adam needs fewer steps than {gn}"
        unmatched = [x for c, x in f.items() if c.startswith(claim) and "without momentum" in c]
        matched = [x for c, x in f.items() if c.startswith(claim) and "momentum matched" in c]
        assert len(unmatched) == len(matched) == 1
        assert unmatched[0].agrees
        if name == "b_logreg":
            assert matched[0].agrees is False
            assert _one(f, claim + "to loss 0.545: momentum changes").agrees is None
    # stochastic regime: Adam's P proportional to GN^-1/2's in the eigenbasis, where diag(G)
    # varies (at this quick size linear regression's spread, 3.3, sits just above the theory
    # threshold sqrt(9.5) = 3.1; at full size it is 1.84 against 3.05)
    eigen = _one(f, "B: mini-batch, eigen basis")
    assert eigen.agrees is (True if name == "b_logreg" else False)
    # identity basis: diag(G) is flat for block-wise covariance, the check is reported only
    assert _one(f, "B: mini-batch, identity basis").agrees is None
    quadrant = [x for c, x in f.items() if c.startswith("B: full batch, eigenbasis")]
    if name == "b_linreg":  # Newton on a quadratic
        assert quadrant and all(x.agrees for x in quadrant)
    else:  # reported; it does not reproduce on this instance (docs/reproductions.md)
        assert quadrant and all(x.agrees is False for x in quadrant)


def test_paper_a_decay():
    f = _findings("a_decay")
    assert _one(f, "A: Adam + L2 converges to the L2 minimizer").agrees
    assert _one(f, "A: AdamW converges to (H + lam M^-1)^-1 H p*").agrees
    lasso = _one(f, "A (derived): the L1 rule")
    assert lasso.agrees and lasso.value < 1e-4  # at the weighted lasso, by a margin
    assert _one(f, "A: coupled L2 is preconditioned too").agrees
    assert _one(f, "A: AdamW's operator").agrees is None


def test_paper_a_normalization():
    f = _findings("a_norm")
    for what in ("input standardization", "BatchNorm"):
        assert _one(f, f"A: {what} lowers kappa of the last layer's curvature block at init").agrees
        for opt in ("sgd", "adam"):
            assert _one(f, f"A: {what} lowers kappa of the last layer's curvature block after the "
                           f"same training ({opt},").agrees
        for opt in ("sgd", "adam"):
            assert _one(f, f"A: {what} speeds up {opt}:").agrees


def test_paper_c_intrinsic_learning_rate():
    f = _findings("c")
    assert _one(f, "C: runs with equal lr*wd reach the same effective lr").agrees
    angle = _one(f, "C (derived): the angular update per step (root mean square)")
    assert angle.agrees and abs(angle.value - 1) < 0.1
    assert _one(f, "C (derived): the equilibrium effective lr scales as").agrees
    assert _one(f, "C (derived): ||w||^2 at equilibrium scales as").agrees
    steps = _one(f, "C (derived, reported): steps for the effective lr")
    assert steps.agrees is None and -1.25 < steps.value < -0.75
