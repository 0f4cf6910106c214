r"""The largest and smallest eigenpairs of a symmetric operator from one block Lanczos run.

Quantity: the ``top`` largest eigenvalues (descending) and ``bottom`` smallest (ascending) of a
symmetric ``A [P, P]``, with Ritz vectors and residuals.

Estimator: block Lanczos with full reorthogonalization. Each step multiplies a block of ``b``
orthonormal vectors at once (``A Q``, one ``[P, b]`` product: ``b`` HVPs in one vmapped call)
and builds

    A V = V H + Q_next C^T,     V [P, k] orthonormal,  Q_next [P, r] orthonormal, V^T Q_next = 0

with ``H = V^T A V`` small (block tridiagonal until the first restart) and the coupling
``C [k, r]``. A Ritz pair ``(theta_i, y_i = V s_i)`` of ``H`` has the exact residual

    ||A y_i - theta_i y_i|| = ||C^T s_i||

so convergence costs one eigendecomposition of ``H`` (float64, CPU) and no matvec (from a
basis of 64, only at steps where a cheaper test on the band, :func:`_screen`, cannot rule the
stop out). The run stops once every requested pair has ``residual <= tol * ||A||``
(``||A||`` estimated by the largest
``|theta|``, which is ``lambda_max`` for the Hessians this tool meets) and the end values are
certified (below). A residual proves only that *some* eigenvalue lies within it; that a listed
value is the true extreme one comes from the random start: :mod:`condlab.estimators.bounds`
turns ``H`` into backed errors ``errors_*`` (an end bracket from the start block's Christoffel
function, Kato-Temple ``r^2 / gap`` only across certified gaps) and ``certified_*``. The listed
pairs' true residuals are measured after the run. Both ends come from the same run.

Multiplicity: a block Krylov space holds ``b`` independent directions of every eigenspace its
start block touches, so an eigenvalue of multiplicity ``r <= b`` is found ``r`` times (a null
space of a cross-entropy GGN reads ``0, 0, 0`` for bottom-3 with ``b >= 3``). Copies beyond
``b`` appear only by chance (rounding, or fresh directions after a breakdown); ``copies_*``
counts the converged Ritz values in each reported value's cluster and ``may_repeat_*`` says
where that cluster reached ``b`` copies, i.e. where the true multiplicity may be larger than
what was found. ``b = 1`` is single-vector Lanczos (three-term recurrence, tridiagonal ``H``):
it sees one direction per eigenspace, so a repeated eigenvalue is found once (a second copy
only after a breakdown or when rounding seeds one; every copy is then a genuine eigenpair with
an orthogonal vector, never a "ghost" of the same vector).

Rank deficiency: the new block ``W = (I - V V^T) A Q`` is orthonormalized by a QR and an SVD of
its ``R`` factor; directions with singular value ``<= 64 eps ||A||`` are dropped (the block
Krylov space became invariant there, every Ritz pair in it is exact) and replaced by fresh
random directions orthogonal to ``V`` with zero coupling, so the block keeps ``b`` columns and
the search continues into the rest of the space. Depth ``k = P`` returns every eigenvalue.

Thick restart and deflation: when ``V`` reaches ``max_basis`` columns the run is
thick-restarted (Wu & Simon 2000; Stewart's Krylov-Schur for symmetric ``A``): it keeps the
wanted Ritz vectors of both ends, some of their neighbours and the best-converged other pairs
(see ``_keep_indices``), so ``H`` becomes ``diag(theta_kept)`` bordered by the coupling
``S_kept^T C``, and the recurrence continues from ``Q_next``. Kept pairs whose residual is at
rounding level (``<= 64 eps ||A||``) are locked: their coupling is set to zero, so they are
deflated exactly and every later block is orthogonalized against them.

Memory: ``V`` may be stored in another dtype or on another device than ``A`` (``basis_dtype``,
``basis_device``; e.g. float32 on the host for a float32 model on a GPU): products run on
``A``'s device, orthogonalization where ``V`` lives. The basis then bounds accuracy at about
``100 eps(basis_dtype)`` relative.

Reference: Golub & Underwood, "The block Lanczos method for computing eigenvalues" (1977);
Wu & Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems", SIAM J.
Matrix Anal. Appl. 22 (2000); Zhou & Saad, "Block Krylov-Schur method for large symmetric
eigenvalue problems", Numer. Algorithms 47 (2008); Parlett, The Symmetric Eigenvalue Problem.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import condlab.estimators.bounds as bounds
from condlab.errors import CondlabError, UsageError
from condlab.estimators._matmat import make_generator, matmat, operator_size, random_probes
from condlab.estimators.condition import dtype_name, noise_rel
from condlab.estimators.lanczos import BREAKDOWN_RTOL, cgs2, lanczos
from condlab.memory import default_block_size  # noqa: F401  (the block rule lives with the sizing)

DEFAULT_BASIS_BYTES = 2**30  # the default max_basis keeps V [P, max_basis] under 1 GiB
CHECK_EVERY_UP_TO = 256  # check convergence every step up to this basis size, then every k/256
KEEP_FRACTION = 0.7  # a thick restart keeps the wanted pairs and 70% of the remaining room
NEIGHBOUR_FRACTION = 0.3  # ... of which 30% are neighbours of the wanted pairs
BASIS_DTYPES = (torch.float32, torch.float64)
TIGHTEN, MAX_TIGHTEN = 0.25, 4  # Krylov target x0.25 each time a true residual misses tol
STRATEGIES = ("auto", "block", "verify")
ROUNDING = 16.0  # a stated error is at least ROUNDING * eps * ||A|| (Rayleigh-Ritz rounding)


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
    block_size: int = 1  # b: eigenvalues of multiplicity up to b are found with it
    copies_top: Tensor | None = None  # [top] converged Ritz values in each value's cluster
    copies_bottom: Tensor | None = None  # [bottom]
    may_repeat_top: Tensor | None = None  # [top] bool: cluster reached b copies, may hold more
    may_repeat_bottom: Tensor | None = None  # [bottom]
    may_miss_top: Tensor | None = None  # [top] bool: may_repeat, and the list goes on past the
    may_miss_bottom: Tensor | None = None  # cluster, so copies may be missing from the list
    breakdowns: int = 0  # directions dropped as invariant (rank-deficient blocks)
    # backed errors (condlab.estimators.bounds): |true i-th extreme eigenvalue - value| <= error
    errors_top: Tensor | None = None  # [top]
    errors_bottom: Tensor | None = None  # [bottom]
    error_kinds_top: tuple = ()  # per value: exact | residual | kato-temple | cluster | bracket
    error_kinds_bottom: tuple = ()
    certified_top: bool = False  # every listed top value within tol * ||A|| of the true one
    certified_bottom: bool = False
    certificate_top: str = ""  # what certifies the end, or why it is not certified
    certificate_bottom: str = ""
    lambda_max_upper: float = math.inf  # lambda_max <= this (with the certificate's probability)
    lambda_min_lower: float = -math.inf  # lambda_min >= this
    residual_kind: str = "krylov"  # 'true': ||A y - theta y|| from products after the run
    stop_reason: str = ""  # why the run stopped, in words (converged, budget, rounding)
    stop_rule: str = "residuals"  # 'values': stopped once every value's backed error met tol
    checked_products: Tensor | None = None  # [P, n] A y of the returned finite vectors (top,
    # then bottom) from the true-residual block, when return_vectors: reusable, e.g. for noise
    strategy: str = "block"  # block | verify (single-vector, verified on the deflated operator)
    # | fallback (the verification failed: the block run's list) | single (not verified)
    stages: tuple = ()  # (run, products) per run when the strategy ran more than one
    verification: str = ""  # what the deflated run proved, or why it failed
    neighbours: tuple | None = None  # (values, Krylov residuals, vectors [P, n], products [P, n])
    # of the next Ritz pairs past the ends (top's, then bottom's), when asked and A V was kept


@dataclass(frozen=True)
class _Ritz:
    theta: Tensor  # [k] ascending, float64 CPU
    S: Tensor  # [k, k] eigenvectors of H
    residuals: Tensor  # [k]


def _ritz(H: Tensor, k: int, C: Tensor, tridiagonal: bool) -> _Ritz:
    """Eigenpairs of ``H[:k, :k]`` and the residual norms ``||C^T s_i||``."""
    if tridiagonal and k > 128:  # below, torch's dense eigh is faster than scipy's call overhead
        import scipy.linalg

        d = H.diagonal()[:k].numpy()
        e = H.diagonal(1)[: k - 1].numpy()
        theta_np, S_np = scipy.linalg.eigh_tridiagonal(d, e)
        theta, S = torch.from_numpy(theta_np), torch.from_numpy(np.ascontiguousarray(S_np))
    else:
        theta, S = torch.linalg.eigh(H[:k, :k])
    return _Ritz(theta, S, torch.linalg.vector_norm(C.T @ S, dim=0))


SCREEN_FROM = 64  # from this basis size a step's stop test is screened before the eigensolve
SCREEN_SLACK = 1e3  # the screen's eigenvalue uncertainty in units of k eps ||H|| (either solver)


def _screen(H: Tensor, k: int, C: Tensor, widths, top: int, bottom: int, scale: float):
    """``(met, near)``: whether the stop test's two conditions may hold for the Ritz pairs
    :func:`_ritz` would compute, each False only where it certainly fails; None where the
    screen cannot tell. ``H[:k, :k]`` is block tridiagonal (no restart yet; ``widths`` its
    blocks), ``scale * max |theta|`` the threshold.

    The full eigendecomposition costs ``O(k^3)`` every step (2 ms at ``k = 186``); while the
    wanted residuals are far above the threshold, which they are for most of a run, the screen
    proves it for about half of that: the wanted end's eigenvalues by bisection on the band
    (LAPACK ``?sbevx``/``?stebz``), each wanted vector by one step of inverse iteration on the
    band, and rigorous margins: both solvers are backward stable, so each eigenvalue is within
    ``dtheta = SCREEN_SLACK k eps ||H||`` of the true one, and a computed vector ``x`` with
    residual ``rho`` lies within ``sin <= (rho + dtheta) / (gap - 4 dtheta)`` of the exact
    path's eigenvector (Davis-Kahan, for both vectors against the true one), so the exact path's
    Ritz residual ``||C^T s||`` is within ``sqrt(2) ||C||_F`` times that of ``||C^T x||``. The
    exact path then runs wherever the stop test could pass, and decides as before."""
    from scipy.linalg import lapack  # the routines themselves: scipy.linalg's wrappers cost
    # more than the work at these sizes

    ns = [n for n, _ in widths]
    if k < top + bottom + 2 or sum(ns) != k:
        return None
    Hk = H[:k, :k].numpy()
    u = max([ns[0] - 1] + [a + c - 1 for a, c in zip(ns, ns[1:])])
    ab = np.zeros((u + 1, k))  # lower band storage: ab[d, j] = H[j + d, j]
    for d in range(u + 1):
        ab[d, : k - d] = np.diagonal(Hk, -d)
    norm = float(np.abs(Hk).sum(axis=1).max())  # >= ||H||_2 >= every |theta|
    solver = SCREEN_SLACK * k * np.finfo(np.float64).eps * norm  # either solver's error bound
    dtheta = 1.25 * solver  # ... plus the bisection's tolerance (no digits past what is needed)
    vals: dict[int, float] = {}
    for lo, hi in ([(0, bottom)] if bottom else []) + ([(k - 1 - top, k - 1)] if top else []):
        if u == 1:
            m, w, _, _, info = lapack.dstebz(ab[0], ab[1, : k - 1], 2, 0.0, 0.0, lo + 1, hi + 1,
                                             solver / 4, "E")
        else:
            w, _, m, _, info = lapack.dsbevx(ab, 0.0, 0.0, lo + 1, hi + 1, compute_v=0, range=2,
                                             lower=1, abstol=solver / 4)
        w = w[:m]
        if info != 0 or m != hi - lo + 1 or not np.isfinite(w).all():
            return None
        vals.update(zip(range(lo, hi + 1), np.sort(w).tolist()))
    # the exact path's max |theta|: within dtheta (this solver) plus dtheta (torch's) of these
    amax = max(abs(vals[0]), abs(vals[k - 1])) + 2 * dtheta if 0 in vals and k - 1 in vals else norm
    thr = scale * amax * (1 + 1e-12)
    if u > 1:  # H in LAPACK's general band storage for ?gbsv: gb[2u + i - j, j] = H[i, j]
        gb = np.zeros((3 * u + 1, k))
        for d in range(u + 1):
            gb[2 * u + d, : k - d] = ab[d, : k - d]
            gb[2 * u - d, d:] = ab[d, : k - d]
    Ct = C.numpy().T
    cnorm = math.sqrt(2.0) * float(np.linalg.norm(Ct))
    z = np.cos(1.2345 * np.arange(k) + 0.1)  # a fixed start, not orthogonal to any one vector
    met = near = True
    for i in list(range(bottom)) + list(range(k - top, k)):
        gap = min(abs(vals[i] - vals[j]) for j in (i - 1, i + 1) if j in vals)
        if gap <= 10 * dtheta:  # no gap to bound a vector by
            return None
        if u == 1:
            off = ab[1, : k - 1]
            x, info = lapack.dgtsv(off, ab[0] - vals[i], off, z)[3:]
        else:
            shifted = gb.copy()
            shifted[2 * u] -= vals[i]
            x, info = lapack.dgbsv(u, u, shifted, z)[2:]
        nx = math.sqrt(float(x @ x))
        if info != 0 or not (math.isfinite(nx) and nx > 0):
            return None
        x = x / nx
        res = Hk @ x - vals[i] * x
        err = cnorm * (math.sqrt(float(res @ res)) + dtheta) / (gap - 4 * dtheta)
        cx = Ct @ x
        low = max(0.0, math.sqrt(float(cx @ cx)) - err)  # the exact residual is >= low
        met_i = low <= thr
        met = met and met_i
        near = near and (met_i or low * low <= thr * (gap + 4 * dtheta))
    return met, near


def _screens() -> bool:
    """Whether the stop test is screened: where scipy's LAPACK is loaded already. Its import
    (0.27 CPU s, the OpenBLAS library) is more than the screen saves a run (20-45 ms on the
    digits MLP's bottom-3) and more than a whole short process may spend; a process that
    loaded it (for data, a peer, or a long run's Lanczos) screens for free. The results are
    the same either way."""
    return "scipy.linalg" in sys.modules


def _may_stop(screen, looks: bool, by_value: bool, matvecs: int, next_check: dict) -> bool:
    """Whether the stop test may end the run at this step, given :func:`_screen`'s answer: the
    exact test breaks when its residuals are met (through the certificate when it ``looks``,
    which it does only once due), or when the values are near and the certificate is due."""
    if screen is None:
        return True
    met, near = screen
    if not looks:
        return met
    return (met and matvecs >= next_check[True]) or (
        (met or (by_value and near)) and matvecs >= next_check[False])


def _keep_indices(ritz: _Ritz, top: int, bottom: int, room: int) -> Tensor:
    """Ritz indices (ascending) kept at a thick restart, at most ``room`` of them.

    The wanted pairs at both ends, then ``KEEP_FRACTION`` of the remaining room: 30% of that
    as the wanted pairs' nearest neighbours (split between the ends as ``top + 1 : bottom + 1``),
    the rest as the best-converged other pairs, which deflates them (for a Hessian, the
    isolated large eigenvalues, whose span the bottom end would otherwise have to rebuild).
    """
    k, nwant = len(ritz.theta), top + bottom
    extra = int(KEEP_FRACTION * (room - nwant))
    n_nb = int(NEIGHBOUR_FRACTION * extra)
    n_nb_top = round(n_nb * (top + 1) / (nwant + 2))
    keep = torch.zeros(k, dtype=torch.bool)
    keep[: bottom + n_nb - n_nb_top] = True
    keep[k - top - n_nb_top :] = True
    by_residual = torch.argsort(ritz.residuals, stable=True)
    free = by_residual[~keep[by_residual]]
    keep[free[: max(0, nwant + extra - int(keep.sum()))]] = True
    return keep.nonzero()[:, 0]


RESTART_CHUNK_BYTES = 2**24  # a thick restart rewrites V in row blocks of at most 16 MiB


def _thick_restart(V: Tensor, H: Tensor, C: Tensor, ritz: _Ritz, keep: Tensor, lock: float):
    """Shrink ``A V = V H + Q C^T`` to the kept Ritz pairs, in place; the new ``(C, k)``.

    ``V[:, :n_keep] <- V S_keep``, ``H <- diag(theta_keep)``, ``C <- S_keep^T C``: the relation
    still holds with the same ``Q``, so the recurrence continues from it. Pairs with residual
    ``<= lock`` get zero coupling (locked, deflated exactly).

    Row ``i`` of ``V S_keep`` needs only row ``i`` of ``V``, so ``V`` is rewritten in row blocks
    (each ``[rows, n_keep]`` temporary at most ``RESTART_CHUNK_BYTES``): no ``[P, n_keep]``
    temporary, which at GPT-2 small's 124M parameters would be 0.5 GB per kept column.
    """
    k, n_keep = len(ritz.theta), len(keep)
    S_keep = ritz.S[:, keep].to(dtype=V.dtype, device=V.device)  # [k, n_keep]
    P = V.shape[0]
    rows = max(1, RESTART_CHUNK_BYTES // max(1, k * V.element_size()))
    for r in range(0, P, rows):
        block = V[r : r + rows]
        block[:, :n_keep] = block[:, :k] @ S_keep
    H.zero_()
    H[:n_keep, :n_keep] = torch.diag(ritz.theta[keep])
    C = ritz.S[:, keep].T @ C
    C[ritz.residuals[keep] <= lock] = 0.0
    return C, n_keep


def _ghost_mask(Y: Tensor) -> Tensor:
    """``[K]`` True where column ``i`` of ``Y [P, K]`` repeats an earlier column (|cos| > 0.5)."""
    G = (Y.T @ Y).abs().to("cpu", torch.float64)
    norms = G.diagonal().sqrt().clamp_min(1e-300)
    C = G / norms[:, None] / norms[None, :]
    return torch.tril(C, diagonal=-1).gt(0.5).any(dim=1)


def _default_max_basis(P: int, nwant: int, b: int, itemsize: int, device="cpu") -> int:
    """The basis when neither ``max_basis`` nor a memory plan gives one: the default of
    :func:`condlab.memory.default_max_basis` (at least ``4 nwant + 32`` columns, up to 256
    within 1 GiB), but no more columns than the memory the process may use holds (85% of it),
    and at least the smallest basis, which the allocation then refuses with the fix if it does
    not fit either."""
    from condlab.memory import HEADROOM, available, default_max_basis, min_basis

    default = default_max_basis(P, nwant, b, itemsize)
    fit = int(available(device).bytes * (1 - HEADROOM)) // max(1, P * itemsize) - 4 * b
    return max(min_basis(P, nwant, b), min(default, fit))


def _verifies(strategy, device, top, bottom, b, block_size, start, certify, true_residuals):
    """Whether the run is single-vector Lanczos verified on the deflated operator (module
    :mod:`condlab.estimators.verify`) instead of one block run of ``b`` vectors."""
    if strategy == "block" or block_size is not None or start is not None or b <= 1:
        return False
    if strategy == "verify":
        return True
    # 'auto': where the benchmarks showed it paying (condlab.memory.verified_list, which the
    # memory plan reports too), with the residual check and certificate it reuses
    from condlab.memory import verified_list

    return verified_list(top, bottom, b, device) and certify and true_residuals


def _validate(P, top, bottom, tol, max_matvecs, max_basis, block_size, basis_dtype) -> None:
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
    if block_size is not None:
        if block_size < 1:
            raise UsageError(f"block_size must be >= 1, got {block_size}")
        if max_basis is not None and max_basis < min(P, top + bottom + 2 * block_size):
            raise UsageError(
                f"max_basis must be >= top + bottom + 2 * block_size = "
                f"{top + bottom + 2 * block_size}; raise max_basis or lower block_size"
            )
    if basis_dtype is not None and basis_dtype not in BASIS_DTYPES:
        raise UsageError(f"basis_dtype must be float32 or float64, got {basis_dtype}")


def _orthonormal(V: Tensor, W: Tensor, anorm: float, eps: float, gen, fill: int, like: Tensor):
    """An orthonormal basis of ``W [P, n]`` (already orthogonal to ``V [P, k]``).

    Returns ``(Q [P, r + f], R [r + f, n], dropped)`` with ``W ~ Q R`` up to the dropped
    singular values (``<= 64 eps ||A||``), ``r`` the numerical rank and ``f`` fresh random
    columns orthogonal to ``V`` and to the rest of ``Q`` with zero rows in ``R``, so ``r + f``
    reaches ``fill`` where the space allows.

    Memory: ``W`` is the caller's scratch (the Gram-Schmidt residual of a fresh product) and is
    overwritten. A single column is normalized in place (``Q`` is ``W``: no QR, no SVD, no
    temporary); a block of full rank holds one more block (QR's factor) while ``Q = Qw U`` is
    written into ``W``'s storage. At GPT-2 small's 124M parameters each column is 0.5 GB: the
    old QR, ``Qw``, ``Qw U`` and the caller's previous ``Q`` held four at once.
    """
    P, n = W.shape
    if n == 1:
        return _normalize_column(V, W, anorm, eps, gen, fill, like)
    Qw, Rw = torch.linalg.qr(W)  # [P, n], [n, n]: the one extra block
    U, sig, Zt = torch.linalg.svd(Rw.to("cpu", torch.float64))
    rank = int((sig > BREAKDOWN_RTOL * eps * anorm).sum())
    Uq = U[:, :rank].to(dtype=Qw.dtype, device=Qw.device)
    R = sig[:rank, None] * Zt[:rank]  # [rank, n]
    if rank and float(sig[rank - 1]) < math.sqrt(eps) * anorm:
        # dividing by a small singular value magnified W's rounding-level component along
        # V (eps ||A|| / sigma): orthogonalize again and take the coupling from W itself
        Q, _ = cgs2(V, Qw @ Uq, inplace=True)
        Q, _ = torch.linalg.qr(Q)
        R = (Q.T @ W).to("cpu", torch.float64)
    elif rank == n and W.is_contiguous():
        Q = torch.mm(Qw, Uq, out=W)  # into W's storage: no third block
    else:
        Q = Qw @ Uq
    del Qw
    f = max(0, min(fill, P - V.shape[1]) - rank)
    if f:
        Q = torch.cat([Q, _fresh_columns(V, Q, f, gen, like)], dim=1)
        R = torch.cat([R, torch.zeros(f, n, dtype=torch.float64)])
    return Q, R, n - rank


def _normalize_column(V: Tensor, W: Tensor, anorm: float, eps: float, gen, fill: int, like):
    """``_orthonormal`` for one column: ``W / ||W||`` in place (``R = [[||W||]]``), the same
    ``Q R = W`` as a QR and an SVD of one column give, up to the sign of ``Q``."""
    norm = float(torch.linalg.vector_norm(W))
    if norm > BREAKDOWN_RTOL * eps * anorm:
        W.div_(norm)
        R = torch.tensor([[norm]], dtype=torch.float64)
        if norm < math.sqrt(eps) * anorm:
            # the component along V that rounding left in W is magnified by ||A|| / norm:
            # orthogonalize again in place; the coupling is W's component along the new Q,
            # norm * <Q_new, Q_old> = norm * ||Q - V V^T Q|| (Q_new orthogonal to V)
            W, _ = cgs2(V, W, inplace=True)
            rest = float(torch.linalg.vector_norm(W))
            W.div_(rest)
            R = torch.tensor([[norm * rest]], dtype=torch.float64)
        return W, R, 0
    R = torch.zeros(0, 1, dtype=torch.float64)
    if min(fill, V.shape[0] - V.shape[1]) < 1:
        return W[:, :0], R, 1
    Z = _fresh_columns(V, W[:, :0], 1, gen, like)
    return Z, torch.cat([R, torch.zeros(1, 1, dtype=torch.float64)]), 1


def _fresh_columns(V: Tensor, Q: Tensor, f: int, gen, like) -> Tensor:
    """``[P, f]`` random orthonormal columns orthogonal to ``V`` and ``Q`` (Gram-Schmidt against
    each in turn, twice; no ``[V, Q]`` copy of the basis)."""
    Z = random_probes(V.shape[0], f, gen, like=like).to(dtype=V.dtype, device=V.device)
    for _ in range(2):
        Z, _ = cgs2(V, Z, inplace=True)
        if Q.shape[1]:
            Z, _ = cgs2(Q, Z, inplace=True)
        Z, _ = torch.linalg.qr(Z)
    return Z


def _own(W: Tensor, V: Tensor) -> Tensor:
    """``W``, or a copy where it shares ``V``'s storage (an operator that returns its input):
    the Gram-Schmidt and the normalization then work in place on it."""
    if W.untyped_storage().data_ptr() == V.untyped_storage().data_ptr():
        return W.clone()
    return W


def extreme_eigenpairs(
    A,
    *,
    top: int,
    bottom: int,
    tol: float = 1e-6,
    max_matvecs: int = 1000,
    max_basis: int | None = None,
    block_size: int | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    basis_dtype: torch.dtype | None = None,
    basis_device=None,
    start: Tensor | None = None,
    true_residuals: bool = True,
    certify: bool = True,
    stop_on: str = "residuals",
    strategy: str = "auto",
    neighbours: int = 0,
) -> ExtremeEigs:
    """The ``top`` largest and ``bottom`` smallest eigenpairs of symmetric ``A``, one run.

    Stops when every requested pair has residual ``<= tol * ||A||`` or when the next block
    would pass ``max_matvecs`` (then the flags of the unconverged pairs are False).
    ``block_size`` is ``b`` (default :func:`default_block_size`; 1 is single-vector Lanczos).
    ``max_basis`` caps the basis ``V [P, max_basis]`` (default: up to 256 columns within
    1 GiB); reaching it triggers a thick restart. ``basis_dtype``/``basis_device`` store ``V``
    elsewhere than ``A`` (see the module docstring). Deterministic given ``generator`` (or
    ``seed``).

    ``start`` (a warm start): a vector ``[P]`` or the columns ``s_i`` of ``[P, k]`` (e.g. the
    Ritz vectors of a nearby operator) to start from: column ``j`` of the first block is
    ``sum_{i = j mod b} s_i / ||s_i|| + r_j / ||r_j||`` with ``r`` the random block, so no
    eigendirection is missed.

    ``true_residuals`` (default; skipped for a float64 run to full depth, where the Krylov
    residual is exact to rounding): the listed pairs' residuals are measured after the run with
    one block of ``top + bottom`` products (counted in ``matvecs``), so a float32 run never
    reports a rounding-level Krylov estimate as converged; ``tol`` below what ``A``'s dtype
    resolves (``NOISE_FACTOR * eps``, as the CLI) is refused. ``errors_*``, ``certified_*``:
    what the run proves about the listed values (:mod:`condlab.estimators.bounds`).
    ``certify`` (default): once the residuals meet ``tol``, the run goes on (checking every 10%
    more products) until the certificate also bounds the end values (the largest top and the
    smallest bottom value) within ``tol ||A||``, or ``max_matvecs`` ends it; ``stop_reason``
    says which. One start vector (``b = 1``): through thick restarts too, whose residual
    polynomial keeps sharpening the certificate (:class:`bounds.ResidualPolynomial`). A block:
    not after a thick restart; no run after a rank drop: the certificate then reads the start
    block's recurrence, which they end, so more products would not sharpen it; not from a warm
    start, whose first column alone backs a (weaker) certificate and whose point is speed.

    ``stop_on``: ``'residuals'`` (default) waits for every residual ``<= tol ||A||``, for callers
    that use the vectors for accuracy (and the API's contract: converged means the residual).
    ``'values'`` (what :func:`condlab.measure` asks for) stops as soon as every listed value is known within ``tol ||A||`` -- its
    residual, or its backed error (Kato-Temple ``r^2 / gap`` across a certified gap, ``||R||_F``
    for a counted cluster, the end bracket) -- with the ends certified, which needs only ``r``
    of about ``sqrt(tol ||A|| gap)``; a value then reads converged on its backed error, and
    ``stop_reason`` names the bounds that stopped the run (``stop_rule``).

    ``strategy``: ``'auto'`` (default) picks, when no ``block_size`` is given, between one run
    with the default block (``'block'``) and ``'verify'`` (:mod:`condlab.estimators.verify`):
    single-vector Lanczos, then a short run from a fresh random start on the operator deflated
    by the listed vectors that proves nothing else reaches the list (the same guarantee as the
    block: every copy of a repeated eigenvalue listed, flags ``may_repeat``/``may_miss`` False,
    errors backed), falling back to the block run when the proof fails. ``'auto'`` verifies a
    top list of two or more values with no bottom list on a CPU (the top of a Hessian is a
    few separated outliers; its bottom is the edge of a dense bulk, where the proof costs more
    than the block, and on a GPU a block costs about one product). ``strategy``, ``stages``
    (products per run) and ``verification`` in the result say what ran.

    ``neighbours`` (with ``return_vectors``): also return up to that many Ritz pairs past each
    end (``neighbours``: values, Krylov residuals, vectors and their products), where the run
    kept its products (no new product); the verification deflates the converged ones too.
    """
    P = operator_size(A)
    _validate(P, top, bottom, tol, max_matvecs, max_basis, block_size, basis_dtype)
    floor_dtype = A.dtype if basis_dtype is None else max(
        (A.dtype, basis_dtype), key=lambda d: torch.finfo(d).eps)
    if tol < noise_rel(floor_dtype):
        name = dtype_name(floor_dtype)
        raise UsageError(
            f"tol {tol:g} is below what {name} arithmetic resolves: residuals cannot fall below "
            f"about {noise_rel(floor_dtype):.1e} * ||A|| in {name}; use tol >= "
            f"{noise_rel(floor_dtype):.1e} or a float64 operator"
        )
    gen = make_generator(generator, seed)
    nwant = top + bottom
    if neighbours < 0 or (neighbours and not return_vectors):
        raise UsageError(f"neighbours must be >= 0 and needs return_vectors=True, got "
                         f"{neighbours} with return_vectors={return_vectors}")
    if stop_on not in ("values", "residuals"):
        raise UsageError(f"stop_on must be 'values' or 'residuals', got {stop_on!r}")
    if strategy not in STRATEGIES:
        raise UsageError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "verify" and (block_size is not None or start is not None):
        raise UsageError("strategy 'verify' chooses the block itself and starts at random: "
                         "drop block_size and start, or use strategy 'block'")
    by_value = stop_on == "values"
    run_seed = None if generator is not None else int(seed)
    b = block_size if block_size is not None else default_block_size(P, top, bottom, A.device)
    if block_size is None and max_basis is not None:
        b = min(b, max(1, (max_basis - nwant) // 2))
    b = max(1, min(b, P))
    while b > 1 and math.ceil(nwant / b) * b > max_matvecs:
        b -= 1  # the first blocks must hold the wanted pairs within the budget
    if P <= max_matvecs and (nwant >= P or P <= 2 * nwant + 8):
        v0 = _warm_block(start, random_probes(P, 1, gen, like=A)) if start is not None else None
        dec = lanczos(A, P, generator=gen, v0=None if v0 is None else v0[:, 0])
        theta, S = torch.linalg.eigh(dec.tridiagonal())
        ritz = _Ritz(theta, S, (float(dec.betas[-1]) * S[-1]).abs())
        cert = _Certificate(None, 1, 1.0, exact=True)
        return _result(
            dec.Q, ritz, top, bottom, tol, P, 0, P, run_seed, return_vectors, b, A,
            dec.breakdowns, cert, true_residuals and A.dtype != torch.float64, by_value,
        )
    if _verifies(strategy, A.device, top, bottom, b, block_size, start, certify, true_residuals):
        from condlab.estimators.verify import single_then_verify

        return single_then_verify(
            extreme_eigenpairs, A, top=top, bottom=bottom, tol=tol, max_matvecs=max_matvecs,
            max_basis=max_basis, generator=generator, seed=seed, return_vectors=return_vectors,
            basis_dtype=basis_dtype, basis_device=basis_device, stop_on=stop_on,
            rounding=ROUNDING,
        )

    vdtype = basis_dtype or A.dtype
    vdevice = torch.device(basis_device) if basis_device is not None else A.device
    itemsize = torch.empty(0, dtype=vdtype).element_size()
    if max_basis is not None:
        basis = max_basis
    else:
        basis = _default_max_basis(P, nwant, b, itemsize, vdevice)
        b = max(1, min(b, (basis - nwant) // 2))
    cap = min(basis, max_matvecs, P)
    eps = max(torch.finfo(A.dtype).eps, torch.finfo(vdtype).eps)
    # [P, cap] stored column by column, so that V[:, :k] is one contiguous block: reading the
    # first k columns of a row-major [P, cap] touches all cap (5x the time at 0.5M parameters)
    from condlab.memory import guard

    with guard(f"the Lanczos basis of {cap} columns ({cap * P * itemsize / 1e9:.3g} GB)",
               f"run with --max-basis {max(min(P, nwant + 4), cap // 2)} or less"):
        V = torch.empty(cap, P, dtype=vdtype, device=vdevice).T
    # the products of the basis, kept where they are small: the true residuals come from them
    # (A y = (A V) s) instead of one more product per listed pair
    from condlab import memory  # its plan charges these bytes (memory.PRODUCTS_KEPT_BYTES)

    # (the first columns that fit: a run that stops before it fills them, as most do, gets its
    # residuals free; one that goes past drops them and pays the products, as without)
    kept_cols = memory.products_kept_columns(P, itemsize, vdevice, cap) if true_residuals else 0
    AV = torch.empty(kept_cols, P, dtype=vdtype, device=vdevice).T if kept_cols > nwant else None
    H = torch.zeros(cap, cap, dtype=torch.float64)
    first = random_probes(P, b, gen, like=V)
    if start is not None:
        first = _warm_block(start, first)
    Q, _ = torch.linalg.qr(first)  # [P, b]
    C = torch.zeros(0, b, dtype=torch.float64)  # coupling of V to Q
    k = matvecs = restarts = dropped = 0
    anorm, ritz, rec, widths = 0.0, None, None, []
    next_check = {False: 0, True: 0}  # the certificate's next look: values known / residuals met
    # the certificate reads the start columns' recurrences (bounds.py): all b random columns,
    # or with a warm start the first column alone (random plus ceil(#start / b) unit vectors)
    n_start = 0 if start is None else (1 if start.ndim == 1 else start.shape[1])
    columns, scale = (b, 1.0) if start is None else (1, 1.0 + math.ceil(n_start / b))
    factor, tightened = 1.0, 0  # the Krylov-residual target, a fraction of tol * ||A||
    # one start vector: its residual polynomial (bounds.ResidualPolynomial) survives restarts
    track = _Track() if b == 1 else None
    pinvs: dict = {}  # the start recurrence's block pseudo-inverses, each computed once
    checked = None  # (products, certificate source) of the last certificate check
    while True:  # until the true residuals meet tol, or the budget ends
        while True:
            n = Q.shape[1]
            if k + n > cap:
                lock = BREAKDOWN_RTOL * eps * anorm
                if restarts == 0:  # the last moment V holds the start block's Krylov space
                    rec = bounds.start_recurrence(H, C, widths, pinvs)
                keep = _keep_indices(ritz, top, bottom, cap - n)
                if track is not None:
                    track.restart(ritz, keep, lock)
                if AV is not None:  # the same rotation (its H and C are thrown away)
                    _thick_restart(AV, H.clone(), C, ritz, keep, lock)
                C, k = _thick_restart(V, H, C, ritz, keep, lock)
                restarts += 1
            if k > 0:
                H[k : k + n, :k] = C.T
                H[:k, k : k + n] = C
            V[:, k : k + n] = Q
            Q, W = V[:, k : k + n], None  # the block lives in V alone through the product
            W = matmat(A, Q.to(dtype=A.dtype, device=A.device)).to(dtype=vdtype, device=vdevice)
            if AV is not None and k + n > AV.shape[1]:
                AV = None  # the run outgrew the kept columns: its residuals take products
            if AV is not None:
                AV[:, k : k + n] = W
            anorm = max(anorm, float(torch.linalg.vector_norm(W, dim=0).max()))
            W, h = cgs2(V[:, : k + n], _own(W, V), inplace=True)  # h [k + n, n]
            h = h[k:].to("cpu", torch.float64)
            H[k : k + n, k : k + n] = (h + h.T) / 2
            k, matvecs = k + n, matvecs + n
            Q, R, lost = _orthonormal(V[:, :k], W, anorm, eps, gen, b, A)
            if restarts == 0:
                widths.append((n, n - lost))
            dropped += lost
            if track is not None:
                track.step(R, lost)
            C = torch.zeros(k, Q.shape[1], dtype=torch.float64)
            C[k - n :] = R.T
            exhausted = Q.shape[1] == 0 or matvecs + Q.shape[1] > max_matvecs
            due = k <= CHECK_EVERY_UP_TO or k % math.ceil(k / CHECK_EVERY_UP_TO) < n
            if k >= nwant and (due or exhausted or k + Q.shape[1] > cap):
                # ... and known: the certificate, every 10% more products, while more steps can still
                # sharpen it (one start vector: always; a block: not after a restart or a rank drop,
                # which end the start block's recurrence). By value: as soon as every value's backed
                # error is within tol (r^2 / gap needs only r <= sqrt(tol ||A|| gap))
                sharpens = (restarts == 0 or track is not None) and not dropped
                looks = certify and start is None and not exhausted and sharpens
                if (restarts == 0 and k >= SCREEN_FROM and not exhausted and _screens()
                        and k + Q.shape[1] <= cap and not _may_stop(
                            _screen(H, k, C, widths, top, bottom, factor * tol), looks, by_value,
                            matvecs, next_check)):
                    continue  # the exact test cannot pass here: no eigendecomposition this step
                ritz = _ritz(H, k, C, tridiagonal=b == 1 and restarts == 0)
                theta_np, res_np = ritz.theta.numpy(), ritz.residuals.numpy()  # float64 CPU
                threshold = factor * tol * float(np.abs(theta_np).max())
                met = bool((res_np[:bottom] <= threshold).all() and
                           (res_np[k - top :] <= threshold).all())
                if looks and (met or (by_value and _near(ritz, top, bottom, threshold))):
                    if matvecs >= next_check[met]:
                        step, residuals_met = matvecs + max(b, matvecs // 10), met
                        now = _source(rec, track, ritz, C, lambda C=C: bounds.start_recurrence(
                            H, C, widths, pinvs))
                        checked = (matvecs, now)
                        cert = _Certificate(now, columns, scale, exact=restarts == 0 and k >= P)
                        met = _certified(ritz, cert, top, bottom, threshold, P, b, by_value)
                        next_check[False] = step
                        if residuals_met:
                            next_check[True] = step
                    else:
                        met = False
                if met or exhausted:
                    break
            elif k + Q.shape[1] > cap:
                ritz = _ritz(H, k, C, tridiagonal=b == 1 and restarts == 0)
            if exhausted:
                raise CondlabError(
                    f"the Krylov space was exhausted after {matvecs} products before the "
                    f"{nwant} wanted pairs fit; raise max_matvecs"
                )
        if checked is not None and checked[0] == matvecs:  # the last check's: the same Ritz
            now = checked[1]  # values, so its Christoffel function's values are reused
        else:
            now = _source(rec, track, ritz, C,
                          lambda C=C: bounds.start_recurrence(H, C, widths, pinvs))
        cert = _Certificate(now, columns, scale,
                            exact=restarts == 0 and k >= P,
                            budget=None if met else max_matvecs)
        check = true_residuals and not (cert.exact and A.dtype == torch.float64 == vdtype)
        # from the kept products where their rotations at restarts add no more than a product's
        # rounding (float64, or no restart); else one block of new products
        reuse = AV is not None and (restarts == 0 or vdtype == torch.float64)
        result = _result(
            V[:, :k], ritz, top, bottom, tol, matvecs, restarts, cap, run_seed, return_vectors, b,
            A, dropped, cert, check, by_value, AV[:, :k] if reuse else None, neighbours,
        )
        # the Krylov estimate ||C^T s|| met tol but a true residual did not (the recurrence drifts
        # after thick restarts in float32): keep iterating against a tighter estimate while the
        # budget lasts, rather than stopping unconverged with products left
        if (met and check and result.stop_reason.startswith("rounding") and tightened < MAX_TIGHTEN
                and result.matvecs + Q.shape[1] <= max_matvecs and Q.shape[1] > 0):
            factor, tightened, matvecs = factor * TIGHTEN, tightened + 1, result.matvecs
            continue
        return result


class _Track:
    """What a single-vector run's residual polynomial needs across restarts (bounds.py's
    :class:`~condlab.estimators.bounds.ResidualPolynomial`): the discarded Ritz values, the sum of
    ``log beta`` and the couplings zeroed by locking (a perturbation of the relation, taken as a
    root margin). A rank drop brings in a fresh random vector that is no polynomial of the start:
    tracking ends there (``alive`` False) and the start recurrence alone certifies."""

    def __init__(self):
        self.discarded: list[Tensor] = []
        self.log_beta, self.margin, self.alive = 0.0, 0.0, True

    def restart(self, ritz: _Ritz, keep: Tensor, lock: float) -> None:
        gone = torch.ones(len(ritz.theta), dtype=torch.bool)
        gone[keep] = False
        self.discarded.append(ritz.theta[gone])
        kept = ritz.residuals[keep]
        self.margin += float(torch.linalg.vector_norm(kept[kept <= lock]))

    def step(self, R: Tensor, lost: int) -> None:
        if lost or R.shape[0] != 1:
            self.alive = False
        elif self.alive:
            self.log_beta += math.log(abs(float(R[0, 0])))

    def polynomial(self, ritz: _Ritz, C: Tensor) -> bounds.ResidualPolynomial:
        disc = torch.cat(self.discarded) if self.discarded else torch.zeros(0, dtype=torch.float64)
        return bounds.ResidualPolynomial(ritz.theta, (C.T @ ritz.S)[0], disc, self.log_beta,
                                         self.margin)


def _source(rec, track: _Track | None, ritz: _Ritz, C: Tensor, fresh):
    """The certificate's Christoffel function: the start recurrence (``rec``, captured at the
    first restart; ``fresh()`` builds it before one), and for one start vector whose tracking
    survived the residual polynomial too: alone before a restart (the same function, evaluated
    stably from its roots), the larger of the two after."""
    poly = track.polynomial(ritz, C) if track is not None and track.alive else None
    if poly is not None and rec is None:
        return poly
    rec = rec if rec is not None else fresh()
    return rec if poly is None else bounds.Christoffel((rec, poly))


@dataclass(frozen=True)
class _Certificate:
    recurrence: bounds.StartRecurrence | None  # the start block's, for the certificate
    columns: int  # random start columns they come from
    scale: float  # 1 + unit vectors a warm start added to the first column
    exact: bool  # full depth: every eigenvalue is a Ritz value
    budget: int | None = None  # the run stopped at this max_matvecs before converging


def _copies(theta: Tensor, converged: Tensor, values: Tensor, width: float) -> Tensor:
    """``[n]`` converged Ritz values within ``width`` of each of ``values``."""
    close = (theta[None, :] - values[:, None]).abs() <= width
    return (close & converged[None, :]).sum(dim=1)


def _may_miss(values: Tensor, repeat: Tensor, width: float) -> Tensor:
    """``[n]``: a value whose cluster filled the block (``repeat``) while the list goes on past
    the cluster: the true list may hold more copies of it where later values stand. A cluster
    that reaches the end of the list cannot displace anything, whatever its multiplicity."""
    if values.numel() == 0:
        return repeat.clone()
    last = values[-1]
    return repeat & ~((values - last).abs() <= width)


def _warm_block(start: Tensor, R: Tensor) -> Tensor:
    """``[P, b]``: column ``j`` is ``sum_{i = j mod b} s_i / ||s_i|| + r_j / ||r_j||`` over the
    columns ``s_i`` of ``start`` and ``r_j`` of the random block ``R``."""
    P, b = R.shape
    if start.ndim not in (1, 2) or start.shape[0] != P:
        raise UsageError(f"start must have shape [{P}] or [{P}, k], got {tuple(start.shape)}")
    S = (start[:, None] if start.ndim == 1 else start).to(dtype=R.dtype, device=R.device)
    norms = torch.linalg.vector_norm(S, dim=0)
    S = S[:, norms > 0] / norms[norms > 0]
    out = R / torch.linalg.vector_norm(R, dim=0)
    for i in range(S.shape[1]):
        out[:, i % b] += S[:, i]
    return out


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
    block_size: int,
    A,
    breakdowns: int,
    cert: _Certificate,
    check: bool,
    by_value: bool = False,
    AV: Tensor | None = None,
    neighbours: int = 0,
) -> ExtremeEigs:
    """Pick the ends from the Ritz pairs of ``H = V^T A V``, drop any ghost copies, measure
    the true residuals (``check``) and bound the errors (bounds.py)."""
    k = len(ritz.theta)
    threshold = tol * float(ritz.theta.abs().max())
    idx_top = torch.arange(k - 1, k - 1 - top, -1)  # descending
    idx_bot = torch.arange(bottom)
    converged_all = ritz.residuals <= threshold
    lists = []
    for idx in (idx_top, idx_bot):
        Y = V @ ritz.S[:, idx].to(dtype=V.dtype, device=V.device)  # [P, n]
        ghost = _ghost_mask(Y)
        values = ritz.theta[idx].masked_fill(ghost, float("nan"))
        residuals = ritz.residuals[idx].masked_fill(ghost, float("inf"))
        copies = _copies(ritz.theta, converged_all, ritz.theta[idx], 2 * threshold)
        lists.append([values, residuals, None, Y, copies])
    AY = None
    if check and AV is not None:  # A y = (A V) s, s = V^T y: from the products already taken
        AY = _check_residuals(A, lists, lambda Y: (AV @ (V.T @ Y.to(V.dtype))).to(Y.dtype))
    elif check:
        AY = _check_residuals(A, lists)
        matvecs += AY.shape[1]
    recurrence = cert.recurrence
    if check:  # the relation's drift along the listed pairs moves the residual polynomial's roots
        drift = max([float((item[1] - ritz.residuals[idx]).abs()[torch.isfinite(item[0])].max())
                     for item, idx in zip(lists, (idx_top, idx_bot)) if bool(
                         torch.isfinite(item[0]).any())] or [0.0])
        recurrence = bounds.widened(recurrence, drift)
    res_all = ritz.residuals.clone()
    for (_, residuals, _, _, _), idx in zip(lists, (idx_top, idx_bot)):
        res_all[idx] = torch.maximum(residuals, ritz.residuals[idx])
    for item in lists:
        item[3] = item[3].to(dtype=A.dtype, device=A.device) if return_vectors else None
    (vt, rt, _, yt, nt), (vb, rb, _, yb, nb) = lists
    extra = _neighbours(V, AV, ritz, top, bottom, neighbours, A) if return_vectors else None
    partial = k < operator_size(A)  # a run to full depth sees every copy
    repeat_top, repeat_bottom = (nt >= block_size) & partial, (nb >= block_size) & partial
    kw = dict(recurrence=recurrence, P=operator_size(A), block_size=block_size, threshold=threshold,
              columns=cert.columns, start_scale=cert.scale, exact=cert.exact,
              rounding=ROUNDING * torch.finfo(V.dtype).eps * float(ritz.theta.abs().max()))
    et = bounds.top_errors(ritz.theta, res_all, top, **kw)
    eb = bounds.bottom_errors(ritz.theta, res_all, bottom, **kw)
    # converged: the residual within tol * ||A||, or (stopping on values) the backed error
    ct, cb = rt <= threshold, rb <= threshold
    if by_value:
        ct = ct | ((et.errors <= threshold) & torch.isfinite(vt))
        cb = cb | ((eb.errors <= threshold) & torch.isfinite(vb))
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
        block_size=block_size,
        copies_top=nt,
        copies_bottom=nb,
        may_repeat_top=repeat_top,
        may_repeat_bottom=repeat_bottom,
        may_miss_top=_may_miss(vt, repeat_top, 2 * threshold),
        may_miss_bottom=_may_miss(vb, repeat_bottom, 2 * threshold),
        breakdowns=breakdowns,
        errors_top=et.errors,
        errors_bottom=eb.errors,
        error_kinds_top=tuple(et.kinds),
        error_kinds_bottom=tuple(eb.kinds),
        certified_top=et.certified,
        certified_bottom=eb.certified,
        certificate_top=et.reason,
        certificate_bottom=eb.reason,
        lambda_max_upper=et.bound,
        lambda_min_lower=eb.bound,
        residual_kind="true" if check else "krylov",
        checked_products=AY if return_vectors else None,
        stop_reason=_stop_reason(cert, bool(ct.all() and cb.all()), matvecs, restarts, check,
                                 threshold, V.dtype, _stopped_by(rt, rb, et, eb, threshold, by_value)),
        stop_rule="values" if by_value else "residuals",
        neighbours=extra,
    )


def _neighbours(V: Tensor, AV: Tensor | None, ritz: _Ritz, top: int, bottom: int, n: int, A):
    """Up to ``n`` Ritz pairs past each listed end (top's descending, then bottom's ascending):
    ``(values, Krylov residuals, Y [P, m], A Y [P, m])`` from the kept products ``A V``; None
    without them (each would cost a product) or when the run holds no more pairs."""
    k = len(ritz.theta)
    n_top = min(n, max(0, k - top - bottom)) if top else 0
    n_bottom = min(n, max(0, k - top - bottom - n_top)) if bottom else 0
    if AV is None or n_top + n_bottom == 0:
        return None
    idx = torch.cat([torch.arange(k - 1 - top, k - 1 - top - n_top, -1),
                     torch.arange(bottom, bottom + n_bottom)])
    S = ritz.S[:, idx].to(dtype=V.dtype, device=V.device)
    like = dict(dtype=A.dtype, device=A.device)
    return ritz.theta[idx], ritz.residuals[idx], (V @ S).to(**like), (AV @ S).to(**like)


def _certified(ritz: _Ritz, cert: _Certificate, top, bottom, threshold, P, b,
               by_value: bool = False) -> bool:
    """Whether the certificate bounds the end values (``lambda_max``, ``lambda_min``) within
    ``threshold`` (Krylov residuals) and, ``by_value``, every listed value is known within it
    (its backed error or its residual). Otherwise values inside a list are certified when the
    run's gaps allow it (``errors_*``), but are not worth products: with one vector they never
    are."""
    kw = dict(recurrence=cert.recurrence, P=P, block_size=b, threshold=threshold,
              columns=cert.columns, start_scale=cert.scale, exact=cert.exact)
    k = len(ritz.theta)
    et = bounds.top_errors(ritz.theta, ritz.residuals, top, **kw).errors
    eb = bounds.bottom_errors(ritz.theta, ritz.residuals, bottom, **kw).errors
    if not bool((torch.cat([et[:1], eb[:1]]) <= threshold).all()):  # the ends: kappa needs them
        return False
    if not by_value:
        return True
    rt, rb = ritz.residuals[k - top :].flip(0), ritz.residuals[:bottom]
    return bool((torch.minimum(et, rt) <= threshold).all() and
                 (torch.minimum(eb, rb) <= threshold).all())


def _near(ritz: _Ritz, top: int, bottom: int, threshold: float) -> bool:
    """Whether every wanted pair is within ``threshold`` by its residual or by ``r^2 / gap`` with
    the gap to its nearest other Ritz value: a necessary condition for the backed errors (their
    certified gaps are narrower), cheap enough for every step."""
    theta, r = ritz.theta.cpu().numpy(), ritz.residuals.cpu().numpy()  # numpy: the same
    k = len(theta)  # comparisons and roundings as torch, at a tenth of the cost per operation
    idx = np.concatenate([np.arange(bottom), np.arange(k - top, k)])
    gaps = np.abs(theta[idx, None] - theta[None, :])
    gaps[np.arange(len(idx)), idx] = math.inf
    gap = gaps.min(axis=1)
    return bool(((r[idx] <= threshold) | (r[idx] ** 2 <= threshold * gap)).all())


def _stopped_by(rt, rb, et, eb, threshold, by_value) -> str:
    """Which bound made each listed value known: '' when every residual met tol, else e.g.
    'kato-temple x3, residual x2' over the values whose residual alone did not."""
    if not by_value:
        return ""
    kinds = [kind for r, e, kind in zip(torch.cat([rt, rb]), torch.cat([et.errors, eb.errors]),
                                        list(et.kinds) + list(eb.kinds))
             if not r <= threshold and e <= threshold]
    if not kinds:
        return ""
    return ", ".join(f"{kind} x{kinds.count(kind)}" for kind in dict.fromkeys(kinds))


def _stop_reason(cert, converged, matvecs, restarts, check, threshold, dtype, by: str = "") -> str:
    runs = f"{matvecs} products, {restarts} thick restarts"
    if cert.budget is not None:
        return (f"budget: the next block would pass max_matvecs = {cert.budget} before every "
                f"listed pair met tol * ||A|| = {threshold:.3g} and was certified ({runs}); "
                f"raise max_matvecs")
    if converged and by:
        return (f"converged on values: every listed value's backed error <= tol * ||A|| = "
                f"{threshold:.3g}, by its residual or the bound named ({by}) ({runs})")
    if converged:
        return f"converged: every listed pair's residual <= tol * ||A|| ({runs})"
    what = "true residual" if check else "residual"
    return (f"rounding: the Krylov estimate met tol * ||A|| = {threshold:.3g} but a {what} did "
            f"not ({runs}); in {dtype_name(dtype)} residuals stall near the arithmetic's noise: "
            f"loosen tol or use float64")


def _check_residuals(A, lists, product=None) -> Tensor:
    """Replace each list's residuals by ``||A y - theta y|| / ||y||`` from one block product;
    the product ``A Y [P, n]`` of the finite columns.

    Memory: beside ``Y`` only its product (a list's ``Y`` is used as it is when it holds every
    finite column: no concatenated copy), and the residual norms are summed over row blocks
    (no ``[P, n]`` ``A Y - Y theta`` temporaries: 0.5 GB a column at GPT-2 small)."""
    Ys, thetas = [], []
    for values, _, _, Y, _ in lists:
        keep = torch.isfinite(values)
        if int(keep.sum()):
            Ys.append(Y if bool(keep.all()) else Y[:, keep])
            thetas.append(values[keep])
    if not Ys:
        return lists[0][3][:, :0].to(dtype=A.dtype, device=A.device)
    Y = Ys[0] if len(Ys) == 1 else torch.cat(Ys, dim=1)
    Y = Y.to(dtype=A.dtype, device=A.device)
    theta = torch.cat(thetas).to(dtype=Y.dtype, device=Y.device)
    AY = matmat(A, Y) if product is None else product(Y)
    res = _residual_norms(AY, Y, theta)
    at = 0
    for item in lists:
        keep = torch.isfinite(item[0])
        m = int(keep.sum())
        item[1] = item[1].clone()
        item[1][keep] = res[at : at + m]
        at += m
    return AY


def _residual_norms(AY: Tensor, Y: Tensor, theta: Tensor) -> Tensor:
    """``||A y_j - theta_j y_j|| / ||y_j||`` per column (float64 CPU), summed over row blocks of
    at most ``RESTART_CHUNK_BYTES``."""
    P, n = Y.shape
    rows = max(1, RESTART_CHUNK_BYTES // max(1, n * Y.element_size()))
    rr = torch.zeros(n, dtype=torch.float64, device=Y.device)
    yy = torch.zeros(n, dtype=torch.float64, device=Y.device)
    for r in range(0, P, rows):
        y = Y[r : r + rows]
        rr += torch.linalg.vector_norm(AY[r : r + rows] - y * theta, dim=0).double() ** 2
        yy += torch.linalg.vector_norm(y, dim=0).double() ** 2
    return (rr.sqrt() / yy.sqrt().clamp_min(torch.finfo(Y.dtype).tiny)).to("cpu")
