"""The estimate stage: extreme eigenvalues, condition number, trace and density of one operator.

    est = estimate(A, EstimatorSettings(top=5, bottom=3))      # numbers, no labels
    result = measure(A, EstimatorSettings(top=5, bottom=3)).result   # the same, as a record

:func:`estimate` is the one place where estimators meet an operator; ``spectrum``, ``track``,
``check`` and ``compare``'s tracking all reach it. It computes and returns an :class:`Estimate`;
what a row is called and what it measured (its :class:`condlab.settings.Setting`) is added by
the record stage (:func:`condlab.report.records.result_of`). The estimator options are the
fields of :class:`EstimatorSettings` (:mod:`condlab.estimator_options`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from condlab import memory
from condlab.distributed import peak_memory_mb
from condlab.errors import CondlabError, UsageError
from condlab.estimator_options import EstimatorSettings
from condlab.estimators import (
    ExtremeEigs,
    condition_number,
    extreme_eigenpairs,
    hutchinson,
    hutchpp,
    lean_extreme_eigenpairs,
    slq_density,
)
from condlab.estimators.bounds import bounded_condition
from condlab.estimators.condition import dtype_name, noise_rel
from condlab.estimators.noise import block_noise, dense_noise
from condlab.operators.base import LinearOperator
from condlab.report.records import SpectrumResult, result_of

EXACT_LIMIT = 6000  # parameters: above this a dense eigendecomposition is refused


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
class Estimate:
    """What :func:`estimate` found for one operator, before it is named and recorded."""

    fields: dict  # eigenvalues, residuals, convergence, kappa, nullity, trace: record fields
    details: dict  # inertia, Krylov multiplicity flags, peak memory
    n_params: int
    hvp_count: int
    seconds: float
    dtype: str
    device: str
    seed: int
    damping: float
    density: tuple[list[float], list[float]] | None = None  # (grid, density)
    vectors: Tensor | None = None  # [P, top + bottom] Ritz vectors (Lanczos only): a warm start


@dataclass(frozen=True)
class Measurement:
    result: SpectrumResult
    density: Density | None
    vectors: Tensor | None = None  # [P, top + bottom] Ritz vectors (Lanczos only): a warm start


def _all_finite(out: Tensor, chunk: int = 2**22) -> bool:
    """Every entry finite. A finite sum proves it (an Inf or NaN entry makes the sum Inf or NaN)
    with no temporary and no copy of a strided product (6 against 65 us on the digits MLP's
    [2410, 3] blocks); a sum that is not finite (an entry is, or the sum overflowed) is settled
    by masks of slices (a whole ``isfinite`` mask is one byte per entry: 124 MB at GPT-2 small,
    held beside the product at the two-pass Lanczos' peak)."""
    if math.isfinite(float(out.sum())):
        return True
    flat = out.reshape(-1)
    return all(bool(torch.isfinite(flat[i : i + chunk]).all()) for i in range(0, flat.numel(), chunk))


class _Observed(LinearOperator):
    """``A + damping * I``, counting products and reporting them to a progress callback."""

    def __init__(self, A, damping: float, on_matvec: Callable[[int], None] | None):
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A, self.damping, self.on_matvec = A, float(damping), on_matvec

    def _matmat(self, V: Tensor) -> Tensor:
        out = self.A @ V
        if self.damping:
            out = out + self.damping * V
        if not _all_finite(out):
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
    **kw,
) -> Measurement:
    """:func:`estimate` (``kw``: its ``nullity_bound``, ``scale``, ``on_matvec``, ``start``),
    recorded as a row named ``setting`` of the ``curvature``: the library's one call on an
    operator (``spectrum`` records its rows from their Settings)."""
    est = estimate(A, settings, **kw)
    result = result_of(est, setting=setting, curvature=curvature)
    density = Density(setting, *est.density) if est.density is not None else None
    return Measurement(result, density, est.vectors)


