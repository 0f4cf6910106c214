r"""Two-pass Lanczos: ``lambda_max`` / ``lambda_min`` in the memory of a power iteration.

Quantity: the largest and/or smallest eigenpair of a symmetric ``A`` (``top <= 1``,
``bottom <= 1``), as :func:`condlab.estimators.eigs.extreme_eigenpairs` returns it.

Why: a Krylov basis costs one ``[P]`` vector per column; at GPT-2 small's 124M parameters each
is 0.5 GB, and even the smallest thick-restarted basis (5 columns) holds 2.5 GB where a plain
power iteration holds two vectors. This estimator keeps no basis:

- pass 1: the three-term recurrence ``beta_j q_{j+1} = A q_j - alpha_j q_j - beta_{j-1} q_{j-1}``
  (with one local re-orthogonalization against ``q_j``) keeps only ``q_{j-1}``, ``q_j``, the
  product and the scalars ``alpha``, ``beta``; the Ritz values of the tridiagonal ``T_j`` and
  their Krylov residuals ``beta_j |s_{j,i}|`` decide when to stop, as in the basis path;
- pass 2: the same recurrence from the same start (the generator's state is saved; a warm
  ``start`` is the caller's tensor) regenerates ``q_1 .. q_m`` and accumulates the Ritz vector
  ``y = sum_j s_j q_j``; then one product measures its true residual ``||A y - theta y|| /
  ||y||``, which proves that an eigenvalue lies within it (whatever the vectors' orthogonality).

Products: ``2 m`` for ``m`` steps (pass 2 needs ``m - 1``, the check one per listed pair), about
twice a basis run's; memory: the power iteration's plus two vectors (pass 2: ``q_{j-1}``,
``q_j``, the product and ``y``).

What backs "it is lambda_max": a bracket of what was computed. Below, the Rayleigh quotient
``rho = y^T A y / y^T y`` of the summed vector (its product is the true-residual check's): a
lower bound on ``lambda_max`` for any vector, orthogonal Lanczos vectors or not, up to the
products' and dot products' rounding. Above, the end certificate
(:mod:`condlab.estimators.bounds`): for an eigenpair ``(lambda, u)`` the recurrence gives
``u^T q_{j+1} = phi_j(lambda) u^T q_1`` up to the local rounding ``u^T f_j`` (Paige: ``||f_j||
~ eps ||A||``), whatever the vectors' orthogonality, so ``g^2 K(lambda) <= ||Q^T u||^2``.
Without re-orthogonalization the vectors lose orthogonality along converged Ritz vectors
(Paige 1971): ``|y_i^T q_{j+1}| ~ eps ||A|| / (beta_j |s_{j,i}|)``. While Paige's estimate of
the loss that can reach an eigenvector beyond the wanted end (:func:`_pollution`: ``omega =
max_j max_i eps ||A|| / max(beta_j |s_{j,i}|, theta_max - theta_i)`` from ``T`` alone, the
mirror for ``lambda_min``) stays ``<= sqrt(eps)``, ``||Q^T u||^2 <= 1 + m omega``; past it the
certificate takes ``||Q^T u||^2 <= ||Q||_F^2 = m`` (unit vectors), which divides the quantile by
``m`` where ``K`` grows exponentially, and the record says so. So ``lambda_max`` lies in ``[rho,
U]`` and the listed Ritz value's error is ``max(U - theta, theta - rho)`` (error kind
``bracket``): stopping on values it needs no residual below tol. Both sides ignore the
eigenvector's share of the local rounding ``u^T f_j``, as every Krylov certificate here does:
tested at the quantile's edge on float32 spectra (``tests/estimators/test_lean.py``), not
proven. Pass 2 recomputes the coefficients; their largest deviation from pass 1's (0 where
products are bitwise reproducible) is recorded, and the Rayleigh quotient and true residual
back the vector either way.

Reference: Paige, "The computation of eigenvalues and eigenvectors of very large sparse
matrices" (1971); Simon, "The Lanczos algorithm with partial reorthogonalization", Math. Comp.
42 (1984); Frommer & Simoncini, "Matrix functions" (two-pass Lanczos), 2008.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import Tensor

import condlab.estimators.bounds as bounds
from condlab.errors import UsageError
from condlab.estimators._matmat import make_generator, matmat, operator_size, random_probes
from condlab.estimators.lanczos import BREAKDOWN_RTOL

log = logging.getLogger("condlab.lean")
CERTIFY_EVERY = 0.1  # the certificate is checked every 10% more products, as the basis path
FLOOR = 0.5  # eigenvalues within FLOOR * tol * ||A|| of an end are not excluded (_pollution)


class _Recurrence:
    """The three-term recurrence from one start vector, holding ``q_{j-1}``, ``q_j`` only."""

    def __init__(self, A, q: Tensor):
        self.A, self.q_prev, self.q, self.dtype = A, None, q, q.dtype
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.products = 0

    def step(self) -> float:
        """One product: ``alpha_j``, ``beta_j`` appended, ``q`` advanced; returns ``beta_j``."""
        q = self.q
        w = matmat(self.A, q[:, None])[:, 0]
        if w.untyped_storage().data_ptr() == q.untyped_storage().data_ptr():
            w = w.clone()  # an operator that returns its input: w is overwritten below
        self.products += 1
        alpha = float(torch.dot(q, w))
        w.sub_(q, alpha=alpha)
        if self.q_prev is not None:
            w.sub_(self.q_prev, alpha=self.betas[-1])
        c = float(torch.dot(q, w))  # local re-orthogonalization against q_j
        w.sub_(q, alpha=c)
        beta = float(torch.linalg.vector_norm(w))
        self.alphas.append(alpha + c)
        self.betas.append(beta)
        self.q_prev = q
        self.q = w.div_(beta) if beta > 0 else w
        return beta

    def tridiagonal(self) -> Tensor:
        a = torch.tensor(self.alphas, dtype=torch.float64)
        b = torch.tensor(self.betas[:-1], dtype=torch.float64)
        return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)

    def release(self) -> None:
        self.q_prev = self.q = None


def _start(A, P: int, gen: torch.Generator, start: Tensor | None) -> Tensor:
    """The unit start vector: the first column of the basis path's start block."""
    from condlab.estimators.eigs import _warm_block

    q = random_probes(P, 1, gen, like=A)
    if start is not None:
        q = _warm_block(start, q)
    q = q[:, 0]
    return q.div_(torch.linalg.vector_norm(q))


