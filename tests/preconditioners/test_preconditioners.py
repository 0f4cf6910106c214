"""Preconditioners against hand computations, preconditioned spectra against dense eigvalsh.

Convention under test: ``P`` is the diagonal preconditioner, the operator ``P^-1/2 A P^-1/2``.
"""

import math

import pytest
import torch
from torch import nn

from condlab.errors import UsageError
from condlab.operators import HessianOperator, dense_ggn, dense_hessian
from condlab.preconditioners import (
    build_preconditioner,
    from_optimizer_state,
    gn_diagonal,
    gradient_second_moment,
    hessian_diagonal,
    lasso_weights,
    preconditioned_operator,
    summarize,
)
from condlab.problem import Problem

D64 = torch.float64


def _kappa(A):
    ev = torch.linalg.eigvalsh((A + A.T) / 2)
    return float(ev[-1] / ev[0])


def _sym_eigs(P, A):
    """eigvalsh of the explicitly formed P^-1/2 A P^-1/2, P a dense SPD matrix."""
    ev, V = torch.linalg.eigh(P)
    S = V @ torch.diag(ev.rsqrt()) @ V.T
    return torch.linalg.eigvalsh(S @ A @ S)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=D64), torch.randint(0, 3, (n,), generator=g)


def _problem(model, X, y, **kw):
    return Problem(model, [(X[:7], y[:7]), (X[7:], y[7:])], "cross-entropy", dtype=D64, **kw)


# -- optimizer state: real torch optimizers, formulas written here ---------------------------
def _train(opt_factory, steps=5, seed=0, named=False):
    """Run a torch optimizer; return model, optimizer, per-step gradients, params before/after
    the last step."""
    model = _mlp(seed)
    X, y = _data(seed=seed)
    opt = opt_factory(model.named_parameters() if named else model.parameters())
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
    after = [p.detach().clone() for p in model.parameters()]
    return model, opt, grads, before, after


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _ema(grads, beta, f=lambda g: g.square()):
    v = [torch.zeros_like(g) for g in grads[0]]
    for gs in grads:
        v = [beta * vi + (1 - beta) * f(g) for vi, g in zip(v, gs, strict=True)]
    return _flat(v)


def _spec(model):
    from condlab.params import select_params

    return select_params(model.named_parameters())


B1, B2, EPS, LR = 0.8, 0.95, 1e-3, 0.05


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_state_is_bias_corrected_with_the_group_eps(cls, amsgrad):
    T = 5
    model, opt, grads, before, after = _train(
        lambda ps: cls(ps, lr=LR, betas=(B1, B2), eps=EPS, amsgrad=amsgrad, weight_decay=0.0), T
    )
    if amsgrad:  # max over t of the EMA, then bias-corrected with the current t
        v = torch.stack([_ema(grads[: t + 1], B2) for t in range(T)]).amax(0)
    else:
        v = _ema(grads, B2)
    want = (v / (1 - B2**T)).sqrt() + EPS
    pc = from_optimizer_state(opt.state_dict(), _spec(model), dtype=D64)
    torch.testing.assert_close(pc.diag, want, rtol=1e-12, atol=0)
    assert pc.name == f"optimizer:{'adamw' if cls is torch.optim.AdamW else 'adam'}"
    assert pc.eps == EPS and pc.meta["steps"] == (T, T) and pc.meta["matched_by"] == "order"
    # torch's own last step divides the bias-corrected momentum by exactly this P
    m_hat = _ema(grads, B1, f=lambda g: g) / (1 - B1**T)
    torch.testing.assert_close(
        _flat(after) - _flat(before), -LR * m_hat / pc.diag, rtol=1e-10, atol=1e-15
    )


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_state(centered):
    alpha, T = 0.9, 4
    model, opt, grads, before, after = _train(
        lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=alpha, eps=EPS, centered=centered), T
    )
    v = _ema(grads, alpha)
    if centered:
        v = v - _ema(grads, alpha, f=lambda g: g).square()
    want = v.sqrt() + EPS
    pc = from_optimizer_state(opt.state_dict(), _spec(model), dtype=D64)
    torch.testing.assert_close(pc.diag, want, rtol=1e-12, atol=0)
    assert pc.name == "optimizer:rmsprop"
    torch.testing.assert_close(
        _flat(after) - _flat(before), -LR * _flat(grads[-1]) / pc.diag, rtol=1e-10, atol=1e-15
    )


