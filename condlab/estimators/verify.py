r"""Single-vector Lanczos with the block's guarantee: verify the list on the deflated operator.

Quantity: the same as :func:`condlab.estimators.eigs.extreme_eigenpairs` -- the ``top`` largest
and ``bottom`` smallest eigenvalues of a symmetric ``A [P, P]`` with every copy of a repeated
eigenvalue listed -- for about the products of single-vector Lanczos when the ends are simple.

Why a check is needed: one start vector ``q`` sees one direction per eigenspace (``q``'s
component in it), so an eigenvalue of multiplicity ``m`` is listed once and the list goes on
past it with values that do not belong there. A block of ``b`` random vectors sees ``min(m, b)``
copies, at about ``b`` times the products on a CPU.

Estimator. (1) Single-vector Lanczos lists ``Y [P, k]`` (orthonormal Ritz vectors) with their
products ``A Y`` (kept by the run for the true residuals: no new product). (2) In the basis
``[Y, Y_perp]``

    A = [[M, E^T], [E, A_perp]],   M = Y^T A Y,   ||E||_2 = ||(I - Y Y^T) A Y||_2 =: e,

``A_perp = Y_perp^T A Y_perp`` the operator deflated by the list. A short single-vector Lanczos
run on ``Pi A Pi`` (``Pi = I - Y Y^T``, applied to every vector before and after each product)
from a *fresh* random start in ``range(Pi)`` bounds ``A_perp``'s spectrum from outside with the
end certificate of :mod:`condlab.estimators.bounds` (the start's Christoffel function; its Beta
quantile over the ``P - k`` dimensional complement): ``lambda_max(A_perp) <= U`` and
``lambda_min(A_perp) >= L`` with probability ``>= 1 - delta / 4`` each. Its Ritz values bound
them from inside (``lambda_max(A_perp) >= rho_max``), deterministically. (3) If ``U`` lies below
every top value of ``M`` (and ``L`` above every bottom value), the sorted eigenvalues of
``diag(M, A_perp)`` have ``M``'s at the listed places, and by C.-K. Li & R.-C. Li ("A note on
eigenvalues of perturbed Hermitian matrices", Linear Algebra Appl. 395 (2005) 183-190) the
``j``-th eigenvalue of ``A`` is within

    2 e^2 / (eta_j + sqrt(eta_j^2 + 4 e^2))  <=  min(e, e^2 / eta_j)

of ``M``'s ``mu_j``, ``eta_j = mu_j - U`` (top; ``L - mu_j`` bottom) the certified gap. So the
list is the true one, count and order included (a copy that the first run missed is an
eigenvalue of ``A_perp`` near ``mu_j``, which ``U < mu_k`` excludes), with errors from computed
and certified quantities only. The verification stops as soon as the errors are within
``tol ||A||``, and fails at once when ``rho_max`` reaches the list (no later bound can pass:
``U >= lambda_max(A_perp) >= rho_max``: a copy was missed, or an eigenvalue crowds the list's
end), or when it has taken as many products as the first run (the block would then cost no
more). (4) A failed verification falls back to the block run of
:func:`~condlab.estimators.eigs.extreme_eigenpairs` (its default block, the same seed): list and
flags are then exactly the block's, and the products of all runs are counted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import condlab.estimators.bounds as bounds
from condlab.estimators._matmat import make_generator, matmat, operator_size, random_probes
from condlab.estimators.lanczos import BREAKDOWN_RTOL, cgs2
from condlab.memory import guard

REFERENCE = "C.-K. Li & R.-C. Li, Linear Algebra Appl. 395 (2005)"


def li_li(e: float, eta: Tensor) -> Tensor:
    """``2 e^2 / (eta + sqrt(eta^2 + 4 e^2))`` (``inf`` where ``eta <= 0``): how far an eigenvalue
    of ``[[M, E^T], [E, N]]`` (``||E||_2 = e``) lies from ``diag(M, N)``'s at the same place, when
    the eigenvalue of ``M`` there is ``eta`` away from ``N``'s spectrum."""
    x = eta.to(torch.float64).cpu().numpy()  # numpy: the same IEEE operations, 5x cheaper each
    with np.errstate(all="ignore"):  # (a number over a tensor is torch's reciprocal times it)
        out = (1.0 / (x + np.sqrt(x * x + 4 * e * e))) * (2 * e * e)
    out = np.where(x > 0, np.minimum(out, e), math.inf)
    return torch.from_numpy(np.where((x > 0) & (e == 0), 0.0, out))


