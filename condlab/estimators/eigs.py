r"""The largest and smallest eigenpairs of a symmetric operator from one Lanczos run.

Quantity: the ``top`` largest eigenvalues (descending) and ``bottom`` smallest (ascending) of a
symmetric ``A [P, P]``, with Ritz vectors and residuals.

Estimator: Lanczos with full reorthogonalization builds ``A V = V H + beta q b^T`` with ``V``
orthonormal ``[P, k]`` and ``H = V^T A V`` small (tridiagonal until the first restart). A Ritz
pair ``(theta_i, y_i = V s_i)`` of ``H`` has the exact residual

    ||A y_i - theta_i y_i|| = beta |b^T s_i|        (= |beta_k s_{k,i}| between restarts)

so convergence costs one eigendecomposition of ``H`` (float64, CPU) and no matvec. The run stops
once every requested pair has ``residual <= tol * ||A||`` (``||A||`` estimated by the largest
``|theta|``, which is ``lambda_max`` for the Hessians this tool meets); by Weyl/Kato-Temple each
eigenvalue is then within ``tol ||A||`` of an eigenvalue of ``A`` (within ``(tol ||A||)^2 / gap``
once it is separated by ``gap``). Both ends come from the same run.

When ``V`` reaches ``max_basis`` columns the run is thick-restarted (Wu & Simon 2000; Stewart's
Krylov-Schur for symmetric ``A``): it keeps the wanted Ritz vectors of both ends, some of their
neighbours and the best-converged other pairs (see ``_keep_indices``), so ``H`` becomes
``diag(theta_kept)`` bordered by the coupling row ``beta b``, and the recurrence continues
from ``q``.

Limitation: single-vector Lanczos sees one direction per eigenspace, so an eigenvalue of
multiplicity ``r > 1`` is found once (a second copy appears only after a breakdown restarts the
recurrence, at full depth, or when rounding seeds a new direction of that eigenspace, which
happens once the Krylov space nearly exhausts the rest of the spectrum). A copy is then a
genuine eigenpair with an orthogonal vector, never a "ghost" of the same vector. So the ``top``
list of a matrix with a doubly repeated largest eigenvalue reads ``lambda_1, lambda_3, ..``
(``lambda_1 = lambda_2``) or ``lambda_1, lambda_2, ..``, and a null space usually collapses to
one Ritz value, making the next bottom value the smallest positive eigenvalue (ask for a few
more bottom pairs to be safe). Small problems (``P <= 2 (top + bottom) + 8``) run to full depth
and are exact with multiplicities.

Reference: Wu & Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
SIAM J. Matrix Anal. Appl. 22 (2000); Parlett, The Symmetric Eigenvalue Problem, Ch. 11-13.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.estimators._matmat import make_generator, operator_size, random_probes
from condlab.estimators.lanczos import fresh_direction, is_breakdown, lanczos, lanczos_step

DEFAULT_BASIS_BYTES = 2**30  # the default max_basis keeps V [P, max_basis] under 1 GiB
CHECK_EVERY_UP_TO = 256  # check convergence every step up to this basis size, then every k/256
KEEP_FRACTION = 0.7  # a thick restart keeps the wanted pairs and 70% of the remaining room
NEIGHBOUR_FRACTION = 0.3  # ... of which 30% are neighbours of the wanted pairs


@dataclass(frozen=True)
class ExtremeEigs:
    """Extreme eigenpairs, their residuals ``||A y - theta y||`` and convergence flags."""

    eigenvalues_top: Tensor  # [top] descending, float64 CPU
    residuals_top: Tensor  # [top]
    converged_top: Tensor  # [top] bool
    eigenvalues_bottom: Tensor  # [bottom] ascending, float64 CPU
    residuals_bottom: Tensor  # [bottom]
    converged_bottom: Tensor  # [bottom] bool
    lambda_max: float  # largest Ritz value (a lower bound that converges from below)
    lambda_min: float  # smallest Ritz value (an upper bound that converges from above)
    matvecs: int
    converged: bool  # every requested pair converged
    tol: float
    threshold: float  # tol * ||A||: the residual every converged pair meets
    restarts: int
    max_basis: int
    seed: int | None  # None when a generator was passed in
    vectors_top: Tensor | None = None  # [P, top] Ritz vectors, if asked
    vectors_bottom: Tensor | None = None  # [P, bottom]


@dataclass(frozen=True)
class _Ritz:
    theta: Tensor  # [k] ascending, float64 CPU
    S: Tensor  # [k, k] eigenvectors of H
    residuals: Tensor  # [k]


def _ritz(H: Tensor, k: int, b: Tensor, beta: float, tridiagonal: bool) -> _Ritz:
    """Eigenpairs of ``H[:k, :k]`` and the residual norms ``beta |b^T s_i|``."""
    if tridiagonal and k > 1:
        d = H.diagonal()[:k].numpy()
        e = H.diagonal(1)[: k - 1].numpy()
        theta_np, S_np = scipy.linalg.eigh_tridiagonal(d, e)
        theta, S = torch.from_numpy(theta_np), torch.from_numpy(np.ascontiguousarray(S_np))
    else:
        theta, S = torch.linalg.eigh(H[:k, :k])
    return _Ritz(theta, S, beta * (b @ S).abs())


def _keep_indices(ritz: _Ritz, top: int, bottom: int, cap: int) -> Tensor:
    """Ritz indices (ascending) kept at a thick restart of a full basis of ``cap`` columns.

    The wanted pairs at both ends, then ``KEEP_FRACTION`` of the remaining room: 30% of that
    as the wanted pairs' nearest neighbours (split between the ends as ``top + 1 : bottom + 1``),
    the rest as the best-converged other pairs, which deflates them (for a Hessian, the
    isolated large eigenvalues, whose span the bottom end would otherwise have to rebuild).
    """
    k, nwant = len(ritz.theta), top + bottom
    extra = int(KEEP_FRACTION * (cap - nwant))
    n_nb = int(NEIGHBOUR_FRACTION * extra)
    n_nb_top = round(n_nb * (top + 1) / (nwant + 2))
    keep = torch.zeros(k, dtype=torch.bool)
    keep[: bottom + n_nb - n_nb_top] = True
    keep[k - top - n_nb_top :] = True
    by_residual = torch.argsort(ritz.residuals, stable=True)
    free = by_residual[~keep[by_residual]]
    keep[free[: max(0, nwant + extra - int(keep.sum()))]] = True
    return keep.nonzero()[:, 0]


def _thick_restart(V: Tensor, H: Tensor, b: Tensor, ritz: _Ritz, keep: Tensor):
    """Shrink ``A V = V H + beta q b^T`` to the kept Ritz pairs, in place; new ``(b, k)``.

    ``V[:, :n_keep] <- V S_keep``, ``H <- diag(theta_keep)``, ``b <- S_keep^T b``: the relation
    still holds with the same ``beta q``, so the recurrence continues from ``q``.
    """
    k, n_keep = len(ritz.theta), len(keep)
    S_keep = ritz.S[:, keep]  # [k, n_keep]
    V[:, :n_keep] = V[:, :k] @ S_keep.to(dtype=V.dtype, device=V.device)
    H.zero_()
    H[:n_keep, :n_keep] = torch.diag(ritz.theta[keep])
    return b @ S_keep, n_keep


def _ghost_mask(Y: Tensor) -> Tensor:
    """``[K]`` True where column ``i`` of ``Y [P, K]`` repeats an earlier column (|cos| > 0.5)."""
    G = (Y.T @ Y).abs().to("cpu", torch.float64)
    norms = G.diagonal().sqrt().clamp_min(1e-300)
    C = G / norms[:, None] / norms[None, :]
    return torch.tril(C, diagonal=-1).gt(0.5).any(dim=1)


def _default_max_basis(P: int, nwant: int, itemsize: int) -> int:
    by_memory = DEFAULT_BASIS_BYTES // max(1, P * itemsize)
    return min(P, max(4 * nwant + 32, min(256, by_memory)))


def _validate(P: int, top: int, bottom: int, tol: float, max_matvecs: int, max_basis) -> None:
    if top < 0 or bottom < 0 or top + bottom == 0:
        raise UsageError(f"top and bottom must be >= 0 and not both 0, got {top} and {bottom}")
    if top > P or bottom > P:
        raise UsageError(f"top and bottom must be <= P = {P}, got {top} and {bottom}")
    if not tol > 0:
        raise UsageError(f"tol must be > 0, got {tol}")
    if max_matvecs < min(P, top + bottom):
        raise UsageError(f"max_matvecs must be >= top + bottom = {top + bottom}, got {max_matvecs}")
    if max_basis is not None and max_basis < min(P, top + bottom + 4):
        raise UsageError(f"max_basis must be >= top + bottom + 4 = {top + bottom + 4}")


def extreme_eigenpairs(
    A,
    *,
    top: int,
    bottom: int,
    tol: float = 1e-6,
    max_matvecs: int = 1000,
    max_basis: int | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    return_vectors: bool = False,
) -> ExtremeEigs:
    """The ``top`` largest and ``bottom`` smallest eigenpairs of symmetric ``A``, one Lanczos run.

    Stops when every requested pair has residual ``<= tol * ||A||`` or after ``max_matvecs``
    (then the flags of the unconverged pairs are False). ``max_basis`` caps the basis
    ``V [P, max_basis]`` (default: up to 256 columns within 1 GiB); reaching it triggers a thick
    restart. Deterministic given ``generator`` (or ``seed``).
    """
    P = operator_size(A)
    _validate(P, top, bottom, tol, max_matvecs, max_basis)
    gen = make_generator(generator, seed)
    nwant = top + bottom
    run_seed = None if generator is not None else int(seed)
    if P <= max_matvecs and (nwant >= P or P <= 2 * nwant + 8):
        dec = lanczos(A, P, generator=gen)
        theta, S = torch.linalg.eigh(dec.tridiagonal())
        ritz = _Ritz(theta, S, (float(dec.betas[-1]) * S[-1]).abs())
        return _result(dec.Q, ritz, top, bottom, tol, P, 0, P, run_seed, return_vectors)

    itemsize = torch.empty(0, dtype=A.dtype).element_size()
    basis = max_basis if max_basis is not None else _default_max_basis(P, nwant, itemsize)
    cap = min(basis, max_matvecs, P)
    V = torch.empty(P, cap, dtype=A.dtype, device=A.device)  # [P, cap]
    H = torch.zeros(cap, cap, dtype=torch.float64)
    q = random_probes(P, 1, gen, like=V)[:, 0]
    q = q / torch.linalg.vector_norm(q)
    b, beta = torch.zeros(0, dtype=torch.float64), 0.0
    k = matvecs = restarts = 0
    anorm, ritz = 0.0, None
    while True:
        if k == cap:
            b, k = _thick_restart(V, H, b, ritz, _keep_indices(ritz, top, bottom, cap))
            restarts += 1
        if k > 0:
            H[k, :k] = beta * b
            H[:k, k] = beta * b
        w, stats = lanczos_step(A, V, k, q)
        alpha, beta, aq = stats.tolist()
        H[k, k] = alpha
        k, matvecs, anorm = k + 1, matvecs + 1, max(anorm, aq)
        b = torch.zeros(k, dtype=torch.float64)
        b[-1] = 1.0
        broke = is_breakdown(beta, anorm, A.dtype)
        if broke:
            beta = 0.0
        else:
            q = w / beta
        out_of_budget = matvecs >= max_matvecs or k == P
        due = k <= CHECK_EVERY_UP_TO or k % math.ceil(k / CHECK_EVERY_UP_TO) == 0
        if k >= nwant and (due or broke or out_of_budget or k == cap):
            ritz = _ritz(H, k, b, beta, tridiagonal=restarts == 0)
            threshold = tol * float(ritz.theta.abs().max())
            wanted = torch.cat([ritz.residuals[:bottom], ritz.residuals[k - top :]])
            if bool((wanted <= threshold).all()) or out_of_budget:
                break
        elif k == cap:
            ritz = _ritz(H, k, b, beta, tridiagonal=restarts == 0)
        if broke:
            q = fresh_direction(V[:, :k], gen)
    return _result(
        V[:, :k], ritz, top, bottom, tol, matvecs, restarts, cap, run_seed, return_vectors
    )


def _result(
    V: Tensor,
    ritz: _Ritz,
    top: int,
    bottom: int,
    tol: float,
    matvecs: int,
    restarts: int,
    max_basis: int,
    seed: int | None,
    return_vectors: bool,
) -> ExtremeEigs:
    """Pick the ends from the Ritz pairs of ``H = V^T A V`` and drop any ghost copies."""
    k = len(ritz.theta)
    threshold = tol * float(ritz.theta.abs().max())
    idx_top = torch.arange(k - 1, k - 1 - top, -1)  # descending
    idx_bot = torch.arange(bottom)
    lists = []
    for idx in (idx_top, idx_bot):
        Y = V @ ritz.S[:, idx].to(dtype=V.dtype, device=V.device)  # [P, n]
        ghost = _ghost_mask(Y)
        values = ritz.theta[idx].masked_fill(ghost, float("nan"))
        residuals = ritz.residuals[idx].masked_fill(ghost, float("inf"))
        lists.append((values, residuals, residuals <= threshold, Y if return_vectors else None))
    (vt, rt, ct, yt), (vb, rb, cb, yb) = lists
    return ExtremeEigs(
        eigenvalues_top=vt,
        residuals_top=rt,
        converged_top=ct,
        eigenvalues_bottom=vb,
        residuals_bottom=rb,
        converged_bottom=cb,
        lambda_max=float(ritz.theta[-1]),
        lambda_min=float(ritz.theta[0]),
        matvecs=matvecs,
        converged=bool(ct.all() and cb.all()),
        tol=tol,
        threshold=threshold,
        restarts=restarts,
        max_basis=max_basis,
        seed=seed,
        vectors_top=yt,
        vectors_bottom=yb,
    )
