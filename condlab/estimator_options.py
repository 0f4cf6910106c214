"""The options of the estimate stage (:func:`condlab.measure.estimate`): how to estimate.

Declared apart from the estimators, which need torch, so that the command line lists them
(``--help``) without importing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from condlab.optionfield import (
    BELOW_ONE,
    NONNEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    check_fields,
    default_tol,
    option,
)
from condlab.problem_options import DTYPES

TRACE_METHODS = ("hutch++", "hutchinson")


@dataclass(frozen=True)
class EstimatorSettings:
    """How to estimate. ``tol`` is relative: a pair is flagged converged when its true residual
    ``||A v - lambda v||`` (measured after the run) is ``<= tol * ||A||`` (default: 1e-6 in
    float64, else 1e-4). The null threshold is separate: ``NOISE_FACTOR * eps(dtype) * ||A||``
    (:mod:`condlab.estimators.condition`), or ``null_threshold * ||A||`` when given."""

    GROUP: ClassVar[str] = "Estimators"

    seed: int = option(int, 0, "Seeds Lanczos, probes and model initialization.", group="Operator",
                       advanced=True)
    damping: float = option(float, 0.0, "Measure A + damping * I.", group="Operator",
                            check=NONNEGATIVE, advanced=True)
    top: int = option(int, 5, "Largest eigenvalues to report.", check=NONNEGATIVE)
    bottom: int = option(int, 3, "Smallest eigenvalues to report.", check=NONNEGATIVE)
    tol: float | None = option(
        float, None, "Convergence: a pair is flagged converged when its true residual "
        "||Av - lambda v|| <= tol * ||A||; a tol below the dtype's noise is refused.",
        check=UNIT_INTERVAL, default_text="1e-6 in float64, 1e-4 in float32")
    max_hvps: int = option(int, 1000, "Budget of curvature products for the eigenvalues.",
                           check=POSITIVE)
    max_basis: int | None = option(int, None, "Lanczos vectors kept before a thick restart.",
                                   check=POSITIVE, default_text="no restart", advanced=True)
    block_size: int | None = option(
        int, None, "Block Lanczos block size b: eigenvalues repeated up to b times are found with "
        "their multiplicity; 1 is single-vector Lanczos. Unset, a top list on a CPU is single-vector "
        "Lanczos verified on the deflated operator (the block runs where that fails).", check=POSITIVE,
        default_text="8 on CPU, 16 on GPU, at most P/8", advanced=True)
    krylov_dtype: str | None = option(
        str, None, "Store the Krylov basis [P, max-basis] in this dtype (float32 halves a float64 "
        "run's memory).", choices=DTYPES, default_text="the operator's", advanced=True)
    krylov_device: str | None = option(
        str, None, "Keep the Krylov basis on this device, e.g. cpu for a large model on a GPU.",
        default_text="the operator's", advanced=True)
    memory_limit: str | None = option(
        str, None, "Bytes the process may use in all, e.g. 12G or 6e9: the memory plan sizes the "
        "Lanczos basis and the product and probe blocks to it and refuses a run that cannot fit, "
        "before any work.", default_text="what the machine, its cgroup and ulimit -v allow",
        advanced=True)
    null_threshold: float | None = option(
        float, None, "Eigenvalues with |lambda| <= this * ||A|| count as zero.", check=BELOW_ONE,
        default_text="32 eps(dtype), the arithmetic noise", advanced=True)
    trace: bool = option(bool, False, "Estimate the trace with a standard error.")
    trace_method: str = option(str, "hutch++", "The trace estimator.", choices=TRACE_METHODS,
                               advanced=True)
    probes: int = option(int, 100, "Products spent on the trace (and on a Hutchinson diagonal).",
                         check=POSITIVE, advanced=True)
    density: bool = option(bool, False, "Spectral density by stochastic Lanczos quadrature, "
                           "written as a CSV grid.")
    density_probes: int = option(int, 8, "Random starts of the spectral density.", check=POSITIVE,
                                 advanced=True)
    density_steps: int = option(int, 80, "Lanczos steps per start of the spectral density.",
                                check=POSITIVE, advanced=True)
    exact: bool = option(bool, False, "Dense eigendecomposition (small models): exact nullity and "
                         "positive-part kappa.")

    def __post_init__(self) -> None:
        check_fields(self)

    def resolved(self, dtype) -> EstimatorSettings:
        """These settings with ``tol`` (when None) set to the default for ``dtype``."""
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))

    @property
    def estimator(self) -> EstimatorSettings:
        """Only the estimator fields (of a :class:`condlab.config.SpectrumConfig` too)."""
        names = [f.name for f in dataclasses.fields(EstimatorSettings)]
        return EstimatorSettings(**{n: getattr(self, n) for n in names})

    @property
    def hvp_budget(self) -> int:
        """The products these settings may spend, for a progress bar."""
        return ((self.max_hvps if self.top + self.bottom else 0) + (self.probes if self.trace else 0)
                + (self.density_probes * self.density_steps if self.density else 0))