@dataclass(frozen=True)
class Verification:
    """What the deflated run proved about the list ``M`` (``mu``: its eigenvalues)."""

    passed: bool
    products: int
    errors_top: Tensor  # [top] |lambda_j(A) - theta_j| (the listed value), inf where unproven
    errors_bottom: Tensor  # [bottom]
    upper: float  # lambda_max(A_perp) <= upper (+inf: not bounded)
    lower: float  # lambda_min(A_perp) >= lower
    rho_max: float  # lambda_max(A_perp) >= rho_max (the run's largest Ritz value)
    rho_min: float
    norm_e: float  # ||E||_2 = ||(I - Y Y^T) A Y||_2
    reason: str


def _needed_gap(e: float, t: float) -> float:
    """The smallest ``eta`` with ``li_li(e, eta) <= t`` (0 when ``e <= t``: Weyl suffices)."""
    return 0.0 if e <= t else (e * e - t * t) / t


def deflated_verification(
    A,
    Y: Tensor,
    AY: Tensor,
    theta_top: Tensor,
    theta_bottom: Tensor,
    threshold: float,
    *,
    generator: torch.Generator,
    max_products: int,
    rounding: float = 0.0,
    delta: float = bounds.FAILURE_PROBABILITY,
    max_basis: int | None = None,
) -> Verification:
    """Prove that the listed values ``theta_top`` (descending) and ``theta_bottom`` (ascending),
    with orthonormal vectors ``Y = [Y_top, Y_bottom] [P, k]`` and products ``AY``, are ``A``'s
    extreme eigenvalues with their multiplicities, each within ``threshold`` (see the module
    docstring). At most ``max_products`` products of ``A``, and a basis of at most ``max_basis``
    columns (the memory plan's basis, which the first run has given back): a run that would
    need more fails, and the block run decides."""
    P, k = Y.shape
    top, bottom = len(theta_top), len(theta_bottom)
    Yq, Rf = torch.linalg.qr(Y.to(torch.float64 if A.dtype == torch.float64 else Y.dtype))
    Yq = Yq.to(dtype=A.dtype)
    AYq = torch.linalg.solve_triangular(Rf, AY.to(Rf.dtype), upper=True, left=False).to(A.dtype)
    M = (Yq.T @ AYq).to("cpu", torch.float64)
    M = (M + M.T) / 2
    mu = torch.linalg.eigvalsh(M)  # ascending
    Rm = AYq - Yq @ M.to(dtype=A.dtype, device=A.device)
    G = (Rm.T @ Rm).to("cpu", torch.float64)
    e = float(torch.linalg.eigvalsh((G + G.T) / 2)[-1].clamp_min(0.0).sqrt()) + rounding
    mu_top, mu_bottom = mu[k - top :].flip(0), mu[:bottom]
    # the listed values are M's eigenvalues up to the recurrence's rounding
    shift_top = (theta_top.to(torch.float64) - mu_top).abs()
    shift_bottom = (theta_bottom.to(torch.float64) - mu_bottom).abs()
    t = threshold - float(torch.cat([shift_top, shift_bottom, torch.zeros(1)]).max())
    need = _needed_gap(e, t) if t > 0 else math.inf
    top_edge = float(mu_top.min()) if top else math.inf  # A_perp must stay below (above) these
    bottom_edge = float(mu_bottom.max()) if bottom else -math.inf

    def errors(upper: float, lower: float) -> tuple[Tensor, Tensor]:
        et = li_li(e, mu_top - upper) + shift_top
        eb = li_li(e, lower - mu_bottom) + shift_bottom
        return et.clamp_min(rounding), eb.clamp_min(rounding)

    def result(passed, n, upper, lower, rho, reason):
        et, eb = errors(upper, lower) if passed else (
            torch.full((top,), math.inf, dtype=torch.float64),
            torch.full((bottom,), math.inf, dtype=torch.float64))
        return Verification(passed, n, et, eb, upper, lower, rho[1], rho[0], e, reason)

    dim = P - k
    cap = min(max_products, dim, max_basis if max_basis is not None else dim)
    if cap < 1:
        return result(False, 0, math.inf, -math.inf, (math.inf, -math.inf),
                      "no products left for the verification")
    anorm = max(abs(float(mu[0])), abs(float(mu[-1])))
    eps = torch.finfo(A.dtype).eps

    def project(v: Tensor) -> Tensor:
        return cgs2(Yq, v, inplace=True)[0]

    q = project(random_probes(P, 1, generator, like=Yq)[:, 0])
    q = q / torch.linalg.vector_norm(q)
    with guard(f"the verification's basis of {cap} columns "
               f"({cap * P * Yq.element_size() / 1e9:.3g} GB)",
               f"run with --block-size {max(top, bottom)} (one block run, no verification)"):
        Q = torch.empty(cap, P, dtype=A.dtype, device=A.device).T  # columns contiguous
    alphas, betas, pinvs = [], [], {}
    rho = (math.inf, -math.inf)
    upper, lower = math.inf, -math.inf
    for j in range(cap):
        Q[:, j] = q
        w = matmat(A, q[:, None])[:, 0]
        anorm = max(anorm, float(torch.linalg.vector_norm(w)))
        w = project(w)
        w, h = cgs2(Q[:, : j + 1], w, inplace=True)
        w = project(w)  # A_perp's range: orthogonal to Y again after the Gram-Schmidt
        alphas.append(float(h[j]))
        beta = float(torch.linalg.vector_norm(w))
        broke = beta <= BREAKDOWN_RTOL * eps * anorm
        betas.append(0.0 if broke else beta)
        n = j + 1
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if n > 1:
            off = torch.tensor(betas[:-1], dtype=torch.float64)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        theta = torch.linalg.eigvalsh(T)
        rho = (float(theta[0]), float(theta[-1]))
        # no bound can pass once a Ritz value (inside A_perp's spectrum) is within the needed
        # gap, or within tol, of the list's end: a missed copy, or a cluster at the list's end
        near = max(need, threshold)
        if rho[1] > top_edge - near or rho[0] < bottom_edge + near:
            end = "largest" if rho[1] > top_edge - near else "smallest"
            return result(False, n, upper, lower, rho, (
                f"failed after {n} products: the deflated operator has an eigenvalue at or "
                f"past its Ritz value {rho[1] if end == 'largest' else rho[0]:.6g} (its {end}), "
                f"which reaches the list (a copy the single-vector run missed, or a cluster at "
                f"the list's end)"))
        C = torch.zeros(n, 1, dtype=torch.float64)
        C[-1, 0] = betas[-1]
        rec = bounds.start_recurrence(T, C, [(1, 1)] * (n - 1) + [(1, 0 if broke else 1)], pinvs,
                                      nodes=theta)  # T's eigvalsh: just computed
        lower, upper = bounds.end_bounds(rec, theta, P=dim, delta=delta, lower=bool(bottom),
                                         upper=bool(top))
        et, eb = errors(upper, lower)
        if bool((et <= threshold).all() and (eb <= threshold).all()):
            return result(True, n, upper, lower, rho, (
                f"verified with {n} products on the deflated operator from a fresh random start: "
                f"its spectrum lies in [{lower:.6g}, {upper:.6g}] (probability >= "
                f"{1 - delta / 2 if top and bottom else 1 - delta / 4:g}), so no eigenvalue "
                f"the list misses reaches it; errors by {REFERENCE} with ||E|| <= {e:.3g}"))
        if broke:
            break
        q = w / beta
    return result(False, n, upper, lower, rho, (
        f"failed after {n} products: the deflated operator's spectrum was bounded only to "
        f"[{lower:.6g}, {upper:.6g}], not clear of the list's ends ({bottom_edge:.6g}, "
        f"{top_edge:.6g}) by the {need:.3g} its residuals need"))


