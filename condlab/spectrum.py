"""``condlab spectrum`` as a library function: config in, result records out.

    report = run_spectrum(SpectrumConfig(checkpoint="ckpt.pt", top=5, bottom=3))

Settings are measured in order: the baseline, then each preconditioner, then each
normalization, then (``per_layer``) each parameter tensor's diagonal block of the baseline.
Every setting is built before the first is measured: one that cannot be built (a zero
diagonal, a missing optimizer state) fails the run before any eigenvalue is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from condlab.build import Loaded, load, make_problem, set_threads
from condlab.config import SpectrumConfig
from condlab.losses import semidefinite_reason
from condlab.measure import Density, EstimatorSettings, measure
from condlab.normalization import softmax_shift_nullity
from condlab.normalization.batching import batch_dependence
from condlab.operators.curvature import curvature_operator
from condlab.preconditioners.build import congruence_proof, ostrowski_check
from condlab.preconditioners.zero_state import zero_state
from condlab.report.records import SpectrumResult

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


def ggn_nullity_bound(problem, curvature: str) -> tuple[int, str] | None:
    """A lower bound on a GGN's nullity from its rank, for any model.

    ``G = sum_n J_n^T H_n J_n`` has rank at most ``sum_n rank(H_n)``: ``C - 1`` per sample for
    softmax cross-entropy over ``C`` logits (``H_n = diag(p) - p p^T``), ``M`` for mean squared
    error over ``M`` outputs. So ``nullity >= P - N (C - 1)`` (cross-entropy) or ``P - N M``.
    None for the Hessian, other losses, or a bound that is not positive.
    """
    import torch

    if curvature != "ggn" or problem.loss_name not in ("cross-entropy", "mse") or not problem.batches:
        return None
    X, _ = problem.batches[0]
    with torch.no_grad():
        out = problem.outputs(problem.theta, X, 0)
    from condlab.load.structure import batch_len

    per_sample = int(out.numel()) // max(1, batch_len(X))
    N, P = problem.n_samples, problem.n_params
    if problem.loss_name == "cross-entropy":
        rank, why = N * (per_sample - 1), f"a cross-entropy GGN has rank <= N (C - 1) = {N} x {per_sample - 1}"
    else:
        rank, why = N * per_sample, f"an MSE GGN has rank <= N x outputs = {N} x {per_sample}"
    return (P - rank, f"P - {rank}: {why}") if P > rank else None


def with_stability(result: SpectrumResult, cfg: SpectrumConfig) -> SpectrumResult:
    """Add the preconditioned sharpness against the method's stability threshold.

    ``lambda_max(P^-1 A) = lambda_max(P^-1/2 A P^-1/2)``; thresholds: ``2 / lr`` (gd),
    ``(2 + 2 beta1) / lr`` (heavy ball), ``(2 + 2 beta1) / ((1 - beta1) lr)`` (Adam-style EMA
    momentum). See :mod:`condlab.stability`. The lr is ``--lr`` for every row, else, for a row
    built from an optimizer's state, the lr in its ``param_groups`` (the scale that state's
    ``P`` goes with); a row with neither is returned unchanged.
    """
    import dataclasses

    from condlab.stability import edge_of_stability, stability_threshold

    d = result.details
    lr = cfg.lr if cfg.lr is not None else d.get("optimizer_lr")
    if lr is None or result.lambda_max is None:
        return result
    source = "--lr" if cfg.lr is not None else "the optimizer state's param_groups"
    method = d.get("stability_method", "gd")
    beta1 = cfg.beta1 if cfg.beta1 is not None else d.get("optimizer_beta1")
    if beta1 is None:
        beta1 = 0.9 if method == "adam" else 0.0
    if method == "gd" and beta1:
        method = "momentum"
    threshold = stability_threshold(method, lr, beta1)
    eos = edge_of_stability(result.lambda_max, threshold)
    stab = {**eos, "method": method, "lr": lr, "beta1": beta1, "lr_source": source}
    return dataclasses.replace(result, details={**d, "stability": stab})


def estimator_settings(cfg: SpectrumConfig) -> EstimatorSettings:
    """The estimator fields of a run's config (same names in both), with the resolved tol."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(EstimatorSettings)}
    values = {n: getattr(cfg, n) for n in names}
    return EstimatorSettings(**{**values, "tol": cfg.resolved_tol})


