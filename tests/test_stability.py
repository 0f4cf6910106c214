"""Stability thresholds against the iterations themselves; fixed points by iterating to them."""

import pytest
import torch

from condlab.errors import UsageError
from condlab.operators.diagonal import PreconditionedOperator
from condlab.stability import (
    adamw_fixed_point,
    coupled_l2_fixed_point,
    edge_of_stability,
    stability_threshold,
)

D64 = torch.float64


def test_threshold_values():
    assert stability_threshold("gd", 0.1) == pytest.approx(20.0)
    assert stability_threshold("momentum", 0.1, beta1=0.9) == pytest.approx(38.0)
    assert stability_threshold("adam", 0.1, beta1=0.9) == pytest.approx(380.0)
    assert stability_threshold("adam", 0.1, beta1=0.0) == pytest.approx(20.0)
    for bad in (
        dict(method="sgd", lr=0.1),
        dict(method="gd", lr=0.0),
        dict(method="adam", lr=0.1, beta1=1.0),
    ):
        with pytest.raises(UsageError):
            stability_threshold(**bad)


def _torch_sgd_final(a, lr, momentum, steps=3000):
    """|x| after running torch.optim.SGD on 1/2 a x^2 from x = 1."""
    x = torch.ones(1, dtype=D64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * a * x.square()).sum().backward()
        opt.step()
    return float(x.detach().abs())


@pytest.mark.parametrize("method,momentum", [("gd", 0.0), ("momentum", 0.5), ("momentum", 0.9)])
def test_gd_and_heavy_ball_thresholds_match_torch_sgd(method, momentum):
    lr = 0.1
    thr = stability_threshold(method, lr, beta1=momentum)
    assert _torch_sgd_final(0.98 * thr, lr, momentum) < 1e-3
    assert _torch_sgd_final(1.02 * thr, lr, momentum) > 1e3


def _adam_frozen(A, p, lr, beta1, steps=4000):
    """EMA momentum with a frozen diagonal P on 1/2 x^T A x: m <- b m + (1-b) g, x -= lr m / P."""
    x = torch.ones(A.shape[0], dtype=D64)
    m = torch.zeros_like(x)
    for _ in range(steps):
        m = beta1 * m + (1 - beta1) * (A @ x)
        x = x - lr * m / p
        if x.norm() > 1e6:
            break
    return float(x.norm())


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_adam_threshold_is_on_the_preconditioned_sharpness(beta1):
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=D64))
    A = Q @ torch.diag(torch.tensor([0.5, 2.0, 10.0, 40.0], dtype=D64)) @ Q.T
    p = torch.tensor([0.2, 1.0, 5.0, 3.0], dtype=D64)
    sharp = float(torch.linalg.eigvalsh(PreconditionedOperator(A, p).to_dense())[-1])
    assert sharp == pytest.approx(float(torch.linalg.eigvals(torch.diag(1 / p) @ A).real.max()))
    assert sharp > 1.5 * float(torch.linalg.eigvalsh(A)[-1] / p.max())  # P matters here
    lr_edge = stability_threshold("adam", 1.0, beta1) / sharp  # the lr at which it is critical
    assert _adam_frozen(A, p, 0.97 * lr_edge, beta1) < 1e-3
    assert _adam_frozen(A, p, 1.03 * lr_edge, beta1) > 1e3
    rep = edge_of_stability(sharp, stability_threshold("adam", 0.97 * lr_edge, beta1))
    assert rep["regime"] == "edge" and rep["ratio"] == pytest.approx(0.97)


@pytest.mark.parametrize(
    "ratio,regime",
    [
        (0.5, "stable"),
        (0.89, "stable"),
        (0.9, "edge"),
        (1.0, "edge"),
        (1.1, "edge"),
        (1.2, "unstable"),
    ],
)
def test_edge_of_stability_regimes(ratio, regime):
    rep = edge_of_stability(ratio, 1.0)
    assert rep["regime"] == regime and rep["band"] == (0.9, 1.1)
    assert rep["ratio"] == ratio and rep["sharpness"] == ratio and rep["threshold"] == 1.0
    assert edge_of_stability(ratio * 20.0, 20.0)["ratio"] == pytest.approx(ratio)
    narrow = "stable" if ratio < 0.99 else ("edge" if ratio <= 1.01 else "unstable")
    assert edge_of_stability(ratio, 1.0, band=(0.99, 1.01))["regime"] == narrow


def _quadratic(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    H = Q @ torch.diag(torch.linspace(1, 10, n, dtype=D64)) @ Q.T
    M = torch.rand(n, generator=g, dtype=D64) * 1.5 + 0.5  # fixed diagonal step
    return H, M, torch.randn(n, generator=g, dtype=D64)


def _iterate(step, p, tol=1e-15, max_steps=200_000):
    for _ in range(max_steps):
        new = step(p)
        if (new - p).abs().max() < tol:
            return new
        p = new
    raise AssertionError("did not converge")


def test_adamw_and_coupled_l2_fixed_points_by_iteration():
    H, M, p_star = _quadratic()
    lam, eta = 0.3, 0.05

    def grad(p):
        return H @ (p - p_star)

    adamw = _iterate(lambda p: p - eta * (M * grad(p) + lam * p), torch.zeros_like(p_star))
    coupled = _iterate(lambda p: p - eta * M * (grad(p) + lam * p), torch.zeros_like(p_star))
    torch.testing.assert_close(adamw, adamw_fixed_point(H, M, lam, p_star), rtol=0, atol=1e-10)
    torch.testing.assert_close(
        adamw, adamw_fixed_point(H, torch.diag(M), lam, p_star), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(coupled, coupled_l2_fixed_point(H, lam, p_star), rtol=0, atol=1e-10)
    assert (adamw - coupled).abs().max() > 1e-3  # the two decays really differ
    # AdamW's fixed point minimizes L + (lam/2) p^T M^-1 p
    torch.testing.assert_close(
        grad(adamw) + lam * adamw / M, torch.zeros_like(adamw), rtol=0, atol=1e-10
    )
