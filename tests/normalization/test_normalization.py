"""Normalization as a reparameterization: exact folds and insertions, the linear least squares
closed forms of research.md, train-mode BatchNorm curvature, and the predicted null space.

Everything in float64 against dense ground truth.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from condlab.errors import UsageError
from condlab.normalization import (
    ChannelPadConv2d,
    apply_normalization,
    find_targets,
    measured_nullity,
    positive_condition_number,
    predicted_nullity,
    scale_invariant_groups,
)
from condlab.operators import GGNOperator, HessianOperator, dense_ggn, dense_hessian
from condlab.problem import Problem

DT = torch.float64


def _data(n, shape, scale, mean, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DT) * scale + mean


def _kappa(M):
    ev = torch.linalg.eigvalsh(M)
    return float(ev[-1] / ev[0])


def _max_diff(a, b):
    return float((a - b).abs().max())


# -- input standardization folded into the first layer -------------------------------------------
_ill = {
    "scale": torch.tensor([1.0, 10.0, 100.0], dtype=DT),
    "mean": torch.tensor([5.0, -3.0, 50.0], dtype=DT),
}
_chan = {
    "scale": torch.tensor([3.0, 0.1], dtype=DT).view(2, 1, 1),
    "mean": torch.tensor([4.0, -2.0], dtype=DT).view(2, 1, 1),
}

FOLD_CASES = {  # name -> (model factory, sample shape, data scale/mean)
    "linear": (lambda: nn.Linear(3, 2), (3,), _ill),
    "mlp": (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)), (3,), _ill),
    "flatten-mlp": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(72, 4), nn.ReLU(), nn.Linear(4, 2)),
        (2, 6, 6),
        _chan,
    ),
    "cnn": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)),
        (2, 6, 6),
        _chan,
    ),
    "cnn-zero-pad": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(108, 2)
        ),
        (2, 6, 6),
        _chan,
    ),
    "cnn-same-pad": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding="same"), nn.Flatten(), nn.Linear(108, 2)),
        (2, 6, 6),
        _chan,
    ),
    "cnn-reflect-pad": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(108, 2)
        ),
        (2, 6, 6),
        _chan,
    ),
    "cnn-groups-stride": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, groups=2), nn.Flatten(), nn.Linear(16, 2)
        ),
        (2, 6, 6),
        _chan,
    ),
    "unflatten-cnn": (
        lambda: nn.Sequential(
            nn.Unflatten(1, (1, 4, 4)),
            nn.Conv2d(1, 2, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32, 2),
        ),
        (16,),
        {"scale": 5.0, "mean": 3.0},
    ),
    "conv1d": (
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=2), nn.Flatten(), nn.Linear(24, 1)),
        (2, 6),
        {
            "scale": torch.tensor([[2.0], [0.5]], dtype=DT),
            "mean": torch.tensor([[1.0], [-7.0]], dtype=DT),
        },
    ),
}


@pytest.mark.parametrize("name", FOLD_CASES)
def test_input_fold_is_exact(name):
    factory, shape, moments = FOLD_CASES[name]
    torch.manual_seed(1)
    model = factory().double()
    before = copy.deepcopy(model.state_dict())
    X = _data(40, shape, **moments)
    res = apply_normalization(model, X, "input")
    with torch.no_grad():
        ref = model(X)
        diff = _max_diff(res.model(res.transform(X)), ref)
    assert diff < 1e-12 * max(1.0, float(ref.abs().max()))
    assert res.function_change == pytest.approx(diff, abs=1e-15)
    assert res.params_added == 0 and res.predicted_nullity == 0
    # the transform standardizes what the first layer sees, per feature (Linear) or channel (Conv)
    Xs = res.transform(X)
    layer = res.model.get_submodule(res.first_layer)
    if isinstance(layer, nn.Linear):
        Z = Xs.reshape(len(X), -1)
    else:  # [N, C, positions] -> [N * positions, C]
        Z = Xs.reshape(len(X), layer.in_channels, -1).transpose(1, 2).reshape(-1, layer.in_channels)
    assert torch.allclose(Z.mean(0), torch.zeros((), dtype=DT), atol=1e-12)
    assert torch.allclose(Z.std(0, correction=0), torch.ones((), dtype=DT), atol=1e-12)
    # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_zero_padding_is_folded_by_padding_with_minus_mu_over_s():
    """A zero-padded first conv keeps the function only because its border holds -mu/s: pad with
    zeros instead (the naive fold) and the outputs change."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(108, 2)
    ).double()
    X = _data(30, (2, 6, 6), **_chan)
    res = apply_normalization(model, X, "input")
    conv = res.model[0]
    assert isinstance(conv, ChannelPadConv2d) and conv.padding == (0, 0)
    mu_c, s_c = res.mu[:, 0, 0], res.s[:, 0, 0]
    assert torch.allclose(conv.pad_value, -mu_c / s_c)
    assert res.function_change < 1e-12
    naive = copy.deepcopy(res.model)
    naive[0].pad_value.zero_()
    with torch.no_grad():
        assert _max_diff(naive(res.transform(X)), model(X)) > 1e-3
    # the folded model still works under the Problem's functional calls (buffer in `fixed`)
    y = torch.randn(30, 2, dtype=DT)
    p_old = Problem(model, [(X, y)], "mse", dtype=DT)
    p_new = Problem(res.model, [(res.transform(X), y)], "mse", dtype=DT)
    assert float(p_new.loss()) == pytest.approx(float(p_old.loss()), rel=1e-12)
    v = torch.randn(p_new.n_params, dtype=DT)
    assert torch.allclose(HessianOperator(p_new) @ v, dense_hessian(p_new) @ v, atol=1e-10)


