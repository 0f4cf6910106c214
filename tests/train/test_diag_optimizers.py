"""The flat-theta diagonal optimizers: torch.optim's arithmetic, bases, GN rules, live P, and
paper C's exact rescaling symmetry of GD + WD on a scale-invariant loss."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from condlab.errors import UsageError
from condlab.params import ParamSpec, select_params
from condlab.preconditioners import from_optimizer_state
from condlab.problem import Problem
from condlab.stability import stability_threshold
from condlab.train.diag_optimizers import OPTIMIZER_NAMES, make_optimizer, resolve_hparams

D64 = torch.float64


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D64)
    X, y = torch.randn(16, 3, dtype=D64), torch.randn(16, 2, dtype=D64)
    spec = select_params(model.named_parameters())

    def loss(theta):
        return ((functional_call(model, spec.unflatten(theta), (X,)) - y) ** 2).mean()

    return model, X, y, spec, loss


TORCH_CASES = [
    ("sgd", torch.optim.SGD, {"lr": 0.1}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.1}),
    ("momentum", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.5, "dampening": 0.3}),
    ("adam", torch.optim.Adam, {"lr": 0.01}),
    ("adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99)}),
    ("adam-l2", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.05}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.2, "eps": 1e-6}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True,
                                      "weight_decay": 0.01}),
    ("adagrad", torch.optim.Adagrad, {"lr": 0.1}),
    ("adagrad", torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01,
                                      "initial_accumulator_value": 0.1}),
]


@pytest.mark.parametrize("name,cls,hp", TORCH_CASES)
def test_matches_torch_optim_to_1e12(name, cls, hp):
    model, X, y, spec, loss = _tiny()
    twin = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D64)
    twin.load_state_dict(model.state_dict())
    ref = cls(twin.parameters(), **hp)
    theta = spec.flatten(dict(model.named_parameters())).detach().clone()
    opt = make_optimizer(name, {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()})
    state = opt.init(theta)
    for _ in range(6):
        ref.zero_grad()
        ((twin(X) - y) ** 2).mean().backward()
        ref.step()
        theta, state = opt.update(grad(loss)(theta), state, theta)
    want = spec.flatten(dict(twin.named_parameters())).detach()
    torch.testing.assert_close(theta, want, rtol=0, atol=1e-12)
    if name not in ("sgd", "momentum"):  # the live P is torch's own denominator
        torch_p = from_optimizer_state(ref.state_dict(), spec, dtype=D64)
        live = opt.preconditioner(state, theta)
        torch.testing.assert_close(live.diag, torch_p.diag, rtol=1e-13, atol=0)


def _quadratic(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    evals = torch.logspace(0, 2, n, dtype=D64)
    A = Q @ torch.diag(evals) @ Q.T
    b = torch.randn(n, generator=g, dtype=D64)
    return A, b, Q, evals


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "adagrad", "momentum", "adam-l1"])
def test_eigenbasis_rule_is_the_identity_rule_on_rotated_coordinates(name):
    A, b, Q, _ = _quadratic()
    hp = {"lr": 0.01}
    in_basis = make_optimizer(name, hp, basis=Q)
    plain = make_optimizer(name, hp)
    theta = torch.linspace(-1, 1, 5, dtype=D64)
    z = Q.T @ theta
    s1, s2 = in_basis.init(theta), plain.init(z)
    for _ in range(5):
        theta, s1 = in_basis.update(A @ theta - b, s1, theta)
        z, s2 = plain.update(Q.T @ (A @ (Q @ z) - b), s2, z)  # the same loss as a function of z
    torch.testing.assert_close(theta, Q @ z, rtol=0, atol=1e-12)


def test_gn_inverse_in_the_eigenbasis_is_newton():
    A, b, Q, evals = _quadratic()
    opt = make_optimizer("gn", {"lr": 1.0, "eps": 0.0}, basis=Q)
    theta = torch.zeros(5, dtype=D64)
    theta, state = opt.update(A @ theta - b, opt.init(theta), theta,
                              curvature=lambda th: torch.diagonal(Q.T @ A @ Q))
    torch.testing.assert_close(theta, torch.linalg.solve(A, b), rtol=0, atol=1e-10)
    # the operator it sees is P^-1/2 U^T A U P^-1/2 = I: kappa 1; GN^-1/2 gives sqrt(kappa)
    pre = opt.preconditioner(state, theta)
    torch.testing.assert_close(pre.diag, evals, rtol=1e-10, atol=0)
    sqrt_opt = make_optimizer("gn-sqrt", {"lr": 1.0, "eps": 0.0}, basis=Q)
    _, st = sqrt_opt.update(b, sqrt_opt.init(theta), theta, curvature=lambda th: evals)
    M = torch.diag(sqrt_opt.preconditioner(st, theta).diag.rsqrt())
    ev = torch.linalg.eigvalsh(M @ Q.T @ A @ Q @ M)
    assert float(ev[-1] / ev[0]) == pytest.approx(10.0, rel=1e-10)


def test_gn_refresh_schedule_and_ema():
    calls = []

    def curvature(theta):
        calls.append(float(theta[0]))
        return torch.full_like(theta, float(len(calls)))

    opt = make_optimizer("gn", {"lr": 0.1, "refresh": 3, "ema": 0.5, "eps": 0.0})
    theta = torch.ones(2, dtype=D64)
    state = opt.init(theta)
    for _ in range(7):
        theta, state = opt.update(torch.ones(2, dtype=D64), state, theta, curvature=curvature)
    assert len(calls) == 3  # before updates 1, 4 and 7
    assert float(state.buffers["diag"][0]) == pytest.approx(0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 3)
    with pytest.raises(UsageError, match="Gauss-Newton diagonal"):
        opt.update(theta, opt.init(theta), theta)


def test_gn_identity_step_and_beta1():
    opt = make_optimizer("gn-sqrt", {"lr": 0.5, "beta1": 0.9, "eps": 1e-3})
    theta, g, d = torch.tensor([1.0, 2.0], dtype=D64), torch.tensor([0.4, -2.0], dtype=D64), \
        torch.tensor([4.0, 9.0], dtype=D64)
    new, _ = opt.update(g, opt.init(theta), theta, curvature=lambda th: d)
    # m_1 = 0.1 g, bias-corrected to g: theta - lr g / (sqrt(d) + eps)
    torch.testing.assert_close(new, theta - 0.5 * g / (d.sqrt() + 1e-3), rtol=1e-14, atol=0)


def test_adam_l1_soft_thresholds_at_lr_lam_sqrt_m():
    opt = make_optimizer("adam-l1", {"lr": 0.1, "weight_decay": 0.5, "betas": [0.0, 0.0],
                                     "eps": 0.0})
    theta = torch.tensor([0.3, -0.02, 1.0], dtype=D64)
    g = torch.tensor([0.25, 1.0, -4.0], dtype=D64)
    new, state = opt.update(g, opt.init(theta), theta)
    P = g.abs()  # beta2 = 0: v = g^2, P = |g|
    u = theta - 0.1 * g / P
    want = u.sign() * (u.abs() - 0.1 * 0.5 / P.sqrt()).clamp_min(0)
    torch.testing.assert_close(new, want, rtol=1e-14, atol=0)
    assert opt.decay == ("l1", 0.5)


@pytest.mark.parametrize(
    "name,hp,method,beta",
    [("sgd", {"lr": 0.1}, "gd", 0.0), ("momentum", {"lr": 0.1}, "momentum", 0.9),
     ("adam", {"lr": 0.01}, "adam", 0.9), ("adamw", {"lr": 0.01, "betas": [0.5, 0.9]}, "adam", 0.5),
     ("rmsprop", {"lr": 0.01}, "gd", 0.0), ("gn", {"lr": 1.0}, "gd", 0.0),
     ("gn", {"lr": 1.0, "beta1": 0.9}, "adam", 0.9)],
)
def test_stability_method(name, hp, method, beta):
    opt = make_optimizer(name, hp)
    m, lr, b = opt.stability(opt.init(torch.zeros(2)))
    assert (m, lr, b) == (method, hp["lr"], beta)
    assert stability_threshold(m, lr, b) > 0


def test_adagrad_threshold_uses_the_decayed_lr():
    opt = make_optimizer("adagrad", {"lr": 0.1, "lr_decay": 0.5})
    theta = torch.ones(2, dtype=D64)
    state = opt.init(theta)
    for _ in range(3):
        theta, state = opt.update(theta, state, theta)
    assert opt.stability(state) == ("gd", 0.1 / (1 + 2 * 0.5), 0.0)


def test_decay_kinds_and_sgd_preconditioner():
    assert make_optimizer("adam").decay == ("none", 0.0)
    assert make_optimizer("adam-l2").decay == ("coupled", 0.01)
    assert make_optimizer("adamw").decay == ("decoupled", 0.01)
    assert make_optimizer("sgd", {"weight_decay": 0.1}).decay == ("coupled", 0.1)
    sgd = make_optimizer("sgd")
    pre = sgd.preconditioner(sgd.init(torch.zeros(3)), torch.zeros(3))
    assert pre.formula == "P = I" and torch.equal(pre.diag, torch.ones(3))
    adam = make_optimizer("adam")
    assert adam.preconditioner(adam.init(torch.zeros(3)), torch.zeros(3)) is None


def test_hyperparameter_errors_name_the_fix():
    with pytest.raises(UsageError, match="choose one of"):
        make_optimizer("lion")
    with pytest.raises(UsageError, match="has no hyperparameter 'momentum'"):
        make_optimizer("adam", {"momentum": 0.9})
    with pytest.raises(UsageError, match="two numbers"):
        resolve_hparams("adam", {"betas": [0.9]})
    with pytest.raises(UsageError, match="exact or hutchinson"):
        resolve_hparams("gn", {"estimator": "lanczos"})
    with pytest.raises(UsageError, match="nesterov"):
        resolve_hparams("sgd", {"nesterov": True})
    assert set(OPTIMIZER_NAMES) >= {"sgd", "momentum", "adam", "adamw", "adam-l2", "adam-l1",
                                    "rmsprop", "adagrad", "gn", "gn-sqrt"}


# -- paper C: the exact rescaling symmetry ---------------------------------------------------------
def _scale_invariant_problem():
    torch.manual_seed(1)
    # BatchNorm eps ~ 0: exactly scale-invariant (torch needs eps > 0; 1e-5 would break it)
    model = nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6, eps=1e-300), nn.ReLU(),
                          nn.Linear(6, 3))
    X, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    return Problem(model, [(X, y)], "cross-entropy", params=["0.weight"], bn_mode="batch",
                   dtype=D64)


def test_gd_wd_rescaled_start_gives_identical_directions():
    """(eta, lam, w0) and (c^2 eta, lam / c^2, c w0): w_t' = c w_t exactly (derived, paper C)."""
    prob = _scale_invariant_problem()
    c, eta, lam = 3.0, 0.2, 0.05
    a = make_optimizer("sgd", {"lr": eta, "weight_decay": lam})
    b = make_optimizer("sgd", {"lr": c**2 * eta, "weight_decay": lam / c**2})
    w, v = prob.theta.clone(), c * prob.theta.clone()
    sa, sb = a.init(w), b.init(v)
    for _ in range(25):
        w, sa = a.update(prob.gradient(w), sa, w)
        v, sb = b.update(prob.gradient(v), sb, v)
    torch.testing.assert_close(w / w.norm(), v / v.norm(), rtol=0, atol=1e-12)
    torch.testing.assert_close(v, c * w, rtol=1e-12, atol=0)
    # the loss is scale-invariant and its gradient is orthogonal to w and scales as 1 / ||w||
    g1, g2 = prob.gradient(w), prob.gradient(2 * w)
    assert abs(float(g1 @ w)) < 1e-10 * float(g1.norm() * w.norm())
    torch.testing.assert_close(g2, g1 / 2, rtol=1e-10, atol=1e-14)


