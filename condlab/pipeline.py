"""``condlab spectrum`` as a library function: config in, result records out.

    report = condlab.spectrum(model, "cross-entropy", loader, top=5, bottom=3)   # one call
    report = run_spectrum(SpectrumConfig(checkpoint="ckpt.pt", top=5, bottom=3))  # the CLI's

The pipeline flows one way, one module per stage::

    SpectrumConfig (condlab.config: the stages' options)
      -> Inputs      condlab.inputs.read_inputs       every file read once
      -> Problem     condlab.problem.make_problem     the loss as a function of theta
      -> [Setting]   condlab.settings.build_settings  operator, objective, stability, nullity prior
      per setting:
      -> proofs      condlab.consistency.proven       what is proven before (rank, inertia, PSD)
      -> Estimate    condlab.measure.estimate         numbers only
      -> records     condlab.report.records.record     -> SpectrumResult
      -> checks      condlab.consistency.checked      what the numbers alone do not say
      -> report      condlab.report.tables / files    (the CLI renders)

Every setting is built before the first is measured, so one that cannot be built fails the run
before any eigenvalue is computed. The one step back: a normalized setting is a new Problem,
which :mod:`condlab.settings` builds with :func:`condlab.problem.make_problem`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from condlab.config import SpectrumConfig
from condlab.consistency import checked, proven
from condlab.inputs import Inputs, read_inputs, set_threads
from condlab.measure import Density, estimate
from condlab.problem import make_problem
from condlab.report.records import SpectrumResult, record
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

    def __getitem__(self, setting: str) -> SpectrumResult:
        """The result of one setting: ``report["baseline"]``, ``report["optimizer"]``."""
        for r in self.results:
            if r.setting == setting:
                return r
        raise KeyError(f"no setting {setting!r}; measured: {', '.join(r.setting for r in self.results)}")

    def to_dict(self) -> dict:
        """Every field of every result, with the resolved config (the JSON of ``--format json``
        less the versions)."""
        from condlab.report.records import jsonable

        return jsonable({"config": self.config, "source": self.source, "loss": self.loss,
                          "results": [r.to_dict() for r in self.results]})

    def to_frame(self):
        """A pandas DataFrame, one row per setting, of the scalar fields (the CSV's columns)."""
        import pandas as pd

        return pd.DataFrame([r.scalar_row() for r in self.results]).set_index("setting")


LOSS_MODULES = {"CrossEntropyLoss": "cross-entropy", "MSELoss": "mse", "BCEWithLogitsLoss": "bce"}


def _loss_name(loss, options: dict) -> tuple[str, dict]:
    """A torch loss module as condlab's loss name, its ``ignore_index`` and ``label_smoothing``
    carried into the options; one that is not a plain mean (``reduction``, class ``weight``,
    ``pos_weight``) is refused rather than measured as another function."""
    from condlab.errors import UsageError

    if isinstance(loss, str):
        return loss, options
    kind = type(loss).__name__
    if kind not in LOSS_MODULES:
        raise UsageError(f"loss {kind} is not one condlab knows; pass its name: "
                         f"{', '.join(sorted(set(LOSS_MODULES.values())))}")
    odd = [a for a in ("weight", "pos_weight") if getattr(loss, a, None) is not None]
    if getattr(loss, "reduction", "mean") != "mean" or odd:
        raise UsageError(f"{kind} with {', '.join(odd) or 'reduction=' + repr(loss.reduction)} is "
                         "not the mean loss condlab measures; pass a plain "
                         f"{kind}() (reduction 'mean', no weights)")
    if kind == "CrossEntropyLoss":
        options = {"ignore_index": loss.ignore_index, "label_smoothing": loss.label_smoothing,
                   **options}
    return LOSS_MODULES[kind], options


def spectrum(model, loss, data, *, top: int = 5, bottom: int = 3, precond: Sequence[str] = (),
             dtype: str = "float32", optimizer=None, **options: Any) -> SpectrumReport:
    """The spectrum of ``model``'s loss on ``data``, in one call.

    ``loss``: ``"cross-entropy"``, ``"mse"``, ``"bce"``, ``"sequence-cross-entropy"`` or the
    matching torch module (``nn.CrossEntropyLoss()``, ...; mean reduction); ``data``: a
    ``DataLoader`` (its batches are read once, in order, and kept fixed), a list of ``(X, y)``
    batches or one ``(X, y)`` pair. ``precond``: settings beside the baseline (``"optimizer"``
    reads ``optimizer``'s state; ``"adam"``, ``"gn"``, ... as ``--precond``). ``options``: any
    other ``condlab spectrum`` option by its field name (``curvature="ggn"``, ``trace=True``,
    ``params=("fc.*",)``, ``norm=("batch",)``, ``lr=...``). The model is not modified.

        report = condlab.spectrum(model, nn.CrossEntropyLoss(), loader, top=5, bottom=3)
        report["baseline"].condition_number; report.to_frame()
    """
    from condlab.inputs import dataset_from_batches
    from condlab.losses import make_loss

    name, options = _loss_name(loss, options)
    cfg = SpectrumConfig(model="(given)", top=top, bottom=bottom, precond=tuple(precond),
                         dtype=dtype, **options)
    state = optimizer.state_dict() if optimizer is not None else None
    dataset = dataset_from_batches(data)
    loss_spec = make_loss(name, ignore_index=cfg.ignore_index, label_smoothing=cfg.label_smoothing)
    inputs = Inputs(model, dataset, name, state, f"{type(model).__name__} (given)", loss_spec)
    return run_spectrum(cfg, inputs=inputs)


def run_spectrum(
    cfg: SpectrumConfig,
    *,
    on_progress: Progress | None = None,
    inputs: Inputs | None = None,
    threads: int | None = None,
    starts: dict | None = None,
) -> SpectrumReport:
    """Measure every setting ``cfg`` asks for (see :func:`condlab.settings.build_settings`).

    ``inputs``: already read (a training loop's model, the demo's); else read as ``cfg`` says.
    ``threads``: torch CPU threads; None picks one thread for small problems, where intra-op
    parallelism costs more than it gains, and torch's default otherwise. ``starts``: setting ->
    Ritz vectors of a nearby model (the report's ``vectors`` from the previous checkpoint of a
    run) to warm-start Lanczos from.
    """
    owned = inputs is None  # condlab read the model itself: the Problem may share its weights
    inputs = inputs or read_inputs(cfg)
    set_threads(threads, inputs)
    problem = make_problem(inputs, cfg, share_weights=owned)
    settings = build_settings(cfg, problem, inputs)
    est = cfg.estimator
    results: list[SpectrumResult] = []
    densities: list[Density] = []
    vectors: dict = {}
    todo = list(settings)
    while todo:
        s = todo.pop(0)
        base = results[0] if results else None
        scale = (max(abs(base.lambda_max or 0.0), abs(base.lambda_min or 0.0)) or None
                 if s.relative_to_baseline and base is not None else None)
        proofs = proven(s, base, cfg)  # what condlab proved about this row (condlab.consistency)
        e = estimate(s.operator, est, scale=scale, **proofs,
                     on_matvec=_ticker(on_progress, s.name, est.hvp_budget),
                     start=(starts or {}).get(s.name))
        result, extra = checked(s, record(s, e, cfg.curvature), base, e.vectors)
        results.append(result)
        todo[:0] = [extra] if extra is not None else []
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
