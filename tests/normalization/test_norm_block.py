"""paper-a-norm's measurement: the Gauss-Newton block of the layer after the normalization, the
same architecture with and without BatchNorm from one seed, against dense float64 truths."""

from __future__ import annotations

import pytest
import torch
from cases import double_backward_ggn

from condlab.compare import parse_config
from condlab.compare.setup import Setup, load_data
from condlab.train.diag_optimizers import make_optimizer

D64 = torch.float64


def _setup(norm: str):
    cfg = parse_config({
        "model": {"name": "mlp", "widths": [3], "activation": "tanh", "norm": norm},
        "data": {"name": "linreg", "n": 40, "d": 4, "mean": 3.0, "scale": [0.25, 0.5, 1, 2]},
        "loss": "mse", "test_fraction": 0, "steps": 1, "optimizers": [{"name": "sgd", "lr": 0.1}],
        "track": {"curvature": "ggn", "exact": True, "block": ["last"]},
    })
    keys = cfg.problem(cfg.variants[0])
    return Setup(keys, load_data(keys, D64), 0, D64, cfg.track)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_head_block_is_the_extended_hidden_variable_matrix(norm):
    """With a linear head and MSE, mean((f - y)^2), the GGN block of the head is
    2 [A, 1]^T [A, 1] / n for the activations A that reach it (after BatchNorm on batch
    statistics and tanh): the tracker's block figures match it and a double-backward GGN."""
    setup = _setup(norm)
    opt = make_optimizer("sgd", {"lr": 0.1})
    row = setup.tracker.conditioning(setup.theta0, opt, opt.init(setup.theta0))
    model = setup.model.train()  # BatchNorm on the batch's statistics, as bn_mode batch
    X, y = setup.problem.batches[0]
    head = model[-1]
    with torch.no_grad():
        A = model[:-1](X)
    Z = torch.cat([A, torch.ones(len(X), 1, dtype=D64)], 1)
    G = 2 * Z.T @ Z / len(X)
    params = [head.weight, head.bias]
    dense = double_backward_ggn(lambda: model(X), lambda out: ((out.squeeze(-1) - y) ** 2).mean(), params)
    torch.testing.assert_close(dense, G, rtol=1e-10, atol=1e-12)
    ev = torch.linalg.eigvalsh(G)
    assert row["block_lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-10)
    assert row["block_kappa"] == pytest.approx(float(ev[-1] / ev[0]), rel=1e-8)


def test_batchnorm_conditions_the_head_block_at_matched_initialization():
    """The two architectures share their Linear layers (one seed); BatchNorm centres and scales
    the pre-activations, so the tanh outputs are no longer collinear with the bias column and
    the head block's kappa falls (it is >100x here, with inputs of mean 3)."""
    raw, bn = _setup("none"), _setup("batch")
    torch.testing.assert_close(raw.model[0].weight, bn.model[0].weight, rtol=0, atol=0)
    opt = make_optimizer("sgd", {"lr": 0.1})
    k_raw = raw.tracker.conditioning(raw.theta0, opt, opt.init(raw.theta0))["block_kappa"]
    k_bn = bn.tracker.conditioning(bn.theta0, opt, opt.init(bn.theta0))["block_kappa"]
    assert k_bn * 100 < k_raw, (k_bn, k_raw)
