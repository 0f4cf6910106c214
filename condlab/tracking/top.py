r"""``lambda_max`` of a symmetric operator by single-vector Lanczos, warm-started and stopped on
the eigenvalue: what a tracker needs between two nearby weights.

Quantity: the largest eigenvalue ``lambda_1`` of a symmetric ``A [P, P]`` (a Hessian, or an
optimizer's ``P^-1/2 H P^-1/2``), its Ritz vector, and the second Ritz vector (the next warm
start).

Estimator: Lanczos with full reorthogonalization (:func:`condlab.estimators.lanczos.lanczos_step`,
one product per step) from the first vector

    q_1 ~ y_1 + c y_2 + eps r        (warm: y_1, y_2 the previous top two Ritz vectors)
    q_1 ~ r + h_1 + c h_2            (cold with a hint h: for P^-1/2 H P^-1/2, P^-1/2 times
                                      the Hessian's top two Ritz vectors of the same step)
    q_1 ~ r                          (cold)

with ``r`` Gaussian from the seed (normalized, as every term), ``c = WARM_SECOND``,
``eps = WARM_NOISE``. When the top two eigenvectors moved little, ``K_2(A, q_1) = span{q_1, A
q_1}`` is already close to ``span{u_1, u_2}``, so two products resolve ``lambda_1`` and
``lambda_2`` even where the two swapped order (the second vector is what follows a crossing of
the top two). A hint keeps the random vector at full weight: the start is never further from an
eigenvector than a random one by more than a factor ~sqrt(2), and closer where the hint points
near ``u_1``.

Stopping rule: after ``k`` steps, with Ritz values ``theta_1 >= theta_2`` of ``T_k`` and
residuals ``rho_i = beta_k |s_{k,i}|`` (exact, no product), stop when

    rho_1 <= tol ||A||                               ('residual')
    rho_1^2 / gap <= tol ||A||,  gap = theta_1 - theta_2 - rho_2     ('residual^2/gap', warm only)

the second (on the eigenvalue, not the vector) being the Kato-Temple bound ``lambda_1 - theta_1
<= rho_1^2 / (theta_1 - lambda_2)`` with ``lambda_2`` *estimated* by ``theta_2 + rho_2`` and the estimate counted for at most
``GAP_CAP ||A||``, taken only once ``theta_1`` rose by at most ``SETTLED tol ||A||`` in the last
step. The cap is measured, not derived: at the edge of stability, where the top eigenvector
turns between checkpoints, the uncapped estimate stopped on the old top direction up to 74 tol
low (GD) and 45 tol (Adam) at tol 1e-3; capped at 0.1 ||A|| (there: ``rho_1 <= 10 tol ||A||``)
the worst was 1.5 tol (GD) and 6.3 (Adam, a row a cold start misses too), for 0.2 more products
per row in a training loop far from the edge (a cap at 0.01 ||A|| would have cost 1.2). ``||A||`` is estimated by
the largest ``|theta|``. The estimate presumes the top two eigenvalues resolved, which a warm
start (the previous top two vectors) makes likely and a cold one does not: from a random (or
hinted) start a few steps can leave ``theta_1`` on ``lambda_2`` with ``lambda_1`` not yet seen
and a large estimated gap to ``theta_2`` (on a 75-parameter MLP whose top two eigenvalues are
2.6% apart, 1 of 6 seeds stopped 26 tol low). A cold start therefore stops on the residual
alone (worst error 0.002 tol over 70 such runs; ``estimate=True`` allows the gap rule).

What backs the result (``converged``), as in ``condlab spectrum``: ``theta_1 <= lambda_max``
always (a Rayleigh quotient); ``rho_1`` proves only that *some* eigenvalue lies within it;
that it is ``lambda_max``, within ``tol ||A||``, needs the random start's certificate
(:func:`condlab.estimators.bounds.top_errors`: the bracket from the start vector's Christoffel
function, Kato-Temple across a certified gap). The fast path does not run it (below), so
``converged`` is True only for a run to full depth. The stopping rule is an *estimate*
(``error``, ``estimate_met``; ``certificate`` says why ``converged`` is False).
Certifying ``lambda_max`` to 1e-3 from a random start took about 15 products on the digits
MLP (against 2-4 for the warm estimate), a warm start's random part (weight ``WARM_NOISE``)
certifies nothing within a few products, and evaluating the certificate cost about 30 ms per
row. An eigenvalue above ``theta_1`` whose direction the start vector barely holds (an
eigenvalue rising from the bulk, orthogonal to the two followed) is found only after the
Krylov space reaches it, as late as a cold start would find it, or later.

Cost: ``k`` products, ``4 P k`` flops for the orthogonalization, one ``k x k`` eigensolve per
step; memory ``P x m``, ``m`` the basis the memory plan sizes
(:func:`condlab.memory.plan` for one wanted value and a block of 1, or ``max_basis``);
allocated at once, as the block solver does. A full basis restarts from the top two Ritz
vectors. A breakdown (``K_k`` invariant) stops with ``rho = 0``: the Ritz values are then
exact, and a random or noised start touches every eigendirection.

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
from condlab.estimators.lanczos import BREAKDOWN_RTOL, cgs2, lanczos_step
from condlab.memory import guard, memory_fix

WARM_SECOND = 0.05  # weight of the previous second Ritz vector: enough to resolve a swap of the top two
WARM_NOISE = 1e-4  # weight of the random vector: no direction is exactly absent
SETTLED = 10.0  # the gap rule also needs theta_1 to have risen by <= SETTLED * tol ||A|| last step
GAP_CAP = 0.1  # an estimated gap counts for at most GAP_CAP ||A|| (measured, edge of stability)
STOPS = ("residual", "residual^2/gap", "budget", "exact")
try:  # np.linalg.eigh's own LAPACK ufunc (private; the public call is the fallback)
    from numpy.linalg._umath_linalg import eigh_lo as _EIGH
except ImportError:  # pragma: no cover
    _EIGH = None


@dataclass(frozen=True)
class TopEig:
    """``lambda_max`` of a symmetric operator with its error estimate and warm-start vectors."""

    value: float  # theta_1, the largest Ritz value: lambda_max >= value
    residual: float  # rho_1 = ||A y_1 - theta_1 y_1||: some eigenvalue lies within rho_1
    error: float  # the estimate that stopped the run, rho_1 or rho_1^2 / capped gap: not a bound
    gap: float | None  # theta_1 - theta_2 - rho_2, estimated (None with one Ritz value)
    stop: str  # which rule stopped it, one of STOPS
    converged: bool  # backed: only a run to full depth (the fast path runs no certificate)
    estimate_met: bool  # the stopping rule's estimate met tol ||A|| (every stop but a budget's)
    certificate: str  # what backs ``converged``, or why it is not backed
    threshold: float  # tol ||A||
    products: int
    restarts: int
    warm: bool
    vectors: Tensor  # [P, 2] the top two Ritz vectors (one when P == 1), A's dtype and device
    seed: int | None
    max_basis: int  # basis columns (the memory plan's unless given)


def _normalized_columns(start: Tensor, R: Tensor, name: str) -> Tensor:
    P = R.shape[0]
    if start.ndim not in (1, 2) or start.shape[0] != P:
        raise UsageError(f"{name} must have shape [{P}] or [{P}, k], got {tuple(start.shape)}")
    return (start[:, None] if start.ndim == 1 else start)[:, :2].to(dtype=R.dtype, device=R.device)


def _mix(S: Tensor, q: Tensor) -> Tensor:
    """``q + s_1/||s_1|| + WARM_SECOND s_2/||s_2||`` (zero or non-finite columns left out)."""
    norms = torch.linalg.vector_norm(S, dim=0).tolist()  # one sync for both
    for i, (weight, norm) in enumerate(zip((1.0, WARM_SECOND), norms)):
        if norm > 0 and math.isfinite(norm):
            q = q + (weight / norm) * S[:, i]
    return q


def warm_vector(start: Tensor, R: Tensor, noise: Tensor | None = None) -> Tensor:
    """``q_1 [P]``: ``s_1/||s_1|| + WARM_SECOND s_2/||s_2|| + WARM_NOISE r/||r||`` for the columns
    ``s_i`` of ``start [P]`` or ``[P, k]`` (only the first two are used) and the random ``r``
    (``noise``: that last term, already computed)."""
    S = _normalized_columns(start, R, "start")
    return _mix(S, WARM_NOISE * R / torch.linalg.vector_norm(R) if noise is None else noise)


def hinted_vector(hint: Tensor, R: Tensor) -> Tensor:
    """``q_1 [P]``: ``r/||r|| + h_1/||h_1|| + WARM_SECOND h_2/||h_2||``, the random vector at
    full weight: never much further from an eigenvector than a random start."""
    H = _normalized_columns(hint, R, "hint")
    return _mix(H, R / torch.linalg.vector_norm(R))


def _eigh(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh`` of a small float64 ``T`` through its LAPACK ufunc, without the
    wrapper's checks (5 us against 12.6 a call; one per Lanczos step): the same bits."""
    if _EIGH is None:
        return np.linalg.eigh(T)
    return _EIGH(T, signature="d->dd")


