"""Diagonal preconditioning of an operator, a change of basis, and diagonals of operators.

Convention (the one condlab uses everywhere): ``P`` is the positive diagonal *preconditioner
itself*, the update is ``theta <- theta - eta P^-1 g``, and the operator whose conditioning sets
the speed is the symmetric

    P^-1/2 A P^-1/2          (similar to P^-1 A: same eigenvalues)

(research.md, paper A: with ``M = P^-1`` the per-coordinate step, ``M^1/2 A M^1/2``). Adam's
``P`` is ``sqrt(v_hat) + eps``, Gauss-Newton's ``diag(G)``, Jacobi's ``|diag(H)|``.

A diagonal rule in another orthonormal basis ``U`` (paper B's basis axis) is the diagonal ``P``
applied to ``U^T A U``: ``P^-1/2 U^T A U P^-1/2`` has the spectrum of
``(U P^-1/2 U^T) A (U P^-1/2 U^T)``, i.e. of the full preconditioner ``M = U P^-1 U^T``.

The diagonal of an operator, needed by the rules, is here too: exact from unit-vector blocks
(``P`` products) or Hutchinson's estimate ``E[z * (A z)]`` with Rademacher ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import hessian, jacrev, vjp, vmap

from condlab.distributed import all_reduce_sum
from condlab.errors import UsageError
from condlab.operators.base import LinearOperator

if TYPE_CHECKING:
    from condlab.problem import Problem


def check_diagonal(
    d: Tensor, what: str = "the preconditioner diagonal", hint: str | None = None
) -> Tensor:
    """``d`` if it is a finite, strictly positive vector; a UsageError that counts the bad
    coordinates (and suggests ``--eps``, then ``hint``) otherwise."""
    if d.ndim != 1:
        raise UsageError(f"{what} must be a vector [P], got shape {list(d.shape)}")
    nonfinite = int((~torch.isfinite(d)).sum())
    nonpos = int((d <= 0).sum())
    if nonfinite or nonpos:
        parts = []
        if nonpos:
            parts.append(f"{nonpos} are <= 0 (min {float(d[d <= 0].min()):.3g})")
        if nonfinite:
            parts.append(f"{nonfinite} are NaN or Inf")
        raise UsageError(
            f"{what}: {' and '.join(parts)} of its {d.numel()} coordinates; a diagonal "
            "preconditioner needs P > 0 (coordinates without curvature or gradient give 0): "
            "pass a positive --eps" + (f"; {hint}" if hint else "")
        )
    return d


class PreconditionedOperator(LinearOperator):
    """``P^-1/2 (A + inner I) P^-1/2 + outer I`` for a positive diagonal ``P`` given as ``[P]``.

    ``inner`` is coupled L2 (Adam + L2: the penalty's curvature is preconditioned too),
    ``outer`` decoupled weight decay (AdamW: ``theta <- theta - eta (P^-1 g + lam theta)``).
    ``A`` is any operator or dense tensor; it is never formed.
    """

    def __init__(self, A, p_diag: Tensor, *, inner_shift: float = 0.0, outer_shift: float = 0.0):
        super().__init__(A.shape[0], A.dtype, A.device)
        if p_diag.shape != (A.shape[0],):
            raise ValueError(f"p_diag must be [{A.shape[0]}], got {tuple(p_diag.shape)}")
        check_diagonal(p_diag)
        self.A, self.p_diag = A, p_diag.to(dtype=A.dtype, device=A.device)
        self.inner_shift, self.outer_shift = float(inner_shift), float(outer_shift)
        self._scale = self.p_diag.rsqrt()[:, None]  # P^-1/2 as a column [P, 1]

    def _matmat(self, V: Tensor) -> Tensor:
        W = self._scale * V
        out = self._scale * (self.A @ W)
        if self.inner_shift:
            out = out + self.inner_shift * (self._scale * W)
        if self.outer_shift:
            out = out + self.outer_shift * V
        return out


class BasisOperator(LinearOperator):
    """``U^T A U`` for an orthogonal ``U [P, P]`` (dense: small models only).

    Each product costs one product with ``A`` plus two dense ``[P, P] x [P, K]`` products.
    ``U`` is assumed orthogonal (eigenvectors from ``eigh``); that is not re-checked.
    """

    def __init__(self, A, U: Tensor):
        super().__init__(A.shape[0], A.dtype, A.device)
        if U.shape != tuple(A.shape):
            raise ValueError(f"U must be {tuple(A.shape)}, got {tuple(U.shape)}")
        self.A, self.U = A, U.to(dtype=A.dtype, device=A.device)

    def _matmat(self, V: Tensor) -> Tensor:
        return self.U.T @ (self.A @ (self.U @ V))


def _unit_block(P: int, start: int, k: int, dtype, device) -> Tensor:
    E = torch.zeros(P, k, dtype=dtype, device=device)
    E[torch.arange(start, start + k, device=device), torch.arange(k, device=device)] = 1
    return E


def exact_diagonal(A, block_size: int = 64) -> Tensor:
    """``diag(A) [P]``: ``torch.diagonal`` of a dense tensor, else ``A e_i`` over unit blocks.

    Cost for an operator: ``P`` matvecs (``ceil(P / block_size)`` block products); memory one
    ``[P, block_size]`` block.
    """
    if isinstance(A, Tensor):
        return torch.diagonal(A).clone()
    P = A.shape[0]
    out = torch.empty(P, dtype=A.dtype, device=A.device)
    for start in range(0, P, block_size):
        k = min(block_size, P - start)
        AE = A @ _unit_block(P, start, k, A.dtype, A.device)
        rows = torch.arange(start, start + k, device=A.device)
        out[start : start + k] = AE[rows, rows - start]
    return out


@dataclass(frozen=True)
class DiagonalEstimate:
    """A diagonal ``[P]`` and how it was obtained.

    ``stderr`` is the per-coordinate standard error of a sample mean (Hutchinson probes or
    mini-batch gradients), None for an exact computation.
    """

    values: Tensor
    estimator: str
    stderr: Tensor | None = None
    samples: int = 0
    seed: int | None = None


class RunningMoments:
    """Mean and variance of rows added block by block (Chan et al.'s pairwise update: no
    ``E[x^2] - E[x]^2`` cancellation)."""

    def __init__(self):
        self.n, self.mean, self._m2 = 0, None, None

    def add(self, S: Tensor) -> None:  # S [k, P]: k samples
        k = S.shape[0]
        block_mean = S.mean(dim=0)
        block_m2 = (S - block_mean).square().sum(dim=0)
        if self.n == 0:
            self.n, self.mean, self._m2 = k, block_mean, block_m2
            return
        delta, total = block_mean - self.mean, self.n + k
        self.mean = self.mean + delta * (k / total)
        self._m2 = self._m2 + block_m2 + delta.square() * (self.n * k / total)
        self.n = total

    @property
    def variance(self) -> Tensor:
        """The unbiased sample variance (0 for a single sample)."""
        return self._m2 / max(self.n - 1, 1)


def hutchinson_diagonal(A, probes: int, *, seed: int = 0, block_size: int = 32) -> DiagonalEstimate:
    """Hutchinson's (Bekas et al. 2007; Sophia's "Hutchinson" variant) estimate of ``diag(A)``.

        diag(A) = E[z * (A z)],   z_i = +-1 independently (Rademacher)

    Unbiased; coordinate ``i`` has variance ``sum_{j != i} A_ij^2`` per probe, so the error
    shrinks as ``1 / sqrt(probes)`` and is small where ``A`` is diagonally dominant. Cost:
    ``probes`` matvecs. Probes are drawn on the CPU from ``seed``, so results do not depend
    on the device.
    """
    if probes < 2:
        raise UsageError(f"--probes must be at least 2 for a Hutchinson estimate, got {probes}")
    P = A.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    stats = RunningMoments()
    for start in range(0, probes, block_size):
        k = min(block_size, probes - start)
        Z = torch.randint(0, 2, (P, k), generator=gen).to(A.dtype).mul_(2).sub_(1)
        Z = Z.to(A.device)
        stats.add((Z * (A @ Z)).T)  # k samples of diag(A), [k, P]
    mean, var = stats.mean, stats.variance
    return DiagonalEstimate(
        values=mean,
        estimator="hutchinson",
        stderr=(var / probes).sqrt(),
        samples=probes,
        seed=int(seed),
    )


def exact_ggn_diagonal(problem: Problem, max_elements: int = 2**22) -> Tensor:
    """``diag(G) [P]`` exactly, from per-sample Jacobians (no ``[P, P]`` matrix, no ``P`` products).

    condlab's losses are means of per-sample terms, ``L = (1/N) sum_i l_i(f_i)``, so the output
    Hessian is block diagonal and

        diag(G)_p = (1/N) sum_i  J_i[:, p]^T  H_i  J_i[:, p],   J_i = d f_i / d theta  [C, P],
                                                               H_i = d^2 l_i / d f_i^2  [C, C].

    Cost: ``C`` vector-Jacobian products per sample (``vmap(jacrev)`` over chunks of samples,
    ``max_elements`` bounding the ``[k, C, P]`` Jacobian block) plus ``N C^2 P`` flops; for a
    2,410-parameter MLP on a few thousand samples this is well under a second, against ``P``
    full GGN products for unit vectors. When samples are coupled (BatchNorm on batch
    statistics, fixed dropout masks) the Jacobian rows are pulled back through the whole batch
    instead (``C`` batch backward passes per sample), still exact. Round-off negatives of the
    per-coordinate quadratic forms (``H_i`` is PSD for cross-entropy and mse) are clipped to 0.
    """
    spec = problem.loss_spec
    if spec.custom or problem.counts != problem.sizes:
        what = "a user's loss" if spec.custom else f"loss {spec.name} weights its batches by tokens"
        raise UsageError(
            f"the exact per-sample GGN diagonal is a mean over samples, but {what}; "
            "use --diag-estimator hutchinson (GGN products, exact weighting)"
        )
    theta = problem.theta
    P = problem.n_params
    diag = torch.zeros(P, dtype=problem.dtype, device=problem.device)
    coupled = problem.couples_samples
    for b, (X, y) in enumerate(problem.batches):
        n = X.shape[0]
        if coupled:
            out, pullback = vjp(lambda th, X=X, b=b: problem.outputs(th, X, b), theta)
        else:
            with torch.no_grad():
                out = problem.outputs(theta, X, b)
        out_shape = out.shape[1:]
        C = out[0].numel()

        def sample_loss(o: Tensor, yi: Tensor, out_shape=out_shape) -> Tensor:  # l_i(f_i)
            return problem.output_loss(o.reshape(1, *out_shape), yi[None])

        k = max(1, max_elements // (C * P))
        for s in range(0, n, k):
            rows = slice(s, min(s + k, n))
            m = rows.stop - rows.start
            H = vmap(hessian(sample_loss))(out[rows].reshape(m, C).detach(), y[rows])  # [m,C,C]
            if coupled:
                E = torch.zeros(m * C, n * C, dtype=out.dtype, device=out.device)
                cols = torch.arange(rows.start * C, rows.stop * C, device=E.device)
                E[cols - rows.start * C, cols] = 1
                J = vmap(pullback)(E.reshape(m * C, *out.shape))[0].reshape(m, C, P)
            else:

                def f_i(th: Tensor, x: Tensor, b=b) -> Tensor:  # f_i(theta) [C]
                    return problem.outputs(th, x[None], b).reshape(-1)

                J = vmap(jacrev(f_i), in_dims=(None, 0))(theta, X[rows])  # [m, C, P]
            diag += torch.einsum("kcp,kcd,kdp->p", J, H, J)
    return all_reduce_sum(diag / problem.n_samples).clamp_min(0)  # a rank holds a shard
