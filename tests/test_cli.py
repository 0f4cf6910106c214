"""The command line end to end with typer's CliRunner: each option and each error path."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from torch.func import functional_call
from typer.testing import CliRunner

from condlab.cli import app

runner = CliRunner()

MYMODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(6, 3)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return self.b(h + 0.5 * torch.sin(h))

    def make():
        return Net()
    """
)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """A model module, its weights and data of the user's, none seen by condlab before."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(MYMODELS)
    torch.manual_seed(1)
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("mymodels")
        model = mod.make().double()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mymodels", None)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(37, 4)) * np.array([1.0, 3.0, 0.3, 2.0])
    y = rng.integers(0, 3, size=37)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    return tmp_path, model, torch.tensor(X), torch.tensor(y)


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_unseen_model_matches_dense_eigendecomposition(user_files, curvature):
    """An unseen model and data, float64, tol 1e-8, both ends."""
    tmp, model, X, y = user_files
    r = invoke(
        "spectrum", "--model", "mymodels:make", "--weights", "w.pt", "--data", "d.npz",
        "--loss", "cross-entropy", "--dtype", "float64", "--top", "5", "--bottom", "3",
        "--tol", "1e-8", "--format", "json", "--curvature", curvature, "--batch-size", "10",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    res = doc["results"][0]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def out(th):
        parts = torch.split(th, [s.numel() for s in shapes])
        return functional_call(model, {n: p.view(s) for n, p, s in zip(names, parts, shapes)}, (X,))

    lossf = torch.nn.functional.cross_entropy
    if curvature == "hessian":
        A = torch.func.hessian(lambda th: lossf(out(th), y))(theta)
    else:
        J = torch.func.jacrev(out)(theta).reshape(-1, theta.numel())
        o = out(theta).detach()
        Ho = torch.func.hessian(lambda z: lossf(z, y))(o).reshape(J.shape[0], -1)
        A = J.T @ Ho @ J
    ev = torch.linalg.eigvalsh(A)
    lam_max = ev[-1].item()
    assert abs(res["lambda_max"] - lam_max) <= 1e-6 * abs(lam_max)
    np.testing.assert_allclose(res["eigenvalues_top"], ev.flip(0)[:5].numpy(), atol=1e-6 * lam_max)
    np.testing.assert_allclose(res["eigenvalues_bottom"], ev[:3].numpy(), atol=1e-6 * lam_max)
    assert res["n_params"] == theta.numel() and res["n_samples"] == 37
    assert all(r <= 1e-8 * lam_max * 1.0001 for r in res["residuals_top"] + res["residuals_bottom"])
    assert set(doc) >= {"condlab_version", "command", "config", "results"}
    assert doc["config"]["dtype"] == "float64"


SCHEMA = [
    "setting", "curvature", "preconditioner", "normalization", "n_params", "n_samples",
    "eigenvalues_top", "eigenvalues_bottom", "residuals_top", "residuals_bottom", "lambda_max",
    "lambda_min", "condition_number", "condition_definition", "nullity", "trace",
    "trace_stderr", "hvp_count", "seconds",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small checkpoint made by `condlab train` (iris, MLP 4-8-3, Adam)."""
    d = tmp_path_factory.mktemp("ckpt")
    (d / "train.yaml").write_text(
        "model: {name: mlp, widths: [8], activation: tanh}\n"
        "data: iris\nloss: cross-entropy\noptimizer: {name: adam, lr: 0.01}\nsteps: 60\nseed: 0\n"
    )
    r = invoke("train", d / "train.yaml", "--out", d / "ckpt.pt")
    assert r.exit_code == 0, r.output
    return d / "ckpt.pt"


# imported only by the paths that need them (a config file, a table to disk, a plot, a named
# Hugging Face model): a plain spectrum run must not pay their start-up. sympy (0.3 CPU s, with
# mpmath) came in through autograd.grad's check of output gradients, scipy (0.15 s) through
# scipy.special's betaincinv in the end certificate
LAZY_MODULES = {"yaml", "pandas", "sklearn", "matplotlib", "transformers", "sympy", "mpmath",
                "scipy"}