def test_adagrad_state():
    T, init, lr_decay = 3, 0.1, 0.2
    model, opt, grads, before, after = _train(
        lambda ps: torch.optim.Adagrad(
            ps, lr=LR, eps=EPS, lr_decay=lr_decay, initial_accumulator_value=init
        ),
        T,
    )
    s = init + sum(_flat(gs).square() for gs in grads)
    pc = from_optimizer_state(opt.state_dict(), _spec(model), dtype=D64)
    torch.testing.assert_close(pc.diag, s.sqrt() + EPS, rtol=1e-12, atol=0)
    clr = LR / (1 + (T - 1) * lr_decay)
    torch.testing.assert_close(
        _flat(after) - _flat(before), -clr * _flat(grads[-1]) / pc.diag, rtol=1e-10, atol=1e-15
    )


def test_eps_override_groups_and_subset_selection():
    model = _mlp()
    X, y = _data()
    params = list(model.parameters())
    opt = torch.optim.Adam(
        [{"params": params[:2], "eps": 1e-2}, {"params": params[2:]}], betas=(B1, B2), eps=1e-6
    )
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    full = _spec(model)
    v = _flat([opt.state[p]["exp_avg_sq"] for p in params]) / (1 - B2**2)
    eps = torch.cat(
        [
            torch.full((p.numel(),), e, dtype=D64)
            for p, e in zip(params, [1e-2, 1e-2, 1e-6, 1e-6], strict=True)
        ]
    )
    pc = from_optimizer_state(opt.state_dict(), full, dtype=D64)
    torch.testing.assert_close(pc.diag, v.sqrt() + eps, rtol=1e-12, atol=0)
    over = from_optimizer_state(opt.state_dict(), full, eps=0.5, dtype=D64)
    torch.testing.assert_close(over.diag, v.sqrt() + 0.5, rtol=1e-12, atol=0)
    # a subset of parameters (Problem(params=...)), matched through the full model's order
    problem = _problem(model, X, y, params=["2.*"])
    sub = build_preconditioner("optimizer", problem, optimizer_state=opt.state_dict())
    torch.testing.assert_close(sub.diag, pc.diag[16:], rtol=0, atol=0)


def test_named_parameters_state_is_matched_by_name():
    model, opt, grads, _, _ = _train(lambda ps: torch.optim.Adam(ps, betas=(B1, B2)), 2, named=True)
    sd = opt.state_dict()
    assert "param_names" in sd["param_groups"][0]
    pc = from_optimizer_state(sd, _spec(model), dtype=D64)
    assert pc.meta["matched_by"] == "name"
    torch.testing.assert_close(
        pc.diag, (_ema(grads, B2) / (1 - B2**2)).sqrt() + 1e-8, rtol=1e-12, atol=0
    )


def test_named_state_of_some_parameters_only():
    model = _mlp()
    X, y = _data()
    opt = torch.optim.Adam(list(model.named_parameters())[2:])  # the head only
    nn.functional.cross_entropy(model(X), y).backward()
    opt.step()
    with pytest.raises(UsageError, match="not given parameter '0.weight'.*--params"):
        from_optimizer_state(opt.state_dict(), _spec(model))
    problem = _problem(model, X, y, params=["2.*"])
    pc = build_preconditioner("optimizer", problem, optimizer_state=opt.state_dict())
    v = _flat([opt.state[p]["exp_avg_sq"] for p in list(model.parameters())[2:]])
    torch.testing.assert_close(pc.diag, (v / (1 - 0.999)).sqrt() + 1e-8, rtol=1e-12, atol=0)


def _adam_state(params_order, model, X, y):
    opt = torch.optim.Adam(params_order)
    opt.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    opt.step()
    return opt.state_dict()


def test_order_count_and_missing_state_errors():
    model = _mlp()
    X, y = _data()
    spec = _spec(model)
    reversed_sd = _adam_state(list(model.parameters())[::-1], model, X, y)
    with pytest.raises(
        UsageError,
        match=r"optimizer parameter 0 has state of shape \[3\] but "
        r"model parameter '0.weight' has shape \[4, 3\]",
    ):
        from_optimizer_state(reversed_sd, spec)
    short = _adam_state(list(model.parameters())[:3], model, X, y)
    with pytest.raises(UsageError, match="covers 3 parameters but the model has 4"):
        from_optimizer_state(short, spec)
    sd = _adam_state(model.parameters(), model, X, y)
    del sd["state"][2]
    with pytest.raises(UsageError, match=r"no statistics for parameter 2 \(2.weight\).*never"):
        from_optimizer_state(sd, spec)
    with pytest.raises(UsageError, match="not a torch optimizer state_dict"):
        from_optimizer_state({"exp_avg_sq": 1}, spec)