def single_then_verify(extreme_eigenpairs, A, *, top: int, bottom: int, tol: float,
                       max_matvecs: int, max_basis, generator, seed: int, return_vectors: bool,
                       basis_dtype, basis_device, stop_on: str, rounding: float):
    """:func:`~condlab.estimators.eigs.extreme_eigenpairs` by the ``'verify'`` strategy:
    single-vector Lanczos, :func:`deflated_verification`, and the block run where it fails.
    The caller passes its ``extreme_eigenpairs`` (for the runs) and ``rounding`` (its
    Rayleigh-Ritz rounding floor in units of ``eps ||A||``), so that this module does not
    import the one that calls it."""
    gen = make_generator(generator, seed)
    run_seed = None if generator is not None else int(seed)
    kw = dict(top=top, bottom=bottom, tol=tol, max_basis=max_basis, basis_dtype=basis_dtype,
              basis_device=basis_device, stop_on=stop_on)
    # the first run needs no certificate of its own: the verification's bounds every value
    one = extreme_eigenpairs(A, max_matvecs=max_matvecs, block_size=1, generator=gen,
                             return_vectors=True, certify=False, neighbours=max(top, bottom),
                             **kw)
    stages = (("single-vector", one.matvecs),)
    values = torch.cat([one.eigenvalues_top, one.eigenvalues_bottom])
    if not one.converged:  # the budget ended it: nothing left to verify or to fall back on
        return _finish(one, return_vectors, run_seed, strategy="single", stages=stages,
                       verification="not verified: the single-vector run stopped before every "
                                    "listed pair converged")
    spent = one.matvecs
    if bool(torch.isfinite(values).all()):
        Y = torch.cat([one.vectors_top, one.vectors_bottom], dim=1)
        AY = one.checked_products
        if AY is None or AY.shape[1] != Y.shape[1]:  # not checked (a run to full depth)
            AY = matmat(A, Y)
            spent += Y.shape[1]
        Z, AZ = _converged_neighbours(one)
        Y, AY = torch.cat([Y, Z], dim=1), torch.cat([AY, AZ], dim=1)
        anorm = float(values.abs().max())
        ver = deflated_verification(
            A, Y, AY, one.eigenvalues_top, one.eigenvalues_bottom, one.threshold, generator=gen,
            max_products=min(one.matvecs, max_matvecs - spent),
            max_basis=max_basis if max_basis is not None else one.max_basis,
            rounding=rounding * torch.finfo(A.dtype).eps * anorm)
        spent += ver.products
        stages += (("verification", ver.products),)
        reason = ver.reason
        if ver.passed:
            return _verified(one, ver, spent, return_vectors, run_seed, stages,
                             by_value=stop_on == "values")
    else:
        reason = "not verified: the single-vector run listed a ghost copy"
    left = max_matvecs - spent
    if left < min(operator_size(A), top + bottom):
        return _finish(one, return_vectors, run_seed, strategy="single", stages=stages,
                       verification=f"{reason}; no products left for the block run",
                       matvecs=spent)
    block = extreme_eigenpairs(A, max_matvecs=left, generator=generator, seed=seed,
                               return_vectors=return_vectors, strategy="block", **kw)
    return dataclasses.replace(
        block, matvecs=spent + block.matvecs, strategy="fallback",
        stages=stages + (("block", block.matvecs),),
        verification=f"{reason}; the block run of {block.block_size} vectors made the list")