def estimate(
    A,
    settings: EstimatorSettings,
    *,
    nullity_bound: tuple[int, str] | None = None,
    scale: float | None = None,
    on_matvec: Callable[[int], None] | None = None,
    start: Tensor | None = None,
    semidefinite: str | None = None,
    sylvester: tuple | None = None,
) -> Estimate:
    """Estimate the spectrum of the symmetric operator ``A`` (``+ damping * I``).

    ``nullity_bound``: a proven lower bound on the nullity (a GGN's rank), with its reason;
    ``scale``: ``||A||`` to set the null threshold against (a diagonal block measured relative
    to the whole operator); ``start``: Ritz vectors [P, k] of a nearby operator to start
    Lanczos from; ``on_matvec(k)`` is called after every block of ``k`` products.
    """
    s = settings.resolved(A.dtype)
    if s.krylov_device is not None:
        try:
            torch.device(s.krylov_device)
        except RuntimeError:
            raise UsageError(
                f"unknown krylov device {s.krylov_device!r}; use cpu, cuda or cuda:N"
            ) from None
    if not s.exact and s.top + s.bottom > 0:
        check_tol(s.tol, A.dtype)
    bound = nullity_bound if not s.damping else None
    semidefinite = semidefinite if s.damping >= 0 else None  # + damping I, damping >= 0: still PSD
    op = _Observed(A, s.damping, on_matvec)
    plan = None if s.exact else memory.plan_for(op, dataclasses.asdict(s))  # fits, or refuses
    P = op.shape[0]
    t0 = time.perf_counter()
    top, bottom = min(s.top, P), min(s.bottom, P)
    fields: dict = {}
    krylov: dict = {}  # block size and the copies found, for the multiplicity flags
    vectors = None
    if s.exact:
        if P > EXACT_LIMIT:
            raise UsageError(
                f"--exact builds a dense {P} x {P} matrix; it is limited to {EXACT_LIMIT} "
                "parameters: drop --exact, or select fewer with --params"
            )
        M = op.to_dense(block_size=64)
        noise = dense_noise(M)  # trust: the antisymmetric part is rounding noise
        M = (M + M.T) / 2
        evals, evecs = torch.linalg.eigh(M.double())
        resid = torch.linalg.vector_norm(M.double() @ evecs - evecs * evals, dim=0)
        ev, rs = evals.tolist(), resid.tolist()
        vectors = torch.cat([evecs.flip(1)[:, :top], evecs[:, :bottom]], 1).to(op.dtype)
        cond = condition_number(
            ev[::-1][:top],
            ev[:bottom],
            threshold_rel=s.null_threshold,
            dtype=op.dtype,
            exact_spectrum=evals,
            scale=scale,
            noise=noise, proven_nullity=bound, semidefinite=semidefinite, inertia=sylvester,
        )
        method = "exact (dense eigendecomposition)"
        if bound is not None and cond.nullity is not None and cond.nullity < bound[0]:
            # a rank bound is a theorem: fewer eigenvalues in the band means the noise is larger
            method += f"; below the rank bound {bound[0]}: null eigenvalues exceed the threshold"
        fields.update(
            eigenvalues_top=ev[::-1][:top],
            residuals_top=rs[::-1][:top],
            converged_top=[True] * top,
            eigenvalues_bottom=ev[:bottom],
            residuals_bottom=rs[:bottom],
            converged_bottom=[True] * bottom,
            lambda_max=ev[-1],
            lambda_min=ev[0],
            nullity_method=method,
            multiplicity_resolved=True,
        )
        if s.trace:
            fields.update(trace=float(evals.sum()), trace_stderr=0.0, trace_method="exact")
    else:
        cond = None
        if top + bottom > 0:
            lean = plan is not None and plan.krylov == "two-pass"  # the plan's pick: no basis
            eig = (lean_extreme_eigenpairs if lean else extreme_eigenpairs)(
                op,
                top=top,
                bottom=bottom,
                tol=s.tol,
                max_matvecs=s.max_hvps,
                seed=s.seed,
                return_vectors=True,
                start=start,
                stop_on="values",  # the vectors serve as warm starts and the noise estimate
                **({} if lean else dict(
                    max_basis=plan.max_basis, block_size=s.block_size,
                    basis_dtype=getattr(torch, s.krylov_dtype) if s.krylov_dtype else None,
                    basis_device=s.krylov_device)),
            )
            vectors = torch.cat([eig.vectors_top, eig.vectors_bottom], dim=1)
            krylov = {
                "block_size": eig.block_size,
                "copies_top": [int(c) for c in eig.copies_top],
                "copies_bottom": [int(c) for c in eig.copies_bottom],
                "may_repeat_top": [bool(c) for c in eig.may_repeat_top],
                "may_repeat_bottom": [bool(c) for c in eig.may_repeat_bottom],
                "may_miss_top": [bool(c) for c in eig.may_miss_top],
                "may_miss_bottom": [bool(c) for c in eig.may_miss_bottom],
                "strategy": getattr(eig, "strategy", "block"),  # verify: single-vector + proof
                "stages": [list(s) for s in getattr(eig, "stages", ())],  # products per run
                "verification": getattr(eig, "verification", ""),
            }
            checked = true_residuals(op, eig, s.tol, scale)
            fields.update(checked.fields)
            fields.update(multiplicity(eig, P, bound))
            krylov.update(checked.details)
            if top and bottom:
                cond = condition_number(
                    eig.eigenvalues_top,
                    eig.eigenvalues_bottom,
                    threshold_rel=s.null_threshold,
                    dtype=op.dtype,
                    errors_top=checked.errors_top,
                    errors_bottom=checked.errors_bottom,
                    lambda_max=eig.lambda_max,
                    lambda_min=eig.lambda_min,
                    scale=scale,
                    noise=checked.noise, proven_nullity=bound, semidefinite=semidefinite,
                    inertia=sylvester,
                )
                cond = bounded_condition(cond, **checked.kappa)
            else:
                missing = ("--bottom 0 measures only the top end", "lambda_min needs --bottom >= 1") \
                    if top else ("--top 0 measures only the bottom end", "lambda_max needs --top >= 1")
                fields.update(
                    lambda_min=None if not bottom else fields["lambda_min"],
                    lambda_max=None if not top else fields["lambda_max"],
                    condition_definition=(
                        f"not measured: {missing[0]}, whose last Ritz value is not an eigenvalue; "
                        f"kappa and {missing[1]}"
                    ),
                )
        if s.trace:
            estimator = hutchpp if s.trace_method == "hutch++" else hutchinson
            tr = estimator(op, s.probes, seed=s.seed, block_size=plan.probe_block)
            fields.update(
                trace=float(tr.value), trace_stderr=float(tr.stderr), trace_method=s.trace_method
            )
    if s.density:
        d = slq_density(
            op, num_probes=s.density_probes, lanczos_steps=min(s.density_steps, P), seed=s.seed,
            probe_block=plan.density_block if plan is not None else None,
        )
    inertia = _inertia(evals if s.exact else None, d if s.density else None, cond, s, op.dtype)
    if cond is not None:
        fields.update(
            condition_number=_opt_float(cond.value),
            condition_definition=cond.definition,
            condition_resolved=cond.resolved,
            condition_bound=_opt_float(cond.bound),
            condition_error=_opt_float(cond.error),
            definiteness=cond.definiteness,
            threshold=_opt_float(cond.threshold),
            lambda_min_positive=_opt_float(cond.lambda_min_positive),
            nullity=None if cond.nullity_is_lower_bound else cond.nullity,  # table: ">= bound"
        )
        inertia["noise"] = cond.noise
        if cond.nullity is not None and "nullity_method" not in fields:
            fields["nullity_method"] = "counted from the computed eigenvalues"
    if bound is not None:
        fields.update(nullity_lower_bound=bound[0], nullity_bound_reason=bound[1])
    details = {**inertia, **krylov, "peak_memory_mb": peak_memory_mb(op.device),
               **({"memory_plan": plan.as_dict()} if plan is not None else {})}
    grid = (_floats(d.grid), _floats(d.density)) if s.density else None
    return Estimate(fields, details, P, op.matvecs, time.perf_counter() - t0,
                    str(op.dtype).replace("torch.", ""), str(op.device), s.seed, s.damping,
                    grid, vectors)


