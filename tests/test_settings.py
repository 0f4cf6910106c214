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
    """Input standardization: ill-scaled, non-centred linear regression, --norm input."""
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


def test_gn_and_gn_sqrt_on_ill_scaled_linear_regression():
    """Jacobi scaling: kappa(D^-1/2 H D^-1/2) and kappa(D^-1/4 H D^-1/4), D = diag(H)."""
    res = run_json(
        "spectrum", "--model", "linear", "--data", LINREG, "--loss", "mse", "--precond", "gn",
        "--precond", "gn-sqrt", "--dtype", "float64", "--tol", "1e-10", "--format", "json",
        "--top", "2", "--bottom", "2",
    )
    assert [r["setting"] for r in res] == ["baseline", "gn", "gn-sqrt"]
    assert [r["preconditioner"] for r in res] == [None, "gn", "gn-sqrt"]
    X = load_dataset(LINREG).X.double()
    Z = torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], 1)
    H = 2 * Z.T @ Z / len(X)  # mse over N samples, one output
    d = torch.diagonal(H)

    def cond(M):
        ev = torch.linalg.eigvalsh(M)
        return (ev[-1] / ev[0]).item()

    assert res[1]["condition_number"] == pytest.approx(cond(H / torch.outer(d.sqrt(), d.sqrt())), rel=1e-6)
    assert res[2]["condition_number"] == pytest.approx(cond(H / torch.outer(d**0.25, d**0.25)), rel=1e-6)
    assert res[0]["condition_number"] == pytest.approx(cond(H), rel=1e-6)
    assert res[1]["condition_number"] < res[2]["condition_number"] < res[0]["condition_number"]


@pytest.fixture(scope="module")
def adam_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("adam")
    (d / "t.yaml").write_text(
        "model: {name: mlp, widths: [6], activation: tanh}\ndata: iris\nloss: cross-entropy\n"
        "optimizer: {name: adam, lr: 0.01, eps: 1.0e-6}\nsteps: 40\nseed: 0\ndtype: float64\n"
    )
    r = runner.invoke(app, ["train", str(d / "t.yaml"), "--out", str(d / "c.pt")])
    assert r.exit_code == 0, r.output
    return d / "c.pt"


def _dense_adam_preconditioned(ckpt_path):
    from condlab.load.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt).double()
    data = load_dataset(ckpt["data"])
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    X, y = data.X.double(), data.y

    def loss(th):
        parts = torch.split(th, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (X,)), y)

    H = torch.func.hessian(loss)(theta)
    opt = ckpt["optimizer"]["state_dict"]
    beta2 = opt["param_groups"][0]["betas"][1]
    eps = opt["param_groups"][0]["eps"]
    P = torch.cat(
        [
            (opt["state"][i]["exp_avg_sq"] / (1 - beta2 ** float(opt["state"][i]["step"]))).sqrt().reshape(-1)
            + eps
            for i in range(len(names))
        ]
    )
    M = H / torch.outer(P.sqrt(), P.sqrt())
    return torch.linalg.eigvalsh(M), ckpt


def test_checkpoint_adam_state_matches_dense(adam_ckpt, tmp_path):
    """Optimizer-state preconditioner: the checkpoint's own Adam state, and the same via --optimizer-state."""
    ev, ckpt = _dense_adam_preconditioned(adam_ckpt)
    args = ["spectrum", adam_ckpt, "--precond", "optimizer", "--dtype", "float64", "--tol",
            "1e-10", "--top", "3", "--bottom", "2", "--format", "json"]
    res = run_json(*args)[1]
    lam = ev.abs().max().item()
    np.testing.assert_allclose(res["eigenvalues_top"], ev.flip(0)[:3].numpy(), atol=1e-8 * lam)
    np.testing.assert_allclose(res["eigenvalues_bottom"], ev[:2].numpy(), atol=1e-8 * lam)
    state = tmp_path / "opt.pt"
    torch.save(ckpt["optimizer"]["state_dict"], state)
    res2 = run_json(*args, "--optimizer-state", state)[1]
    assert res2["eigenvalues_top"] == pytest.approx(res["eigenvalues_top"], rel=1e-12)


def test_optimizer_precond_without_state_is_a_usage_error(tmp_path):
    r = runner.invoke(app, ["spectrum", "--model", "linear", "--data", "iris", "--precond", "optimizer"])
    assert r.exit_code == 2 and "optimizer state" in r.output and "Traceback" not in r.output