def test_unknown_optimizers_are_refused():
    model = _mlp()
    X, y = _data()
    spec = _spec(model)
    for factory in (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: torch.optim.NAdam(ps),
        lambda ps: torch.optim.Adadelta(ps),
    ):
        opt = factory(model.parameters())
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
        with pytest.raises(UsageError, match="not one condlab knows; known: adam, adamw, rmsprop"):
            from_optimizer_state(opt.state_dict(), spec)
    sd = _adam_state(model.parameters(), model, X, y)
    with pytest.raises(UsageError, match="unknown optimizer 'sgd'.*adam, adamw, rmsprop, adagrad"):
        from_optimizer_state(sd, spec, optimizer="sgd")
    with pytest.raises(UsageError, match="not those of rmsprop"):
        from_optimizer_state(sd, spec, optimizer="rmsprop")
    empty = torch.optim.Adam(model.parameters()).state_dict()
    with pytest.raises(UsageError, match="never took a step"):
        from_optimizer_state(empty, spec)


def test_checkpoint_adam_state_gives_the_dense_preconditioned_spectrum():
    """Done-when: a checkpoint's own Adam state gives the spectrum of dense P^-1/2 H P^-1/2."""
    model, opt, _, _, _ = _train(lambda ps: torch.optim.Adam(ps, lr=0.05), 20)
    X, y = _data()
    problem = _problem(model, X, y)
    sd = opt.state_dict()
    t = 20
    v = _flat([opt.state[p]["exp_avg_sq"] for p in model.parameters()])
    P = torch.diag((v / (1 - 0.999**t)).sqrt() + 1e-8)
    want = _sym_eigs(P, dense_hessian(problem))
    for state in (sd, {"name": "adam", "hparams": {}, "state_dict": sd}):
        pc = build_preconditioner("optimizer", problem, optimizer_state=state)
        got = torch.linalg.eigvalsh(
            preconditioned_operator(HessianOperator(problem), pc).to_dense()
        )
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    with pytest.raises(UsageError, match="basis identity"):
        build_preconditioner("optimizer", problem, optimizer_state=sd, basis="eigen")
    with pytest.raises(UsageError, match="needs an optimizer state"):
        build_preconditioner("optimizer", problem)


# -- from data -----------------------------------------------------------------------------------
def _minibatch_grads_by_hand(model, X, y, B, seed):
    """Per-mini-batch gradients with nn.Module autograd: the same seeded permutation."""
    N = X.shape[0]
    m = N // B
    order = (
        torch.arange(N)
        if m == 1
        else torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    )
    out = []
    for j in range(m):
        idx = order[j * B : (j + 1) * B]
        model.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        out.append(_flat([p.grad for p in model.parameters()]))
    return torch.stack(out)


