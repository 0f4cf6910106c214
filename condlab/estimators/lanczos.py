r"""Lanczos tridiagonalization with full reorthogonalization.

Quantity: for a symmetric ``A [P, P]`` and a start vector ``v0``, an orthonormal basis
``Q = [q_1 .. q_m]`` of the Krylov space ``K_m(A, v0) = span{v0, A v0, .., A^{m-1} v0}`` and the
tridiagonal ``T = Q^T A Q`` (diagonal ``alphas``, off-diagonal ``betas[:-1]``) with

    A Q = Q T + r e_m^T,        r = beta_m q_{m+1},  Q^T r = 0        (the Lanczos relation)

Estimator: the three-term recurrence ``w = A q_j - beta_{j-1} q_{j-1} - alpha_j q_j``, with ``w``
orthogonalized against all of ``Q`` twice (classical Gram-Schmidt twice, "twice is enough";
Giraud, Langou, Rozloznik 2005). Then ``Q^T Q = I`` to working precision and the Ritz values
carry no "ghost" copies, which the plain recurrence produces once a Ritz value converges
(Paige 1971). Cost per step: one matvec, ``4 P j`` flops, and one device sync (``alpha_j``,
``beta_j`` go to the CPU: the breakdown test needs ``beta_j``); memory ``P x m``.

Breakdown: ``beta_j <= 64 eps ||A||`` means ``K_j`` is an invariant subspace (every Ritz pair is
exact). The recurrence then restarts from a random vector orthogonal to ``Q`` and records
``beta_j = 0``, so ``T`` is block diagonal and depth ``m = P`` returns every eigenvalue of
``A`` with its multiplicity.

Reference: Golub & Van Loan, Matrix Computations (4th ed.), Sec. 10.1;
Parlett, The Symmetric Eigenvalue Problem, Ch. 13.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from condlab.errors import CondlabError, UsageError
from condlab.estimators._matmat import make_generator, matmat, operator_size, random_probes

BREAKDOWN_RTOL = 64.0  # beta <= BREAKDOWN_RTOL * eps * ||A|| counts as breakdown


@dataclass(frozen=True)
class LanczosDecomposition:
    """``A Q = Q T + residual e_m^T`` with ``T = tridiag(betas[:-1], alphas, betas[:-1])``."""

    Q: Tensor  # [P, m] orthonormal, A's dtype and device
    alphas: Tensor  # [m] float64 CPU, diagonal of T
    betas: Tensor  # [m] float64 CPU; betas[:-1] off-diagonal of T, betas[-1] = ||residual||
    residual: Tensor  # [P] r = beta_m q_{m+1}, orthogonal to Q
    matvecs: int
    breakdowns: int  # times the recurrence restarted from a fresh vector after beta ~ 0
    seed: int | None  # None when a generator was passed in

    def tridiagonal(self) -> Tensor:
        """``T [m, m]`` in float64 on the CPU."""
        off = self.betas[:-1]
        return torch.diag(self.alphas) + torch.diag(off, 1) + torch.diag(off, -1)

    def ritz_values(self) -> Tensor:
        """Eigenvalues of ``T``, ascending, float64 CPU."""
        return torch.linalg.eigvalsh(self.tridiagonal())


def cgs2(Q: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``w - Q Q^T w`` by classical Gram-Schmidt twice, and the coefficients ``Q^T w [k]``."""
    h = Q.T @ w  # [k]
    w = w - Q @ h
    h2 = Q.T @ w
    return w - Q @ h2, h + h2


def fresh_direction(Q: Tensor, generator: torch.Generator) -> Tensor:
    """A random unit vector orthogonal to the orthonormal ``Q [P, k]`` (``k < P``)."""
    P, k = Q.shape
    for _ in range(3):
        v = random_probes(P, 1, generator, like=Q)[:, 0]
        v = v / torch.linalg.vector_norm(v)
        v, _ = cgs2(Q, v)
        norm = float(torch.linalg.vector_norm(v))
        if norm > 1e-3 / max(P, 1) ** 0.5:
            return v / norm
    raise CondlabError(f"could not find a vector orthogonal to a basis of {k} in dimension {P}")


def lanczos_step(A, Q: Tensor, j: int, q: Tensor) -> tuple[Tensor, Tensor]:
    """Put ``q`` in column ``j`` of ``Q``, multiply, orthogonalize against ``Q[:, :j+1]``.

    Returns the residual ``w [P]`` (orthogonal to ``Q[:, :j+1]``) and
    ``[alpha_j, ||w||, ||A q||]`` as a float64 CPU tensor (the step's one device sync).
    """
    Q[:, j] = q
    w = matmat(A, q[:, None])[:, 0]
    aq_norm = torch.linalg.vector_norm(w)
    w, h = cgs2(Q[:, : j + 1], w)
    stats = torch.stack([h[j], torch.linalg.vector_norm(w), aq_norm])
    return w, stats.to(device="cpu", dtype=torch.float64)


def is_breakdown(beta: float, anorm: float, dtype: torch.dtype) -> bool:
    """``beta`` is zero to working precision relative to ``||A|| ~ anorm``."""
    return beta <= BREAKDOWN_RTOL * torch.finfo(dtype).eps * anorm


def lanczos(
    A,
    num_matvecs: int,
    *,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> LanczosDecomposition:
    """``num_matvecs`` steps of Lanczos with full reorthogonalization from ``v0`` (random if None).

    ``m = num_matvecs <= P`` steps cost ``m`` matvecs. The start vector is Gaussian from
    ``generator`` (or from ``seed``) unless ``v0 [P]`` is given; fresh vectors after a
    breakdown come from the same generator.
    """
    P = operator_size(A)
    m = int(num_matvecs)
    if not 1 <= m <= P:
        raise UsageError(f"num_matvecs must be between 1 and P = {P}, got {num_matvecs}")
    gen = make_generator(generator, seed)
    Q = torch.empty(P, m, dtype=A.dtype, device=A.device)  # [P, m]
    if v0 is None:
        q = random_probes(P, 1, gen, like=Q)[:, 0]
    else:
        if tuple(v0.shape) != (P,):
            raise UsageError(f"v0 must have shape [{P}], got {tuple(v0.shape)}")
        q = v0.to(dtype=A.dtype, device=A.device)
    norm = torch.linalg.vector_norm(q)
    if float(norm) == 0.0:
        raise UsageError("v0 must be nonzero")
    q = q / norm
    alphas, betas = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    anorm, breakdowns = 0.0, 0
    for j in range(m):
        w, stats = lanczos_step(A, Q, j, q)
        alpha, beta, aq = stats.tolist()
        alphas[j], anorm = alpha, max(anorm, aq)
        if is_breakdown(beta, anorm, A.dtype):
            w = torch.zeros_like(w)
            if j + 1 < m:
                q = fresh_direction(Q[:, : j + 1], gen)
                breakdowns += 1
        else:
            betas[j] = beta
            q = w / beta
    return LanczosDecomposition(
        Q=Q,
        alphas=alphas,
        betas=betas,
        residual=w,
        matvecs=m,
        breakdowns=breakdowns,
        seed=None if generator is not None else int(seed),
    )
