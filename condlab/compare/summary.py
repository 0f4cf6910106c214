"""From rows to per-run summaries, the chosen learning rates and the final table.

Per run (all from its logged rows):

- ``steps_to_target``: the first logged step with ``train_loss <= target_loss`` (None: never);
- ``final_*``: the last row's losses and accuracies (a diverged run's are inf / NaN);
- ``kappa``, ``pre_kappa``, ``block_kappa``: (first, last) tracked values;
  ``max_ratio``: the largest ``sharpness_ratio``;
- the scale-invariant group at equilibrium: ``eq_eff_lr``, ``eq_norm`` are means and
  ``eq_angle`` the root mean square (the derivation is about ``E[eta^2 ||g||^2 / ||w||^2]``) over
  the logged steps of the last quarter of the run; ``steps_to_eq`` is the first logged
  step whose effective lr is within ``EQ_TOL`` (10%) of ``eq_eff_lr``.

Choosing a tuned lr: each lr of an entry is scored over its seeds by the median of the
criterion and the best (smallest) wins; ``steps_to_target`` counts a run that never reaches
the target as infinitely slow and breaks ties by the median final training loss;
``final_loss`` / ``test_loss`` use the median final training / held-out loss. Diverged runs
score infinity.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from condlab.compare.config import CompareConfig
from condlab.compare.runner import row_key

EQ_TOL = 0.1
DISTANCES = ("dist_l2", "dist_pw", "dist_pstar", "dist_wlasso", "dist_lasso", "dist_lasso_sq")
INF = math.inf


@dataclass(frozen=True)
class RunSummary:
    variant: str
    optimizer: str
    method: str
    basis: str
    batch_size: int | None
    lr: float
    weight_decay: float
    seed: int
    steps: int
    diverged: bool
    steps_to_target: int | None
    final_train_loss: float
    final_test_loss: float | None
    final_test_acc: float | None
    kappa: tuple[float | None, float | None]
    pre_kappa: tuple[float | None, float | None]
    block_kappa: tuple[float | None, float | None]
    max_ratio: float | None
    v_gn_spread: float | None
    v_h_spread: float | None
    gn_spread: float | None
    dist_l2: float | None
    dist_pw: float | None
    eq_eff_lr: float | None
    eq_norm: float | None
    eq_angle: float | None
    steps_to_eq: int | None
    converged: bool = True  # every tracked measurement met its tolerance within max_hvps
    dist_wlasso: float | None = None
    dist_lasso: float | None = None
    block_kappa_bound: float | None = None  # at the last tracked step, where kappa is not resolved
    kappa_bound: float | None = None  # likewise
    pre_kappa_bound: float | None = None
    lambda_max: tuple[float | None, float | None] = (None, None)
    # every tracked distance to a candidate fixed point, (first, last) tracked value
    dists: dict = field(default_factory=dict)


def _ends(rows: Sequence[dict], key: str) -> tuple[float | None, float | None]:
    """The first value of ``key`` and its value at the last tracked step (None when that step
    could not give it, e.g. a kappa float64 cannot resolve: never an earlier value in its place)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    tracked = [r for r in rows if r.get("converged") is not None]
    end = tracked[-1].get(key) if tracked else (vals[-1] if vals else None)
    return (vals[0] if vals else None, end)


def _equilibrium(rows: Sequence[dict], steps: int):
    si = [r for r in rows if r.get("si_eff_lr") is not None]
    tail = [r for r in si if r["step"] >= 0.75 * steps]
    if not tail:
        return None, None, None, None
    eff = statistics.fmean(r["si_eff_lr"] for r in tail)
    norm = statistics.fmean(r["si_norm"] for r in tail)
    angles = [r["si_angle"] for r in tail if r.get("si_angle") is not None]
    reach = next((r["step"] for r in si if abs(r["si_eff_lr"] / eff - 1) <= EQ_TOL), None)
    rms = math.sqrt(statistics.fmean(a * a for a in angles)) if angles else None
    return eff, norm, rms, reach


