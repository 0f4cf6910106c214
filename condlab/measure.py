"""Measure one operator: extreme eigenvalues, condition number, trace and density.

``measure(A, settings)`` is the one place where estimators meet an operator; every command
(spectrum, compare's tracking, check) calls it and gets the same :class:`SpectrumResult`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from condlab.distributed import peak_memory_mb
from condlab.errors import CondlabError, UsageError
from condlab.estimators import (
    condition_number,
    extreme_eigenpairs,
    hutchinson,
    hutchpp,
    slq_density,
)
from condlab.operators.base import LinearOperator
from condlab.options import SPECTRUM, default_tol, fields_of
from condlab.report.records import SpectrumResult

EXACT_LIMIT = 6000  # parameters: above this a dense eigendecomposition is refused


class _EstimatorMethods:
    def __post_init__(self) -> None:
        for o in SPECTRUM:
            if o.estimator:
                object.__setattr__(self, o.name, o.parse(getattr(self, o.name), "EstimatorSettings"))

    @property
    def threshold_rel(self) -> float:
        # an eigenvalue converged to residual <= tol * |lambda_max| and larger than that in
        # magnitude is distinguishable from zero; smaller ones are not
        return self.null_threshold if self.null_threshold is not None else self.tol

    def resolved(self, dtype) -> EstimatorSettings:
        """These settings with ``tol`` (when None) set to the default for ``dtype``."""
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))


EstimatorSettings = dataclasses.make_dataclass(
    "EstimatorSettings", fields_of(SPECTRUM, estimator=True), bases=(_EstimatorMethods,),
    frozen=True, namespace={"__module__": __name__},
)
EstimatorSettings.__doc__ = """How to estimate: the fields of :data:`condlab.options.SPECTRUM`
marked ``estimator``, with the same defaults and checks. ``tol`` is relative: every reported
pair has ``||A v - lambda v|| <= tol * |lambda_max|`` (default: 1e-6 in float64, else 1e-4)."""


@dataclass(frozen=True)
class Density:
    """A spectral density on a grid (stochastic Lanczos quadrature), for one setting."""

    setting: str
    grid: list[float]
    density: list[float]

    def rows(self) -> list[dict]:
        return [
            {"setting": self.setting, "eigenvalue": x, "density": y}
            for x, y in zip(self.grid, self.density)
        ]


@dataclass(frozen=True)
class Measurement:
    result: SpectrumResult
    density: Density | None
    vectors: Tensor | None = None  # [P, top + bottom] Ritz vectors (Lanczos only): a warm start


class _Observed(LinearOperator):
    """``A + damping * I``, counting products and reporting them to a progress callback."""

    def __init__(self, A, damping: float, on_matvec: Callable[[int], None] | None):
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A, self.damping, self.on_matvec = A, float(damping), on_matvec

    def _matmat(self, V: Tensor) -> Tensor:
        out = self.A @ V
        if self.damping:
            out = out + self.damping * V
        if not torch.isfinite(out).all():
            raise CondlabError(
                "a curvature product returned NaN or Inf; the loss is not twice differentiable "
                "here or overflows (try --dtype float64)"
            )
        if self.on_matvec is not None:
            self.on_matvec(V.shape[1])
        return out


def measure(
    A,
    settings: EstimatorSettings,
    *,
    setting: str = "baseline",
    curvature: str = "hessian",
    n_samples: int = 0,
    preconditioner: str | None = None,
    normalization: str | None = None,
    layer: str | None = None,
    modes: dict | None = None,
    details: dict | None = None,
    function_change: float | None = None,
    params_added: int | None = None,
    predicted_nullity: int | None = None,
    on_matvec: Callable[[int], None] | None = None,
    start: Tensor | None = None,
) -> Measurement:
    """Estimate the spectrum of the symmetric operator ``A`` (``+ damping * I``).

    ``start``: Ritz vectors of a nearby operator (:attr:`Measurement.vectors` of the previous
    checkpoint) to start Lanczos from; the returned ``vectors`` are this run's.
    """
    s = settings.resolved(A.dtype)
    if s.krylov_device is not None:
        try:
            torch.device(s.krylov_device)
        except RuntimeError:
            raise UsageError(
                f"unknown krylov device {s.krylov_device!r}; use cpu, cuda or cuda:N"
            ) from None
    op = _Observed(A, s.damping, on_matvec)
    P = op.shape[0]
    t0 = time.perf_counter()
    top, bottom = min(s.top, P), min(s.bottom, P)
    fields: dict = {}
    krylov: dict = {}  # block size and the copies found, for the multiplicity flags
    density = vectors = None
    if s.exact:
        if P > EXACT_LIMIT:
            raise UsageError(
                f"--exact builds a dense {P} x {P} matrix; it is limited to {EXACT_LIMIT} "
                "parameters: drop --exact, or select fewer with --params"
            )
        M = op.to_dense(block_size=64)
        M = (M + M.T) / 2
        evals, evecs = torch.linalg.eigh(M.double())
        resid = torch.linalg.vector_norm(M.double() @ evecs - evecs * evals, dim=0)
        ev, rs = evals.tolist(), resid.tolist()
        cond = condition_number(
            ev[::-1][:top], ev[:bottom], threshold_rel=s.threshold_rel, exact_spectrum=evals
        )
        fields.update(
            eigenvalues_top=ev[::-1][:top],
            residuals_top=rs[::-1][:top],
            converged_top=[True] * top,
            eigenvalues_bottom=ev[:bottom],
            residuals_bottom=rs[:bottom],
            converged_bottom=[True] * bottom,
            lambda_max=ev[-1],
            lambda_min=ev[0],
            nullity_method="exact (dense eigendecomposition)",
        )
        if s.trace:
            fields.update(trace=float(evals.sum()), trace_stderr=0.0, trace_method="exact")
    else:
        if top + bottom > 0:
            eig = extreme_eigenpairs(
                op,
                top=top,
                bottom=bottom,
                tol=s.tol,
                max_matvecs=s.max_hvps,
                max_basis=s.max_basis,
                block_size=s.block_size,
                seed=s.seed,
                basis_dtype=getattr(torch, s.krylov_dtype) if s.krylov_dtype else None,
                basis_device=s.krylov_device,
                return_vectors=True,
                start=start,
            )
            vectors = torch.cat([eig.vectors_top, eig.vectors_bottom], dim=1)
            fields.update(
                eigenvalues_top=_floats(eig.eigenvalues_top),
                residuals_top=_floats(eig.residuals_top),
                converged_top=[bool(c) for c in eig.converged_top],
                eigenvalues_bottom=_floats(eig.eigenvalues_bottom),
                residuals_bottom=_floats(eig.residuals_bottom),
                converged_bottom=[bool(c) for c in eig.converged_bottom],
                lambda_max=float(eig.lambda_max),
                lambda_min=float(eig.lambda_min),
            )
            krylov = {
                "block_size": eig.block_size,
                "copies_top": [int(c) for c in eig.copies_top],
                "copies_bottom": [int(c) for c in eig.copies_bottom],
                "may_repeat_top": [bool(c) for c in eig.may_repeat_top],
                "may_repeat_bottom": [bool(c) for c in eig.may_repeat_bottom],
            }
            cond = condition_number(
                eig.eigenvalues_top,
                eig.eigenvalues_bottom,
                threshold_rel=s.threshold_rel,
                lambda_max=eig.lambda_max,
                lambda_min=eig.lambda_min,
            )
        else:
            cond = None
        if s.trace:
            estimator = hutchpp if s.trace_method == "hutch++" else hutchinson
            tr = estimator(op, s.probes, seed=s.seed)
            fields.update(
                trace=float(tr.value), trace_stderr=float(tr.stderr), trace_method=s.trace_method
            )
    if s.density:
        d = slq_density(
            op, num_probes=s.density_probes, lanczos_steps=min(s.density_steps, P), seed=s.seed
        )
        density = Density(setting, _floats(d.grid), _floats(d.density))
    inertia = _inertia(evals if s.exact else None, d if s.density else None, cond, s)
    if cond is not None:
        fields.update(
            condition_number=_opt_float(cond.value),
            condition_definition=cond.definition,
            definiteness=cond.definiteness,
            threshold=_opt_float(cond.threshold),
            lambda_min_positive=_opt_float(cond.lambda_min_positive),
            nullity=cond.nullity,
        )
        if cond.nullity is not None and "nullity_method" not in fields:
            fields["nullity_method"] = "counted from the computed eigenvalues"
    result = SpectrumResult(
        setting=setting,
        curvature=curvature,
        preconditioner=preconditioner,
        normalization=normalization,
        n_params=P,
        n_samples=n_samples,
        hvp_count=op.matvecs,
        seconds=time.perf_counter() - t0,
        damping=s.damping,
        layer=layer,
        modes=dict(modes or {}),
        dtype=str(op.dtype).replace("torch.", ""),
        device=str(op.device),
        seed=s.seed,
        details={
            **(details or {}), **inertia, **krylov, "peak_memory_mb": peak_memory_mb(op.device)
        },
        function_change=function_change,
        params_added=params_added,
        predicted_nullity=predicted_nullity,
        **fields,
    )
    return Measurement(result, density, vectors)


def _inertia(evals, density, cond, s: EstimatorSettings) -> dict:
    """The negative-eigenvalue count and mass, exactly or by SLQ, when either is at hand."""
    from condlab.estimators.inertia import inertia_from_quadrature, inertia_from_spectrum

    if evals is None and density is None:
        return {}
    if cond is not None:
        threshold = cond.threshold
    else:
        scale = evals.abs().max() if evals is not None else density.nodes.abs().max()
        threshold = s.threshold_rel * float(scale)
    if evals is not None:
        return inertia_from_spectrum(evals, threshold)
    return inertia_from_quadrature(density.nodes, density.weights, density.dim, threshold)


def _floats(x) -> list[float]:
    if isinstance(x, Tensor):
        return [float(v) for v in x.detach().cpu().reshape(-1)]
    return [float(v) for v in x]


def _opt_float(x) -> float | None:
    return None if x is None else float(x)
