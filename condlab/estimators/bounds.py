r"""What a Krylov run proves about the extreme eigenvalues: backed error bounds per listed value.

A Ritz pair ``(theta, y)`` with residual ``r = ||A y - theta y||`` proves only that *some*
eigenvalue lies in ``[theta - r, theta + r]``. Whether it is the smallest (largest) eigenvalue,
or the ``i``-th, the residual cannot say: an eigenvector nearly orthogonal to the start block is
invisible to the run. Cauchy interlacing gives one side for free (the ``i``-th Ritz value from
the bottom is ``>= lambda_i``, from the top ``<= lambda_{P+1-i}``); the other side needs a
certificate. This module derives it from the random start.

Certificate (van Dorsselaer, Hochstenbach & van der Vorst, SIAM J. Matrix Anal. Appl. 22 (2001);
the a-priori version is Kuczynski & Wozniakowski, SIAM J. Matrix Anal. Appl. 13 (1992)). Let
``q`` be a column of the start block and ``phi_0 .. phi_d`` its Lanczos polynomials, orthonormal
for the spectral measure of ``q`` (``phi_i(A) q`` is the ``i``-th Lanczos vector). For every
eigenvalue ``lambda`` with eigenspace ``U`` and every polynomial ``p``, ``||U^T q||^2 p(lambda)^2
<= ||p(A) q||^2``; the best ``p`` gives

    ||U^T q||^2 <= 1 / K(lambda),      K(lambda) = sum_i phi_i(lambda)^2   (Christoffel function)

``K`` is computed from the run's own ``H = V^T A V`` and coupling ``C`` (no product), and grows
fast away from the converged Ritz values. With ``b`` Gaussian start columns orthonormalized to
``q_1 .. q_b``, ``||Q_0^T u||^2 ~ Beta(b/2, (P - b)/2)`` for any fixed unit ``u``, so
``sum_l 1/K_l(lambda) < t`` with ``P(Beta < t) = delta`` happens for the eigenvalue at an end
with probability ``<= delta``: every ``lambda`` where it holds is *excluded*. Two uses:

- the end: below the bottom Ritz value ``1/K`` decreases monotonically, so the crossing point
  ``L`` is a lower bound on ``lambda_min`` (``U`` an upper bound on ``lambda_max``) with
  probability ``>= 1 - delta_end``;
- gaps: between two listed Ritz values, an excluded stretch (threshold ``t`` for ``delta / P``
  per eigenvalue, so no eigenvalue at all lies there with probability ``>= 1 - delta_gap``)
  certifies the gap, and the Ritz values between certified gaps form components whose
  eigenvalue counts are the block's (a random block of ``b`` vectors sees ``min(m, b)`` copies of
  an eigenvalue of multiplicity ``m``: a component with fewer than ``b`` Ritz values holds that
  many eigenvalues; this premise is the one behind ``may_repeat``).

Errors. For a listed value with index ``i`` at its end: in a counted component of one Ritz
value the Kato-Temple bound ``r^2 / gap`` with the certified gap; in a counted component of
several, ``||R||_F`` over its Ritz pairs (Kahan: the sorted Ritz values match that many
eigenvalues within ``||R||_2``); otherwise the bracket ``theta_i - L`` (``lambda_i`` lies in
``[L, theta_i]``). A run to full depth sees every eigenvalue: ``min(r, r^2 / gap)`` with the gap
to the other Ritz values, deterministic. Warm starts: the first start column is the random one
plus at most ``m`` unit vectors, and by Anderson's inequality the bound holds with ``t / (1 +
m)^2`` on that column alone.

Thick restarts. The recurrence above is the start block's before the first restart; a
single-vector run's Christoffel function survives restarts (:class:`ResidualPolynomial`: every
vector of the run is still a polynomial of the start, and the restarted relation ``A V = V H + q
c^T`` gives ``K`` from the current Ritz pairs, the discarded Ritz values and the product of the
Lanczos normalizations), so more products keep sharpening it; the larger of the two is used
(:class:`Christoffel`). A block run keeps the start recurrence (matrix polynomials: not yet).

An end is *certified* when every listed value's error is ``<= tol ||A||``: the listed values are
then the true extreme eigenvalues within that error (up to the stated failure probability).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

FAILURE_PROBABILITY = 1e-3  # total, split: 1/4 per end, 1/4 per list's gaps
GAP_SAMPLES = 64  # points tested in each gap between consecutive Ritz values
REFERENCE = "van Dorsselaer, Hochstenbach & van der Vorst 2001; Kuczynski & Wozniakowski 1992"


@dataclass(frozen=True)
class StartRecurrence:
    """The block recurrence of the start block ``Q_0 [P, b]`` while ``V`` holds its Krylov space:
    ``A Q_i = Q_{i-1} R_{i-1}^T + Q_i A_i + Q_{i+1} R_i`` (``A_i [n_i, n_i]``, ``R_i [n_{i+1}, n_i]``;
    the last ``R`` couples to the next, not yet multiplied block). ``sign = -1`` describes ``-A``.
    """

    blocks: list  # [(A_i, R_i, pinv(R_i))] float64 (no pinv for one start vector: unused)
    nodes: Tensor  # Ritz values of the recurrence (its H), ascending
    sign: float = 1.0
    # what was computed from it: log K at the points asked before (keyed by their bytes: a run
    # that bounds the same Ritz values again, with other residuals, reuses them), its flip
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def flipped(self) -> StartRecurrence:
        if "flipped" not in self.memo:
            self.memo["flipped"] = StartRecurrence(self.blocks, (-self.nodes).flip(0), -self.sign)
        return self.memo["flipped"]

    def log_k(self, lam: Tensor, cuts: tuple = ()) -> Tensor:
        lam = lam.to(torch.float64)
        key = (lam.numpy().tobytes(), cuts)
        if key not in self.memo:
            self.memo[key] = log_kmin(self, lam, cuts)
        return self.memo[key]


@dataclass(frozen=True)
class EndErrors:
    """Backed error bounds of one list (top or bottom) and what backs them."""

    errors: Tensor  # [n] float64: |lambda_i - theta_i| <= errors[i] (lambda_i the true i-th)
    kinds: list[str]  # per value: exact, residual, kato-temple, cluster, bracket, none
    bound: float  # lambda_min >= bound (bottom) or lambda_max <= bound (top); +-inf if none
    certified: bool  # every error <= the threshold
    reason: str  # one sentence: what certifies the end, or why it is not certified


def start_recurrence(H: Tensor, C: Tensor, widths: list[tuple[int, int]],
                     pinv_cache: dict | None = None, nodes: Tensor | None = None) -> StartRecurrence:
    """The start block's recurrence from ``H [k, k]`` (block tridiagonal, no restart yet), the
    coupling ``C [k, r]`` of the last block and ``widths``: per block step ``(n_i, rank_i)``, the
    block's width and the rank of its successor (fresh random columns after a rank drop are not
    in the start's Krylov space: the recurrence stops there). ``pinv_cache``: a dict kept by a
    run that builds the recurrence again as it grows; each block's pseudo-inverse is then
    computed once (keyed by the block's entries: the same numbers as computing it again).
    ``nodes``: ``eigvalsh(H)`` where the caller has it and the recurrence spans all of ``H``."""
    H, C = H.to(torch.float64).clone(), C.to(torch.float64).clone()  # the run mutates H later
    blocks, off = [], 0
    for i, (n, rank) in enumerate(widths):
        Ai = H[off : off + n, off : off + n].to(torch.float64)
        if i + 1 < len(widths):
            Ri = H[off + n : off + n + widths[i + 1][0], off : off + n].to(torch.float64)
        else:
            Ri = C[off : off + n].to(torch.float64).T
        # one start vector: log K is the three-term recurrence, which needs no inverse
        inverse = None if widths[0][0] == 1 else _pinv(Ri[:rank], pinv_cache)
        blocks.append((Ai, Ri[:rank], inverse))
        off += n
        if rank == 0 or (i + 1 < len(widths) and rank < widths[i + 1][0]):
            break
    k = off
    if nodes is None or k != H.shape[0]:
        nodes = torch.linalg.eigvalsh(H[:k, :k].to(torch.float64))
    return StartRecurrence(blocks, nodes)


def _pinv(R: Tensor, cache: dict | None) -> Tensor:
    """``pinv(R)``, from ``cache`` where the same entries were inverted before."""
    if cache is None:
        return torch.linalg.pinv(R)
    key = (tuple(R.shape), R.contiguous().numpy().tobytes())
    if key not in cache:
        cache[key] = torch.linalg.pinv(R)
    return cache[key]


def log_kmin(rec: StartRecurrence, lam: Tensor, cuts: tuple = ()) -> Tensor:
    """``log lambda_min(K(lambda))`` at each ``lam [m]``, ``K = sum_i Pi_i Pi_i^T`` the block
    Christoffel function: ``Pi_i(lambda) [b, n_i]`` are the start block's orthonormal matrix
    polynomials (``u^T Q_i = g^T Pi_i(lambda)`` for an eigenpair ``(lambda, u)``, ``g = Q_0^T u``),
    so ``g^T K g <= 1`` and ``||g||^2 <= 1 / lambda_min(K)``.

    ``cuts``: thresholds the caller only compares the values with (``value > t``). A value is then
    exact where it is within its rounding of a threshold, elsewhere it may differ in its last
    digits but lies on the same side of every threshold (:func:`_smallest_singular_values`)."""
    if rec.blocks[0][0].shape[0] == 1:
        return _log_k_scalar(rec, lam)
    lam = rec.sign * lam.to(torch.float64)[:, None, None]
    m, b = lam.shape[0], rec.blocks[0][0].shape[0]
    cur = torch.eye(b, dtype=torch.float64).expand(m, b, b).clone()
    prev, R_prev = None, None
    parts = [cur]  # K = M M^T, M = [Pi_0 .. Pi_d]: lambda_min(K) = sigma_min(M)^2, whose
    # rounding is eps^2 lambda_max(K) (eigvalsh of K: eps lambda_max(K), which near a converged
    # Ritz value swamps the small lambda_min that an eigenvalue there forces)
    logscale = torch.zeros(m, dtype=torch.float64)  # log of the scale the recurrence carries
    scales = [logscale]  # ... when each part was made
    for Ai, Ri, Rinv in rec.blocks:
        M = lam * cur - cur @ Ai
        if prev is not None:
            M = M - prev @ R_prev.T
        if Ri.shape[0] == 0:  # an invariant subspace: stopping there only weakens the bound
            break
        nxt = M @ Rinv  # Pi_{i+1} R_i = M
        prev, cur, R_prev = cur, nxt, Ri
        # one reduction and one sync per step: a row can exceed 1e50 only if the largest entry
        # does (or an entry is NaN, whose row the old per-row test leaves unscaled: s = 1 there)
        if not float(cur.abs().amax()) <= 1e50:
            s = cur.abs().amax(dim=(1, 2)).clamp_min(1.0)
            s = torch.where(s > 1e50, s, torch.ones_like(s))
            prev, cur = prev / s[:, None, None], cur / s[:, None, None]
            logscale = logscale + torch.log(s)
        parts.append(cur)
        scales.append(logscale)
    # every part at the last scale (older ones shrink, possibly to 0); the parts made at the last
    # scale need no factor (exp(0) = 1 exactly), and each older scale's factor is made once
    factors = {id(logscale): None}
    for ls in scales:
        if id(ls) not in factors:
            factors[id(ls)] = torch.exp(ls - logscale)[:, None, None]
    M = torch.cat([p if factors[id(ls)] is None else p * factors[id(ls)]
                   for p, ls in zip(parts, scales)], dim=2)
    smin = _smallest_singular_values(M, logscale, cuts)
    return 2 * torch.log(smin.clamp_min(1e-150)) + 2 * logscale


SVD_SLACK = 1e3  # a singular value's rounding in units of columns * eps * sigma_max (gesdd)


def _smallest_singular_values(M: Tensor, logscale: Tensor, cuts: tuple) -> Tensor:
    """``svdvals(M)[:, -1]`` for ``M [m, b, c]``, where it decides a comparison with ``cuts``.

    ``M``'s rows are wide (``b`` start columns, ``c = b (d + 1)``), where the batched SVD of the
    transpose is 4x faster (LAPACK works on tall matrices) but rounds differently. Both are
    backward stable: each singular value is within ``SVD_SLACK c eps sigma_max`` of the true
    one. So the fast value decides ``2 log smin + 2 logscale > t`` for every ``t`` in ``cuts``
    wherever that interval around it lies on one side of ``t``; the rest (a few points where
    the curve crosses a threshold) are computed as before. Same decisions, same bits there."""
    if not cuts:
        return torch.linalg.svdvals(M)[:, -1]
    fast = torch.linalg.svdvals(M.mT)
    smin = fast[:, -1].clone()
    slack = 2 * SVD_SLACK * M.shape[-1] * torch.finfo(M.dtype).eps * fast[:, 0]
    low = 2 * torch.log((smin - slack).clamp_min(1e-150)) + 2 * logscale
    high = 2 * torch.log((smin + slack).clamp_min(1e-150)) + 2 * logscale
    unsure = torch.zeros_like(smin, dtype=torch.bool)
    for t in cuts:
        unsure |= (low <= t) & (high > t)  # the exact value may lie on either side
    unsure |= ~torch.isfinite(fast).all(dim=1)
    idx = unsure.nonzero()[:, 0]
    if idx.numel():
        smin[idx] = torch.linalg.svdvals(M[idx])[:, -1]
    return smin


def _log_k_scalar(rec: StartRecurrence, lam: Tensor) -> Tensor:
    """:func:`log_kmin` for one start vector: ``K = sum_i phi_i^2`` by the three-term recurrence
    ``beta_i phi_{i+1} = (lambda - alpha_i) phi_i - beta_{i-1} phi_{i-1}`` (numpy, rescaled)."""
    x = rec.sign * lam.to(torch.float64).numpy()
    prev, cur = np.zeros_like(x), np.ones_like(x)
    total, logscale, beta_prev = np.ones_like(x), np.zeros_like(x), 0.0
    for Ai, Ri, _ in rec.blocks:
        if Ri.numel() == 0:
            break
        a, beta = float(Ai[0, 0]), float(Ri[0, 0])
        prev, cur, beta_prev = cur, ((x - a) * cur - beta_prev * prev) / beta, beta
        total = total + cur * cur
        s = np.abs(cur)
        if (s > 1e100).any():
            s = np.where(s > 1e100, s, 1.0)
            prev, cur, total = prev / s, cur / s, total / (s * s)
            logscale = logscale + 2 * np.log(s)
    return torch.from_numpy(np.log(total) + logscale)


@dataclass(frozen=True)
class ResidualPolynomial:
    r"""One start vector's Christoffel function after any number of thick restarts.

    With ``A V = V H + q c^T`` (``V [P, k]`` orthonormal, ``q`` the residual direction, ``H`` the
    current Ritz values' arrowhead or tridiagonal matrix), every column of ``[V, q]`` is
    ``p_i(A) q_0`` for polynomials orthonormal in the spectral measure of the unit start
    ``q_0``, so ``K(lambda) = sum_i p_i(lambda)^2`` bounds ``||U^T q_0||^2 <= 1 / K(lambda)``
    as before. The relation at a scalar ``lambda`` gives ``P(lambda) (lambda - H) =
    p_q(lambda) c^T``, hence in the Ritz basis ``(theta_j, s_j)``

        K(lambda) = p_q(lambda)^2 + sum_j p_q(lambda)^2 (c^T s_j)^2 / (lambda - theta_j)^2,

    ``p_q`` the residual direction's polynomial: its roots are the current Ritz values and every
    Ritz value discarded at a restart (the kept vectors' polynomials ``p_q (c^T s_j) / (x -
    theta_j)`` vanish there, and every later vector inherits the roots), its degree the products
    taken, its leading coefficient ``1 / prod beta`` over every new Lanczos vector's norm. So
    ``log |p_q|`` is a sum of logs, the ``j``-th term cancels its root analytically, and no
    polynomial is formed. ``margin``: each root is taken ``margin`` closer to ``lambda`` (a
    lower bound on ``K`` for any relation whose roots moved that far: the couplings zeroed when
    pairs were locked, the drift a true residual measured). ``sign = -1`` describes ``-A``.
    """

    theta: Tensor  # [k] current Ritz values, ascending, float64
    coupling: Tensor  # [k] c^T s_j (the Krylov residuals, signed)
    discarded: Tensor  # [d] Ritz values discarded at the restarts so far
    log_beta: float  # sum of log beta over every new Lanczos vector
    margin: float = 0.0
    sign: float = 1.0

    @property
    def nodes(self) -> Tensor:
        return torch.cat([self.theta, self.discarded]).sort().values

    def flipped(self) -> ResidualPolynomial:
        return ResidualPolynomial(-self.theta.flip(0), -self.coupling.flip(0), -self.discarded,
                                  self.log_beta, self.margin, -self.sign)

    def log_p(self, lam: Tensor) -> Tensor:
        """``log |p_q(lambda)|`` at each ``lam [m]`` (``-inf`` within ``margin`` of a root)."""
        return self._logs(lam)[1]

    def log_k(self, lam: Tensor, cuts: tuple = ()) -> Tensor:  # exact: cuts need nothing here
        logd, log_p = self._logs(lam)
        ninf = torch.isinf(logd).sum(dim=1, keepdim=True)  # roots within the margin
        finite = torch.where(torch.isinf(logd), torch.zeros_like(logd), logd)
        total = finite.sum(dim=1, keepdim=True) - self.log_beta  # log |p| over the finite roots
        k = len(self.theta)
        own = logd[:, :k]  # the j-th term cancels theta_j's factor
        own_inf = torch.isinf(own)
        term = total - torch.where(own_inf, torch.zeros_like(own), own)
        term = torch.where(ninf - own_inf.long() > 0, torch.full_like(term, -math.inf), term)
        log_c = torch.log(self.coupling.abs().clamp_min(0.0))[None, :]
        terms = torch.cat([2 * log_p[:, None], 2 * (term + log_c)], dim=1)
        return torch.logsumexp(terms, dim=1)

    def _logs(self, lam: Tensor) -> tuple[Tensor, Tensor]:
        x = self.sign * lam.to(torch.float64)[:, None]
        roots = self.sign * torch.cat([self.theta, self.discarded])[None, :]
        d = ((x - roots).abs() - self.margin).clamp_min(0.0)
        logd = torch.log(d)  # [m, k + d]: theta's columns first
        return logd, logd.sum(dim=1) - self.log_beta


@dataclass(frozen=True)
class Christoffel:
    """The largest of several valid Christoffel functions of the same start vector (each is a
    deterministic inequality for ``q_0``: the start recurrence before the first restart and
    the residual polynomial now; a discarded root zeroes the latter, not the former)."""

    sources: tuple

    @property
    def nodes(self) -> Tensor:
        return torch.cat([s.nodes for s in self.sources]).sort().values

    def flipped(self) -> Christoffel:
        return Christoffel(tuple(s.flipped() for s in self.sources))

    def log_k(self, lam: Tensor, cuts: tuple = ()) -> Tensor:
        # each source's value on the right side of each cut: so is their largest
        return torch.stack([s.log_k(lam, cuts) for s in self.sources]).amax(dim=0)


def widened(source, margin: float):
    """``source`` with every residual polynomial's root margin grown by ``margin`` (the start
    recurrence is left as it is: it holds before any restart, where no drift was measured)."""
    import dataclasses

    if isinstance(source, Christoffel):
        return Christoffel(tuple(widened(s, margin) for s in source.sources))
    if isinstance(source, ResidualPolynomial) and margin > 0:
        return dataclasses.replace(source, margin=source.margin + margin)
    return source


@functools.lru_cache(maxsize=256)  # a pure function of three numbers, asked for every check
def beta_quantile(columns: int, P: int, delta: float) -> float:
    """``t`` with ``P(||Q_0^T u||^2 < t) = delta`` for ``columns`` random orthonormal vectors.

    ``||Q_0^T u||^2 ~ Beta(columns / 2, (P - columns) / 2)``: the inverse regularized incomplete
    beta function, by Newton's method in ``log t`` on a continued fraction with an accurate
    ``log B`` for large ``P``, in place of ``scipy.special.betaincinv`` (its import cost every
    short run 0.15 CPU s). Measured: within 3e-14 relative of a 40-digit evaluation for
    ``delta <= 0.9``, up to 64 columns and ``P`` up to 7e9 (scipy: 7e-10 at ``delta = 0.9``,
    ``P`` = 1.2e8), within 2e-14 of scipy for the ``delta <= 0.5`` the certificate uses; close
    to ``delta = 1`` with ``P >= 2000`` it loses digits (the continued fraction stays on the
    small side).
    """
    if columns >= P:
        return 1.0
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    a, b = columns / 2, (P - columns) / 2
    log_delta = math.log(delta)
    lo, hi = -math.inf, 0.0  # bracket of u = log t
    u = min((log_delta + math.log(a) + _log_beta(a, b)) / a, -1e-3)  # I ~ t^a / (a B), small t
    for _ in range(200):
        log_i, slope = _log_betainc(a, b, u)  # log I_t(a, b) and its derivative in u
        if log_i < log_delta:
            lo = u
        elif log_i > log_delta:
            hi = u
        else:
            break
        new = u + (log_delta - log_i) / slope
        if abs(new - u) <= 1e-14 * max(1.0, abs(u)):  # quadratic: this last step lands at
            u = new  # rounding
            break
        if not lo < new < hi:  # outside the bracket: bisect (or step left while none is known)
            new = 0.5 * (lo + hi) if lo > -math.inf else hi - max(1.0, abs(hi))
        u = new
    return math.exp(u)


FLIP_BELOW = 1000.0  # b from which I_x(a, b) stays on x's side (beta_quantile)
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156,
             -3617 / 122400)


def _log_gamma_ratio(s: float, t: float) -> float:
    """``lgamma(s) - lgamma(s + t) + t log(s + t)`` without the cancellation of two large
    ``lgamma`` (Stirling's series for ``s >= 10``)."""
    if s < 10:
        return math.lgamma(s) - math.lgamma(s + t) + t * math.log(s + t)

    def tail(z: float) -> float:  # lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2)
        w, acc = 1.0 / (z * z), 0.0
        for c in reversed(_STIRLING):
            acc = acc * w + c
        return acc / z

    return -(s - 0.5) * math.log1p(t / s) + t + tail(s) - tail(s + t)


def _log_beta(a: float, b: float) -> float:
    """``log B(a, b)``, accurate to about 1e-15 absolute even for ``b`` in the billions."""
    t, s = sorted((a, b))
    return math.lgamma(t) + _log_gamma_ratio(s, t) - t * math.log(s + t)


def _log_betainc(a: float, b: float, u: float) -> tuple[float, float]:
    """``log I_x(a, b)`` at ``x = exp(u)`` and its derivative in ``u``: Lentz's continued
    fraction (Numerical Recipes' ``betacf``), past the mean on the side of ``1 - x`` (where it
    converges fast) while ``b < FLIP_BELOW``: for larger ``b`` that side cancels ``1 - x`` against
    ``a / b``, while ``x``'s own side still converges in some ``b x`` terms."""
    x = math.exp(u)
    log_x, log_y = u, math.log1p(-x)
    flip = x > (a + 1) / (a + b + 2) and b < FLIP_BELOW
    p, q, lp, lq, z = (b, a, log_y, log_x, -math.expm1(u)) if flip else (a, b, log_x, log_y, x)
    t, s = sorted((p, q))  # log front = p log z + q log(1 - z) - log B(p, q), with the large
    # t log(s + t) of log B taken into the log of the small exponent's variable
    if t == p:
        front = p * (lp + math.log(p + q)) + q * lq
    else:
        front = p * lp + q * (lq + math.log(p + q))
    front -= math.lgamma(t) + _log_gamma_ratio(s, t)
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (p + q) * z / (p + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for num in (m * (q - m) * z / ((p + 2 * m - 1) * (p + 2 * m)),
                    -(p + m) * (p + q + m) * z / ((p + 2 * m) * (p + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    log_part = front + math.log(h / p)  # log I_z(p, q)
    log_i = math.log(-math.expm1(log_part)) if flip else log_part  # I_x(a, b) = 1 - I_y(b, a)
    # front is log(x^a y^b / B(a, b)) on either side; less log y it is log(x pdf(x)) = dI/du
    return log_i, math.exp(front - log_y - log_i)


def _end_grid(edge: float, span: float) -> Tensor:
    """The distances below ``edge`` where :func:`_end_bound` looks first."""
    unit = max(span, abs(edge), 1e-300)
    return unit * 2.0 ** torch.arange(-60, 40.01, 0.25, dtype=torch.float64)


def _end_bound(rec: StartRecurrence, log_k: float, edge: float, span: float,
               first: Tensor | None = None) -> float:
    """A point below ``edge`` (every Ritz value above it) below which ``lambda_min(K) > 1 / t``
    on a fine grid: no eigenvalue lies there (with the stated probability). ``first``: ``rec``'s
    log K on the first grid (``edge - _end_grid(edge, span)``), when the caller computed it
    together with other points (:func:`_log_k_parts`)."""
    d = _end_grid(edge, span)
    excluded = (rec.log_k(edge - d, (log_k,)) if first is None else first) > log_k
    if not bool(excluded[-1]):
        return -math.inf
    inside = (~excluded).nonzero()
    if inside.numel() == 0:
        return edge - float(d[0])
    j = int(inside[-1, 0])
    fine = torch.linspace(float(d[j]), float(d[j + 1]), 65, dtype=torch.float64)
    ex = rec.log_k(edge - fine, (log_k,)) > log_k
    inside = (~ex).nonzero()
    return edge - float(fine[int(inside[-1, 0]) + 1 if inside.numel() else 0])


def _gap_points(rec: StartRecurrence, a: float, b: float) -> Tensor | None:
    """Where :func:`_gap` looks for a certified gap inside ``(a, b)`` (None: an empty interval)."""
    if not b > a:
        return None
    x = torch.linspace(a, b, GAP_SAMPLES + 2, dtype=torch.float64)[1:-1]
    w = 1e-8 * (b - a)  # a node within rounding of an end is that end's Ritz value again
    nodes = rec.nodes
    return torch.cat([x, nodes[(nodes > a + w) & (nodes < b - w)]]).sort().values


def _gap(x: Tensor, values: Tensor, log_k: float) -> tuple[float, float] | None:
    """A certified gap among the points ``x`` of :func:`_gap_points` (``values``: log K there):
    ``(lo, hi)`` with no eigenvalue in ``[lo, hi]``, or None."""
    idx = (values > log_k).nonzero()[:, 0]
    if idx.numel() == 0 or int(idx[-1] - idx[0]) + 1 != idx.numel():
        return None
    return float(x[idx[0]]), float(x[idx[-1]])


def _log_k_parts(rec, parts: list[Tensor], cuts: tuple) -> list[Tensor]:
    """``rec.log_k`` of each of ``parts`` from one evaluation of their concatenation: the
    recurrence's per-step cost (a few small batched products, a sync) is paid once, and each
    point's value is the same as alone (every operation acts on each point separately)."""
    values = rec.log_k(torch.cat(parts), cuts)
    return list(values.split([len(p) for p in parts]))


def bottom_errors(
    theta: Tensor,
    residuals: Tensor,
    n: int,
    *,
    recurrence: StartRecurrence | None,
    P: int,
    block_size: int,
    threshold: float,
    columns: int,
    start_scale: float = 1.0,
    exact: bool = False,
    delta: float = FAILURE_PROBABILITY,
    end: str = "bottom",
    rounding: float = 0.0,
) -> EndErrors:
    """Backed errors of the ``n`` smallest of the ascending Ritz values ``theta [k]`` (residuals
    ``[k]``, the listed ones true residuals). ``recurrence``: the start block's (None: nothing
    random to certify from). ``columns``: its random columns (1 with a warm start, whose first
    column carries ``start_scale - 1`` unit vectors). ``exact``: the run reached full depth."""
    theta, residuals = theta.to(torch.float64), residuals.to(torch.float64)
    k = len(theta)
    if n == 0:
        return EndErrors(torch.zeros(0, dtype=torch.float64), [], -math.inf, True, "nothing listed")
    if exact:
        errs = []
        for i in range(n):
            others = torch.cat([theta[:i], theta[i + 1 :]])
            r = float(residuals[i])
            gap = float((others - theta[i]).abs().min()) - r if others.numel() else math.inf
            errs.append(min(r, r * r / gap) if gap > r else r)
        e = torch.tensor(errs, dtype=torch.float64).clamp_min(rounding)
        return EndErrors(e, ["exact"] * n, float(theta[0] - e[0]), bool((e <= threshold).all()),
                         "exact: the run reached the full dimension, every eigenvalue is a Ritz "
                         "value")
    if recurrence is None:
        inf = torch.full((n,), math.inf, dtype=torch.float64)
        return EndErrors(inf, ["none"] * n, -math.inf, False,
                         "not certified: no random start to bound what the run did not see")
    span = float(theta[-1] - theta[0])
    log_end = -math.log(beta_quantile(columns, P, delta / 4) / start_scale**2)
    log_gap = -math.log(beta_quantile(columns, P, delta / 4 / P) / start_scale**2)
    edge = min(float(recurrence.nodes[0]), float(theta[0]))
    # the end's first grid and every gap's points in one evaluation of the Christoffel function
    gap_x = [_gap_points(recurrence, float(theta[i]), float(theta[i + 1])) if i + 1 < k else None
             for i in range(n)]
    first, *values = _log_k_parts(recurrence, [edge - _end_grid(edge, span)] +
                                  [x for x in gap_x if x is not None], (log_end, log_gap))
    gap_values = iter(values)
    L = min(_end_bound(recurrence, log_end, edge, span, first), float(theta[0]) - rounding)
    # no closer than the Rayleigh-Ritz rounding, the floor of every stated error
    errors, kinds = [math.inf] * n, ["bracket"] * n
    alpha, counted, start = L, True, 0  # the open component starts at index ``start``
    for i in range(n):
        x = gap_x[i]
        gap = None if x is None else _gap(x, next(gap_values), log_gap)
        if gap is None and i + 1 < n:
            continue  # the component goes on past theta_i
        members = range(start, i + 1)
        ok = counted and gap is not None and len(members) < block_size
        frob = float(torch.linalg.vector_norm(residuals[start : i + 1]))
        for j in members:
            th, r = float(theta[j]), float(residuals[j])
            bracket = th - alpha  # lambda_j in [alpha, theta_j]: alpha = L once counts are lost
            if ok and len(members) == 1:  # Kato-Temple; lambda_j <= theta_j by interlacing
                kt = r * r / (gap[0] - th) if gap[0] > th else math.inf
                errors[j], kinds[j] = min(kt, bracket), "kato-temple" if kt < bracket else "bracket"
                if th - r > alpha and th + r < gap[0] and r < errors[j]:
                    errors[j], kinds[j] = r, "residual"
            elif ok:  # Kahan: the sorted Ritz values match the component's eigenvalues
                errors[j], kinds[j] = min(frob, bracket), "cluster" if frob < bracket else "bracket"
            else:
                errors[j] = bracket
        if ok:
            alpha = gap[1]
        else:
            counted, alpha = False, L
        start = i + 1
    e = torch.tensor(errors, dtype=torch.float64).clamp_min(rounding)
    certified = bool((e <= threshold).all())
    side, word = ("lambda_min", "below") if end == "bottom" else ("lambda_max", "above")
    bad = (e > threshold).nonzero()
    if certified:
        reason = (f"certified: the listed values are the true {end} eigenvalues within their "
                  f"errors, with probability >= {1 - delta:g} over the random start ({REFERENCE})")
    elif math.isinf(L):
        reason = f"not certified: nothing excludes an eigenvalue {word} the listed values"
    elif int(bad[0, 0]) == 0:
        reason = (f"not certified: after this run {side} may lie up to {float(e[0]):.3g} {word} "
                  f"the listed value (> tol * ||A|| = {threshold:.3g}); the listed value bounds "
                  f"it from one side only")
    else:
        i = int(bad[0, 0])
        reason = (f"not certified past value {i}: an eigenvalue the run did not see may lie "
                  f"between the listed values (value {i + 1} is within {float(e[i]):.3g}, "
                  f"> tol * ||A|| = {threshold:.3g}); {side} itself is within {float(e[0]):.3g}")
    return EndErrors(e, kinds, L, certified, reason)


def top_errors(theta: Tensor, residuals: Tensor, n: int, **kw) -> EndErrors:
    """:func:`bottom_errors` of ``-A``: the ``n`` largest, ``theta`` still ascending."""
    rec = kw.pop("recurrence")
    flipped = None if rec is None else rec.flipped()
    out = bottom_errors(-theta.flip(0), residuals.flip(0), n, recurrence=flipped, end="top", **kw)
    return EndErrors(out.errors, out.kinds, -out.bound, out.certified, out.reason)


def bounded_condition(cond, *, certified_top: bool, certified_bottom: bool, why: str,
                      theta_max: float, theta_min: float, lambda_min_lower: float):
    """``cond`` (a :class:`~condlab.estimators.condition.Condition` from backed errors) as a lower
    bound when an end is not certified: ``lambda_max >= theta_max`` and ``lambda_min <=
    theta_min`` always hold, so for a positive definite ``A`` ``kappa >= theta_max / theta_min``;
    whether ``A`` is positive definite at all is open while ``lambda_min >= lambda_min_lower`` is
    all the run proves. A proven indefiniteness (``theta_min`` below the null band) stands."""
    import dataclasses

    if (certified_top and certified_bottom) or cond.definiteness not in (
            "positive definite", "negative definite"):
        return cond  # kappa_+ of a semi-definite A rests on lambda_min+, inside the list
    words = f"{why} (lambda_max >= {theta_max:.6g}, lambda_min <= {theta_min:.6g}"
    words += f", lambda_min >= {lambda_min_lower:.3g})" if math.isfinite(lambda_min_lower) else ")"
    definiteness = cond.definiteness
    if not certified_bottom and not lambda_min_lower > cond.threshold:
        definiteness = "not certified"
    if theta_min > cond.threshold and theta_max > 0:
        bound = theta_max / theta_min
        text = f"kappa >= {bound:.4g} if positive definite, a lower bound: {words}"
    else:
        bound = None
        text = f"not measured: {words}"
    return dataclasses.replace(
        cond, value=None, definition=text, resolved=False, bound=bound, error=None,
        definiteness=definiteness, nullity=cond.nullity if certified_bottom else None,
    )


def end_bounds(recurrence, theta: Tensor, *, P: int, columns: int = 1,
               delta: float = FAILURE_PROBABILITY, lower: bool = True,
               upper: bool = True) -> tuple[float, float]:
    """``(L, U)``: ``lambda_min >= L`` and ``lambda_max <= U`` of the operator whose run gave the
    ascending Ritz values ``theta`` and the start ``recurrence``, each with probability
    ``>= 1 - delta / 4`` (the end certificate of :func:`bottom_errors` alone: no gaps, no
    errors; for a run that needs only where the spectrum ends). An end not asked for
    (``lower``/``upper`` False) is not computed and reads ``-inf``/``inf``."""
    theta = theta.to(torch.float64)
    span = float(theta[-1] - theta[0])
    log_end = -math.log(beta_quantile(columns, P, delta / 4))
    low, high = -math.inf, math.inf
    if lower:
        low = _end_bound(recurrence, log_end, min(float(recurrence.nodes[0]), float(theta[0])),
                         span)
    if upper:
        flipped = recurrence.flipped()
        high = -_end_bound(flipped, log_end, min(float(flipped.nodes[0]), -float(theta[-1])),
                           span)
    return low, high
