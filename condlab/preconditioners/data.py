"""P from the second moment of mini-batch gradients (adam, rmsprop, adagrad rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import grad, vmap

from condlab.distributed import is_distributed
from condlab.errors import UsageError
from condlab.operators.diagonal import (
    DiagonalEstimate,
    RunningMoments,
)

if TYPE_CHECKING:
    from condlab.problem import Problem


# -- from data: the second moment of mini-batch gradients ----------------------------------------
def gradient_second_moment(
    problem: Problem,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    basis: Tensor | None = None,
    chunk_samples: int = 4096,
) -> DiagonalEstimate:
    """``v = (1/m) sum_j (U^T g_j)^2 [P]``: the second moment of mini-batch gradients at theta.

    The problem's samples are pooled, permuted with ``seed`` and cut into ``m = floor(N / B)``
    mini-batches of ``B = batch_size`` (a remainder of ``N mod B`` samples is left out, so every
    gradient has the same noise level); ``g_j`` is the gradient of mini-batch ``j``'s mean
    loss. ``batch_size=None`` (or N) gives the squared full-batch gradient ``problem.gradient()``
    (over the problem's own batches), the full-batch regime. ``basis`` ``U`` gives the moment
    in that basis (paper B: ``E[(U^T g)^2]``). ``stderr`` is the standard error of the mean
    over the ``m`` mini-batches (None if m = 1). Cost: ``m`` gradients, vmapped over chunks of
    ``chunk_samples`` samples.
    """
    N = problem.n_samples
    B = N if batch_size is None else int(batch_size)
    if not 1 <= B <= N:
        raise UsageError(f"--precond-batch-size must be between 1 and the {N} samples, got {B}")
    m = N // B
    if m == 1:
        g = problem.gradient()
        g = g if basis is None else basis.to(g).T @ g
        return DiagonalEstimate(g.square(), "full-batch-gradient", samples=1, seed=int(seed))
    if is_distributed():
        raise UsageError(
            "--precond-batch-size below the dataset size needs all samples in one process; "
            "run it without torchrun (or use the full batch)"
        )
    X = torch.cat([Xb for Xb, _ in problem.batches])
    Y = torch.cat([yb for _, yb in problem.batches])
    order = torch.randperm(N, generator=torch.Generator().manual_seed(int(seed)))[: m * B]
    order = order.to(X.device).reshape(m, B)

    def batch_grad(theta: Tensor, Xb: Tensor, yb: Tensor, j: int = 0) -> Tensor:
        return grad(lambda th: problem.output_loss(problem.outputs(th, Xb, j), yb))(theta)

    stats = RunningMoments()
    c = max(1, chunk_samples // B)
    for start in range(0, m, c):
        idx = order[start : start + c]  # [c, B]
        if problem.uses_dropout:  # masks drawn per mini-batch: no vmap over random draws
            Gs = torch.stack(
                [batch_grad(problem.theta, X[i], Y[i], start + k) for k, i in enumerate(idx)]
            )
        else:
            Gs = vmap(batch_grad, in_dims=(None, 0, 0))(problem.theta, X[idx], Y[idx])  # [c, P]
        if basis is not None:
            Gs = Gs @ basis.to(Gs)  # rows (U^T g_j)^T
        stats.add(Gs.square())
    return DiagonalEstimate(
        stats.mean,
        "minibatch-gradients",
        stderr=(stats.variance / m).sqrt(),
        samples=m,
        seed=int(seed),
    )