@pytest.mark.parametrize("B", [1, 3, 5, 12])
def test_gradient_second_moment_by_hand(B):
    model = _mlp()
    X, y = _data()
    problem = _problem(model, X, y)
    G = _minibatch_grads_by_hand(model, X, y, B, seed=4)
    est = gradient_second_moment(problem, batch_size=B, seed=4)
    torch.testing.assert_close(est.values, G.square().mean(0), rtol=1e-12, atol=1e-16)
    assert est.samples == 12 // B
    if B < 12:  # the standard error of the mean over the m mini-batches
        torch.testing.assert_close(
            est.stderr, G.square().std(0) / (12 // B) ** 0.5, rtol=1e-9, atol=1e-16
        )
    adam = build_preconditioner("adam", problem, batch_size=B, seed=4)
    torch.testing.assert_close(adam.diag, G.square().mean(0).sqrt() + 1e-8, rtol=1e-12, atol=0)
    assert adam.eps == 1e-8 and adam.meta["minibatches"] == 12 // B
    ada = build_preconditioner("adagrad", problem, batch_size=B, seed=4, eps=0.0)
    torch.testing.assert_close(ada.diag, G.square().sum(0).sqrt(), rtol=1e-12, atol=0)
    if B == 12:  # full batch: the squared full gradient
        torch.testing.assert_close(est.values, problem.gradient().square(), rtol=1e-12, atol=0)
        assert est.stderr is None


def test_gradient_second_moment_is_seeded_and_takes_a_basis():
    model = _mlp()
    X, y = _data()
    problem = _problem(model, X, y)
    a = gradient_second_moment(problem, batch_size=2, seed=1)
    assert torch.equal(a.values, gradient_second_moment(problem, batch_size=2, seed=1).values)
    assert not torch.equal(a.values, gradient_second_moment(problem, batch_size=2, seed=2).values)
    U, _ = torch.linalg.qr(torch.randn(problem.n_params, problem.n_params, dtype=D64))
    G = _minibatch_grads_by_hand(model, X, y, 2, seed=1)
    rot = gradient_second_moment(problem, batch_size=2, seed=1, basis=U)
    torch.testing.assert_close(rot.values, (G @ U).square().mean(0), rtol=1e-10, atol=1e-16)
    with pytest.raises(UsageError, match="between 1 and the 12 samples"):
        gradient_second_moment(problem, batch_size=13)


def test_data_rules_in_the_eigenbasis():
    model = _mlp()
    X, y = _data()
    problem = _problem(model, X, y)
    pc = build_preconditioner("rmsprop", problem, batch_size=4, basis="eigen", seed=3)
    U = pc.basis
    torch.testing.assert_close(U.T @ U, torch.eye(U.shape[0], dtype=D64), atol=1e-12, rtol=0)
    UGU = U.T @ dense_ggn(problem) @ U
    torch.testing.assert_close(UGU, torch.diag(torch.diagonal(UGU)), atol=1e-10, rtol=0)
    G = _minibatch_grads_by_hand(model, X, y, 4, seed=3)
    torch.testing.assert_close(
        pc.diag, (G @ U).square().mean(0).sqrt() + 1e-8, rtol=1e-10, atol=1e-14
    )


# -- from curvature ------------------------------------------------------------------------------
def test_gn_and_hessian_diagonals():
    model = _mlp()
    X, y = _data()
    problem = _problem(model, X, y)
    G, H = dense_ggn(problem), dense_hessian(problem)
    torch.testing.assert_close(
        gn_diagonal(problem).values, torch.diagonal(G), rtol=1e-12, atol=1e-15
    )
    torch.testing.assert_close(
        hessian_diagonal(problem).values, torch.diagonal(H), rtol=1e-12, atol=1e-15
    )
    for fn, M in ((gn_diagonal, G), (hessian_diagonal, H)):
        est = fn(problem, estimator="hutchinson", probes=400, seed=2)
        sd = ((M.square().sum(1) - torch.diagonal(M).square()) / 400).sqrt()
        assert ((est.values - torch.diagonal(M)).abs() <= 5 * sd + 1e-12).all()
        assert ((est.stderr - sd).abs() <= 0.35 * sd + 1e-12).all()
    pc = build_preconditioner("gn", problem, diag_estimator="hutchinson", probes=400, seed=2)
    assert pc.meta["estimator"] == "hutchinson" and pc.meta["probes"] == 400
    assert "rel_stderr_median" in pc.meta
    with pytest.raises(UsageError, match="unknown --diag-estimator"):
        gn_diagonal(problem, estimator="kfac")


def _linreg(X, y):
    """nn.Linear with bias on X, mse: H = G = (2/N) Z^T Z with Z = [X, 1]."""
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], 1).double()
    return Problem(model, [(X[:10], y[:10]), (X[10:], y[10:])], "mse", dtype=D64)


def test_linear_regression_done_when():
    """gn / gn-sqrt give cond(D^-1/2 H D^-1/2) and cond(D^-1/4 H D^-1/4), D = diag(H)."""
    g = torch.Generator().manual_seed(5)
    N = 40
    X = torch.randn(N, 3, generator=g, dtype=D64) * torch.tensor([1e-2, 1.0, 1e2], dtype=D64)
    X = X + torch.tensor([0.0, 3.0, 0.0], dtype=D64)
    X[:, 2] += 50 * X[:, 1]  # correlated too
    y = torch.randn(N, generator=g, dtype=D64)
    problem = _linreg(X, y)
    Z = torch.cat([X, torch.ones(N, 1, dtype=D64)], dim=1)
    H = 2 * Z.T @ Z / N
    D = torch.diagonal(H)
    torch.testing.assert_close(dense_hessian(problem), H, rtol=1e-12, atol=1e-10)
    for name, power in (("gn", -0.5), ("gn-sqrt", -0.25)):
        S = torch.diag(D**power)
        want = _kappa(S @ H @ S)
        pc = build_preconditioner(name, problem)
        got = _kappa(preconditioned_operator(HessianOperator(problem), pc).to_dense())
        assert abs(got / want - 1) < 1e-6, (name, got, want)
    assert _kappa(H) > 1e8  # the features really are ill-scaled