def test_constant_features_are_centred_not_divided_by_zero():
    X = _data(20, (4,), 2.0, 1.0)
    X[:, 2] = 7.5
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    res = apply_normalization(model, X, "input")
    assert res.constant_features == (2,)
    assert res.s[2] == 1.0 and res.mu[2] == 7.5
    Xs = res.transform(X)
    assert torch.isfinite(Xs).all() and torch.equal(Xs[:, 2], torch.zeros(20, dtype=DT))
    assert res.function_change < 1e-12
    assert any("constant" in n for n in res.notes)


def test_input_fold_errors():
    X = _data(10, (3,), 1.0, 2.0)
    with pytest.raises(UsageError, match="no bias"):
        apply_normalization(nn.Linear(3, 1, bias=False).double(), X, "input")
    # centred data need no bias
    Xc = X - X.mean(0)
    assert (
        apply_normalization(nn.Linear(3, 1, bias=False).double(), Xc, "input").function_change
        < 1e-12
    )
    with pytest.raises(UsageError, match="rearrangement"):
        apply_normalization(nn.Sequential(nn.Tanh(), nn.Linear(3, 1)).double(), X, "input")
    with pytest.raises(UsageError, match="Linear or Conv"):
        apply_normalization(nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 1)).double(), X, "input")
    with pytest.raises(UsageError, match="no module"):
        apply_normalization(nn.Linear(3, 1).double(), X, "input", first_layer="fc")
    with pytest.raises(UsageError, match="unknown normalization"):
        apply_normalization(nn.Linear(3, 1).double(), X, "weight")


def test_custom_model_first_layer_found_by_execution_order():
    class Net(nn.Module):  # registers the head first; the input goes through `inp` first
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 1)
            self.inp = nn.Linear(3, 4)

        def forward(self, x):
            return self.head(torch.tanh(self.inp(x.reshape(len(x), 3))))

    X = _data(25, (3, 1), 4.0, -2.0)
    res = apply_normalization(Net().double(), X, "input")
    assert res.first_layer == "inp" and res.function_change < 1e-12
    assert res.mu.shape == (3, 1)


# -- linear least squares: research.md's closed forms ----------------------------------------------
def _hessian(model, X, y):
    return dense_hessian(Problem(model, [(X, y)], "mse", dtype=DT))


def test_linear_regression_condition_after_standardization():
    """Ill-scaled, non-centred features: kappa of the folded model's Hessian = kappa([Xs, 1]^T [Xs, 1])."""
    N = 200
    X = _data(N, (3,), **_ill)
    y = X @ torch.tensor([1.0, -0.5, 0.01], dtype=DT) + 0.1 * torch.randn(N, dtype=DT)
    model = nn.Linear(3, 1).double()
    res = apply_normalization(model, X, "input")
    Xs = res.transform(X)
    H = _hessian(res.model, Xs, y)
    Z = torch.cat([Xs, torch.ones(N, 1, dtype=DT)], 1)
    assert torch.allclose(H, 2 / N * Z.T @ Z, rtol=1e-12, atol=1e-13)  # mse without 1/2
    expected = _kappa(Z.T @ Z)
    assert _kappa(H) == pytest.approx(expected, rel=1e-10)
    assert _kappa(_hessian(model, X, y)) > 1e3 * expected
    assert res.function_change < 1e-9