def _inertia(evals, density, cond, s, dtype: torch.dtype) -> dict:
    """The negative-eigenvalue count and mass, exactly or by SLQ, when either is at hand."""
    from condlab.estimators.inertia import inertia_from_quadrature, inertia_from_spectrum

    if evals is None and density is None:
        return {}
    if cond is not None:
        threshold = cond.threshold
    else:
        scale = evals.abs().max() if evals is not None else density.nodes.abs().max()
        rel = s.null_threshold if s.null_threshold is not None else noise_rel(dtype)
        threshold = rel * float(scale)
    if evals is not None:
        return inertia_from_spectrum(evals, threshold)
    return inertia_from_quadrature(density.nodes, density.weights, density.dim, threshold)


def check_tol(tol: float, dtype: torch.dtype) -> None:
    """Refuse a tolerance below the residual the dtype's arithmetic can reach."""
    floor = noise_rel(dtype)
    if tol < floor:
        name = dtype_name(dtype)
        fix = "or use --dtype float64" if dtype != torch.float64 else "(float64's limit)"
        raise UsageError(
            f"--tol {tol:g} is below what {name} arithmetic resolves: residuals cannot fall "
            f"below about {floor:.1e} * ||A|| in {name}; use --tol >= {floor:.1e} {fix}"
        )