DIAG_H = torch.diag(torch.logspace(0, 4, 10, dtype=D64))


@pytest.mark.parametrize("name,kappa", [("jacobi", 1.0), ("gn", 1.0), ("gn-sqrt", 100.0)])
def test_diagonal_quadratic(name, kappa):
    pc = build_preconditioner(name, ggn=DIAG_H, hessian=DIAG_H)
    assert pc.eps == 0.0
    A = preconditioned_operator(DIAG_H, pc).to_dense()
    assert _kappa(A) == pytest.approx(kappa, rel=1e-12)
    torch.testing.assert_close(torch.linalg.eigvalsh(A), _sym_eigs(pc.matrix(), DIAG_H))


def test_diagonal_quadratic_as_a_least_squares_problem():
    """The same check through a Problem: X = sqrt(N/2) H^1/2, no bias, mse, so H = G."""
    N = 10
    X = math.sqrt(N / 2) * DIAG_H.sqrt()
    model = nn.Linear(10, 1, bias=False).double()
    problem = Problem(model, [(X, torch.zeros(N, dtype=D64))], "mse", dtype=D64)
    for name, kappa in (("jacobi", 1.0), ("gn", 1.0), ("gn-sqrt", 100.0)):
        pc = build_preconditioner(name, problem)
        assert _kappa(
            preconditioned_operator(HessianOperator(problem), pc).to_dense()
        ) == pytest.approx(kappa, rel=1e-10)


ANGLE = math.pi / 4
ROT = torch.tensor(
    [[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]], dtype=D64
)
R2 = ROT @ torch.diag(torch.tensor([1.0, 100.0], dtype=D64)) @ ROT.T


@pytest.mark.parametrize(
    "name,basis,kappa",
    [
        ("gn", "identity", 100.0),
        ("gn-sqrt", "identity", 100.0),
        ("jacobi", "identity", 100.0),
        ("gn", "eigen", 1.0),
        ("gn-sqrt", "eigen", 10.0),
        ("jacobi", "eigen", 1.0),
    ],
)
def test_rotated_2x2(name, basis, kappa):
    pc = build_preconditioner(name, ggn=R2, hessian=R2, basis=basis)
    A = preconditioned_operator(R2, pc).to_dense()
    assert _kappa(A) == pytest.approx(kappa, rel=1e-10)
    torch.testing.assert_close(torch.linalg.eigvalsh(A), _sym_eigs(pc.matrix(), R2))


def test_zero_curvature_is_an_error_that_suggests_eps():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, generator=g, dtype=D64)
    X[:, 1] = 0  # a feature that never varies: its weight has no curvature
    problem = _linreg(X, torch.randn(20, generator=g, dtype=D64))
    for name in ("gn", "gn-sqrt", "jacobi"):
        with pytest.raises(UsageError, match=r"structural zero .* on 1 of 4 coordinates in weight \(1\).*--eps"):
            build_preconditioner(name, problem)
        pc = build_preconditioner(name, problem, eps=1e-8)
        assert pc.eps == 1e-8 and float(pc.diag[1]) == 1e-8


def test_a_hutchinson_diagonal_that_goes_negative_suggests_more_probes():
    G = torch.tensor([[1.0, 5.0], [5.0, 30.0]], dtype=D64)  # diag 1, estimates 1 +- 5
    with pytest.raises(UsageError, match="1 are <= 0.*--eps.*more --probes"):
        build_preconditioner("gn", ggn=G, diag_estimator="hutchinson", probes=2, seed=0)
    pc = build_preconditioner("gn", ggn=G, diag_estimator="hutchinson", probes=20_000)
    torch.testing.assert_close(pc.diag, torch.diagonal(G), rtol=0.2, atol=0)