def test_matches_standard_scaler_in_a_float64_run_of_a_float32_model():
    """A float32 model run in float64 on ill-scaled, non-centred data."""
    from sklearn.preprocessing import StandardScaler

    X = (
        _data(
            300,
            (3,),
            torch.tensor([1.0, 1e3, 1e5], dtype=DT),
            torch.tensor([1e3, -50.0, 1e4], dtype=DT),
        )
    ).float()
    y = torch.randn(300)
    res = apply_normalization(nn.Linear(3, 1), X, "input", dtype=DT)
    assert res.model.weight.dtype == DT and res.function_change < 1e-9
    Xs = res.transform(X.double())
    assert torch.allclose(
        Xs, torch.from_numpy(StandardScaler().fit_transform(X.double().numpy())), atol=1e-12
    )
    Z = torch.cat([Xs, torch.ones(300, 1, dtype=DT)], 1)
    p = Problem(res.model, [(Xs[:100], y[:100]), (Xs[100:], y[100:])], "mse", dtype=DT)
    assert _kappa(dense_hessian(p)) == pytest.approx(_kappa(Z.T @ Z), rel=1e-10)
    assert json.loads(json.dumps(res.summary()))["kind"] == "input"


def test_one_feature_closed_form():
    """mu = 10, s = 1: kappa = (T + sqrt(T^2 - 4 s^2)) / (T - sqrt(T^2 - 4 s^2)), T = 1 + mu^2 + s^2."""
    mu, s = 10.0, 1.0
    X = torch.tensor([[mu - s], [mu + s]], dtype=DT).repeat(
        8, 1
    )  # sample mean 10, population std 1
    y = torch.randn(16, dtype=DT)
    T = 1 + mu**2 + s**2
    r = math.sqrt(T**2 - 4 * s**2)
    closed = (T + r) / (T - r)
    assert closed == pytest.approx(10402, abs=0.5)
    model = nn.Linear(1, 1).double()
    assert _kappa(_hessian(model, X, y)) == pytest.approx(closed, rel=1e-10)
    res = apply_normalization(model, X, "input")
    assert float(res.mu) == mu and float(res.s) == s
    assert _kappa(_hessian(res.model, res.transform(X), y)) == pytest.approx(1.0, abs=1e-12)


# -- BatchNorm / LayerNorm insertion -------------------------------------------------------------
def _mlp():
    return nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.0), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)
    )


def _cnn():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