def summarize_run(rows: Sequence[dict], cfg: CompareConfig) -> RunSummary:
    first, last = rows[0], rows[-1]
    target = cfg.target_loss
    reach = None
    if target is not None:
        reach = next((r["step"] for r in rows if r["status"] == "ok" and r["train_loss"] <= target), None)
    ratios = [r["sharpness_ratio"] for r in rows if r.get("sharpness_ratio") is not None]
    eq = _equilibrium(rows, cfg.steps)
    diverged = last["status"] == "diverged"
    return RunSummary(
        first["variant"], first["optimizer"], first["method"], first["basis"], first["batch_size"],
        first["lr"], first["weight_decay"], first["seed"], last["step"], diverged, reach,
        INF if diverged else last["train_loss"], last["test_loss"], last["test_acc"],
        _ends(rows, "kappa"), _ends(rows, "pre_kappa"), _ends(rows, "block_kappa"),
        max(ratios) if ratios else None, _ends(rows, "v_gn_spread")[1],
        _ends(rows, "v_h_spread")[1], _ends(rows, "gn_spread")[1], _ends(rows, "dist_l2")[1],
        _ends(rows, "dist_pw")[1], *eq, all(r["converged"] is not False for r in rows),
        dist_wlasso=_ends(rows, "dist_wlasso")[1], dist_lasso=_ends(rows, "dist_lasso")[1],
        block_kappa_bound=_ends(rows, "block_kappa_bound")[1],
        kappa_bound=_ends(rows, "kappa_bound")[1], pre_kappa_bound=_ends(rows, "pre_kappa_bound")[1],
        lambda_max=_ends(rows, "lambda_max"),
        dists={k: _ends(rows, k) for k in DISTANCES if any(r.get(k) is not None for r in rows)},
    )


def summarize_runs(rows: Sequence[dict], cfg: CompareConfig) -> list[RunSummary]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(row_key(r), []).append(r)
    return [summarize_run(g, cfg) for g in groups.values()]


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else INF


def score(runs: Sequence[RunSummary], criterion: str) -> tuple[float, float]:
    """The (primary, tie-break) score of one lr over its seeds; smaller is better."""
    final = _median([INF if r.diverged or not math.isfinite(r.final_train_loss) else r.final_train_loss
                     for r in runs])
    if criterion == "steps_to_target":
        steps = [INF if r.diverged or r.steps_to_target is None else r.steps_to_target for r in runs]
        return _median(steps), final
    if criterion == "test_loss":
        tests = [INF if r.diverged or r.final_test_loss is None or not math.isfinite(r.final_test_loss)
                 else r.final_test_loss for r in runs]
        return _median(tests), final
    return final, 0.0


@dataclass(frozen=True)
class Choice:
    """One optimizer entry of one variant: its runs at the chosen lr, and the lr grid's scores."""

    variant: str
    optimizer: str
    lr: float
    runs: tuple[RunSummary, ...]
    grid: tuple[tuple[float, tuple[float, float]], ...]  # (lr, score) for every lr tried

    @property
    def tuned(self) -> bool:
        return len(self.grid) > 1

    @property
    def edge(self) -> str | None:
        """``"lowest"`` / ``"highest"`` when the chosen lr is at an end of a tuned grid (the
        optimum may lie outside it; also when no lr reached the target and the tie-break chose
        it), else None."""
        lrs = [lr for lr, _ in self.grid]
        if not self.tuned:
            return None
        return "lowest" if self.lr == min(lrs) else ("highest" if self.lr == max(lrs) else None)

    def median(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.runs]
        if any(v is None for v in vals):
            return None
        return statistics.median(vals)

    def median_end(self, attr: str, end: int) -> float | None:
        vals = [getattr(r, attr)[end] for r in self.runs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None


def choose(summaries: Sequence[RunSummary], cfg: CompareConfig) -> list[Choice]:
    """The chosen lr of every (variant, optimizer), in config order."""
    by: dict[tuple, dict[float, list[RunSummary]]] = {}
    for s in summaries:
        by.setdefault((s.variant, s.optimizer), {}).setdefault(s.lr, []).append(s)
    out = []
    for (variant, opt), lrs in by.items():
        grid = tuple((lr, score(runs, cfg.criterion)) for lr, runs in lrs.items())
        best = min(grid, key=lambda item: (item[1], item[0]))[0]
        out.append(Choice(variant, opt, best, tuple(lrs[best]), grid))
    return out
