r"""Spectral density by stochastic Lanczos quadrature (SLQ).

Quantity: the spectral density ``phi(t) = (1/P) sum_i delta(t - lambda_i)`` of a symmetric
``A [P, P]``, smoothed by a Gaussian of width ``sigma``, and the number of eigenvalues in an
interval, ``P int_lo^hi phi``.

Estimator: for a unit probe ``v = z / ||z||`` (Rademacher ``z``), ``v^T f(A) v`` is the integral
of ``f`` against the spectral measure ``sum_i (u_i^T v)^2 delta(t - lambda_i)``, whose
expectation is ``phi``. ``m`` Lanczos steps from ``v`` give its ``m``-point Gauss quadrature:
nodes = Ritz values ``theta_j``, weights = ``tau_j = s_{1j}^2`` (squared first components of
the eigenvectors of ``T``), exact for polynomials of degree ``<= 2m - 1``:

    sum_j tau_j theta_j^k = v^T A^k v,     E[v^T A^k v] = tr(A^k) / P.

Averaging over ``K`` probes, ``phi ~ (1/K) sum_p sum_j tau_pj N(t; theta_pj, sigma^2)``.

The ``K`` recurrences are independent (each needs its own tridiagonal) but advance together:
every step multiplies the block of the ``K`` current vectors at once (``[P, K]``, one vmapped
product call), as many probes per block as fit their bases ``[P, m]`` in 1 GiB (or
``probe_block``, the memory plan's). The probes are drawn block by block, one column after
another from the seeded generator in the working dtype, so they are the same whatever the
block size.

Assumptions: ``A`` symmetric; the count in ``[lo, hi]`` carries probe noise (its stated
``stderr``) plus a quadrature error of about one node's weight when a node straddles ``lo`` or
``hi`` (small once ``m`` resolves the interval edges, e.g. a gap around a null space).

Reference: Lin, Saad, Yang, "Approximating spectral densities of large matrices", SIAM Review
58 (2016); Ghorbani, Krishnan, Xiao, "An investigation into neural net optimization via Hessian
eigenvalue density", ICML 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.estimators._matmat import ProbeStream, make_generator, operator_size
from condlab.estimators.lanczos import batched_lanczos

DEFAULT_BASIS_BYTES = 2**30  # recurrences run together while their bases fit in 1 GiB


@dataclass(frozen=True)
class SpectralDensity:
    """A Gaussian-broadened SLQ density on ``grid`` and the quadrature it came from."""

    grid: Tensor  # [G] float64
    density: Tensor  # [G] float64, trapezoid integral over grid = 1
    nodes: Tensor  # [probes, m] Ritz values (Gauss nodes), float64
    weights: Tensor  # [probes, m] Gauss weights, each row sums to 1
    matvecs: int
    sigma: float
    dim: int  # P
    seed: int | None  # None when a generator or probes were passed in

    def moments(self, k: int) -> Tensor:
        """``[probes]`` quadrature moments ``sum_j tau_j theta_j^k`` (``= v^T A^k v``)."""
        return (self.weights * self.nodes**k).sum(dim=1)


@dataclass(frozen=True)
class EigenvalueCount:
    """Estimated number of eigenvalues of ``A`` in ``[lo, hi]``."""

    value: float  # P * mean over probes of the quadrature weight in [lo, hi]
    stderr: float  # probe noise only: P * std / sqrt(probes) (nan for one probe)
    lo: float
    hi: float
    dim: int

    @property
    def fraction(self) -> float:
        return self.value / self.dim


def slq_density(
    A,
    *,
    num_probes: int = 8,
    lanczos_steps: int = 80,
    generator: torch.Generator | None = None,
    seed: int = 0,
    grid: Tensor | None = None,
    num_points: int = 512,
    sigma: float | None = None,
    probes: Tensor | None = None,
    probe_block: int | None = None,
) -> SpectralDensity:
    """SLQ density of ``A`` from ``num_probes`` Rademacher probes of ``min(lanczos_steps, P)`` steps.

    ``probes [P, K]`` replaces the random probes (each column is normalized). ``sigma``
    defaults to 1% of the node range; ``grid`` to ``num_points`` points spanning the nodes
    padded by ``5 sigma``. Costs ``K * m`` matvecs.
    """
    P = operator_size(A)
    if num_probes < 1 or lanczos_steps < 1 or num_points < 2:
        raise UsageError("num_probes and lanczos_steps must be >= 1 and num_points >= 2")
    if sigma is not None and not sigma > 0:
        raise UsageError(f"sigma must be > 0, got {sigma}")
    gen = make_generator(generator, seed)
    run_seed = int(seed) if generator is None and probes is None else None
    m = min(lanczos_steps, P)
    stream = None
    if probes is None:
        # the probes get their own generator (seeded from gen), so the fresh directions a
        # breakdown draws from gen between blocks do not shift the probes of later blocks
        seed_probes = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        probe_gen = torch.Generator(device=gen.device).manual_seed(seed_probes)
        stream = ProbeStream(P, probe_gen, like=A, distribution="rademacher")
        K = num_probes
    elif probes.ndim != 2 or probes.shape[0] != P:
        raise UsageError(f"probes must have shape [{P}, K], got {tuple(probes.shape)}")
    else:
        probes = probes.to(dtype=A.dtype, device=A.device)
        K = probes.shape[1]
    itemsize = torch.empty(0, dtype=A.dtype).element_size()
    per_block = max(1, min(K, DEFAULT_BASIS_BYTES // max(1, P * m * itemsize)))
    if probe_block is not None:
        per_block = max(1, min(K, int(probe_block)))
    nodes, weights = [], []
    for start in range(0, K, per_block):  # a block of recurrences per product
        n = min(per_block, K - start)
        block = stream.next(n) if stream is not None else probes[:, start : start + n]
        batch = batched_lanczos(A, block, m, gen)
        del block
        theta, S = torch.linalg.eigh(batch.tridiagonals())  # [k, m], [k, m, m]
        nodes.append(theta)
        weights.append(S[:, 0] ** 2)
    nodes_t, weights_t = torch.cat(nodes), torch.cat(weights)  # [K, m]
    lo, hi = float(nodes_t.min()), float(nodes_t.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(1.0, abs(hi))
    if grid is None:
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=torch.float64)
    grid = grid.to("cpu", torch.float64)
    gauss = torch.exp(-0.5 * ((grid[:, None, None] - nodes_t) / sigma) ** 2)  # [G, K, m]
    density = (gauss * weights_t).sum(dim=(1, 2)) / (
        K * sigma * math.sqrt(2 * math.pi)
    )
    density = density / torch.trapezoid(density, grid)
    return SpectralDensity(
        grid=grid,
        density=density,
        nodes=nodes_t,
        weights=weights_t,
        matvecs=K * m,
        sigma=float(sigma),
        dim=P,
        seed=run_seed,
    )


def density_mass(density: SpectralDensity, lo: float, hi: float) -> EigenvalueCount:
    """Estimated number of eigenvalues in ``[lo, hi]`` from the quadrature nodes and weights.

    ``P * mean_p sum_{j: lo <= theta_pj <= hi} tau_pj``; e.g. the nullity as the count in
    ``[-threshold, threshold]``.
    """
    if hi < lo:
        raise UsageError(f"need lo <= hi, got [{lo}, {hi}]")
    inside = (density.nodes >= lo) & (density.nodes <= hi)
    per_probe = (density.weights * inside).sum(dim=1) * density.dim  # [K]
    K = per_probe.numel()
    stderr = float(per_probe.std(unbiased=True)) / math.sqrt(K) if K > 1 else float("nan")
    return EigenvalueCount(float(per_probe.mean()), stderr, float(lo), float(hi), density.dim)