@pytest.mark.parametrize("factory,shape", [(_mlp, (3,)), (_cnn, (2, 6, 6))])
def test_batchnorm_insertion_keeps_outputs_in_eval_mode(factory, shape):
    torch.manual_seed(3)
    model = factory().double()
    X = _data(48, shape, 3.0, 1.5)
    batches = [(X[:24], None), (X[24:], None)]
    res = apply_normalization(model, X, "batch", batches=batches)
    with torch.no_grad():
        assert _max_diff(res.model(X), model(X)) < 1e-12
    assert res.function_change < 1e-12
    bns = [m for m in res.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(bns) == 2 and res.params_added == sum(2 * bn.num_features for bn in bns)
    assert list(res.inserted_at) == (["1", "5"] if factory is _mlp else ["1", "4"])
    # running statistics are the data's mean and population variance of the first layer's outputs
    with torch.no_grad():
        z = layers[0](X).transpose(0, 1).reshape(bns[0].num_features, -1)
    assert torch.allclose(bns[0].running_mean, z.mean(1), atol=1e-12)
    assert torch.allclose(bns[0].running_var, z.var(1, correction=0), rtol=1e-12)
    # with each batch's statistics the function changes, and that is reported
    assert res.function_change_batch_mode > 1e-4
    assert res.predicted_nullity == predicted_nullity(res.model) > 0


def test_layernorm_insertion_reports_the_change():
    torch.manual_seed(4)
    model = _mlp().double()
    X = _data(64, (3,), 2.0, 0.5)
    res = apply_normalization(model, X, "layer")
    with torch.no_grad():
        diff = _max_diff(res.model(X), model(X))
    assert res.function_change == pytest.approx(diff, rel=1e-12) and diff > 1e-6
    assert sum(isinstance(m, nn.LayerNorm) for m in res.model.modules()) == 2
    # the first LayerNorm's affine is the per-unit least-squares fit of z on u = LN(z) without
    # affine: the residual is orthogonal to u and to 1 over the data (the normal equations)
    ln = res.model[1]
    with torch.no_grad():
        z = model[0](X)
        u = torch.nn.functional.layer_norm(z, (4,), eps=ln.eps)
        r = z - (ln.weight * u + ln.bias)
    assert torch.allclose((r * u).mean(0), torch.zeros(4, dtype=DT), atol=1e-12)
    assert torch.allclose(r.mean(0), torch.zeros(4, dtype=DT), atol=1e-12)
    # and it does better than LayerNorm's default affine (1, 0)
    plain = copy.deepcopy(res.model)
    for m in plain.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
    with torch.no_grad():
        assert _max_diff(plain(X), model(X)) > diff
    # GroupNorm(1, C) after a conv
    cnn = apply_normalization(_cnn().double(), _data(16, (2, 6, 6), 1.0, 0.0), "layer")
    assert [type(cnn.model.get_submodule(n)).__name__ for n in cnn.inserted_at] == ["GroupNorm"] * 2


def test_layernorm_exact_when_samples_share_mean_and_spread():
    """z = (x1, -x1) with x1 = +-1: every sample has mean 0 and spread 1 across units."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Tanh(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    X = torch.tensor([[1.0, 0.3], [-1.0, 2.0], [1.0, -1.0], [-1.0, 0.0]], dtype=DT)
    assert apply_normalization(model, X, "layer").function_change < 1e-12


def test_insertion_needs_a_sequential():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return torch.tanh(self.fc(x))

    with pytest.raises(UsageError, match="Sequential"):
        apply_normalization(Net().double(), _data(8, (3,), 1.0, 0.0), "batch")
    assert find_targets(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))) == []


def test_built_in_models_round_trip():
    """Inserting into the built-in mlp gives the parameter names of an mlp built with the norm."""
    from condlab.load.models import build_model

    plain = build_model({"name": "mlp", "widths": [5]}, [4], 2, seed=0).double()
    normed = build_model({"name": "mlp", "widths": [5], "norm": "batch"}, [4], 2, seed=0).double()
    res = apply_normalization(plain, _data(32, (4,), 1.0, 0.0), "batch")
    assert [n for n, _ in res.model.named_parameters()] == [n for n, _ in normed.named_parameters()]
    assert scale_invariant_groups(res.model) == scale_invariant_groups(normed)


# -- train-mode BatchNorm: the exact Hessian of the mean loss over fixed batches -------------------
def _bn_problem(eps=1e-5, bn_mode="batch", seed=5):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X = _data(40, (3,), 2.0, 1.0, seed=seed)
    y = torch.randn(40, 2, dtype=DT)
    res = apply_normalization(model, X, "batch", eps=eps)
    batches = [(X[:16], y[:16]), (X[16:], y[16:])]  # unequal sizes: weights 16/40, 24/40
    return Problem(res.model, batches, "mse", dtype=DT, bn_mode=bn_mode), batches, eps


def _manual_loss(theta, problem, batches, eps):
    """The same loss with BatchNorm written out: per-batch mean and population variance."""
    P = problem.spec.unflatten(theta)
    total = 0.0
    for X, y in batches:
        z = X @ P["0.weight"].T + P["0.bias"]
        u = (z - z.mean(0)) / torch.sqrt(z.var(0, correction=0) + eps)
        h = torch.tanh(P["1.weight"] * u + P["1.bias"])
        out = h @ P["3.weight"].T + P["3.bias"]
        total = total + len(X) / 40 * ((out - y) ** 2).mean()
    return total


def test_train_mode_hessian_matches_batch_statistics():
    p, batches, eps = _bn_problem()
    assert float(p.loss()) == pytest.approx(
        float(_manual_loss(p.theta, p, batches, eps)), rel=1e-13
    )
    H = dense_hessian(p)
    H_manual = torch.autograd.functional.hessian(
        lambda t: _manual_loss(t, p, batches, eps), p.theta
    )
    assert torch.allclose(H, H_manual, atol=1e-10)
    assert torch.allclose(HessianOperator(p).to_dense(), H, atol=1e-10)
    # finite differences: the gradient against the loss, the Hessian against the gradient
    h, g = 1e-6, p.gradient()
    E = torch.eye(p.n_params, dtype=DT)
    fd_g = torch.stack([(p.loss(p.theta + h * e) - p.loss(p.theta - h * e)) / (2 * h) for e in E])
    assert torch.allclose(g, fd_g, atol=1e-8)
    fd_H = torch.stack(
        [(p.gradient(p.theta + h * e) - p.gradient(p.theta - h * e)) / (2 * h) for e in E], 1
    )
    assert torch.allclose(H, fd_H, atol=1e-6)
    # and it is not the eval-mode Hessian
    p_eval, _, _ = _bn_problem(bn_mode="eval")
    assert _max_diff(dense_hessian(p_eval), H) > 1e-3


# -- the null space that normalization creates ------------------------------------------------------
@pytest.mark.parametrize("bn_mode,ggn,hessian", [("batch", 8, 4), ("eval", 8, 0)])
def test_predicted_nullity_batchnorm(bn_mode, ggn, hessian):
    """Linear(3, 4) -> BN -> tanh -> Linear(4, 2). Batch statistics: bias shifts (exact, 4) and row
    scalings (GGN only, eps -> 0; here eps = 1e-30, numerically 0). Running statistics: BN's affine
    duplicates each row's scale and bias (GGN only, 8). Measured: |lambda| <= 1e-10 lambda_max."""
    p, _, _ = _bn_problem(eps=1e-30, bn_mode=bn_mode, seed=0)
    model = p.model
    assert predicted_nullity(model, curvature="ggn", bn_mode=bn_mode) == ggn
    assert predicted_nullity(model, curvature="hessian", bn_mode=bn_mode) == hessian
    eg = torch.linalg.eigvalsh(dense_ggn(p))
    eh = torch.linalg.eigvalsh(dense_hessian(p))
    assert measured_nullity(eg) == ggn and measured_nullity(eh) == hessian
    assert torch.allclose(GGNOperator(p).to_dense(), dense_ggn(p), atol=1e-10)
    # the positive part: everything above the threshold
    pos = eg[eg > 1e-10 * eg.max()]
    assert positive_condition_number(eg) == pytest.approx(float(pos.max() / pos.min()), rel=1e-12)
    assert len(pos) == p.n_params - ggn


def test_predicted_nullity_layernorm():
    """Linear(3, 4) -> LN -> tanh -> Linear(4, 2): mean shifts W += 1 a^T, b += c 1 (3 + 1, exact)
    and the joint scaling of the layer (1, GGN only)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = _data(64, (3,), 1.0, 0.0), torch.randn(64, 2, dtype=DT)
    res = apply_normalization(model, X, "layer", eps=1e-30)
    (group,) = scale_invariant_groups(res.model)
    assert (group["kind"], group["null_exact"], group["null_ggn"]) == ("layer", 4, 1)
    assert res.predicted_nullity == 5
    p = Problem(res.model, [(X, y)], "mse", dtype=DT)
    assert measured_nullity(torch.linalg.eigvalsh(dense_ggn(p))) == 5
    assert measured_nullity(torch.linalg.eigvalsh(dense_hessian(p))) == 4


def test_scale_invariant_groups_follow_bn_mode():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12, 4, bias=False),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.Linear(4, 1),
    )
    groups = scale_invariant_groups(model)
    assert [
        (g["name"], g["kind"], g["groups"], g["null_exact"], g["null_ggn"]) for g in groups
    ] == [
        ("0.weight", "batch", 3, 3, 3),
        ("4.weight", "group", 2, 2 * 12, 2),
    ]
    assert [g["name"] for g in scale_invariant_groups(model, bn_mode="eval")] == ["4.weight"]
    assert predicted_nullity(model, bn_mode="eval") == 3 * 2 + 24 + 2


def test_streamed_moments_merge_chunks_exactly_past_4096_samples():
    """The pairwise merge across chunks (4096 + 904 samples) against one-pass float64 moments,
    on features whose mean dwarfs their spread (where a naive merge loses digits)."""
    from condlab.normalization.stats import CHUNK, Moments, chunks

    g = torch.Generator().manual_seed(0)
    a = 1e4 + torch.randn(5000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.01, 5.0])
    b = 3.0 * a + torch.randn(5000, 3, generator=g, dtype=torch.float64)
    assert len(list(chunks(a))) == 2 and CHUNK < 5000
    m = Moments()
    for ca, cb in zip(chunks(a), chunks(b)):
        m.update(ca, cb)
    assert m.n == 5000
    mu_a, mu_b = a.mean(0), b.mean(0)
    torch.testing.assert_close(m.mean_a, mu_a, rtol=1e-14, atol=0)
    torch.testing.assert_close(m.var_a, ((a - mu_a) ** 2).mean(0), rtol=1e-10, atol=0)
    torch.testing.assert_close(m.cov_ab, ((a - mu_a) * (b - mu_b)).mean(0), rtol=1e-10, atol=0)