def test_equilibrium_condition_of_sgd_wd_on_the_sphere():
    """A stationary norm forces E[eta^2 ||g||^2 / ||w||^2] = 2 eta lam - (eta lam)^2 (exact for
    g orthogonal to w): one step of w <- (1 - eta lam) w - eta g keeps ||w|| iff that holds."""
    eta, lam = 0.1, 0.05
    w = torch.tensor([3.0, 4.0], dtype=D64)
    k = math.sqrt(2 * eta * lam - (eta * lam) ** 2)
    g = torch.tensor([-4.0, 3.0], dtype=D64) / 5 * k * float(w.norm()) / eta  # g orthogonal to w
    new, _ = make_optimizer("sgd", {"lr": eta, "weight_decay": lam}).update(
        g, make_optimizer("sgd").init(w), w)
    assert float(new.norm()) == pytest.approx(float(w.norm()), rel=1e-13)


def test_flat_spec_roundtrip_used_by_the_live_state():
    spec = ParamSpec(("theta",), (torch.Size([4]),))
    opt = make_optimizer("rmsprop", {"lr": 0.1})
    theta = torch.ones(4, dtype=D64)
    theta, state = opt.update(torch.arange(4, dtype=D64), opt.init(theta), theta)
    pre = opt.preconditioner(state, theta)
    assert pre.name == "live:rmsprop" and spec.size == pre.diag.numel()
    torch.testing.assert_close(pre.diag, (0.01 * torch.arange(4, dtype=D64) ** 2).sqrt() + 1e-8)
