"""Tiny float64 problems shared by the operator tests: cases as data, built on demand."""

from __future__ import annotations

import torch
from torch import nn


class ResidualLN(nn.Module):
    """A custom module: linear -> residual tanh block -> LayerNorm -> linear head."""

    def __init__(self, d_in=3, d=4, d_out=3):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.block = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, d_out)

    def forward(self, x):
        h = self.inp(x)
        h = h + torch.tanh(self.block(h))
        return self.head(self.norm(h))


def _linear():
    return nn.Linear(3, 2)


def _mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))


def _cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 4, 4)),
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def _bn():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3))


# name -> (model factory, input dim, loss, number of outputs, extra Problem kwargs)
CASES = {
    "linear-mse": (_linear, 3, "mse", 2, {}),
    "mlp-ce": (_mlp, 3, "cross-entropy", 3, {}),
    "mlp-mse": (_mlp, 3, "mse", 3, {}),
    "residual-layernorm-ce": (ResidualLN, 3, "cross-entropy", 3, {}),
    "cnn-ce": (_cnn, 16, "cross-entropy", 3, {}),
    "batchnorm-eval-ce": (_bn, 3, "cross-entropy", 3, {"bn_mode": "eval"}),
    "batchnorm-batch-ce": (_bn, 3, "cross-entropy", 3, {"bn_mode": "batch"}),
}


def make_case(name: str, n: int = 9, seed: int = 0):
    """Model (float64, random weights and BN statistics), data X [n, d], targets y."""
    factory, d_in, loss, d_out, kwargs = CASES[name]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = factory().double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
    X = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    if loss == "cross-entropy":
        y = torch.randint(0, d_out, (n,), generator=g)
    else:
        y = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return model, X, y, loss, kwargs
