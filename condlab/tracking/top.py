r"""``lambda_max`` of a symmetric operator by single-vector Lanczos, warm-started and stopped on
the eigenvalue: what a tracker needs between two nearby weights.

Quantity: the largest eigenvalue ``lambda_1`` of a symmetric ``A [P, P]`` (a Hessian, or an
optimizer's ``P^-1/2 H P^-1/2``), its Ritz vector, and the second Ritz vector (the next warm
start).

Estimator: Lanczos with full reorthogonalization (:func:`condlab.estimators.lanczos.lanczos_step`,
one product per step) from the first vector

    q_1 ~ y_1 + c y_2 + eps r        (warm: y_1, y_2 the previous top two Ritz vectors)
    q_1 ~ r                          (cold)

with ``r`` Gaussian from the seed, ``c = WARM_SECOND``, ``eps = WARM_NOISE``. When the top two
eigenvectors moved little, ``K_2(A, q_1) = span{q_1, A q_1}`` is already close to
``span{u_1, u_2}``, so two products resolve ``lambda_1`` and ``lambda_2`` even where the two
swapped order (the second vector is what follows a crossing of the top two).

Stopping rule (on the eigenvalue, not the vector): after ``k`` steps, with Ritz values
``theta_1 >= theta_2`` of ``T_k`` and residuals ``rho_i = beta_k |s_{k,i}|`` (exact, no product),
stop when

    rho_1 <= tol ||A||                               ('residual': some eigenvalue lies within rho_1)
    rho_1^2 / gap <= tol ||A||,  gap = theta_1 - theta_2 - rho_2     ('residual^2/gap')

the second being the Kato-Temple bound ``lambda_1 - theta_1 <= rho_1^2 / (theta_1 - lambda_2)``
with ``lambda_2`` estimated by ``theta_2 + rho_2``. ``||A||`` is estimated by the largest ``|theta|``.
Neither bound is certified: ``theta_1`` is a lower bound of ``lambda_1`` (Rayleigh quotient),
and an eigenvalue above it whose direction the start vector barely holds (an eigenvalue rising
from the bulk, orthogonal to the two followed) is found only after the Krylov space reaches it,
as late as a cold start would find it, or later.

Cost: ``k`` products, ``4 P k`` flops for the orthogonalization, one ``k x k`` eigensolve per
step; memory ``P x k``. A breakdown (``K_k`` invariant) stops with ``rho = 0``: the Ritz values
are then exact, and a random or noised start touches every eigendirection. A basis past ``DEFAULT_BASIS_BYTES`` restarts from the top two Ritz
vectors).

Reference: Parlett, The Symmetric Eigenvalue Problem, Sec. 11-13 (Kato-Temple, Lanczos);
Golub & Van Loan, Matrix Computations (4th ed.), Sec. 10.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.estimators._matmat import make_generator, operator_size, random_probes
from condlab.estimators.lanczos import is_breakdown, lanczos_step
from condlab.memory import guard

WARM_SECOND = 0.05  # weight of the previous second Ritz vector: enough to resolve a swap of the top two
WARM_NOISE = 1e-4  # weight of the random vector: no direction is exactly absent
FIRST_COLUMNS = 8  # the basis starts with room for 8 vectors and doubles as needed
DEFAULT_BASIS_BYTES = 2**28  # the basis [P, k] stays under 256 MiB; past it, a restart
SETTLED = 10.0  # the gap rule also needs theta_1 to have risen by <= SETTLED * tol ||A|| last step
STOPS = ("residual", "residual^2/gap", "budget", "exact")


@dataclass(frozen=True)
class TopEig:
    """``lambda_max`` of a symmetric operator with its error estimate and warm-start vectors."""

    value: float  # theta_1, the largest Ritz value (a lower bound of lambda_max)
    residual: float  # rho_1 = ||A y_1 - theta_1 y_1||
    error: float  # the estimate that stopped the run: rho_1 or rho_1^2 / gap
    gap: float | None  # theta_1 - theta_2 - rho_2 (None with one Ritz value)
    stop: str  # which rule stopped it, one of STOPS
    converged: bool  # error <= tol ||A||
    threshold: float  # tol ||A||
    products: int
    restarts: int
    warm: bool
    vectors: Tensor  # [P, 2] the top two Ritz vectors (one when P == 1), A's dtype and device
    seed: int | None


def warm_vector(start: Tensor, R: Tensor) -> Tensor:
    """``q_1 [P]``: ``s_1/||s_1|| + WARM_SECOND s_2/||s_2|| + WARM_NOISE r/||r||`` for the columns
    ``s_i`` of ``start [P]`` or ``[P, k]`` (only the first two are used) and the random ``r``."""
    P = R.shape[0]
    if start.ndim not in (1, 2) or start.shape[0] != P:
        raise UsageError(f"start must have shape [{P}] or [{P}, k], got {tuple(start.shape)}")
    S = (start[:, None] if start.ndim == 1 else start)[:, :2].to(dtype=R.dtype, device=R.device)
    q = WARM_NOISE * R / torch.linalg.vector_norm(R)
    for i, weight in enumerate((1.0, WARM_SECOND)[: S.shape[1]]):
        norm = torch.linalg.vector_norm(S[:, i])
        if float(norm) > 0 and bool(torch.isfinite(norm)):
            q = q + weight * S[:, i] / norm
    return q


def top_eigenpair(
    A,
    *,
    tol: float,
    max_products: int = 1000,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    max_basis: int | None = None,
) -> TopEig:
    """``lambda_max`` of symmetric ``A`` to ``tol * ||A||`` (see the module docstring).

    ``start``: the previous measurement's ``vectors`` (``[P, k]``, the first two used) or any
    vector ``[P]``; None starts from a random vector. At most ``max_products`` products
    (``converged`` False if it runs out). ``max_basis``: columns kept before a restart
    (default: up to 256 MiB). Deterministic given ``generator`` (or ``seed``).
    """
    P = operator_size(A)
    if not tol > 0:
        raise UsageError(f"tol must be > 0, got {tol}")
    if max_products < 1:
        raise UsageError(f"max_products must be >= 1, got {max_products}")
    gen = make_generator(generator, seed)
    itemsize = torch.empty(0, dtype=A.dtype).element_size()
    by_memory = max(8, DEFAULT_BASIS_BYTES // max(1, P * itemsize))
    cap = min(P, max_products, max_basis if max_basis is not None else by_memory)
    if max_basis is not None and max_basis < 2:
        raise UsageError(f"max_basis must be >= 2, got {max_basis}")
    r = random_probes(P, 1, gen, like=A)[:, 0]
    q = r if start is None else warm_vector(start, r)
    q = q / torch.linalg.vector_norm(q)
    fix = "pass a smaller max_basis (the Tracker's basis is not sized by the memory plan)"
    with guard(f"the tracker's Lanczos basis ({P} parameters)", fix):
        Q = torch.empty(min(cap, FIRST_COLUMNS), P, dtype=A.dtype, device=A.device).T  # [P, m]
    alphas, betas = [], []  # T_k's diagonal and off-diagonal
    products = restarts = k = 0
    anorm, previous = 0.0, -math.inf
    while True:
        if k == Q.shape[1]:  # double the basis (columns stay contiguous)
            with guard(f"growing the tracker's Lanczos basis to {min(cap, 2 * k)} columns", fix):
                grown = torch.empty(min(cap, 2 * k), P, dtype=A.dtype, device=A.device).T
            grown[:, :k] = Q
            Q = grown
        w, stats = lanczos_step(A, Q, k, q)
        alpha, beta, aq = stats.tolist()
        products, k, anorm = products + 1, k + 1, max(anorm, aq)
        alphas.append(alpha)
        # a breakdown: K_k is invariant, its Ritz values are exact (rho = 0 stops the run)
        betas.append(0.0 if is_breakdown(beta, anorm, A.dtype) else beta)
        theta, S = _tridiagonal_eigh(alphas, betas[:-1])  # ascending
        rho = np.abs(betas[-1] * S[-1])  # residual of every Ritz pair, no product
        threshold = tol * float(np.abs(theta).max())
        rho1, gap = float(rho[-1]), None
        rise, previous = float(theta[-1]) - previous, float(theta[-1])
        if k >= 2:
            gap = float(theta[-1] - theta[-2] - rho[-2])
        stop = None
        if k == P and restarts == 0:
            stop = "exact"
        elif rho1 <= threshold:
            stop = "residual"
        elif (gap is not None and gap > 0 and rho1 * rho1 / gap <= threshold
              and rise <= SETTLED * threshold):
            stop = "residual^2/gap"
        elif products >= max_products:
            stop = "budget"
        if stop is not None:
            break
        if k == cap:  # a full basis: restart from the top two Ritz vectors
            Y = Q[:, :k] @ torch.from_numpy(S[:, ::-1][:, :2].copy()).to(dtype=A.dtype, device=A.device)
            q = warm_vector(Y, random_probes(P, 1, gen, like=A)[:, 0])
            q = q / torch.linalg.vector_norm(q)
            k, restarts, alphas, betas = 0, restarts + 1, [], []
        else:
            q = w / beta
    error = 0.0 if stop == "exact" else rho1
    if stop in ("residual^2/gap", "budget") and gap is not None and gap > 0:
        error = min(rho1, rho1 * rho1 / gap)
    top2 = torch.from_numpy(S[:, ::-1][:, : min(2, k)].copy())  # the top two Ritz vectors of T
    Y = Q[:, :k] @ top2.to(dtype=A.dtype, device=A.device)  # [P, <=2]
    return TopEig(
        value=float(theta[-1]), residual=rho1, error=error, gap=gap, stop=stop,
        converged=stop != "budget" or error <= threshold, threshold=threshold, products=products,
        restarts=restarts, warm=start is not None, vectors=Y,
        seed=None if generator is not None else int(seed),
    )


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs (ascending, float64) of the symmetric tridiagonal with diagonal ``alphas [k]``
    and off-diagonal ``betas [k - 1]``."""
    k = len(alphas)
    T = np.zeros((k, k))
    i = np.arange(k)
    T[i, i] = alphas
    T[i[:-1], i[1:]] = T[i[1:], i[:-1]] = betas
    return np.linalg.eigh(T)
