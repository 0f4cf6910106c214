"""Streaming per-feature moments and layer activations, for the normalization builders.

All statistics are accumulated in float64, in chunks of ``CHUNK`` samples, with the pairwise
update of Chan, Golub & LeVeque (1979): for two parts with counts ``n, m``, means ``a, b`` and
co-moments ``C, D``, the union has mean ``a + (b - a) m / (n + m)`` and co-moment
``C + D + (b_x - a_x)(b_y - a_y) n m / (n + m)``. Variances are population variances (``ddof=0``,
as scikit-learn's StandardScaler and BatchNorm's normalization use).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

CHUNK = 4096


class Moments:
    """Per-feature means of ``a, b [n, F]`` and their population (co)variances, streamed."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, a: Tensor, b: Tensor | None = None) -> None:
        a = a.double()
        b = a if b is None else b.double()
        m = a.shape[0]
        ma, mb = a.mean(0), b.mean(0)
        caa, cab = ((a - ma) ** 2).sum(0), ((a - ma) * (b - mb)).sum(0)
        if self.n == 0:
            self.n, self.mean_a, self.mean_b, self._caa, self._cab = m, ma, mb, caa, cab
            return
        n, total = self.n, self.n + m
        da, db = ma - self.mean_a, mb - self.mean_b
        self.mean_a = self.mean_a + da * (m / total)
        self.mean_b = self.mean_b + db * (m / total)
        self._caa = self._caa + caa + da * da * (n * m / total)
        self._cab = self._cab + cab + da * db * (n * m / total)
        self.n = total

    @property
    def var_a(self) -> Tensor:
        return self._caa / self.n

    @property
    def cov_ab(self) -> Tensor:
        return self._cab / self.n


def features_last(t: Tensor, axis: int) -> Tensor:
    """``[N, ..., F at axis, ...] -> [N * rest, F]``: one row per (sample, position)."""
    return t.movedim(axis, -1).reshape(-1, t.shape[axis])


def model_dtype(model: nn.Module) -> torch.dtype:
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def model_device(model: nn.Module) -> torch.device:
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def as_input(X: Tensor, model: nn.Module) -> Tensor:
    """``X`` on the model's device, floating data cast to the model's dtype."""
    X = torch.as_tensor(X).to(model_device(model))
    return X.to(model_dtype(model)) if X.is_floating_point() else X


def chunks(X: Tensor) -> Iterator[Tensor]:
    yield from X.split(CHUNK)


@contextlib.contextmanager
def capture(modules: Sequence[nn.Module], *, inputs: bool = False):
    """Record the output (or the first input) of each module at every call: ``store[i]``."""
    store: list[list[Tensor]] = [[] for _ in modules]

    def hook(i):
        if inputs:
            return lambda mod, args: store[i].append(args[0].detach())
        return lambda mod, args, out: store[i].append(out.detach())

    handles = [
        m.register_forward_pre_hook(hook(i)) if inputs else m.register_forward_hook(hook(i))
        for i, m in enumerate(modules)
    ]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