def _converged_neighbours(one) -> tuple[Tensor, Tensor]:
    """The Ritz pairs past each end of ``one``'s list (``one.neighbours``) that the verification
    deflates too, with their products: its deflated operator then ends further from the list
    and its bound gets there in fewer products. Their residuals enter ``e`` (the Li & Li errors
    grow as ``e^2``), so a neighbour is taken, nearest first, while ``e <= sqrt(t gap) / 2``:
    ``t = tol ||A||`` and ``gap`` between the list's end and the first neighbour."""
    Y = torch.cat([one.vectors_top, one.vectors_bottom], dim=1)
    none = Y[:, :0], Y[:, :0]
    if one.neighbours is None:
        return none
    values, residuals, Z, AZ = one.neighbours
    listed = torch.cat([one.residuals_top, one.residuals_bottom]).to(torch.float64)
    n_top = min(len(one.eigenvalues_top), len(values)) if len(one.eigenvalues_top) else 0
    take = torch.zeros(len(values), dtype=torch.bool)
    ends = ((one.eigenvalues_top, slice(0, n_top)), (one.eigenvalues_bottom, slice(n_top, None)))
    for theta, part in ends:
        if not len(theta) or not len(values[part]):
            continue
        gap = abs(float(theta[-1]) - float(values[part][0]))
        budget = one.threshold * gap / 4 - float((listed**2).sum())
        for i, s in zip(range(len(values))[part], residuals[part].tolist()):
            if s * s > budget:
                break
            take[i], budget = True, budget - s * s
    idx = take.nonzero()[:, 0].to(Z.device)
    return Z[:, idx], AZ[:, idx]