@dataclass(frozen=True)
class _Checked:
    fields: dict  # the record's eigenvalue, residual and convergence fields
    errors_top: list[float]  # for kappa: backed at the ends, residual bounds inside the lists
    errors_bottom: list[float]
    details: dict  # the certificates, for the JSON
    kappa: dict  # what bounded_condition needs
    noise: float | None = None  # the rounding noise measured on the Ritz block (trust)


def true_residuals(
    op: LinearOperator, eig: ExtremeEigs, tol: float, scale: float | None = None
) -> _Checked:
    """The record's fields from a run whose residuals are the true ``||A y - theta y||``
    (``extreme_eigenpairs`` measures them after the run) and whose errors are backed
    (:mod:`condlab.estimators.bounds`). A value is flagged converged when its true residual is
    ``<= tol * ||A||`` (or, for a run that stopped on values, its backed error) and, for the end
    values (``lambda_max``, ``lambda_min``), its certified
    error too: the listed end is then the true extreme eigenvalue within that error. Values
    inside a list: ``certified_*`` (every listed value's error within ``tol * ||A||``),
    ``errors_*`` and ``certificate_*`` in the details.
    """
    noise = None
    if eig.checked_products is not None and eig.checked_products.shape[1]:
        Y = torch.cat([eig.vectors_top, eig.vectors_bottom], dim=1)
        finite = torch.isfinite(torch.cat([eig.eigenvalues_top, eig.eigenvalues_bottom]))
        noise = block_noise(Y[:, finite.to(Y.device)], eig.checked_products, op.shape[0])
    anorm = max(abs(eig.lambda_max), abs(eig.lambda_min), abs(scale or 0.0))
    limit = tol * anorm
    ends = {}
    for end in ("top", "bottom"):
        res = torch.as_tensor(getattr(eig, f"residuals_{end}"), dtype=torch.float64)
        err = torch.as_tensor(getattr(eig, f"errors_{end}"), dtype=torch.float64)
        null = end == "bottom" and len(res) and abs(float(getattr(eig, f"eigenvalues_{end}")[0])) \
            <= noise_rel(op.dtype) * anorm  # a null lambda_min: definiteness says the rest
        by_value = eig.stop_rule == "values"
        ok = [bool((r <= limit or (by_value and e <= limit)) and (i > 0 or null or e <= limit))
              for i, (r, e) in enumerate(zip(res, err))]
        ends[end] = (res, err, ok)
    (rt, et, ct), (rb, eb, cb) = ends["top"], ends["bottom"]
    certified = {end: bool((ends[end][1] <= limit).all()) for end in ends}
    details = {
        f"{k}_{end}": v for end in ("top", "bottom") for k, v in (
            ("errors", _floats(ends[end][1])),
            ("error_kinds", list(getattr(eig, f"error_kinds_{end}"))),
            ("certified", certified[end]),
            ("certificate", getattr(eig, f"certificate_{end}")),
        )
    }
    details.update(lambda_max_upper=eig.lambda_max_upper, lambda_min_lower=eig.lambda_min_lower,
                   stop_reason=eig.stop_reason, stop_rule=eig.stop_rule)
    why = eig.certificate_bottom if not bool(eb[:1].le(limit).all()) else eig.certificate_top
    return _Checked(
        fields=dict(
            eigenvalues_top=_floats(eig.eigenvalues_top),
            residuals_top=rt.tolist(),
            converged_top=ct,
            eigenvalues_bottom=_floats(eig.eigenvalues_bottom),
            residuals_bottom=rb.tolist(),
            converged_bottom=cb,
            lambda_max=float(eig.lambda_max),
            lambda_min=float(eig.lambda_min),
        ),
        errors_top=_kappa_errors(et, rt),
        errors_bottom=_kappa_errors(eb, rb),
        details=details,
        kappa=dict(certified_top=bool(et[:1].le(limit).all()),  # kappa needs only the ends
                   certified_bottom=bool(eb[:1].le(limit).all()), why=why,
                   theta_max=float(eig.lambda_max), theta_min=float(eig.lambda_min),
                   lambda_min_lower=float(eig.lambda_min_lower)),
        noise=noise,
    )


