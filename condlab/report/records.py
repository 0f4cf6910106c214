"""The result record of one measured setting, and the JSON document that holds several.

JSON (stable; a field that was not asked for is null)::

    {"condlab_version", "command", "config" (resolved), "versions", "results": [SpectrumResult]}

The first fields of :class:`SpectrumResult` are the documented schema; the later ones add
provenance (convergence flags, modes, dtype) and setting-specific details.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_FIELDS = (
    "setting",
    "curvature",
    "preconditioner",
    "normalization",
    "n_params",
    "n_samples",
    "eigenvalues_top",
    "eigenvalues_bottom",
    "residuals_top",
    "residuals_bottom",
    "lambda_max",
    "lambda_min",
    "condition_number",
    "condition_definition",
    "nullity",
    "trace",
    "trace_stderr",
    "hvp_count",
    "seconds",
)


@dataclass(frozen=True)
class SpectrumResult:
    """What condlab measured for one setting (baseline, a preconditioner, a normalization, a layer).

    ``eigenvalues_top`` are descending, ``eigenvalues_bottom`` ascending; ``residuals_*`` are
    ``||A v - lambda v||`` of the same Ritz pairs. ``condition_number`` follows
    ``condition_definition``, a sentence naming the formula and the threshold it used.
    """

    setting: str
    curvature: str
    preconditioner: str | None
    normalization: str | None
    n_params: int
    n_samples: int
    eigenvalues_top: list[float] | None = None
    eigenvalues_bottom: list[float] | None = None
    residuals_top: list[float] | None = None
    residuals_bottom: list[float] | None = None
    lambda_max: float | None = None
    lambda_min: float | None = None
    condition_number: float | None = None
    condition_definition: str | None = None
    nullity: int | None = None
    trace: float | None = None
    trace_stderr: float | None = None
    hvp_count: int = 0
    seconds: float = 0.0
    # -- provenance and details beyond the documented schema --------------------------------
    converged_top: list[bool] | None = None
    converged_bottom: list[bool] | None = None
    definiteness: str | None = None
    threshold: float | None = None  # null threshold: |lambda| <= threshold counts as zero
    condition_resolved: bool | None = None  # False: the dtype cannot resolve kappa (see bound)
    condition_bound: float | None = None  # not resolved: kappa is above this
    condition_error: float | None = None  # bound on the relative error of condition_number
    lambda_min_positive: float | None = None
    nullity_method: str | None = None
    nullity_lower_bound: int | None = None  # proven (a GGN's rank), whatever the estimate
    nullity_bound_reason: str | None = None
    multiplicity_resolved: bool | None = None  # False: repeated eigenvalues may be listed once
    multiplicity_note: str | None = None
    block_size: int | None = None  # Krylov block size: copies of an eigenvalue it can list
    trace_method: str | None = None
    damping: float = 0.0
    function_change: float | None = None  # normalized settings: max |f_new - f_old| on the data
    params_added: int | None = None  # normalized settings: parameters the normalization added
    predicted_nullity: int | None = None  # null directions the model's normalizations create
    layer: str | None = None
    objective: str | None = None  # whose curvature: H, H+λI, P^-½HP^-½+λI, G[layer], ...
    objective_lambda: float | None = None  # the weight decay in the objective (None: none)
    stability: dict[str, Any] | None = None  # lambda_max against the method's threshold
    modes: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    device: str | None = None
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # provenance; nothing reads it back

    @property
    def converged(self) -> bool:
        flags = (self.converged_top or []) + (self.converged_bottom or [])
        return all(flags)

    @property
    def kappa_scale_free(self) -> bool:
        """Whether κ is the same for ``P`` and ``c P``: not for a preconditioned row with a shift
        after ``P`` (decoupled decay ``P^-1/2 A P^-1/2 + lam I``, or damping), whose κ moves
        with ``P``'s arbitrary scale (no κ ratio is printed for it)."""
        if self.preconditioner is None:
            return True
        decoupled = self.details.get("decay") == "decoupled" and self.details.get("weight_decay")
        return not (decoupled or self.damping)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({**asdict(self), "kappa_scale_free": self.kappa_scale_free})

    def scalar_row(self) -> dict[str, Any]:
        """The scalar fields, one CSV row (lists and nested details left out)."""
        row = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (list, dict)):
                continue
            row[f.name] = v
        row["converged"] = self.converged
        for k, v in self.details.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[f"details.{k}"] = v
        return jsonable(row)

    def eigen_rows(self) -> list[dict[str, Any]]:
        """Eigenvalues in long format: one row per (setting, end, rank)."""
        rows = []
        for end in ("top", "bottom"):
            vals = getattr(self, f"eigenvalues_{end}") or []
            res = getattr(self, f"residuals_{end}") or [None] * len(vals)
            conv = getattr(self, f"converged_{end}") or [None] * len(vals)
            for rank, (v, r, c) in enumerate(zip(vals, res, conv), start=1):
                rows.append(
                    {
                        "setting": self.setting,
                        "layer": self.layer,
                        "end": end,
                        "rank": rank,
                        "eigenvalue": v,
                        "residual": r,
                        "converged": c,
                    }
                )
        return jsonable(rows)


def result_of(estimate, *, setting: str = "baseline", curvature: str = "hessian",
              details: dict | None = None, **labels: Any) -> SpectrumResult:
    """The record of one :class:`condlab.measure.Estimate`: its numbers under the row's name
    and ``labels`` (the fields of :class:`SpectrumResult` that say what was measured: its
    preconditioner, normalization, layer, objective, stability, n_samples, modes, ...)."""
    e = estimate
    return SpectrumResult(
        setting=setting, curvature=curvature, preconditioner=labels.pop("preconditioner", None),
        normalization=labels.pop("normalization", None), n_params=e.n_params,
        n_samples=labels.pop("n_samples", 0), hvp_count=e.hvp_count, seconds=e.seconds,
        damping=e.damping, dtype=e.dtype, device=e.device, seed=e.seed,
        details={**(details or {}), **e.details}, **labels, **e.fields,
    )


def record(setting, estimate, curvature: str) -> SpectrumResult:
    """The record of one :class:`condlab.settings.Setting`'s estimate: its numbers, what the
    setting is (name, objective, preconditioner, normalization, layer, nullity prior), the
    problem's sample count and modes, and ``lambda_max`` against the setting's stability
    threshold (fixed when the setting was built)."""
    lam = estimate.fields.get("lambda_max")
    s = setting
    return result_of(
        estimate, setting=s.name, curvature=curvature, preconditioner=s.preconditioner,
        normalization=s.normalization, layer=s.layer, n_samples=s.problem.n_samples,
        modes=dict(s.problem.modes), objective=s.objective, objective_lambda=s.objective_lambda,
        stability=s.stability.of(lam) if s.stability is not None else None,
        function_change=s.function_change, params_added=s.params_added,
        predicted_nullity=s.predicted_nullity, details=s.details,
    )


def jsonable(x: Any) -> Any:
    """Floats that JSON cannot hold (NaN, Inf) become null; tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def document(command: str, config: dict, results: list[SpectrumResult], **extra) -> dict:
    """The JSON document: version, command, resolved config, library versions, results."""
    import platform

    import torch

    from condlab import __version__

    return jsonable(
        {
            "condlab_version": __version__,
            "command": command,
            "config": config,
            "versions": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            "results": [r.to_dict() for r in results],
            **extra,
        }
    )


