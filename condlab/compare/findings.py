"""The papers' claims, measured on a comparison's runs: claim, figure, agrees yes / no / "-".

``findings: NAME`` in a config picks the set; every figure comes from the chosen-lr runs
(medians over seeds) or, for paper C, from every run. "-" marks a figure that is reported with
no direction claimed. Thresholds used to call agreement are module constants, stated in each
claim's text.

- ``paper-b`` (Liu et al. 2025): full batch, identity basis: Adam reaches the target in fewer
  steps than GN^-1 and GN^-1/2; mini-batch: Adam's ``sqrt(v)`` is proportional to
  ``sqrt(diag G)`` (spread of the ratio near 1, below the full-batch spread) in each basis run;
  the eigenbasis quadrant; which model of ``v`` (diag G or row norms of H) fits each regime.
- ``paper-a-decay`` (Ye 2024): Adam + L2 stops at the L2 minimizer; AdamW at the P-weighted one;
  the preconditioned kappa each reaches.
- ``paper-a-norm`` (Ye 2024): input standardization and BatchNorm lower the kappa of the last
  layer's curvature block (the extended hidden-variable matrix) and the steps to the target.
- ``paper-c`` (Li, Lyu, Arora 2020): equal ``lr * wd`` reach the same effective lr; the angular
  update tends to ``sqrt(2 lr wd)``; the effective lr scales as ``(lr wd)^1/2`` and ``||w||^2``
  as ``(lr / wd)^1/2``; steps to equilibrium scale as ``(lr wd)^-1``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from condlab.compare.config import CompareConfig
from condlab.compare.summary import Choice, RunSummary

FLAT = 1.2  # a spread q90/q10 of sqrt(diag G) below this makes the proportionality check moot
FIXED_POINT_OK = 1e-3  # relative distance that counts as "at the fixed point"
EQUAL_OK = 0.15  # relative spread of equilibria that counts as "the same"
ANGLE_OK = 0.25  # |measured / sqrt(2 lr wd) - 1| that counts as agreement
EXPONENT_OK = 0.3  # |fitted exponent - predicted| that counts as agreement


@dataclass(frozen=True)
class Finding:
    claim: str
    measured: str
    agrees: bool | None  # None: reported, no direction claimed
    value: float | None = None


def _f(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "never"
    return f"{x:.{digits}g}"


def _steps(c: Choice | None) -> float:
    if c is None:
        return math.inf
    vals = [math.inf if r.diverged or r.steps_to_target is None else r.steps_to_target for r in c.runs]
    return statistics.median(vals)


def _find(choices: Sequence[Choice], *, method: str, basis: str = "identity",
          full: bool | None = None, variant: str | None = None) -> Choice | None:
    for c in choices:
        r = c.runs[0]
        if r.method == method and r.basis == basis and (full is None or (r.batch_size is None) == full) \
                and (variant is None or c.variant == variant):
            return c
    return None


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


# -- paper B ------------------------------------------------------------------------------------
def paper_b(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    out: list[Finding] = []
    target = cfg.target_loss
    adam = _find(choices, method="adam", full=True)
    for gn, name in (("gn", "GN^-1"), ("gn-sqrt", "GN^-1/2")):
        other = _find(choices, method=gn, full=True)
        if adam and other:
            a, b = _steps(adam), _steps(other)
            out.append(Finding(
                f"B: full batch, identity basis: Adam needs fewer steps than {name} to loss {target:g}",
                f"adam {_f(a)} (lr {adam.lr:g}) vs {gn} {_f(b)} (lr {other.lr:g})", a < b, a))
    quadratic = cfg.problem(cfg.variants[0])["loss"] in (None, "mse")
    adam_e, gn_e = _find(choices, method="adam", basis="eigen", full=True), \
        _find(choices, method="gn", basis="eigen", full=True)
    if adam_e and gn_e:
        a, b = _steps(adam_e), _steps(gn_e)
        if quadratic:
            out.append(Finding("B: full batch, eigenbasis: GN^-1 is Newton on a quadratic, no "
                               "slower than Adam", f"gn {_f(b)} vs adam {_f(a)} steps", b <= a, b))
        else:
            out.append(Finding("B: full batch, eigenbasis (logistic regression): Adam beats GN^-1",
                               f"adam {_f(a)} vs gn {_f(b)} steps", a < b, a))
    for basis in ("identity", "eigen"):
        mini = _find(choices, method="adam", basis=basis, full=False)
        full = _find(choices, method="adam", basis=basis, full=True)
        if not mini or mini.median("v_gn_spread") is None:
            continue
        sm, sg = mini.median("v_gn_spread"), mini.median("gn_spread")
        sf = full.median("v_gn_spread") if full else None
        measured = (f"spread {_f(sm)} mini-batch vs {_f(sf)} full batch; sqrt(diag G) itself "
                    f"spreads {_f(sg)}")
        claim = (f"B: mini-batch, {basis} basis: Adam's P is proportional to GN^-1/2's (the "
                 "spread q90/q10 of sqrt(v)/sqrt(diag G) is below full batch's and below that of "
                 "sqrt(diag G))")
        if sg < FLAT:
            claim += f" [degenerate here: diag(G) is flat, spread < {FLAT}]"
            out.append(Finding(claim, measured, None, sm))
        else:
            out.append(Finding(claim, measured, sm < sg and (sf is None or sm < sf), sm))
        if full and full.median("v_h_spread") is not None:
            hf, hm = full.median("v_h_spread"), mini.median("v_h_spread")
            out.append(Finding(
                f"B (derived, reported): {basis} basis: spread of sqrt(v) against diag(G)^1/2 (G) "
                "and against the row norms of H (H)",
                f"full: G {_f(sf)}, H {_f(hf)}; mini: G {_f(sm)}, H {_f(hm)}", None))
    return out


# -- paper A ------------------------------------------------------------------------------------
def paper_a_decay(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    out: list[Finding] = []
    adam, l2, w = (_find(choices, method=m) for m in ("adam", "adam-l2", "adamw"))
    if l2 and l2.median("dist_l2") is not None:
        d = l2.median("dist_l2")
        out.append(Finding(
            f"A: Adam + L2 converges to the L2 minimizer (H + lam I)^-1 H p*, whatever P "
            f"(relative distance < {FIXED_POINT_OK:g})", f"distance {_f(d)}", d < FIXED_POINT_OK, d))
    if w and w.median("dist_pw") is not None:
        dp, dl = w.median("dist_pw"), w.median("dist_l2")
        out.append(Finding(
            "A: AdamW converges to (H + lam M^-1)^-1 H p* with its own M = P^-1, not to the L2 "
            "minimizer", f"distance {_f(dp)} to it vs {_f(dl)} to the L2 minimizer", dp < dl, dp))
    if adam and l2:
        ka, kl = adam.median_end("pre_kappa", 1), l2.median_end("pre_kappa", 1)
        if ka is not None and kl is not None:
            out.append(Finding(
                "A: coupled L2 is preconditioned too: kappa(P^-1/2 (H + lam I) P^-1/2) of Adam + "
                "L2 below kappa(P^-1/2 H P^-1/2) of Adam", f"{_f(kl)} vs {_f(ka)}", kl < ka, kl))
    if adam and w:
        ka, kw = adam.median_end("pre_kappa", 1), w.median_end("pre_kappa", 1)
        if ka is not None and kw is not None:
            out.append(Finding(
                "A: AdamW's operator P^-1/2 H P^-1/2 + lam I, kappa reached (no direction claimed)",
                f"AdamW {_f(kw)} vs Adam {_f(ka)}", None, kw))
    return out


def _kind(cfg: CompareConfig, variant: str) -> str:
    keys = cfg.problem(next(v for v in cfg.variants if v.label == variant))
    if isinstance(keys["model"], dict) and keys["model"].get("norm") == "batch":
        return "batchnorm"
    return "standardized" if keys["standardize"] else "raw"


def paper_a_norm(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    out: list[Finding] = []
    kinds = {v.label: _kind(cfg, v.label) for v in cfg.variants}
    raw = [label for label, k in kinds.items() if k == "raw"]
    if not raw:
        return out
    for label, kind in kinds.items():
        if kind == "raw":
            continue
        what = "input standardization" if kind == "standardized" else "BatchNorm"
        base = [c for c in choices if c.variant == raw[0]]
        new = [c for c in choices if c.variant == label]
        kb = base[0].median_end("block_kappa", 0) if base else None
        kn = new[0].median_end("block_kappa", 0) if new else None
        if kb is not None and kn is not None:
            out.append(Finding(
                f"A: {what} lowers kappa of the last layer's curvature block at initialization "
                "(the extended hidden-variable matrix)", f"{_f(kn)} vs {_f(kb)} raw", kn < kb, kn))
        for c in new:
            b = next((x for x in base if x.optimizer == c.optimizer), None)
            if b is not None:
                sn, sb = _steps(c), _steps(b)
                out.append(Finding(
                    f"A: {what} speeds up {c.optimizer}: steps to loss {cfg.target_loss:g}",
                    f"{_f(sn)} vs {_f(sb)} raw (lr {c.lr:g} vs {b.lr:g})", sn < sb, sn))
    return out


# -- paper C ------------------------------------------------------------------------------------
def paper_c(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    runs = [r for r in runs if not r.diverged and r.eq_eff_lr is not None and r.weight_decay > 0]
    if len(runs) < 2:
        return []
    out: list[Finding] = []
    groups: dict[float, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault(float(f"{r.lr * r.weight_decay:.6g}"), []).append(r)
    pairs = [g for g in groups.values() if len({(r.lr, r.weight_decay) for r in g}) > 1]
    if pairs:
        within = max(max(r.eq_eff_lr for r in g) / min(r.eq_eff_lr for r in g) - 1 for g in pairs)
        norms = max(max(r.eq_norm for r in g) / min(r.eq_norm for r in g) - 1 for g in pairs)
        out.append(Finding(
            f"C: runs with equal lr*wd reach the same effective lr lr/||w||^2 (within "
            f"{EQUAL_OK:.0%}), though their norms differ",
            f"effective lr differs by {within:.1%}, ||w|| by {norms:.1%}", within < EQUAL_OK, within))
    ratios = [r.eq_angle / math.sqrt(2 * r.lr * r.weight_decay) for r in runs if r.eq_angle]
    if ratios:
        m = statistics.median(ratios)
        out.append(Finding(
            f"C (derived): the angular update per step (root mean square) tends to sqrt(2 lr wd) "
            f"(within {ANGLE_OK:.0%})",
            f"measured / predicted: median {m:.3f} (range {min(ratios):.3f}..{max(ratios):.3f})",
            abs(m - 1) < ANGLE_OK, m))
    products = sorted(groups)
    eff = [statistics.fmean(r.eq_eff_lr for r in groups[p]) for p in products]
    slope = _slope(products, eff)
    if slope is not None:
        out.append(Finding(
            "C (derived): the equilibrium effective lr scales as (lr*wd)^(1/2)",
            f"fitted exponent {slope:.2f}", abs(slope - 0.5) < EXPONENT_OK, slope))
    slope = _slope([r.lr / r.weight_decay for r in runs], [r.eq_norm**2 for r in runs])
    if slope is not None:
        out.append(Finding(
            "C (derived): ||w||^2 at equilibrium scales as (lr/wd)^(1/2), sqrt(lr / (2 wd)) "
            "sqrt(tr Sigma)", f"fitted exponent {slope:.2f}", abs(slope - 0.5) < EXPONENT_OK, slope))
    reach = [(r.lr * r.weight_decay, r.steps_to_eq) for r in runs if r.steps_to_eq]
    slope = _slope([x for x, _ in reach], [y for _, y in reach])
    if slope is not None:
        out.append(Finding(
            "C: steps to equilibrium scale as 1/(lr*wd) (fitted exponent of log steps vs "
            "log lr*wd near -1)", f"fitted exponent {slope:.2f} over {len(reach)} runs",
            abs(slope + 1) < EXPONENT_OK, slope))
    return out


FINDERS: dict[str, Callable] = {"paper-b": paper_b, "paper-a-decay": paper_a_decay,
                                "paper-a-norm": paper_a_norm, "paper-c": paper_c}


def compute_findings(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    """The findings ``cfg.findings`` names (none if it names none)."""
    return FINDERS[cfg.findings](cfg, choices, runs) if cfg.findings else []
