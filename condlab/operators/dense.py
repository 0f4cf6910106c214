"""Dense ``[P, P]`` references for tiny models, built with ``torch.func.hessian`` / ``jacrev``.

They share no code with the matrix-free products beyond the Problem's loss, so the tests can
compare the two; ``--exact`` uses them for a full eigendecomposition on small models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import grad, hessian, jacrev, vjp, vmap

if TYPE_CHECKING:
    from condlab.problem import Problem



def dense_hessian(problem: Problem) -> Tensor:
    """``sum_b (n_b/N) H_b``, each ``H_b`` by reverse-over-reverse: the pullback of ``grad L_b``
    applied to the identity.

    Not ``torch.func.hessian``: in torch 2.13 it (and ``jacrev(jacrev(.))``) returns a wrong
    Hessian for BatchNorm in training mode, while this agrees with finite differences.
    """
    eye = torch.eye(problem.n_params, dtype=problem.dtype, device=problem.device)
    H = torch.zeros_like(eye)
    for b, w in enumerate(problem.weights):
        _, pullback = vjp(grad(lambda th, b=b: problem.batch_loss(th, b)), problem.theta)
        H += w * vmap(pullback)(eye)[0]
    return H


def dense_ggn(problem: Problem) -> Tensor:
    """``sum_b (n_b/N) J_b^T H_b^out J_b`` with the Jacobian and output Hessian materialized."""
    P = problem.n_params
    G = torch.zeros(P, P, dtype=problem.dtype, device=problem.device)
    for b, w in enumerate(problem.weights):
        X, y = problem.batches[b]
        out = problem.outputs(problem.theta, X, b).detach()
        J = jacrev(lambda th, X=X, b=b: problem.outputs(th, X, b))(problem.theta).reshape(-1, P)  # [M, P]
        H_out = hessian(lambda o, y=y: problem.output_loss(o, y))(out).reshape(J.shape[0], -1)  # [M, M]
        G += w * (J.T @ H_out @ J)
    return G


def dense_curvature(problem: Problem, curvature: str) -> Tensor:
    return {"hessian": dense_hessian, "ggn": dense_ggn}[curvature](problem)