def _random_start(P: int, A, generator: torch.Generator | None, seed: int,
                  workspace: dict | None) -> Tensor:
    """The random part ``r [P]`` of the start: the first draw of ``generator`` (or of a fresh
    one seeded with ``seed``). A seeded draw is kept in ``workspace``: a training loop draws the
    same ``r`` at every measurement (a float64 ``randn`` of 2,410 values costs about 0.1 ms, a
    sixth of a training step of the digits MLP)."""
    if generator is not None or workspace is None:
        return random_probes(P, 1, make_generator(generator, seed), like=A)[:, 0]
    key = ("r", P, A.dtype, str(A.device), int(seed))
    r = workspace.get(key)
    if r is None:
        r = workspace[key] = random_probes(P, 1, make_generator(None, seed), like=A)[:, 0]
        workspace[("noise", *key[1:])] = WARM_NOISE * r / torch.linalg.vector_norm(r)
    return r


def _direct(A):
    """``v [P] -> A v [P]`` without the operator's dispatch (its block loop, memory guard and
    reductions: about 50 us a product, a sixth of one on the digits MLP), with the same
    arithmetic, for the operators a training loop's fast path builds once their graph is kept:
    a cached single-batch Hessian (its map's backward pass), and ``P^-1/2 A P^-1/2`` (+ shifts)
    around one. None for anything else (the caller then goes through ``A @ v``)."""
    from condlab.distributed import is_distributed
    from condlab.operators.curvature import GRAD_OUTPUTS_FROM, HessianOperator, _grad_with_outputs
    from condlab.operators.diagonal import PreconditionedOperator

    if type(A) is PreconditionedOperator:
        inner = _direct(A.A)
        if inner is None:
            return None
        scale, lam_in, lam_out = A._scale[:, 0], A.inner_shift, A.outer_shift

        def preconditioned(v: Tensor) -> Tensor:
            A.matvecs += 1
            w = scale * v
            out = scale * inner(w)
            if lam_in:
                out = out + lam_in * (scale * w)
            if lam_out:
                out = out + lam_out * v
            return out

        return preconditioned
    if (type(A) is not HessianOperator or not A.cache or list(A._maps) != [0]
            or A.problem.weights != [1.0] or is_distributed()):
        return None
    hvp = A._maps[0]
    g, theta = getattr(hvp, "graph", (None, None))
    if g is None or g.numel() >= GRAD_OUTPUTS_FROM:

        def hessian(v: Tensor) -> Tensor:
            A.matvecs += 1
            return hvp(v[:, None])[:, 0]

        return hessian
    # d(g . v)/d theta by autograd's engine, as torch.autograd.grad runs it, without its Python
    # checks (the same bits: test_the_direct_product_is_the_operators_product): 200 us against
    # 230 a product of the digits MLP; the one private route is curvature._grad_with_outputs
    one = torch.ones((), dtype=g.dtype, device=g.device)

    def backward(v: Tensor) -> Tensor:
        A.matvecs += 1
        return _grad_with_outputs(g @ v, theta, one, False)

    return backward