def test_spectrum_run_leaves_lazy_modules_unimported(tmp_path):
    """``python -m condlab spectrum ckpt.pt --top 2 --bottom 1`` on a digits checkpoint (the
    benchmark's path) in a fresh process imports none of ``LAZY_MODULES`` (YAML was imported at
    the top of condlab.config: 10-25 ms of every run's start-up, the whole-process benchmark).
    The other bundled data sets (iris, wine, ...) still load through scikit-learn. The top-2
    block goes through the batched product (output gradients) and both ends are certified
    (the beta quantile), the paths that imported sympy and scipy."""
    (tmp_path / "train.yaml").write_text(
        "model: {name: mlp, widths: [4], activation: tanh}\n"
        "data: digits\nloss: cross-entropy\noptimizer: {name: sgd, lr: 0.1}\nsteps: 2\nseed: 0\n"
    )
    ckpt = tmp_path / "ckpt.pt"
    r = invoke("train", tmp_path / "train.yaml", "--out", ckpt)
    assert r.exit_code == 0, r.output
    import os
    import subprocess
    import sys
    from pathlib import Path

    import condlab

    code = (
        "import runpy, sys\n"
        "sys.argv = ['condlab', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('condlab', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('MODULES', *sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n"
    )
    root = str(Path(condlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        [sys.executable, "-c", code, "spectrum", str(ckpt), "--top", "2", "--bottom", "1",
         "--dtype", "float64", "--threads", "1", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["results"]) == 1
    loaded = set(r.stderr.split("MODULES", 1)[1].split())
    assert "torch" in loaded and "condlab" in loaded  # the listing is the run's
    assert not LAZY_MODULES & loaded, sorted(LAZY_MODULES & loaded)


def test_json_schema_and_null_fields(ckpt):
    r = invoke("spectrum", ckpt, "--format", "json", "--top", "2", "--bottom", "0", "--dtype", "float64")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert list(res)[: len(SCHEMA)] == SCHEMA
    assert res["trace"] is None and res["trace_stderr"] is None  # not asked for
    assert res["eigenvalues_bottom"] == []
    assert res["setting"] == "baseline" and res["curvature"] == "hessian"
    assert res["eigenvalues_top"] == sorted(res["eigenvalues_top"], reverse=True)


def test_table_output_names_the_definition(ckpt):
    r = invoke("spectrum", ckpt, "--top", "3", "--bottom", "2", "--dtype", "float64", "--trace",
               "--explain")
    assert r.exit_code == 0, r.output
    assert "lambda_max" in r.stdout and "baseline" in r.stdout and "kappa" in r.stdout
    # a legend for every column, and the eigenvalues that were asked for, not only lambda_max
    assert "columns: κ = condition number" in r.stdout and "ok = every requested" in r.stdout
    line = next(x for x in r.stdout.splitlines() if "eigenvalues, baseline: top" in x)
    top, bottom = line.split(": top ")[1].split("; bottom ")
    assert len(top.split(", ")) == 3 and len(bottom.split(", ")) == 2


def test_csv_with_eigenvalue_sidecar(ckpt, tmp_path):
    path = tmp_path / "res.csv"
    r = invoke("spectrum", ckpt, "--format", "csv", "-o", path, "--top", "2", "--bottom", "2",
               "--per-layer", "--dtype", "float64")
    assert r.exit_code == 0, r.output
    import pandas as pd

    rows = pd.read_csv(path)
    assert rows["setting"].tolist()[0] == "baseline"
    assert any(s.startswith("layer:") for s in rows["setting"])
    eig = pd.read_csv(tmp_path / "res_eigenvalues.csv")
    assert set(eig["end"]) == {"top", "bottom"}


def test_trace_density_and_exact(ckpt, tmp_path):
    dens = tmp_path / "dens.csv"
    r = invoke("spectrum", ckpt, "--format", "json", "--dtype", "float64", "--trace",
               "--probes", "30", "--density", "--density-output", dens, "--exact", "--top", "3")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert res["trace_stderr"] == 0.0 and res["nullity"] is not None
    assert dens.exists()


def test_ggn_is_positive_semidefinite(ckpt):
    r = invoke("spectrum", ckpt, "--curvature", "ggn", "--format", "json", "--dtype", "float64",
               "--top", "2", "--bottom", "2")
    res = json.loads(r.stdout)["results"][0]
    assert res["curvature"] == "ggn"
    assert res["lambda_min"] > -1e-8 * res["lambda_max"]


def test_damping_shifts_the_spectrum(ckpt):
    def top(*extra):
        r = invoke("spectrum", ckpt, "--format", "json", "--dtype", "float64", "--top", "1",
                   "--bottom", "0", *extra)
        return json.loads(r.stdout)["results"][0]["lambda_max"]

    assert top("--damping", "0.5") == pytest.approx(top() + 0.5, rel=1e-6)


def test_yaml_config_and_override(ckpt, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"checkpoint: {ckpt}\ntop: 2\nbottom: 0\ndtype: float64\n")
    r = invoke("spectrum", "--config", cfg, "--format", "json", "--top", "1")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["results"][0]["eigenvalues_top"]) == 1
    cfg.write_text(f"checkpoint: {ckpt}\ntopp: 2\n")
    r = invoke("spectrum", "--config", cfg)
    assert r.exit_code == 2 and "topp" in r.output


def test_demo_runs_on_its_embedded_default():
    r = invoke("demo", "--steps", "30")
    assert r.exit_code == 0, r.output
    assert "baseline" in r.stdout


# -- bad input: one line, the right exit code, no traceback ---------------------------------------
def _one_line_error(r, code, *words):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    text = r.output.strip()
    assert text.startswith("error:"), text
    for w in words:
        assert w in text, text


def test_missing_checkpoint(tmp_path):
    _one_line_error(invoke("spectrum", tmp_path / "nope.pt"), 2, "does not exist")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_text("hello")
    _one_line_error(invoke("spectrum", p), 2, "junk.pt")


def test_weights_that_do_not_fit(user_files):
    tmp, *_ = user_files
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp / "bad.pt")
    r = invoke("spectrum", "--model", "mymodels:make", "--weights", "bad.pt", "--data", "d.npz")
    _one_line_error(r, 2, "does not fit")