def lean_extreme_eigenpairs(
    A,
    *,
    top: int,
    bottom: int,
    tol: float = 1e-6,
    max_matvecs: int = 1000,
    generator: torch.Generator | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    start: Tensor | None = None,
    certify: bool = True,
    stop_on: str = "residuals",
):
    """``lambda_max`` (``top = 1``) and/or ``lambda_min`` (``bottom = 1``) by two-pass Lanczos
    (module docstring): an :class:`condlab.estimators.eigs.ExtremeEigs` with true residuals,
    backed errors and ``stop_reason``; ``max_basis`` reads the Krylov depth reached (no basis is
    held). Stops when the wanted Krylov residuals meet ``tol * ||A||`` and the end is certified
    (or cannot be: a warm start's weaker certificate is not waited for), or
    when pass 2 and the check would pass ``max_matvecs``.

    ``stop_on = 'values'`` (what :func:`condlab.measure` asks for): pass 1 also stops once the
    end certificate bounds the value within ``tol ||A||`` while the Krylov residual is near
    (``r^2 <= tol ||A|| gap``), and a value is converged when its bracket (:func:`_bracket`:
    the Rayleigh quotient of the summed vector below, the certificate above) is within ``tol
    ||A||``, whatever the vector's residual."""
    from condlab.estimators.eigs import MAX_TIGHTEN, TIGHTEN, _near, _Ritz

    if top not in (0, 1) or bottom not in (0, 1) or top + bottom == 0:
        raise UsageError(f"the two-pass Lanczos finds top <= 1 and bottom <= 1 (not both 0), got "
                         f"{top} and {bottom}; use extreme_eigenpairs")
    if not tol > 0:
        raise UsageError(f"tol must be > 0, got {tol}")
    if stop_on not in ("values", "residuals"):
        raise UsageError(f"stop_on must be 'values' or 'residuals', got {stop_on!r}")
    by_value = stop_on == "values"
    P = operator_size(A)
    nwant = top + bottom
    if max_matvecs < 2 + nwant:
        raise UsageError(f"max_matvecs must be >= {2 + nwant} for the two-pass Lanczos")
    gen = make_generator(generator, seed)
    state = gen.get_state()
    eps = torch.finfo(A.dtype).eps
    semi = math.sqrt(eps)
    run = _Recurrence(A, _start(A, P, gen, start))
    omega, lost_at, next_check, factor, tightened, spent = 0.0, None, 0, 1.0, 0, 0
    anorm, stop, met_at, history, waited = 0.0, "", 0, [], None
    while True:
        while True:
            beta = run.step()
            m = len(run.alphas)
            theta, S = torch.linalg.eigh(run.tridiagonal())
            krylov = (beta * S[-1]).abs()
            anorm = max(anorm, float(theta.abs().max()))
            omega = max(omega, _pollution(theta, krylov, eps * anorm, top, bottom,
                                          FLOOR * tol * anorm))
            if lost_at is None and omega > semi:
                lost_at = m
            threshold = factor * tol * anorm
            wanted = torch.cat([krylov[:bottom], krylov[m - top:]])
            met = resid_met = bool((wanted <= threshold).all())
            ritz = _Ritz(theta, S, krylov)
            near = met or (by_value and _near(ritz, top, bottom, threshold))
            done = spent + run.products
            # the wanted pairs' own lost orthogonality: below sqrt(eps) ||A|| of Krylov residual
            # their Ritz values may get ghost copies and the Ritz vector pass 2 sums degrade
            # (GPT-2 small float32: true residual past tol after waiting to residual 0.09 < 0.18);
            # the true residual then says so, and continuing would not help
            own = eps * anorm / max(float(wanted.min()), 1e-300)
            if near and certify and start is None:
                met_at = met_at or (done if resid_met else 0)  # the wait is measured from here
                if done >= next_check:
                    err = _end_error(ritz, _certificate(run, beta, omega, exact=False,
                                                        lost=lost_at is not None), top,
                                     bottom, threshold, P)
                    met = err <= threshold
                    next_check = done + max(1, int(CERTIFY_EVERY * done))
                    if not met:
                        wait = _projected_wait(history, done, err, threshold, met_at)
                        history.append((done, err))
                        if resid_met and wait is not None and \
                                done + 2 * wait + m + nwant > max_matvecs:
                            stop, waited = "met", wait  # the certificate is out of reach
                            log.info("lean: step %d, residual met; certificate error %.3g > "
                                     "%.3g, about %s more products projected: not waited for",
                                     m, err, threshold, wait)
                            break
                else:
                    met = False
            breakdown = beta <= BREAKDOWN_RTOL * eps * max(anorm, 1e-300) or m >= P
            # pass 2 takes m - 1 more products, then one per listed pair; one step more: + 2
            budget = done + 1 + m + nwant > max_matvecs
            if m % 10 == 0:
                log.info("lean: step %d, %d products, theta %.6g .. %.6g, wanted residuals %s, "
                         "omega %.2g, peak RSS %s", m, done, float(theta[0]), float(theta[-1]),
                         [f"{float(x):.3g}" for x in wanted], omega, _peak())
            if met or breakdown or budget:
                stop = "met" if met else ("breakdown" if breakdown else "budget")
                break
        log.info("lean: pass 1 stopped (%s) at step %d; pass 2; peak RSS %s", stop, m, _peak())
        result = _second_pass(A, P, gen, state, start, run, ritz, top, bottom, tol, omega,
                              lost_at, stop, return_vectors, max_matvecs, spent, by_value)
        if own > semi and result.stop_reason.startswith("rounding"):
            result = dataclasses.replace(result, stop_reason=result.stop_reason + (
                "; the Lanczos vectors lost orthogonality along the wanted Ritz vector (its "
                "Krylov residual fell below sqrt(eps) ||A|| while the run waited for the end "
                "certificate), which degrades the Ritz vector pass 2 sums: more steps would "
                "not help"))
        elif waited is not None:
            result = dataclasses.replace(result, stop_reason=result.stop_reason + (
                f"; the end certificate was not waited for: at its rate so far it would need "
                f"about {waited} more products in each pass, past max_matvecs = {max_matvecs}"))
        log.info("lean: %s; peak RSS %s", result.stop_reason, _peak())
        if (stop == "met" and result.stop_reason.startswith("rounding") and own <= semi
                and tightened < MAX_TIGHTEN
                and result.matvecs + 3 * (m + 1) + nwant <= max_matvecs):
            # the Krylov estimate met tol but the true residual did not: replay the recurrence
            # to step m (no vector was kept through the check) and go on against a tighter target
            factor, tightened, spent = factor * TIGHTEN, tightened + 1, result.matvecs
            result = None  # its vectors and their products go before the replay
            gen.set_state(state)
            run = _Recurrence(A, _start(A, P, gen, start))
            for _ in range(m):
                run.step()
            spent -= run.products  # run.products counts the replay; spent the rest
            continue
        return dataclasses.replace(result, seed=None if generator is not None else int(seed))