def test_eigen_basis_size_limit_and_bad_names():
    model = _mlp()
    X, y = _data()
    problem = _problem(model, X, y)
    with pytest.raises(UsageError, match="31 parameters, above the limit of 10"):
        build_preconditioner("gn", problem, basis="eigen", max_eigen_params=10)
    with pytest.raises(UsageError, match="unknown --precond 'newton'"):
        build_preconditioner("newton", problem)
    with pytest.raises(UsageError, match="unknown --basis"):
        build_preconditioner("gn", problem, basis="kfac")
    for name, kw in (
        ("adam", {}),
        ("gn", {"hessian": DIAG_H}),
        ("jacobi", {"ggn": DIAG_H}),
        ("jacobi", {"hessian": DIAG_H, "basis": "eigen"}),
    ):
        with pytest.raises(UsageError, match="needs a model and data"):
            build_preconditioner(name, **kw)


# -- the operator, with weight decay -------------------------------------------------------------
@pytest.mark.parametrize("decay", ["none", "coupled", "decoupled", "l1"])
@pytest.mark.parametrize("basis", ["identity", "eigen"])
def test_preconditioned_operator_for_each_decay(decay, basis):
    model = _mlp()
    X, y = _data()
    problem = _problem(model, X, y)
    H = dense_hessian(problem)
    pc = build_preconditioner("gn-sqrt", problem, basis=basis, eps=1e-3)
    lam = 0.0 if decay == "none" else 0.07
    eye = torch.eye(H.shape[0], dtype=D64)
    Pm = pc.matrix()
    inner = lam if decay == "coupled" else 0.0
    outer = lam if decay == "decoupled" else 0.0
    want = _sym_eigs(Pm, H + inner * eye) + outer
    op = preconditioned_operator(HessianOperator(problem), pc, weight_decay=lam, decay=decay)
    torch.testing.assert_close(torch.linalg.eigvalsh(op.to_dense()), want, rtol=1e-9, atol=1e-9)
    if basis == "identity":  # entry by entry, not only the spectrum
        S = torch.diag(pc.diag.rsqrt())
        torch.testing.assert_close(
            op.to_dense(), S @ (H + inner * eye) @ S + outer * eye, rtol=1e-10, atol=1e-12
        )


def test_baseline_and_operator_errors():
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=D64))
    for decay in ("coupled", "decoupled"):
        op = preconditioned_operator(A, None, weight_decay=0.5, decay=decay)
        torch.testing.assert_close(op.to_dense(), A + 0.5 * torch.eye(3, dtype=D64))
    with pytest.raises(UsageError, match="needs --decay"):
        preconditioned_operator(A, None, weight_decay=0.1)
    with pytest.raises(UsageError, match="unknown --decay"):
        preconditioned_operator(A, None, decay="l2")
    with pytest.raises(UsageError, match=">= 0"):
        preconditioned_operator(A, None, weight_decay=-1, decay="coupled")
    pc = build_preconditioner("gn", ggn=DIAG_H)
    with pytest.raises(UsageError, match="10 coordinates but the operator has 3"):
        preconditioned_operator(A, pc)


def test_lasso_weights_give_the_fixed_point_of_the_soft_threshold_update():
    """Derived: p <- soft(p - eta M g, eta lam sqrt(M_ii)) stops at the weighted lasso with
    weights lam / sqrt(M_ii) = lasso_weights."""
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D64))
    H = Q @ torch.diag(torch.linspace(1, 5, 6, dtype=D64)) @ Q.T
    p_star = torch.randn(6, generator=g, dtype=D64)
    pc = build_preconditioner("gn", ggn=torch.diag(torch.linspace(0.5, 3, 6, dtype=D64)))
    M = 1 / pc.diag
    lam, eta = 0.4, 0.1
    w = lasso_weights(pc, lam)
    torch.testing.assert_close(w, lam / M.sqrt())
    p = torch.zeros(6, dtype=D64)
    for _ in range(5000):
        z = p - eta * M * (H @ (p - p_star))
        p = z.sign() * (z.abs() - eta * lam * M.sqrt()).clamp_min(0)
    grad = H @ (p - p_star)
    nz = p != 0
    assert nz.any() and (~nz).any()  # both active and inactive coordinates are checked
    torch.testing.assert_close(grad[nz], -w[nz] * p[nz].sign(), rtol=0, atol=1e-10)
    assert (grad[~nz].abs() <= w[~nz] + 1e-10).all()
    s = summarize(w)
    assert s["min"] == pytest.approx(float(w.min())) and s["max"] == pytest.approx(float(w.max()))
