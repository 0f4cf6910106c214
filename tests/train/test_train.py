"""Losses, optimizers, the training loop and train configs."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from condlab.errors import CondlabError, UsageError
from condlab.load.data import Dataset, load_dataset
from condlab.load.models import build_model
from condlab.train import (
    OPTIMIZERS,
    build_optimizer,
    loss_fn,
    resolve_hparams,
    train,
    train_from_config,
)

# -- losses ----------------------------------------------------------------------------------


def test_cross_entropy_is_the_mean_negative_log_softmax():
    out = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    p = torch.softmax(out, 1)
    expected = -(math.log(p[0, 0]) + math.log(p[1, 2])) / 2
    assert loss_fn("cross-entropy")(out, y).item() == pytest.approx(expected, rel=1e-12)


def test_mse_is_the_mean_over_all_output_elements():
    out = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    assert loss_fn("mse")(out, y).item() == pytest.approx((1 + 0 + 0 + 16) / 4)
    col = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    assert loss_fn("mse")(col, torch.tensor([0.0, 1.0])).item() == pytest.approx((1 + 4) / 2)
    # class labels against [B, C] outputs are one-hot encoded
    assert loss_fn("mse")(out, torch.tensor([1, 0])).item() == pytest.approx((1 + 1 + 4 + 25) / 4)


def test_loss_errors():
    with pytest.raises(UsageError, match="cross-entropy, mse"):
        loss_fn("hinge")
    with pytest.raises(UsageError, match="integer class labels"):
        loss_fn("cross-entropy")(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(UsageError, match="do not fit outputs"):
        loss_fn("mse")(torch.zeros(2, 3), torch.zeros(2, 2))


# -- optimizers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_builds_with_defaults(name):
    p = nn.Parameter(torch.ones(3))
    opt = build_optimizer(name, [p], {"lr": 0.5})
    assert opt.param_groups[0]["lr"] == 0.5
    (p**2).sum().backward()
    opt.step()
    assert (p < 1).all()


def test_momentum_defaults_and_resolved_hparams():
    opt = build_optimizer("momentum", [nn.Parameter(torch.ones(1))], None)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert resolve_hparams("adam", {"betas": (0.8, 0.9)})["betas"] == [0.8, 0.9]
    assert build_optimizer("adam", [nn.Parameter(torch.ones(1))], {"betas": [0.8, 0.9]}).param_groups[0]["betas"] == (0.8, 0.9)


@pytest.mark.parametrize(
    "name, hparams, needle",
    [
        ("lbfgs", {}, "sgd, momentum, adam, adamw, rmsprop, adagrad"),
        ("adam", {"learning_rate": 1}, "accepts lr, betas, eps, weight_decay, amsgrad"),
        ("sgd", {"lr": "big"}, "lr='big'"),
        ("sgd", {"lr": 0}, "lr=0"),
        ("adam", {"betas": [0.9]}, "two numbers"),
        ("adamw", {"amsgrad": 1}, "true or false"),
        ("sgd", {"nesterov": True}, "Nesterov"),
    ],
)
def test_bad_optimizer_requests(name, hparams, needle):
    with pytest.raises(UsageError) as info:
        build_optimizer(name, [nn.Parameter(torch.ones(1))], hparams)
    assert needle in str(info.value)


# -- the loop --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_samples=512)


def _train(ds, seed=0, **kw):
    model = build_model({"name": "mlp", "widths": [16]}, ds.input_shape, ds.num_outputs, seed=seed)
    args = {"loss": "cross-entropy", "optimizer": "adam", "hparams": {"lr": 1e-2}, "steps": 30,
            "batch_size": 64, "seed": seed, **kw}
    return train(model, ds, **args)


def test_training_reduces_the_loss(digits):
    res = _train(digits, steps=60)
    assert len(res.history) == 60 and [h["step"] for h in res.history] == list(range(1, 61))
    assert res.final_loss < 0.3 * res.history[0]["loss"]
    assert res.model.training  # the caller's mode is restored


def test_training_is_reproducible(digits):
    a, b, c = _train(digits), _train(digits), _train(digits, seed=1)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert a.history == b.history and a.history != c.history


def test_epochs_visit_every_sample_once():
    n, B = 10, 4
    ds = Dataset(X=torch.arange(n, dtype=torch.float32)[:, None], y=torch.zeros(n), task="regression",
                 num_classes=None, name="index", spec={})
    seen = []

    class Recorder(nn.Linear):
        def forward(self, x):
            seen.append(x[:, 0].long().tolist())
            return super().forward(x)

    train(Recorder(1, 1), ds, loss="mse", optimizer="sgd", hparams={}, steps=6, batch_size=B, seed=0)
    batches = seen[:6]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(batches[:3], [])) == list(range(n)) and sorted(sum(batches[3:], [])) == list(range(n))
    assert sum(batches[:3], []) != sum(batches[3:], [])  # reshuffled each epoch


def test_full_batch_and_callback(digits):
    calls = []
    res = _train(digits, batch_size=None, steps=5, callback=lambda t, m, o, lv: calls.append((t, lv)))
    assert [t for t, _ in calls] == [1, 2, 3, 4, 5]
    assert [lv for _, lv in calls] == [h["loss"] for h in res.history]


def test_divergence_names_the_step_and_the_fix():
    ds = load_dataset("linreg:n=64,d=4,mean=100")
    model = build_model({"name": "linear"}, ds.input_shape, 1, seed=0)
    with pytest.raises(CondlabError) as info:
        train(model, ds, loss="mse", optimizer="sgd", hparams={"lr": 10.0}, steps=200, batch_size=None, seed=0)
    msg = str(info.value)
    assert "at step" in msg and "lower the learning rate (try lr=1)" in msg and "\n" not in msg


def test_train_rejects_bad_requests(digits):
    with pytest.raises(UsageError, match="regression"):
        _train(load_dataset("diabetes"), loss="cross-entropy")
    with pytest.raises(UsageError, match="steps"):
        _train(digits, steps=-1)
    with pytest.raises(CondlabError, match="do not fit the model"):
        train(build_model({"name": "linear"}, (5,), 10), digits, loss="cross-entropy", optimizer="sgd",
              hparams={}, steps=1, batch_size=None, seed=0)


def test_the_digits_benchmark_is_fast(digits):
    """The reference run: MLP 64-32-10 tanh, 300 full-batch Adam steps, lr 1e-2, 512 samples."""
    start = time.perf_counter()
    res, ckpt = train_from_config({
        "model": {"name": "mlp", "widths": [32]}, "data": "digits", "max_samples": 512,
        "optimizer": {"name": "adam", "lr": 1e-2}, "steps": 300, "seed": 0,
    })
    assert time.perf_counter() - start < 15
    assert res.final_loss < 0.02
    assert ckpt["model"]["widths"] == [32] and ckpt["data"] == {"name": "digits", "max_samples": 512}
    assert ckpt["loss"] == "cross-entropy" and ckpt["input_shape"] == [64] and ckpt["num_outputs"] == 10
    assert ckpt["optimizer"]["hparams"]["lr"] == 0.01 and ckpt["train"]["steps"] == 300
    assert ckpt["train"]["final_loss"] == res.final_loss and len(ckpt["train"]["losses"]) == 300


def test_config_regression_in_float64():
    steps = []
    res, ckpt = train_from_config({
        "model": "linear", "data": "linreg:n=128,d=4,kappa=10,noise=0.01", "dtype": "float64",
        "optimizer": {"name": "momentum", "lr": 0.1}, "steps": 200, "batch_size": 32,
    }, callback=lambda t, *rest: steps.append(t))
    assert steps == list(range(1, 201))
    assert ckpt["loss"] == "mse" and ckpt["state_dict"]["0.weight"].dtype == torch.float64
    assert res.final_loss < 1e-3


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"model": "mlp", "data": "iris", "epochs": 3}, "'epochs'"),
        ({"data": "iris"}, "'model'"),
        ({"model": "mlp"}, "'data'"),
        ({"model": "mlp", "data": "iris", "optimizer": {"name": "adam", "momentum": 0.9}}, "accepts lr"),
        ({"model": "mlp", "data": "iris", "optimizer": {"lr": 0.1}}, "'name'"),
        ({"model": "mlp", "data": "iris", "dtype": "float16"}, "float32, float64"),
        ({"model": "mlp", "data": "iris", "seed": "zero"}, "seed"),
        ({"model": {"name": "mlp", "width": 3}, "data": "iris"}, "'width'"),
        ({"model": "mlp", "data": "diabetes", "loss": "cross-entropy"}, "regression"),
    ],
)
def test_bad_configs(cfg, needle):
    with pytest.raises(UsageError) as info:
        train_from_config(cfg)
    assert needle in str(info.value) and "\n" not in str(info.value)