def _end_error(ritz, cert, top: int, bottom: int, threshold: float, P: int) -> float:
    """The largest certified error of the end values (``lambda_max``, ``lambda_min``) from
    the Krylov residuals: what :func:`condlab.estimators.eigs._certified` compares."""
    kw = dict(recurrence=cert.recurrence, P=P, block_size=1, threshold=threshold, columns=1,
              start_scale=cert.scale, exact=cert.exact)
    errs = [float(bounds.top_errors(ritz.theta, ritz.residuals, top, **kw).errors[0])] if top \
        else []
    if bottom:
        errs.append(float(bounds.bottom_errors(ritz.theta, ritz.residuals, bottom, **kw).errors[0]))
    return max(errs)


def _projected_wait(history: list, done: int, err: float, threshold: float,
                    met_at: int) -> int | None:
    """Products until the end error reaches ``threshold`` at its geometric rate since the last
    check; None while that cannot be told yet. No finite error, or none falling, by twice the
    products at which the residuals met tol: out of reach (``2**62``)."""
    out_of_reach = 2**62 if done >= 2 * met_at else None
    if not math.isfinite(err) or not history or not math.isfinite(history[-1][1]):
        return out_of_reach
    p0, e0 = history[-1]
    rate = (math.log(e0) - math.log(err)) / max(1, done - p0)
    if rate <= 0:
        return out_of_reach
    return int(math.ceil(math.log(err / threshold) / rate))


