"""The weighted-lasso reference of the L1 rule, against scikit-learn's Lasso."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from condlab.train.lasso import weighted_lasso


def test_weighted_lasso_matches_scikit_learn():
    """sum_i w_i |z_i| is sklearn's alpha ||u||_1 on the columns X_i / s_i, s_i = w_i / alpha,
    with z_i = u_i / s_i; the quadratic is 1/(2n) ||y - X z||^2 = 1/2 z^T A z - c^T z + const."""
    rng = np.random.default_rng(0)
    n, d = 80, 6
    X = rng.standard_normal((n, d)) @ np.diag([3.0, 1.0, 0.5, 2.0, 0.2, 1.0])
    y = X @ np.array([1.0, -0.5, 0.0, 0.3, 2.0, 0.05]) + 0.1 * rng.standard_normal(n)
    alpha = 0.1
    w = alpha * np.array([1.0, 3.0, 0.5, 2.0, 0.1, 4.0])
    z, ok = weighted_lasso(X.T @ X / n, X.T @ y / n, w)
    assert ok
    s = w / alpha
    u = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(X / s, y).coef_
    np.testing.assert_allclose(z, u / s, rtol=0, atol=1e-8)
    assert 0 < np.count_nonzero(z) < d  # the weights make some coordinates exactly zero
    plain, _ = weighted_lasso(X.T @ X / n, X.T @ y / n, alpha)
    assert np.linalg.norm(plain - z) > 0.1 * np.linalg.norm(z)  # the weights matter here


def test_kkt_conditions_hold_at_the_solution():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((5, 5))
    A, c, w = B @ B.T + 0.1 * np.eye(5), rng.standard_normal(5), rng.uniform(0.1, 1.0, 5)
    z, ok = weighted_lasso(A, c, w)
    assert ok
    g = A @ z - c
    on = z != 0
    np.testing.assert_allclose(g[on], -w[on] * np.sign(z[on]), atol=1e-10)
    assert np.all(np.abs(g[~on]) <= w[~on] + 1e-10)


@pytest.mark.parametrize("scale", [0.0, 1e6])
def test_all_zero_and_no_penalty_limits(scale):
    A, c = np.diag([2.0, 1.0]), np.array([1.0, -3.0])
    z, ok = weighted_lasso(A, c, scale)
    assert ok
    expected = np.linalg.solve(A, c) if scale == 0 else np.zeros(2)
    np.testing.assert_allclose(z, expected, atol=1e-12)
