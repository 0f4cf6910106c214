"""How estimators touch an operator: block products, its size, and seeded random probes.

An operator ``A`` is anything with ``.shape == (P, P)``, ``.dtype``, ``.device`` and
``A @ V`` for ``V [P, K] -> [P, K]``: a dense ``torch.Tensor`` or a condlab ``LinearOperator``.

Random vectors are drawn on the CPU from a ``torch.Generator`` and then moved to ``A``'s
device, so a seed gives the same probes on every device. :func:`random_probes` draws a
``[P, K]`` block at once in float64 (Lanczos start blocks); :class:`ProbeStream` draws the
probes of the stochastic estimators one column at a time directly in the working dtype, so any
block of them costs only its own ``[P, k]`` and the probes are the same whatever the block size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from condlab.errors import UsageError


def operator_size(A) -> int:
    """``P`` for a square ``[P, P]`` operator; a ``UsageError`` otherwise."""
    shape = tuple(A.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise UsageError(f"expected a square [P, P] operator, got shape {shape}")
    return int(shape[0])


def matmat(A, V: Tensor, block_size: int | None = None) -> Tensor:
    """``A V`` for ``V [P, K] -> [P, K]``, in column blocks of ``block_size`` if given."""
    if V.ndim != 2:
        raise UsageError(f"matmat expects a [P, K] block, got shape {tuple(V.shape)}")
    K = V.shape[1]
    if block_size is None or K <= block_size:
        return A @ V
    return torch.cat([A @ V[:, i : i + block_size] for i in range(0, K, block_size)], dim=1)


def make_generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    """``generator`` itself, or a fresh CPU generator seeded with ``seed``."""
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(int(seed))


def random_probes(
    P: int,
    K: int,
    generator: torch.Generator,
    *,
    like,
    distribution: str = "gaussian",
) -> Tensor:
    """``[P, K]`` probes in ``like``'s dtype and device.

    ``gaussian``: i.i.d. N(0, 1); ``rademacher``: i.i.d. +-1 with probability 1/2.
    Both satisfy E[z z^T] = I, so E[z^T A z] = tr(A).
    """
    gen_device = generator.device
    if distribution == "gaussian":
        Z = torch.randn(P, K, generator=generator, dtype=torch.float64, device=gen_device)
    elif distribution == "rademacher":
        bits = torch.randint(0, 2, (P, K), generator=generator, device=gen_device)
        Z = bits.to(torch.float64) * 2 - 1
    else:
        raise UsageError(
            f"unknown probe distribution {distribution!r}; use 'rademacher' or 'gaussian'"
        )
    return Z.to(dtype=like.dtype, device=like.device)


class ProbeStream:
    """Probes ``z_1, z_2, ...`` drawn one column at a time, in order, from ``generator``.

    Column ``j`` is one ``randn(P)`` (gaussian) or ``randint(0, 2, P) * 2 - 1`` (rademacher)
    call in ``like``'s dtype, so ``next(k)`` blocks of any sizes concatenate to the same
    probes: results do not depend on the block size the memory plan picks. A block costs
    ``k P`` in the working dtype and, off the CPU, one ``[P]`` host column at a time.
    """

    def __init__(self, P: int, generator: torch.Generator, *, like, distribution: str = "gaussian"):
        if distribution not in ("gaussian", "rademacher"):
            raise UsageError(
                f"unknown probe distribution {distribution!r}; use 'rademacher' or 'gaussian'"
            )
        self.P, self.generator, self.distribution = int(P), generator, distribution
        self.dtype, self.device = like.dtype, torch.device(like.device)
        self.drawn = 0

    def _column(self, out: Tensor) -> None:
        g = self.generator
        if self.distribution == "gaussian":
            torch.randn(self.P, generator=g, dtype=out.dtype, device=g.device, out=out)
        else:
            torch.randint(0, 2, (self.P,), generator=g, dtype=out.dtype, device=g.device, out=out)
            out.mul_(2).sub_(1)

    def next(self, k: int) -> Tensor:
        """The next ``k`` probes as ``[P, k]`` (columns contiguous) on ``like``'s device."""
        Z = torch.empty(k, self.P, dtype=self.dtype, device=self.device).T
        host = None if self.device == self.generator.device else torch.empty(
            self.P, dtype=self.dtype, device=self.generator.device)
        for j in range(k):
            if host is None:
                self._column(Z[:, j])
            else:
                self._column(host)
                Z[:, j].copy_(host)
        self.drawn += k
        return Z