def _finish(r, return_vectors: bool, run_seed, **fields):
    """``r`` with the caller's seed and ``fields``, without the vectors it did not ask for."""
    if not return_vectors:
        fields.update(vectors_top=None, vectors_bottom=None, checked_products=None)
    return dataclasses.replace(r, seed=run_seed, **fields)


def _verified(one, ver: Verification, spent: int, return_vectors: bool, run_seed, stages,
              by_value: bool):
    """The single-vector run's list with the verification's errors and flags."""
    threshold = one.threshold
    ends = {}
    for end, errs in (("top", ver.errors_top), ("bottom", ver.errors_bottom)):
        # the single run's own bound where it is smaller and binds the value at its place (the
        # end bracket, a run to full depth); a residual says only that SOME eigenvalue is near
        own_kinds = getattr(one, f"error_kinds_{end}")
        own = getattr(one, f"errors_{end}").to(torch.float64).clone()
        own[[kind not in ("bracket", "exact") for kind in own_kinds]] = math.inf
        kinds = tuple("li-li" if v <= o else kind
                      for v, o, kind in zip(errs.tolist(), own.tolist(), own_kinds))
        err = torch.minimum(errs, own)
        res = getattr(one, f"residuals_{end}")
        conv = (res <= threshold) | ((err <= threshold) if by_value else torch.zeros_like(err, dtype=torch.bool))
        no = torch.zeros(len(err), dtype=torch.bool)
        ends[end] = dict(err=err, kinds=kinds, conv=conv, no=no)
    t, b = ends["top"], ends["bottom"]
    vt, vb = one.eigenvalues_top, one.eigenvalues_bottom
    upper = float(vt[0] + t["err"][0]) if len(vt) else one.lambda_max_upper
    lower = float(vb[0] - b["err"][0]) if len(vb) else one.lambda_min_lower
    converged = bool(t["conv"].all() and b["conv"].all())
    return _finish(
        one, return_vectors, run_seed, matvecs=spent, strategy="verify", stages=stages,
        verification=ver.reason,
        errors_top=t["err"], errors_bottom=b["err"],
        error_kinds_top=t["kinds"], error_kinds_bottom=b["kinds"],
        certified_top=bool((t["err"] <= threshold).all()),
        certified_bottom=bool((b["err"] <= threshold).all()),
        certificate_top=f"certified: {ver.reason}" if len(vt) else one.certificate_top,
        certificate_bottom=f"certified: {ver.reason}" if len(vb) else one.certificate_bottom,
        converged_top=t["conv"], converged_bottom=b["conv"], converged=converged,
        may_repeat_top=t["no"], may_repeat_bottom=b["no"],
        may_miss_top=t["no"], may_miss_bottom=b["no"],
        lambda_max_upper=min(upper, one.lambda_max_upper),
        lambda_min_lower=max(lower, one.lambda_min_lower),
        stop_reason=f"{one.stop_reason}; then {ver.reason}",
    )