def _peak() -> str:
    """The process's peak resident set so far (the log's memory trace)."""
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def _bracket(errs, values: Tensor, rho: Tensor, floor: float, rounding: float, threshold: float,
             top: bool):
    """The end value's error from both sides of what the run computed: ``lambda_max`` lies in
    ``[rho - rounding, U]``, ``rho = y^T A y / y^T y`` the Rayleigh quotient of the summed
    Ritz vector (a lower bound on ``lambda_max`` for any vector ``y``, orthogonal Lanczos vectors
    or not: ``rounding`` is the dot products' and the product's) and ``U = max(L, theta +
    floor)`` the end certificate's upper bound (no eigenvalue above it; within ``floor`` of
    ``theta`` it does not exclude, :func:`_pollution`). So ``|lambda_max - theta| <= max(U -
    theta, theta - rho + rounding)`` for the listed ``theta``, whatever the vector's residual:
    with a residual ``r`` and the rest of the spectrum at distance ``d``, ``theta - rho`` is
    about ``r^2 / d``. The mirror for ``lambda_min``. A full-depth (``exact``) error is kept."""
    if not len(values) or errs.kinds[0] == "exact":
        return errs
    sign = 1.0 if top else -1.0
    edge = float(values[0]) + sign * floor
    bound = max(errs.bound, edge) if top else min(errs.bound, edge)
    below = sign * (float(values[0]) - float(rho[0])) + rounding  # theta - (rho - rounding)
    first = max(float(errs.errors[0]), floor, below)
    errors = errs.errors.clone()
    errors[0] = first
    kinds = list(errs.kinds)
    if math.isfinite(first):
        kinds[0] = "bracket"
    certified = bool((errors <= threshold).all())
    reason = errs.reason
    if errs.certified and not certified:
        reason = (f"not certified: the summed Ritz vector's Rayleigh quotient {float(rho[0]):.7g} "
                  f"lies {abs(float(values[0]) - float(rho[0])):.3g} from the Ritz value "
                  f"{float(values[0]):.7g} (> tol * ||A|| = {threshold:.3g} with the "
                  "certificate's side): the vector does not back the value")
    return dataclasses.replace(errs, errors=errors, kinds=kinds, bound=bound,
                               certified=certified, reason=reason)


