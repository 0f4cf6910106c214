"""What a config can say: true weights of linreg, a model at W = 0, the normalization's eps,
long data specs, ``threads`` in a ``--config`` file."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from condlab.cli import app
from condlab.errors import UsageError
from condlab.load.models import build_model

runner = CliRunner()

# multinomial logistic regression at W = 0, K = 2 classes, on features whitened to covariance
# diag(4, 1, 1/4) with mean 0: H = (1/K)(I - 11^T/K) (x) Z^T Z / n with Z = [X, 1], so its
# eigenvalues are 1/2 * {4, 1, 1/4, 1} and 0 (d + 1 = 4 times: the softmax shift)
W0 = """\
model: linear
model_args: {init: zeros}
data: "logreg:n=64,d=3,eigs=[4,1,0.25],exact=true,classes=2"
dtype: float64
threads: 1
top: 4
bottom: 4
exact: true
"""


def _spectrum(tmp_path, text, *args):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(text)
    return runner.invoke(app, ["spectrum", "--config", str(cfg), "--format", "json", *args])


def test_curvature_at_zero_weights_from_a_config_alone(tmp_path, monkeypatch):
    import condlab.pipeline

    threads = []
    real = condlab.pipeline.set_threads
    monkeypatch.setattr(condlab.pipeline, "set_threads", lambda t, loaded=None: (threads.append(t), real(t, loaded)))
    r = _spectrum(tmp_path, W0)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert res["eigenvalues_top"] == pytest.approx([2.0, 0.5, 0.5, 0.125], rel=1e-10)
    assert max(abs(x) for x in res["eigenvalues_bottom"]) < 1e-12
    assert res["nullity"] == 4
    assert threads == [1]  # the file's threads
    r = _spectrum(tmp_path, W0, "--threads", "2")  # the command line wins
    assert r.exit_code == 0, r.output
    assert threads[-1] == 2
    r = _spectrum(tmp_path, W0.replace("threads: 1", "threads: 0"))
    assert r.exit_code == 2 and "threads" in r.output and "Traceback" not in r.output


def test_zero_init_keeps_normalization_layers_at_identity():
    m = build_model({"name": "mlp", "widths": [4], "norm": "batch", "init": "zeros"}, [3], 2, seed=0)
    for name, p in m.named_parameters():
        expected = 1.0 if name == "1.weight" else 0.0  # BatchNorm's scale
        assert torch.all(p == expected), name
    with pytest.raises(UsageError, match="init='ones' must be one of random, zeros"):
        build_model({"name": "linear", "init": "ones"}, [3], 2)


@pytest.mark.parametrize("norm, cls", [("batch", torch.nn.BatchNorm1d), ("layer", torch.nn.LayerNorm)])
def test_normalization_eps_is_a_model_option(norm, cls):
    m = build_model({"name": "mlp", "widths": [4], "norm": norm, "norm_eps": "1e-3"}, [3], 2)
    (layer,) = [x for x in m if isinstance(x, cls)]
    assert layer.eps == 1e-3
    cnn = build_model({"name": "cnn", "channels": [2], "norm": "batch", "norm_eps": 0.5}, [1, 4, 4], 2)
    assert [x.eps for x in cnn if isinstance(x, torch.nn.BatchNorm2d)] == [0.5]
    with pytest.raises(UsageError, match="norm_eps=0 must be a number > 0"):
        build_model({"name": "mlp", "norm": norm, "norm_eps": 0}, [3], 2)


def test_a_compare_config_sets_true_weights_and_zero_init():
    """linreg's w* and W = 0 at the start, in a compare config. Features whitened to covariance
    C = diag(4, 1, 1/4), y = X w* exactly: the loss mean((x^T w - y)^2) is d^T C d with
    d = w - w*, so 8.0625 at w = 0, and one gradient step of lr 0.1 leaves d = (0.2 C - I) w*."""
    from condlab.compare import compare, parse_config

    w, c = [1.0, -2.0, 0.5], [4.0, 1.0, 0.25]
    cfg = parse_config({
        "model": {"name": "linear", "bias": False, "init": "zeros"},
        "data": {"name": "linreg", "n": 64, "d": 3, "eigs": c, "exact": True, "noise": 0, "w": w},
        "test_fraction": 0, "steps": 1, "optimizers": [{"name": "sgd", "lr": 0.1}],
    })
    rows = compare(cfg).rows
    assert rows[0]["train_loss"] == pytest.approx(sum(ci * wi**2 for ci, wi in zip(c, w)), rel=1e-12)
    after = sum(ci * (0.2 * ci - 1) ** 2 * wi**2 for ci, wi in zip(c, w))
    assert rows[1]["train_loss"] == pytest.approx(after, rel=1e-12)


def test_the_inserted_normalization_eps_is_an_option(tmp_path):
    text = ("model: mlp\nmodel_args: {widths: [4]}\ndata: iris\ndtype: float64\ntop: 1\nbottom: 0\n"
            "norm: [batch]\nnorm_eps: 0.5\n")
    r = _spectrum(tmp_path, text)
    assert r.exit_code == 0, r.output
    (normed,) = [x for x in json.loads(r.stdout)["results"] if x["setting"] == "batch"]
    assert any("inserted BatchNorm (eps=0.5)" in n for n in normed["details"]["notes"]), normed["details"]
    r = _spectrum(tmp_path, text.replace("0.5", "0"))
    assert r.exit_code == 2 and "norm_eps" in r.output
