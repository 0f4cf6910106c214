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


def cgs2(Q: Tensor, w: Tensor, inplace: bool = False) -> tuple[Tensor, Tensor]:
    """``w - Q Q^T w`` by classical Gram-Schmidt twice, and the coefficients ``Q^T w [k]``.

    One new ``w``-sized tensor (the first pass writes it, the second updates it in place), no
    ``Q h`` temporaries: at GPT-2 small's 124M parameters each is 0.5 GB per column.
    ``inplace``: ``w`` is the caller's scratch and is overwritten (no new tensor at all)."""
    h = Q.T @ w  # [k]
    if inplace:
        w.addmv_(Q, h, alpha=-1) if w.ndim == 1 else w.addmm_(Q, h, alpha=-1)
    else:
        w = (torch.addmv if w.ndim == 1 else torch.addmm)(w, Q, h, alpha=-1)
    h2 = Q.T @ w
    if w.ndim == 1:
        w.addmv_(Q, h2, alpha=-1)
    else:
        w.addmm_(Q, h2, alpha=-1)
    return w, h + h2


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
    Q = torch.empty(m, P, dtype=A.dtype, device=A.device).T  # [P, m], columns contiguous
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


@dataclass(frozen=True)
class LanczosBatch:
    """``K`` independent Lanczos tridiagonalizations ``T_k`` (one per start vector)."""

    alphas: Tensor  # [K, m] float64 CPU, diagonals
    betas: Tensor  # [K, m] float64 CPU; betas[:, :-1] off-diagonals (0 after a breakdown)
    matvecs: int
    breakdowns: int

    def tridiagonals(self) -> Tensor:
        """``[K, m, m]`` in float64 on the CPU."""
        off = self.betas[:, :-1]
        return torch.diag_embed(self.alphas) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)


def batched_lanczos(A, V0: Tensor, num_matvecs: int, generator: torch.Generator) -> LanczosBatch:
    """``m = num_matvecs`` steps of ``K`` independent Lanczos recurrences, one per column of
    ``V0 [P, K]``, advanced together: every step multiplies the block ``[q_1 .. q_K]`` once
    (one ``[P, K]`` product) and reorthogonalizes each ``q_k`` against its own basis (CGS2,
    batched). The same numbers as ``K`` calls of :func:`lanczos`, in ``m`` block products and
    ``m`` device syncs instead of ``K m``. Memory: ``K P m`` in ``A``'s dtype.
    """
    P, K = V0.shape
    m = int(num_matvecs)
    if not 1 <= m <= P:
        raise UsageError(f"num_matvecs must be between 1 and P = {P}, got {num_matvecs}")
    norms = torch.linalg.vector_norm(V0, dim=0)
    if bool((norms == 0).any()):
        raise UsageError("every start vector must be nonzero")
    Q = torch.empty(K, m, P, dtype=A.dtype, device=A.device)  # Q[k, j] = q_j of recurrence k
    q = (V0 / norms).to(dtype=A.dtype, device=A.device)  # [P, K]
    alphas, betas = torch.zeros(K, m, dtype=torch.float64), torch.zeros(K, m, dtype=torch.float64)
    anorm, breakdowns = torch.zeros(K, dtype=torch.float64), 0
    eps = torch.finfo(A.dtype).eps
    for j in range(m):
        Q[:, j] = q.T
        W = matmat(A, q)  # [P, K]
        aq = torch.linalg.vector_norm(W, dim=0)
        Qj = Q[:, : j + 1]  # [K, j + 1, P]
        w = W.T.unsqueeze(2)  # [K, P, 1]
        h = Qj @ w  # [K, j + 1, 1], classical Gram-Schmidt twice per recurrence
        w = w - Qj.transpose(1, 2) @ h
        h2 = Qj @ w
        w = w - Qj.transpose(1, 2) @ h2
        beta = torch.linalg.vector_norm(w[:, :, 0], dim=1)
        stats = torch.stack([(h + h2)[:, j, 0], beta, aq]).to("cpu", torch.float64)  # one sync
        alphas[:, j] = stats[0]
        anorm = torch.maximum(anorm, stats[2])
        broke = stats[1] <= BREAKDOWN_RTOL * eps * anorm
        betas[:, j] = stats[1].masked_fill(broke, 0.0)
        q = w[:, :, 0].T / stats[1].clamp_min(1e-300).to(dtype=A.dtype, device=A.device)
        if j + 1 < m:
            for k in broke.nonzero()[:, 0].tolist():  # rare: an invariant subspace was found
                q[:, k] = fresh_direction(Q[k, : j + 1].T, generator)
                breakdowns += 1
    return LanczosBatch(alphas, betas, K * m, breakdowns)