def _rayleigh(AY: Tensor, Y: Tensor) -> Tensor:
    """``y^T A y / y^T y`` per column (float64 sums over row blocks of at most 16 MiB)."""
    from condlab.estimators.eigs import RESTART_CHUNK_BYTES

    P, n = Y.shape
    rows = max(1, RESTART_CHUNK_BYTES // max(1, n * Y.element_size()))
    yay = torch.zeros(n, dtype=torch.float64, device=Y.device)
    yy = torch.zeros(n, dtype=torch.float64, device=Y.device)
    for r in range(0, P, rows):
        y = Y[r : r + rows].double()
        yay += (y * AY[r : r + rows].double()).sum(dim=0)
        yy += (y * y).sum(dim=0)
    return (yay / yy.clamp_min(torch.finfo(torch.float64).tiny)).to("cpu")


def _pollution(theta: Tensor, krylov: Tensor, noise: float, top: int, bottom: int,
               floor: float) -> float:
    """Paige's estimate of the lost orthogonality that reaches an eigenvector ``u`` beyond the
    wanted end(s): ``q_{j+1}`` carries ``eps ||A|| / (beta_j |s_{j,i}|)`` of each Ritz vector
    ``y_i``, and ``|u^T y_i| <= beta_j |s_{j,i}| / |lambda - theta_i|`` (``A y_i - theta_i y_i``
    has that norm), so ``y_i`` adds at most ``eps ||A|| / max(beta_j |s_{j,i}|, |lambda -
    theta_i|)`` to ``u^T q_{j+1}``, with ``|lambda - theta_i| >= theta_max - theta_i`` for
    ``lambda >= theta_max`` (the mirror at the bottom). Eigenvalues within ``floor`` of the end
    are not excluded this way: the end's stated error is at least ``floor`` (``FLOOR * tol *
    ||A||``, so a certified end is still within ``tol * ||A||``)."""
    out = 0.0
    r = krylov.clamp_min(1e-300)
    for want, dist in ((top, theta[-1] - theta), (bottom, theta - theta[0])):
        if want:
            out = max(out, float((noise / torch.maximum(r, dist.clamp_min(floor))).max()))
    return out


def _certificate(run: _Recurrence, beta: float, omega: float, exact: bool, scale: float = 1.0,
                 lost: bool = False):
    from condlab.estimators.eigs import _Certificate

    m = len(run.alphas)
    T = run.tridiagonal()
    C = torch.zeros(m, 1, dtype=torch.float64)
    C[-1, 0] = beta
    rec = bounds.start_recurrence(T, C, [(1, 1)] * m)
    # semi-orthogonal vectors: ||Q^T Q|| <= 1 + m omega, so g^2 K <= 1 + m omega; any vectors:
    # ||Q^T u||^2 <= ||Q||_F^2 = sum ||q_j||^2 = m (unit to rounding): g^2 K <= m
    gram = m * (1.0 + math.sqrt(torch.finfo(run.dtype).eps)) if lost else 1.0 + m * omega
    return _Certificate(rec, 1, scale * math.sqrt(gram), exact=exact)


def _second_pass(A, P, gen, state, start, run, ritz, top, bottom, tol, omega, lost_at, stop,
                 return_vectors, max_matvecs, spent, by_value=False):
    """Regenerate ``q_1 .. q_m``, accumulate the wanted Ritz vectors, check their residuals and
    assemble the result (``spent``: products taken before ``run``'s)."""
    from condlab.estimators.eigs import (
        ROUNDING,
        ExtremeEigs,
        _copies,
        _may_miss,
        _residual_norms,
        _stop_reason,
        _stopped_by,
    )

    m, beta_m = len(run.alphas), run.betas[-1]
    alphas, betas = list(run.alphas), list(run.betas)
    theta, S = ritz.theta, ritz.S
    idx = [m - 1] if top else []
    idx += [0] if bottom else []
    n = len(idx)
    cert = None
    lost = lost_at is not None
    if start is None:
        cert = _certificate(run, beta_m, omega, exact=stop == "breakdown" and m >= P, lost=lost)
    scale = 1.0
    if start is not None:
        n_start = 1 if start.ndim == 1 else start.shape[1]
        scale = 1.0 + n_start
        cert = _certificate(run, beta_m, omega, exact=False, scale=scale, lost=lost)
    products_before = run.products
    run.release()  # pass 1's vectors go before pass 2 makes its own
    gen.set_state(state)
    again = _Recurrence(A, _start(A, P, gen, start))
    Y = torch.zeros(n, P, dtype=again.q.dtype, device=again.q.device).T  # columns contiguous
    coef = S[:, idx].to(dtype=Y.dtype, device=Y.device)  # [m, n]
    drift = 0.0
    for j in range(m):
        for c in range(n):
            Y[:, c].add_(again.q, alpha=float(coef[j, c]))
        if j + 1 < m:
            again.step()
            drift = max(drift, abs(again.alphas[-1] - alphas[j]), abs(again.betas[-1] - betas[j]))
    anorm = float(theta.abs().max())
    again.release()  # only Y and its product through the check
    values = theta[idx]
    norms = torch.linalg.vector_norm(Y, dim=0).clamp_min(torch.finfo(Y.dtype).tiny)
    Y.div_(norms)
    AY = matmat(A, Y)
    res = _residual_norms(AY, Y, values.to(dtype=Y.dtype, device=Y.device)).to(torch.float64)
    rho = _rayleigh(AY, Y)
    log.debug("lean: summed vector norm(s) %s before normalizing; Ritz value(s) %s, Rayleigh "
             "quotient(s) %s, true residual(s) %s", [f"{float(x):.4g}" for x in norms],
             [f"{float(x):.7g}" for x in values], [f"{float(x):.7g}" for x in rho],
             [f"{float(x):.3g}" for x in res])
    matvecs = spent + products_before + again.products + n
    threshold = tol * anorm
    krylov = ritz.residuals.clone()
    krylov[idx] = torch.maximum(res, krylov[idx])
    rounding = ROUNDING * torch.finfo(A.dtype).eps * anorm
    kw = dict(recurrence=None if cert is None else cert.recurrence, P=P, block_size=1,
              threshold=threshold, columns=1, start_scale=1.0 if cert is None else cert.scale,
              exact=cert is not None and cert.exact, rounding=rounding)
    et = bounds.top_errors(theta, krylov, top, **kw)
    eb = bounds.bottom_errors(theta, krylov, bottom, **kw)
    floor = FLOOR * tol * anorm  # the end's error: no less than what _pollution leaves open
    et = _bracket(et, values[:top], rho[:top], floor, rounding, threshold, top=True)
    eb = _bracket(eb, values[top:], rho[top:], floor, rounding, threshold, top=False)
    log.info("lean: summed vector norm(s) %s before normalizing; Ritz value(s) %s, Rayleigh "
             "quotient(s) %s, true residual(s) %s, backed error(s) %s (tol ||A|| = %.3g)",
             [f"{float(x):.4g}" for x in norms], [f"{float(x):.7g}" for x in values],
             [f"{float(x):.7g}" for x in rho], [f"{float(x):.3g}" for x in res],
             [f"{float(x):.3g}" for x in torch.cat([et.errors, eb.errors])], threshold)
    rt, rb = res[:top], res[top:]
    ct, cb = rt <= threshold, rb <= threshold
    if by_value:  # the value known within tol ||A||: its bracket, whatever the vector's residual
        ct, cb = ct | (et.errors <= threshold), cb | (eb.errors <= threshold)
    converged_all = ritz.residuals <= threshold
    vt, vb = values[:top], values[top:]
    nt = _copies(theta, converged_all, vt, 2 * threshold)
    nb = _copies(theta, converged_all, vb, 2 * threshold)
    partial = m < P
    repeat_top, repeat_bottom = (nt >= 1) & partial, (nb >= 1) & partial
    from condlab.estimators.eigs import _Certificate

    cert_for_reason = cert or _Certificate(None, 1, 1.0, exact=False)
    if stop == "budget":
        cert_for_reason = _Certificate(cert_for_reason.recurrence, 1, 1.0, exact=False,
                                       budget=max_matvecs)
    reason = _stop_reason(cert_for_reason, bool(ct.all() and cb.all()), matvecs, 0, True,
                          threshold, A.dtype, _stopped_by(rt, rb, et, eb, threshold, by_value))
    if by_value and stop == "met" and not bool(ct.all() and cb.all()) and cert is not None:
        reason = (f"rounding: the end certificate placed the value within tol * ||A|| = "
                  f"{threshold:.3g} of the Ritz value, but the summed vector's Rayleigh quotient "
                  f"and true residual do not back it ({matvecs} products, 0 thick restarts)")
    reason += (f"; two-pass Lanczos, depth {m}, no basis held; orthogonality estimate "
               f"{omega:.2g}; pass-2 coefficient drift {drift / max(anorm, 1e-300):.2g} ||A||")
    if lost:
        reason += (f"; the vectors lost semi-orthogonality at step {lost_at} (Paige's estimate > "
                   f"sqrt(eps)): the end certificate takes ||Q^T u||^2 <= ||Q||_F^2 = {m} "
                   "instead of 1 + m omega")
    result = ExtremeEigs(
        eigenvalues_top=vt, residuals_top=rt, converged_top=ct,
        eigenvalues_bottom=vb, residuals_bottom=rb, converged_bottom=cb,
        lambda_max=float(theta[-1]), lambda_min=float(theta[0]), matvecs=matvecs,
        converged=bool(ct.all() and cb.all()), tol=tol, threshold=threshold, restarts=0,
        max_basis=m, seed=None, block_size=1,
        vectors_top=Y[:, :top].to(A.dtype) if return_vectors else None,
        vectors_bottom=Y[:, top:].to(A.dtype) if return_vectors else None,
        copies_top=nt, copies_bottom=nb, may_repeat_top=repeat_top,
        may_repeat_bottom=repeat_bottom,
        may_miss_top=_may_miss(vt, repeat_top, 2 * threshold),
        may_miss_bottom=_may_miss(vb, repeat_bottom, 2 * threshold),
        breakdowns=0, errors_top=et.errors, errors_bottom=eb.errors,
        error_kinds_top=tuple(et.kinds), error_kinds_bottom=tuple(eb.kinds),
        certified_top=et.certified, certified_bottom=eb.certified,
        certificate_top=et.reason, certificate_bottom=eb.reason,
        lambda_max_upper=et.bound, lambda_min_lower=eb.bound, residual_kind="true",
        stop_reason=reason, checked_products=AY if return_vectors else None,
        stop_rule="values" if by_value else "residuals",
    )
    del Y, AY
    return result