def basis_columns(A, max_products: int, max_basis: int | None = None,
                  memory_limit: int | None = None) -> int:
    """The columns of the fast path's basis: ``max_basis`` if given, else what the memory plan
    gives one wanted value with a block of 1 (:func:`condlab.memory.plan`: up to 256 columns
    within 1 GiB, fewer where memory is short; a one-line refusal where not even 2 fit, where the
    plan would run its two-pass Lanczos, which this solver has not), at most ``max_products``
    and ``P``."""
    from condlab.memory import MemoryRefused, fmt, plan

    P = operator_size(A)
    if max_basis is not None:
        if max_basis < 2:
            raise UsageError(f"max_basis must be >= 2, got {max_basis}")
        m = max_basis
    else:
        p = plan(A, top=1, bottom=0, block_size=1, memory_limit=memory_limit)
        m = p.max_basis or 0
        if m < 2 and P > 1:  # the plan would run two-pass Lanczos, which the fast path has not
            raise MemoryRefused(
                f"does not fit in memory: the tracker's Lanczos needs a basis of 2 columns "
                f"({fmt(2 * P * torch.empty(0, dtype=A.dtype).element_size())}) beside the "
                f"product, and {fmt(p.available_bytes)} is available ({p.limited_by}); free "
                "memory, raise --memory-limit or measure fewer samples")
    return max(1, min(P, max_products, m))


