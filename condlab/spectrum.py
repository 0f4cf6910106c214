"""``condlab spectrum`` as a library function: config in, result records out.

    report = run_spectrum(SpectrumConfig(checkpoint="ckpt.pt", top=5, bottom=3))

The pipeline flows one way, one module per stage::

    SpectrumConfig (condlab.config: the stages' options)
      -> Inputs      condlab.inputs.read_inputs       every file read once
      -> Problem     condlab.problem.make_problem     the loss as a function of theta
      -> [Setting]   condlab.settings.build_settings  operator, objective, stability, nullity prior
      -> Estimate    condlab.measure.estimate         numbers only
      -> records     Setting.record -> SpectrumResult (condlab.report.records)
      -> report      condlab.report.tables / files    (the CLI renders)

Every setting is built before the first is measured, so one that cannot be built fails the run
before any eigenvalue is computed. The one step back: a normalized setting is a new Problem,
which :mod:`condlab.settings` builds with :func:`condlab.problem.make_problem`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from condlab.config import SpectrumConfig
from condlab.inputs import Inputs, read_inputs, set_threads
from condlab.measure import Density, estimate
from condlab.problem import make_problem
from condlab.report.records import SpectrumResult
from condlab.settings import build_settings, ggn_nullity_bound  # noqa: F401  (re-exported)

# on_progress(setting, hvps_done, hvp_budget): called after every block of products
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SpectrumReport:
    config: dict
    results: list[SpectrumResult]
    densities: list[Density]
    source: str
    vectors: dict = field(default_factory=dict)  # setting -> Ritz vectors [P, k] (warm starts)
    loss: dict | None = None  # the loss and how its batches were weighted


def run_spectrum(
    cfg: SpectrumConfig,
    *,
    on_progress: Progress | None = None,
    inputs: Inputs | None = None,
    threads: int | None = None,
    starts: dict | None = None,
    loaded: Inputs | None = None,
) -> SpectrumReport:
    """Measure every setting ``cfg`` asks for (see :func:`condlab.settings.build_settings`).

    ``inputs``: already read (a training loop's model, the demo's); else read as ``cfg`` says.
    ``threads``: torch CPU threads; None picks one thread for small problems, where intra-op
    parallelism costs more than it gains, and torch's default otherwise. ``starts``: setting ->
    Ritz vectors of a nearby model (the report's ``vectors`` from the previous checkpoint of a
    run) to warm-start Lanczos from. ``loaded``: the old name of ``inputs``.
    """
    inputs = inputs or loaded or read_inputs(cfg)
    set_threads(threads, inputs)
    problem = make_problem(inputs, cfg)
    settings = build_settings(cfg, problem, inputs)
    est = cfg.estimator
    results: list[SpectrumResult] = []
    densities: list[Density] = []
    vectors: dict = {}
    for s in settings:
        base = results[0] if results else None
        scale = (max(abs(base.lambda_max or 0.0), abs(base.lambda_min or 0.0)) or None
                 if s.relative_to_baseline and base is not None else None)
        e = estimate(s.operator, est, nullity_bound=s.nullity_bound, scale=scale,
                     on_matvec=_ticker(on_progress, s.name, est.hvp_budget),
                     start=(starts or {}).get(s.name))
        results.append(s.record(e, cfg.curvature))
        if e.vectors is not None:
            vectors[s.name] = e.vectors
        if e.density is not None:
            densities.append(Density(s.name, *e.density))
    return SpectrumReport(cfg.to_dict(), results, densities, inputs.source, vectors,
                          loss_record(problem))


def _ticker(on_progress: Progress | None, setting: str, budget: int):
    """``on_matvec(k)`` for one setting: the running product count, to ``on_progress``."""
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if on_progress is not None:
            on_progress(setting, done[0], budget)

    return tick


def loss_record(problem) -> dict:
    """What the loss was and how batches were weighted, for the table and the JSON."""
    spec = problem.loss_spec
    return {
        "name": spec.name,
        "batch_weighting": "tokens" if spec.weighting == "tokens" else "samples",
        "ignore_index": spec.ignore_index if spec.weighting == "tokens" else None,
        "label_smoothing": spec.label_smoothing,
        "batches": len(problem.sizes),
        "count": problem.n_count,
        "description": spec.describe(),
    }