def test_stability_against_the_threshold(adam_ckpt):
    res = run_json("spectrum", adam_ckpt, "--precond", "optimizer", "--dtype", "float64",
                   "--top", "1", "--bottom", "0", "--lr", "0.01", "--format", "json")
    base, adam = res
    assert base["stability"]["threshold"] == pytest.approx(2 / 0.01)
    assert adam["stability"]["threshold"] == pytest.approx((2 + 2 * 0.9) / (0.1 * 0.01))
    s = adam["stability"]
    assert s["sharpness"] == pytest.approx(adam["lambda_max"])
    assert s["regime"] in ("stable", "edge", "unstable")


def test_batchnorm_model_nullity_predicted_and_measured(tmp_path):
    """A model with BatchNorm, measured as it is: the null space its normalization
    creates (plus cross-entropy's softmax shift) predicted and measured exactly. Batch
    statistics: the next eigenvalue is 1.6e-9 of lambda_max, a clean gap (in eval mode at
    initialization the spectrum decays continuously to 1e-13 and leaves nothing to count)."""
    bn_mode = "batch"
    cfg = tmp_path / "bn.yaml"
    cfg.write_text("widths: [8]\nnorm: batch\n")
    (res,) = run_json(
        "spectrum", "--model", "mlp", "--model-config", cfg, "--data", "iris", "--dtype",
        "float64", "--curvature", "ggn", "--bn-mode", bn_mode, "--exact", "--top", "1",
        "--bottom", "1", "--null-threshold", "1e-10", "--format", "json",
    )
    # 8 BatchNorm units after a Linear with bias: 2 GGN null directions each; softmax shift: 8 + 1
    assert res["predicted_nullity"] == 16 + 9
    assert res["nullity"] == res["predicted_nullity"]
    assert res["modes"]["batchnorm"] == bn_mode
    assert res["condition_number"] == pytest.approx(res["lambda_max"] / res["lambda_min_positive"])


def test_every_estimator_setting_comes_from_the_config():
    """SpectrumConfig is made of the stages' option dataclasses: its estimator part is an
    EstimatorSettings with the same values, so no field can be forgotten."""
    from condlab.config import SpectrumConfig
    from condlab.measure import EstimatorSettings

    cfg = SpectrumConfig(model="linear", top=7, bottom=2, dtype="float32", exact=True, probes=9)
    est = cfg.estimator
    assert type(est) is EstimatorSettings and isinstance(cfg, EstimatorSettings)
    assert (est.top, est.bottom, est.exact, est.probes) == (7, 2, True, 9)
    assert est.resolved(torch.float32).tol == 1e-4 == cfg.resolved_tol


def test_stability_lr_from_the_optimizer_state(adam_ckpt):
    """Without --lr the optimizer row takes lr and beta1 from the state's param_groups (the
    scale its P goes with); rows without that lr get no stability figure."""
    base, adam = run_json("spectrum", adam_ckpt, "--precond", "optimizer", "--dtype", "float64",
                          "--top", "1", "--bottom", "0", "--format", "json")
    assert base["stability"] is None
    s = adam["stability"]
    assert s["lr"] == 0.01 and s["beta1"] == 0.9 and s["method"] == "adam"
    assert s["threshold"] == pytest.approx((2 + 2 * 0.9) / (0.1 * 0.01))
    assert s["ratio"] == pytest.approx(adam["lambda_max"] / s["threshold"])
    assert "param_groups" in s["lr_source"]


@pytest.mark.parametrize(
    "decay, base_label, pre_label",
    [
        ("l1", "H", "P^-½HP^-½"),
        ("coupled", "H+λI", "P^-½(H+λI)P^-½"),
        ("decoupled", "H+λI", "P^-½HP^-½+λI"),
    ],
)
def test_each_row_says_whose_curvature_it_is(adam_ckpt, decay, base_label, pre_label):
    base, adam = run_json("spectrum", adam_ckpt, "--precond", "optimizer", "--dtype", "float64",
                          "--top", "1", "--bottom", "0", "--weight-decay", "0.1", "--decay", decay,
                          "--format", "json")
    assert base["objective"] == base_label
    assert adam["objective"] == pre_label
    assert base["objective_lambda"] == (None if decay == "l1" else 0.1)
    # the state's own decay is kept apart from the decay this run measures with
    assert adam["details"]["weight_decay"] == 0.1 and adam["details"]["optimizer_weight_decay"] == 0.0


def test_table_leads_with_scale_free_figures(adam_ckpt):
    r = runner.invoke(app, ["spectrum", str(adam_ckpt), "--precond", "optimizer", "--dtype",
                            "float64", "--top", "1", "--bottom", "1", "--explain"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if "setting" in line)
    assert header.index("κ") < header.index("stab.") < header.index("λ_max")
    row = next(line for line in r.stdout.splitlines() if "optimizer" in line and "P^-½" in line)
    assert "n/a" in row  # no lambda_max ratio across an arbitrary scale
    assert "λ_max ratio n/a for preconditioned rows" in r.stdout