def test_data_that_do_not_fit_the_model(user_files):
    tmp, *_ = user_files
    np.savez(tmp / "wide.npz", X=np.zeros((5, 7)), y=np.zeros(5, dtype=int))
    r = invoke("spectrum", "--model", "mymodels:make", "--weights", "w.pt", "--data", "wide.npz")
    _one_line_error(r, 1, "do not fit the model")


def test_labels_out_of_range(user_files):
    tmp, *_ = user_files
    np.savez(tmp / "labels.npz", X=np.zeros((12, 4)), y=np.array([0, 1, 2, 5] * 3))
    r = invoke("spectrum", "--model", "mymodels:make", "--weights", "w.pt", "--data", "labels.npz",
               "--loss", "cross-entropy")
    _one_line_error(r, 1, "labels")


def test_nan_weights(user_files):
    tmp, model, *_ = user_files
    sd = model.state_dict()
    sd["a.weight"][0, 0] = float("nan")
    torch.save(sd, tmp / "nan.pt")
    r = invoke("spectrum", "--model", "mymodels:make", "--weights", "nan.pt", "--data", "d.npz")
    _one_line_error(r, 1, "NaN")


def test_unknown_option_value(ckpt):
    r = invoke("spectrum", ckpt, "--curvature", "fisher")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_pickled_module_needs_trust(user_files):
    tmp, model, *_ = user_files
    import sys

    sys.path.insert(0, str(tmp))
    try:
        import mymodels

        torch.save(mymodels.make(), tmp / "full.pt")
        r = invoke("spectrum", "full.pt", "--data", "d.npz", "--top", "1", "--bottom", "0")
        _one_line_error(r, 2, "--trust-checkpoint")
        r = invoke("spectrum", "full.pt", "--data", "d.npz", "--top", "1", "--bottom", "0",
                   "--trust-checkpoint", "--format", "json")
        assert r.exit_code == 0, r.output
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("mymodels", None)


def test_debug_shows_the_traceback(tmp_path):
    r = invoke("--debug", "spectrum", tmp_path / "nope.pt")
    assert r.exit_code != 0 and r.exception is not None


def test_failed_write_keeps_the_old_file(ckpt, tmp_path, monkeypatch):
    path = tmp_path / "keep.json"
    path.write_text("precious")
    import condlab.files as files

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", boom)
    r = invoke("spectrum", ckpt, "--format", "json", "-o", path, "--top", "1", "--bottom", "0")
    _one_line_error(r, 2, "--force")  # an existing file is only replaced when asked
    r = invoke("spectrum", ckpt, "--format", "json", "-o", path, "--top", "1", "--bottom", "0",
               "--force")
    assert r.exit_code == 1
    assert path.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_train_refuses_to_overwrite(ckpt, tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: {name: linear}\ndata: iris\nsteps: 2\n")
    r = invoke("train", cfg, "--out", ckpt)
    _one_line_error(r, 2, "--force")


def test_density_plot(ckpt, tmp_path):
    pytest.importorskip("matplotlib")
    png, dens = tmp_path / "d.png", tmp_path / "d.csv"
    r = invoke("spectrum", ckpt, "--density", "--density-output", dens, "--plot", png,
               "--top", "1", "--bottom", "0", "--dtype", "float64")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import pandas as pd

    grid = pd.read_csv(dens)
    assert list(grid.columns) == ["setting", "eigenvalue", "density"]
    x, y = grid["eigenvalue"].to_numpy(), grid["density"].to_numpy()
    assert abs(np.trapezoid(y, x) - 1) < 0.05  # a density integrates to one


def test_plot_needs_density(ckpt, tmp_path):
    r = invoke("spectrum", ckpt, "--plot", tmp_path / "x.png")
    _one_line_error(r, 2, "--density")


def test_list_params_shows_what_params_selects_and_measures_nothing(monkeypatch):
    import condlab.pipeline

    monkeypatch.setattr(condlab.pipeline, "run_spectrum", None)  # must not be reached
    r = invoke("spectrum", "--model", "mlp", "--data", "iris", "--list-params", "--params", "0.*")
    assert r.exit_code == 0, r.output
    rows = {line.split()[1]: line.split()[-2] for line in r.stdout.splitlines()
            if line.startswith("│ ") and "." in line.split()[1]}
    assert rows == {"0.weight": "yes", "0.bias": "yes", "2.weight": "no", "2.bias": "no"}


def test_list_models_shows_their_arguments():
    r = invoke("list", "models")
    assert r.exit_code == 0 and "widths=[32]" in r.stdout and "d_model=16" in r.stdout


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch):
    import condlab.pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(condlab.pipeline, "run_spectrum", interrupted)
    r = invoke("spectrum", "--model", "linear", "--data", "iris")
    assert r.exit_code == 130 and r.output.strip() == "error: interrupted (Ctrl-C)", r.output
