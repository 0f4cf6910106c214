"""``condlab spectrum`` as a library function: config in, result records out.

    report = run_spectrum(SpectrumConfig(checkpoint="ckpt.pt", top=5, bottom=3))

Settings are measured in order: the baseline, then each preconditioner, then each
normalization, then (``per_layer``) each parameter tensor's diagonal block of the baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from condlab.build import Loaded, load, make_problem
from condlab.config import SpectrumConfig
from condlab.measure import Density, EstimatorSettings, measure
from condlab.operators.curvature import curvature_operator
from condlab.report.records import SpectrumResult

# on_progress(setting, hvps_done, hvp_budget): called after every block of products
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SpectrumReport:
    config: dict
    results: list[SpectrumResult]
    densities: list[Density]
    source: str


def estimator_settings(cfg: SpectrumConfig) -> EstimatorSettings:
    return EstimatorSettings(
        top=cfg.top,
        bottom=cfg.bottom,
        tol=cfg.resolved_tol,
        max_hvps=cfg.max_hvps,
        max_basis=cfg.max_basis,
        damping=cfg.damping,
        null_threshold=cfg.null_threshold,
        trace=cfg.trace,
        trace_method=cfg.trace_method,
        probes=cfg.probes,
        density=cfg.density,
        density_probes=cfg.density_probes,
        density_steps=cfg.density_steps,
        exact=cfg.exact,
        seed=cfg.seed,
    )


def _budget(est: EstimatorSettings) -> int:
    return (est.max_hvps if est.top + est.bottom else 0) + (est.probes if est.trace else 0) + (
        est.density_probes * est.density_steps if est.density else 0
    )


def run_spectrum(
    cfg: SpectrumConfig, *, on_progress: Progress | None = None, loaded: Loaded | None = None
) -> SpectrumReport:
    """Measure every setting ``cfg`` asks for; see the module docstring for the order."""
    loaded = loaded or load(cfg)
    est = estimator_settings(cfg)
    results: list[SpectrumResult] = []
    densities: list[Density] = []

    def run(setting: str, A, problem, **kw) -> SpectrumResult:
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if on_progress is not None:
                on_progress(setting, done[0], _budget(est))

        m = measure(
            A,
            est,
            setting=setting,
            curvature=cfg.curvature,
            n_samples=problem.n_samples,
            modes=problem.modes,
            on_matvec=tick,
            **kw,
        )
        results.append(m.result)
        if m.density is not None:
            densities.append(m.density)
        return m.result

    from condlab.normalization import predicted_nullity

    problem = make_problem(loaded, cfg)
    A = curvature_operator(problem, cfg.curvature, block_size=cfg.block_size)
    null = predicted_nullity(problem.model, curvature=cfg.curvature, bn_mode=cfg.bn_mode)
    base = run("baseline", A, problem, predicted_nullity=null)

    from condlab.settings import normalized_settings, preconditioned_settings

    for name, op, kw in preconditioned_settings(cfg, problem, A, baseline=base):
        run(name, op, problem, **kw)
    for name, prob, kw in normalized_settings(cfg, loaded):
        run(name, curvature_operator(prob, cfg.curvature, block_size=cfg.block_size), prob, **kw)

    if cfg.per_layer:
        for pname in problem.spec.names:
            sub = problem.restrict([pname])
            run(f"layer:{pname}", curvature_operator(sub, cfg.curvature, cfg.block_size), sub, layer=pname)
    return SpectrumReport(cfg.to_dict(), results, densities, loaded.source)