def top_eigenpair(
    A,
    *,
    tol: float,
    max_products: int = 1000,
    start: Tensor | None = None,
    hint: Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    max_basis: int | None = None,
    columns: int | None = None,
    estimate: bool | None = None,
    workspace: dict | None = None,
) -> TopEig:
    """``lambda_max`` of symmetric ``A`` to ``tol * ||A||`` (see the module docstring).

    ``start``: the previous measurement's ``vectors`` (``[P, k]``, the first two used) or any
    vector ``[P]``; ``hint`` (used only without ``start``): one or two directions likely near the
    top eigenvectors, mixed into the random start at equal weight; both None start from a random
    vector. At most ``max_products`` products (``estimate_met`` False if it runs out).
    ``max_basis``: columns kept before a restart (default: the memory plan's, see
    :func:`basis_columns`); ``columns``: that count already computed by :func:`basis_columns`
    (a training loop plans once). ``estimate``: may stop on the estimated ``residual^2/gap``
    (default: with a warm ``start`` only). ``workspace``: a dict in which the basis is kept for
    the next call on an operator of the same size (the rows of one measurement share one
    allocation). Deterministic given ``generator`` (or ``seed``).
    """
    P = operator_size(A)
    if not tol > 0:
        raise UsageError(f"tol must be > 0, got {tol}")
    if max_products < 1:
        raise UsageError(f"max_products must be >= 1, got {max_products}")
    gen = generator  # a seeded one is made only for a restart (r may come from the workspace)
    r = _random_start(P, A, generator, seed, workspace)
    if start is not None:
        noise = (workspace or {}).get(("noise", P, A.dtype, str(A.device), int(seed)))
        q = warm_vector(start, r, None if generator is not None else noise)
    elif hint is not None:
        q = hinted_vector(hint, r)
    else:
        q = r
    q = q / torch.linalg.vector_norm(q)
    gap_rule = start is not None if estimate is None else bool(estimate)
    cap = columns if columns is not None else basis_columns(A, max_products, max_basis)
    cap = max(1, min(cap, P, max_products))
    key = (cap, P, A.dtype, str(A.device))
    Q = (workspace or {}).get(key)
    if Q is None:
        itemsize = torch.empty(0, dtype=A.dtype).element_size()
        with guard(f"the tracker's Lanczos basis ({cap} columns of {P} parameters, "
                   f"{cap * P * itemsize / 1e9:.3g} GB)",
                   "pass a smaller max_basis (at least 2), or --memory-limit so the plan sizes it"):
            Q = torch.empty(cap, P, dtype=A.dtype, device=A.device).T  # [P, cap], columns contiguous
        if workspace is not None:
            workspace[key] = Q
    T = np.zeros((min(cap, 16), min(cap, 16)))  # T_k in its leading k x k block, grown as needed
    breakdown = BREAKDOWN_RTOL * torch.finfo(A.dtype).eps
    products = restarts = k = 0
    anorm, previous = 0.0, -math.inf
    theta = S = None
    direct = _direct(A)  # A's product without its dispatch, once its graph is kept
    while True:
        if direct is None and products == 1:  # the first product built the graph
            direct = _direct(A)
        if direct and Q.device.type == "cpu":  # lanczos_step's arithmetic, read without a stack
            Q[:, k] = q
            try:  # an allocator error: the one line of A @ v's guard (a try costs nothing)
                w = direct(q)
            except Exception as e:
                with guard("a curvature product of 1 vector(s)", memory_fix()):
                    raise e from None
            aq = float(torch.linalg.vector_norm(w))
            w, h = cgs2(Q[:, : k + 1], w)
            alpha, beta = float(h[k]), float(torch.linalg.vector_norm(w))
        else:
            w, stats = lanczos_step(A, Q, k, q)
            alpha, beta, aq = stats.tolist()
        products, k, anorm = products + 1, k + 1, max(anorm, aq)
        if k > T.shape[0]:
            T = np.pad(T, (0, min(cap, 2 * T.shape[0]) - T.shape[0]))
        T[k - 1, k - 1] = alpha
        if beta <= breakdown * anorm:
            beta = 0.0  # K_k is invariant: its Ritz values are exact (rho = 0 stops the run)
        if k == 1:
            theta, S = np.array([alpha]), np.ones((1, 1))
        else:
            theta, S = _eigh(T[:k, :k])  # ascending
        # the residuals of the top two Ritz pairs, beta |s_k,i| (no product), and ||A|| as the
        # largest |theta| (an end of the ascending theta), read as Python floats
        last, top = S[-1].tolist(), float(theta[-1])
        threshold = tol * max(abs(top), abs(float(theta[0])))
        rho1, gap = abs(beta * last[-1]), None
        rise, previous = top - previous, top
        if k >= 2:
            gap = top - float(theta[-2]) - abs(beta * last[-2])
        stop = None
        if k == P and restarts == 0:
            stop = "exact"
        elif rho1 <= threshold:
            stop = "residual"
        elif (gap_rule and gap is not None and gap > 0
              and rho1 * rho1 / min(gap, GAP_CAP * threshold / tol) <= threshold
              and rise <= SETTLED * threshold):
            stop = "residual^2/gap"
        elif products >= max_products:
            stop = "budget"
        if stop is not None:
            break
        if k == cap:  # a full basis: restart from the top two Ritz vectors
            Y = Q[:, :k] @ torch.from_numpy(S[:, ::-1][:, :2].copy()).to(dtype=A.dtype, device=A.device)
            if gen is None:  # the generator r came from, past r
                gen = make_generator(None, seed)
                random_probes(P, 1, gen, like=A)
            q = warm_vector(Y, random_probes(P, 1, gen, like=A)[:, 0])
            q = q / torch.linalg.vector_norm(q)
            k, restarts = 0, restarts + 1
            T[:] = 0.0
        else:
            if k == T.shape[0]:
                T = np.pad(T, (0, min(cap, 2 * k) - k))
            T[k - 1, k] = T[k, k - 1] = beta
            q = w / beta
    error = 0.0 if stop == "exact" else rho1
    if stop in ("residual^2/gap", "budget") and gap is not None and gap > 0:
        error = min(rho1, rho1 * rho1 / min(gap, GAP_CAP * threshold / tol))
    top2 = torch.from_numpy(S[:, ::-1][:, : min(2, k)].copy())  # the top two Ritz vectors of T
    Y = Q[:, :k] @ top2.to(dtype=A.dtype, device=A.device)  # [P, <=2]
    converged, certificate = _backed(rho1, threshold, stop)
    return TopEig(
        value=top, residual=rho1, error=error, gap=gap, stop=stop,
        converged=converged, estimate_met=stop != "budget" or error <= threshold,
        certificate=certificate, threshold=threshold, products=products, restarts=restarts,
        warm=start is not None, vectors=Y, seed=None if generator is not None else int(seed),
        max_basis=cap,
    )


def _backed(rho1: float, threshold: float, stop: str) -> tuple[bool, str]:
    """``(converged, why)``: only a run to full depth backs ``lambda_max`` here. A residual within
    ``threshold`` proves some eigenvalue within it, not that it is the largest; the random start's
    certificate (:func:`condlab.estimators.bounds.top_errors`) would, but after the products the
    fast path takes it is still wide (about 15 for 1e-3 on the digits MLP from a random start;
    a warm start's random part, weight 1e-4, never narrows it in a few), and evaluating it costs
    about 30 ms, tens of training steps of a small model. So it is not run."""
    if stop == "exact":
        return True, "exact: the run reached the full dimension"
    if rho1 > threshold:
        return False, ("not converged: the residual exceeds tol * ||A|| (the run stopped on "
                       f"'{stop}', an estimate)")
    return False, ("not certified: the residual meets tol * ||A||, so some eigenvalue lies "
                   "within it, but nothing here proves it is lambda_max (the fast path runs no "
                   "certificate)")
