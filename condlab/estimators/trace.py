r"""Stochastic trace estimators: Hutchinson and Hutch++.

Quantity: ``tr(A)`` of a symmetric ``A [P, P]`` seen only through products ``A Z``.

Hutchinson (1989): for probes with ``E[z z^T] = I`` (Rademacher or Gaussian),
``tr(A) = E[z^T A z]``; the estimate is the mean of ``n`` samples ``z_i^T A z_i`` and its
standard error is ``std(samples) / sqrt(n)`` (variance ``2 ||A||_F^2 - 2 sum_i A_ii^2`` per
Rademacher sample, zero for a diagonal ``A``).

Hutch++ (Meyer, Musco, Musco, Woodruff 2021): spend a third of the matvecs on a sketch
``Q = orth(A S)`` ``[P, k]``, take ``tr(Q^T A Q)`` exactly (a third) and estimate the deflated
remainder ``tr((I - QQ^T) A (I - QQ^T))`` by Hutchinson (the last third). The error then scales
with the tail ``||A - A_k||_F`` instead of ``||A||_F``; if ``rank(A) <= k`` the estimate is exact.
The standard error is that of the Hutchinson part (the sketch part has no sampling error given
``Q``, but ``Q`` itself is random, so the stated error is conditional on the sketch).

Probes are streamed: ``block_size`` of them at a time are drawn (one column after another
from the seeded generator, in the working dtype: :class:`~condlab.estimators._matmat.ProbeStream`),
multiplied in one product call and reduced to their samples, so memory holds one block
(``2 block_size`` vectors), never ``[P, num_matvecs]``; the probes and so the estimate are the
same whatever the block size. Hutch++ also keeps its sketch ``Q [P, num_matvecs / 3]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.estimators._matmat import ProbeStream, make_generator, matmat, operator_size


@dataclass(frozen=True)
class TraceEstimate:
    """``value +- stderr`` for ``tr(A)`` from ``matvecs`` products."""

    value: float
    stderr: float  # one standard error (sample std / sqrt(samples) of the Hutchinson part)
    matvecs: int
    method: str  # "hutchinson" or "hutch++"
    distribution: str
    seed: int | None  # None when a generator was passed in


def _quadratic_forms(A, Z: Tensor, block_size: int) -> Tensor:
    """``[K]`` samples ``z_i^T A z_i`` for the columns of ``Z [P, K]``, as float64 on the CPU."""
    out = []
    for i in range(0, Z.shape[1], block_size):
        Zb = Z[:, i : i + block_size]
        out.append((Zb * (A @ Zb)).sum(dim=0).to("cpu", torch.float64))
    return torch.cat(out)


def _streamed_forms(A, stream: ProbeStream, n: int, block_size: int, project=None) -> Tensor:
    """``[n]`` samples ``z^T A z`` of the next ``n`` probes of ``stream``, ``block_size`` at a
    time (each probe first mapped by ``project`` if given)."""
    out = []
    for i in range(0, n, block_size):
        Z = stream.next(min(block_size, n - i))
        if project is not None:
            Z = project(Z)
        out.append((Z * (A @ Z)).sum(dim=0).to("cpu", torch.float64))
        del Z
    return torch.cat(out)


def _mean_and_stderr(samples: Tensor) -> tuple[float, float]:
    n = samples.numel()
    return float(samples.mean()), float(samples.std(unbiased=True)) / math.sqrt(n)


def _check(num_matvecs: int, minimum: int, block_size: int) -> None:
    if num_matvecs < minimum:
        raise UsageError(f"num_matvecs must be >= {minimum}, got {num_matvecs}")
    if block_size < 1:
        raise UsageError(f"block_size must be >= 1, got {block_size}")


def hutchinson(
    A,
    num_matvecs: int,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    distribution: str = "rademacher",
    block_size: int = 32,
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr(A)`` from ``num_matvecs >= 2`` probes."""
    P = operator_size(A)
    _check(num_matvecs, 2, block_size)
    gen = make_generator(generator, seed)
    stream = ProbeStream(P, gen, like=A, distribution=distribution)
    value, stderr = _mean_and_stderr(_streamed_forms(A, stream, num_matvecs, block_size))
    run_seed = None if generator is not None else int(seed)
    return TraceEstimate(value, stderr, num_matvecs, "hutchinson", distribution, run_seed)


def hutchpp(
    A,
    num_matvecs: int,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    distribution: str = "rademacher",
    block_size: int = 32,
) -> TraceEstimate:
    """Hutch++ estimate of ``tr(A)`` from ``num_matvecs >= 6`` products.

    ``k = num_matvecs // 3`` go into the sketch ``A S``, ``k`` into ``A Q`` and the remaining
    ``num_matvecs - 2k >= 2`` into Hutchinson on the deflated remainder.
    """
    P = operator_size(A)
    _check(num_matvecs, 6, block_size)
    gen = make_generator(generator, seed)
    k = min(num_matvecs // 3, P)
    n_hutch = num_matvecs - 2 * k
    stream = ProbeStream(P, gen, like=A, distribution=distribution)
    AS = torch.empty(k, P, dtype=A.dtype, device=A.device).T  # [P, k], filled block by block
    for i in range(0, k, block_size):
        AS[:, i : i + block_size] = matmat(A, stream.next(min(block_size, k - i)))
    Q, _ = torch.linalg.qr(AS)  # [P, k] orthonormal
    del AS
    t_sketch = float(_quadratic_forms(A, Q, block_size).sum())

    def deflate(G: Tensor) -> Tensor:  # (I - QQ^T) G, one block at a time
        return G - Q @ (Q.T @ G)

    t_rest, stderr = _mean_and_stderr(_streamed_forms(A, stream, n_hutch, block_size, deflate))
    run_seed = None if generator is not None else int(seed)
    return TraceEstimate(t_sketch + t_rest, stderr, num_matvecs, "hutch++", distribution, run_seed)
