"""Settings beside the baseline, end to end through the CLI, against dense ground truths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from condlab.cli import app
from condlab.load.data import load_dataset

runner = CliRunner()
LINREG = "linreg:n=400,d=4,kappa=10,scale=[1,10,100,1000],mean=[5,-3,50,2],seed=1"


def run_json(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["results"]


def kappa(Z: torch.Tensor) -> float:
    ev = torch.linalg.eigvalsh(Z.T @ Z)
    return (ev[-1] / ev[0]).item()


def test_input_standardization_gives_the_standardized_design():
    """Issue 4 done-when: ill-scaled, non-centred linear regression, --norm input."""
    res = run_json(
        "spectrum", "--model", "linear", "--data", LINREG, "--loss", "mse", "--norm", "input",
        "--dtype", "float64", "--tol", "1e-10", "--format", "json", "--top", "2", "--bottom", "2",
    )
    base, std = res
    X = load_dataset(LINREG).X.double()
    ones = torch.ones(len(X), 1, dtype=torch.float64)
    Xs = (X - X.mean(0)) / X.std(0, unbiased=False)  # StandardScaler: population std
    assert std["normalization"] == "input" and base["normalization"] is None
    assert std["condition_number"] == pytest.approx(kappa(torch.cat([Xs, ones], 1)), rel=1e-6)
    assert base["condition_number"] == pytest.approx(kappa(torch.cat([X, ones], 1)), rel=1e-6)
    assert std["function_change"] < 1e-9
    assert std["params_added"] == 0
    assert base["condition_number"] > 1e5 > 10 > std["condition_number"]


def test_one_feature_closed_form():
    """research.md: one feature with mean mu, std s and a bias: kappa = (T + r) / (T - r)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    x = (x - x.mean()) / x.std() * 1.0 + 10.0  # mean exactly 10, population std exactly 1
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "one.npz"
        np.savez(path, X=x[:, None], y=rng.normal(size=1000))
        base, std = run_json(
            "spectrum", "--model", "linear", "--data", path, "--loss", "mse", "--norm", "input",
            "--dtype", "float64", "--tol", "1e-12", "--format", "json", "--top", "1",
            "--bottom", "1",
        )
    T = 1 + 10.0**2 + 1.0**2
    r = (T**2 - 4) ** 0.5
    # loaded data are float32: mean 10 and std 1 hold to ~1e-7, hence rel 1e-6
    assert base["condition_number"] == pytest.approx((T + r) / (T - r), rel=1e-6)
    assert base["condition_number"] == pytest.approx(10402, rel=1e-4)
    assert std["condition_number"] == pytest.approx(1.0, abs=1e-9)


def test_batchnorm_and_layernorm_settings_on_an_mlp():
    res = run_json(
        "spectrum", "--model", "mlp", "--data", "iris", "--dtype", "float64", "--top", "2",
        "--bottom", "1", "--norm", "batch", "--norm", "layer", "--format", "json",
    )
    assert [r["setting"] for r in res] == ["baseline", "batch", "layer"]
    batch, layer = res[1], res[2]
    assert batch["function_change"] < 1e-9  # eval mode keeps the function exactly
    assert batch["params_added"] > 0 and layer["params_added"] > 0
    assert layer["function_change"] > 0
    assert batch["modes"]["batchnorm"] == "eval"
    assert batch["n_params"] == res[0]["n_params"] + batch["params_added"]
