"""Hessian and generalized Gauss-Newton (GGN) products on the flat parameter vector.

Both are sums over the fixed batches of a Problem, weighted by ``n_b / N``::

    H v = sum_b (n_b / N) * d^2 L_b / d theta^2 v          forward-over-reverse: jvp(grad(L_b))
    G v = sum_b (n_b / N) * J_b^T (d^2 l / d f^2) J_b v    jvp through the model, loss-Hessian
                                                            product on the outputs, vjp back

and each product is ``torch.func.vmap``-ed over a block of K vectors ``V [P, K]`` (in chunks
of ``block_size`` columns to bound memory: activations are held once per column).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from condlab.distributed import all_reduce_sum
from condlab.operators.base import LinearOperator

if TYPE_CHECKING:
    from condlab.problem import Problem

CURVATURES = ("hessian", "ggn")


class _CurvatureOperator(LinearOperator):
    def __init__(self, problem: Problem, block_size: int = 16):
        super().__init__(problem.n_params, problem.dtype, problem.device)
        self.problem = problem
        self.block_size = max(1, int(block_size))

    def _batch_product(self, b: int, V: Tensor) -> Tensor:
        raise NotImplementedError

    def _matmat(self, V: Tensor) -> Tensor:
        V = V.to(self.dtype)
        out = torch.zeros_like(V)
        for b, w in enumerate(self.problem.weights):
            for start in range(0, V.shape[1], self.block_size):
                cols = slice(start, start + self.block_size)
                out[:, cols] += w * self._batch_product(b, V[:, cols])
        return all_reduce_sum(out)  # a distributed run holds a shard of the batches per rank


class HessianOperator(_CurvatureOperator):
    """``H = d^2 L / d theta^2 [P, P]``, the exact Hessian of the mean loss."""

    name = "hessian"

    def _batch_product(self, b: int, V: Tensor) -> Tensor:
        p = self.problem

        def loss_b(theta: Tensor) -> Tensor:
            return p.batch_loss(theta, b)

        def hvp(v: Tensor) -> Tensor:  # v [P] -> H_b v [P]
            return jvp(grad(loss_b), (p.theta,), (v,))[1]

        return vmap(hvp, in_dims=1, out_dims=1, randomness=p.randomness)(V)


class GGNOperator(_CurvatureOperator):
    """``G = sum_b (n_b/N) J_b^T H_b^out J_b``, with ``J_b = d f(X_b) / d theta``.

    ``H_b^out`` is the Hessian of the batch-mean loss in the outputs, so ``G`` is positive
    semi-definite for convex losses (cross-entropy, mse) and equals ``H`` for a linear model.
    """

    name = "ggn"

    def _batch_product(self, b: int, V: Tensor) -> Tensor:
        p = self.problem
        X, y = p.batches[b]

        def f(theta: Tensor) -> Tensor:
            return p.outputs(theta, X, b)

        out, pullback = vjp(f, p.theta)
        out_grad = grad(lambda o: p.output_loss(o, y))

        def ggnvp(v: Tensor) -> Tensor:  # v [P] -> J^T H_out J v [P]
            Jv = jvp(f, (p.theta,), (v,))[1]
            HJv = jvp(out_grad, (out,), (Jv,))[1]
            return pullback(HJv)[0]

        return vmap(ggnvp, in_dims=1, out_dims=1, randomness=p.randomness)(V)


def curvature_operator(problem: Problem, curvature: str, block_size: int = 16) -> LinearOperator:
    """The ``hessian`` or ``ggn`` operator of a problem."""
    from condlab.errors import UsageError

    ops = {"hessian": HessianOperator, "ggn": GGNOperator}
    if curvature not in ops:
        raise UsageError(f"unknown curvature {curvature!r}; choose one of {', '.join(CURVATURES)}")
    return ops[curvature](problem, block_size=block_size)