def _kappa_errors(err: Tensor, res: Tensor) -> list[float]:
    """The errors kappa uses: the ends' backed errors; inside a list the residual bound (an
    eigenvalue within r: lambda_min+ is the smallest positive one the run found)."""
    return [float(e) if i == 0 else float(min(e, r)) for i, (e, r) in enumerate(zip(err, res))]


def multiplicity(eig: ExtremeEigs, P: int, bound: tuple[int, str] | None) -> dict:
    """Whether the listed eigenvalues show every copy of a repeated eigenvalue.

    A Krylov run with block size ``b`` (``eig.block_size``, 1 for single-vector Lanczos) sees at
    most ``b`` directions of one eigenspace, so a multiplicity above ``b`` is not resolved: the
    list may show such an eigenvalue fewer times than it occurs, and a later value in its
    place. Resolved when the run reached the full dimension ``P``, or when no listed value's
    cluster filled the block before the end of its list (``eig.may_miss_*``) and no proven
    nullity exceeds ``b`` while the bottom list is longer than ``b``.
    """
    b = int(getattr(eig, "block_size", 1) or 1)
    if eig.max_basis >= P and eig.matvecs >= P and eig.restarts == 0:
        return dict(multiplicity_resolved=True, block_size=b)
    flags = [getattr(eig, f"may_miss_{end}", None) for end in ("top", "bottom")]
    may = any(bool(f.any()) for f in flags if f is not None) if any(
        f is not None for f in flags) else True
    bottom = len(eig.eigenvalues_bottom)
    if bound is not None and bound[0] > b and bottom > b:
        note = (
            f"not resolved: the null space has dimension >= {bound[0]} ({bound[1]}) but a Krylov "
            f"run of block size {b} lists at most {b} copies of an eigenvalue; the bottom list "
            f"skips the other copies (raise --block-size to {bottom}, or --exact on a small model)"
        )
    elif may:
        note = (
            f"may not be resolved: a Krylov run of block size {b} lists an eigenvalue of "
            f"multiplicity above {b} at most {b} times; a value whose cluster reached {b} copies "
            f"before the end of its list (details may_miss_*) can occur more often than listed "
            f"(raise --block-size to the number of eigenvalues asked for)"
        )
    else:
        return dict(multiplicity_resolved=True, block_size=b)
    return dict(multiplicity_resolved=False, multiplicity_note=note, block_size=b)


def _floats(x) -> list[float]:
    if isinstance(x, Tensor):
        return [float(v) for v in x.detach().cpu().reshape(-1)]
    return [float(v) for v in x]


def _opt_float(x) -> float | None:
    return None if x is None else float(x)