def _budget(est: EstimatorSettings) -> int:
    return (est.max_hvps if est.top + est.bottom else 0) + (est.probes if est.trace else 0) + (
        est.density_probes * est.density_steps if est.density else 0
    )


def run_spectrum(
    cfg: SpectrumConfig,
    *,
    on_progress: Progress | None = None,
    loaded: Loaded | None = None,
    threads: int | None = None,
    starts: dict | None = None,
) -> SpectrumReport:
    """Measure every setting ``cfg`` asks for; see the module docstring for the order.

    ``threads``: torch CPU threads; None picks one thread for small problems, where
    intra-op parallelism costs more than it gains, and torch's default otherwise.
    ``starts``: setting -> Ritz vectors of a nearby model (the report's ``vectors`` from the
    previous checkpoint of a run) to warm-start Lanczos from.
    """
    loaded = loaded or load(cfg)
    set_threads(threads, loaded)
    est = estimator_settings(cfg)
    results: list[SpectrumResult] = []
    densities: list[Density] = []
    vectors: dict = {}

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
            start=(starts or {}).get(setting),
            semidefinite=semidefinite_reason(cfg.curvature, problem.loss_name),
            **kw,
        )
        results.append(batch_dependence(m.result, problem))
        if m.vectors is not None:
            vectors[setting] = m.vectors
        if m.density is not None:
            densities.append(m.density)
        return m.result

    from condlab.normalization import predicted_nullity

    problem = make_problem(loaded, cfg)
    A = curvature_operator(problem, cfg.curvature, block_size=cfg.product_block)
    null = predicted_nullity(problem.model, curvature=cfg.curvature, bn_mode=cfg.bn_mode)
    null += softmax_shift_nullity(problem.model, loaded.loss)
    from condlab.settings import (
        normalized_settings,
        objective,
        preconditioned_settings,
        regularized_baseline,
    )

    # every setting is built (a preconditioner with a zero diagonal, a missing optimizer state,
    # a model that cannot be normalized: each refused) before the first eigenvalue is computed
    preconditioned = list(preconditioned_settings(cfg, problem, A, loaded))
    normalized = list(normalized_settings(cfg, loaded))

    # a rank bound holds for A and for P^-1/2 A P^-1/2, not once weight decay adds lambda I
    def bound(prob):
        return None if cfg.weight_decay and cfg.decay != "l1" else ggn_nullity_bound(prob, cfg.curvature)

    run("baseline", regularized_baseline(cfg, A), problem, predicted_nullity=null,
        details={"stability_method": "momentum" if cfg.beta1 else "gd", **objective(cfg)},
        nullity_bound=bound(problem))
    for name, op, kw in preconditioned:  # trust: Sylvester and Ostrowski from the baseline
        proof = congruence_proof(results[0], damping=cfg.damping, weight_decay=cfg.weight_decay,
                                 decay=cfg.decay)
        run(name, op, problem, **{"nullity_bound": bound(problem), **proof, **kw})
        results[-1] = ostrowski_check(results[-1], results[0])
        results[-1], extra = zero_state(results[-1], op, vectors.get(name), problem, kw)
        if extra:  # lambda_max dominated by eps-only coordinates: also measured without them
            run(extra[0], extra[1], problem, **extra[2])
    for name, prob, kw in normalized:
        op = regularized_baseline(cfg, curvature_operator(prob, cfg.curvature, cfg.product_block))
        run(name, op, prob, nullity_bound=bound(prob), **kw)
    results[:] = [with_stability(r, cfg) for r in results]

    if cfg.per_layer:
        base = results[0]
        scale = max(abs(base.lambda_max or 0.0), abs(base.lambda_min or 0.0)) or None
        for pname in problem.spec.names:
            sub = problem.restrict([pname])
            op = regularized_baseline(cfg, curvature_operator(sub, cfg.curvature, cfg.product_block))
            label = objective(cfg)
            A = "G" if cfg.curvature == "ggn" else "H"
            label["objective"] = label["objective"].replace(A, f"{A}[{pname}]", 1)
            run(f"layer:{pname}", op, sub, layer=pname, details=label, scale=scale,
                nullity_bound=bound(sub))
    return SpectrumReport(cfg.to_dict(), results, densities, loaded.source, vectors, loss_record(problem))


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
