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
  the L1 rule at the weighted lasso minimizer (derived); the preconditioned kappa each reaches.
- ``paper-a-norm`` (Ye 2024): input standardization and BatchNorm lower the kappa of the last
  layer's curvature block (the extended hidden-variable matrix) at matched initialization and
  after the same training, and the steps to the target.
- ``paper-c`` (Li, Lyu, Arora 2020): equal ``lr * wd`` reach the same effective lr; the angular
  update tends to ``sqrt(2 lr wd)``; the effective lr scales as ``(lr wd)^1/2`` and ``||w||^2``
  as ``(lr / wd)^1/2``; steps to equilibrium scale as ``(lr wd)^-1``.

Thresholds come from the theory, not from the measured values: each sits halfway (in log
scale) between the claim's prediction and the nearest prediction of the alternative the claim
rules out, so that a run where the claim is false crosses it:

- proportionality of Adam's ``sqrt(v)`` to ``sqrt(diag G)``: proportional means a spread of 1,
  unrelated (a flat ``v``) means the spread of ``sqrt(diag G)`` itself, ``s_G``; agree below
  ``sqrt(s_G)``;
- equal ``lr * wd``, same effective lr: the alternative (the effective lr set by ``lr`` at a
  fixed norm) differs by the ratio ``r`` of the group's lrs; agree within ``sqrt(r)``;
- angular update ``sqrt(2 lr wd)``: the alternative without the factor 2 is ``sqrt(lr wd)``;
  agree within ``2^(1/4)``;
- exponents: the nearest alternative exponent is 0.5 away (steps following the effective lr,
  ``(lr wd)^-1/2`` instead of ``^-1``; a norm or effective lr independent of the product,
  exponent 0 instead of 1/2); agree within ``EXPONENT_OK`` = 0.25.
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
ANGLE_OK = 2**0.25  # measured / sqrt(2 lr wd) within this factor: halfway to sqrt(lr wd)
EXPONENT_OK = 0.25  # |fitted - predicted|: halfway to the nearest alternative exponent


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


def momentum_of(cfg: CompareConfig, label: str) -> float:
    """The momentum of the optimizer entry ``label``: Adam's beta1, GN's beta1, SGD's mu."""
    entry = next((e for e in cfg.optimizers if e.label == label), None)
    hp = entry.hparams if entry is not None else {}
    if "betas" in hp:
        return float(hp["betas"][0])
    return float(hp.get("beta1", hp.get("momentum", 0.0)) or 0.0)


def _find(choices: Sequence[Choice], *, method: str, basis: str = "identity",
          full: bool | None = None, variant: str | None = None,
          momentum: tuple[CompareConfig, float] | None = None) -> Choice | None:
    """The first choice of ``method`` in ``basis`` (full batch or not, in ``variant``), with
    ``momentum = (cfg, beta)`` only an entry whose momentum is ``beta``."""
    for c in choices:
        r = c.runs[0]
        if r.method == method and r.basis == basis and (full is None or (r.batch_size is None) == full) \
                and (variant is None or c.variant == variant) \
                and (momentum is None or momentum_of(momentum[0], c.optimizer) == momentum[1]):
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


def _fit2(x1: Sequence[float], x2: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares exponents ``(a, b)`` of ``log y = a log x1 + b log x2 + c``; None when the
    design does not determine both (fewer than 3 runs, or ``x1``, ``x2`` collinear in log)."""
    import numpy as np

    pts = [(math.log(a), math.log(b), math.log(y)) for a, b, y in zip(x1, x2, ys)
           if a > 0 and b > 0 and y and y > 0]
    if len(pts) < 3:
        return None
    X = np.array([[p[0], p[1], 1.0] for p in pts])
    if np.linalg.matrix_rank(X) < 3:
        return None
    coef = np.linalg.lstsq(X, np.array([p[2] for p in pts]), rcond=None)[0]
    return float(coef[0]), float(coef[1])


# -- paper B ------------------------------------------------------------------------------------
def _edge(c: Choice) -> str:
    return f" [{c.optimizer}: lr {c.lr:g} at the grid's {c.edge} edge]" if c.edge else ""


def _race(cfg: CompareConfig, choices: Sequence[Choice], *, fast: str, slow: str, basis: str,
          claim: str, fast_wins: bool = True) -> list[Finding]:
    """``fast`` needs fewer steps than ``slow`` (full batch, ``basis``; ``fast_wins=False``:
    ``slow`` needs no more than ``fast``), with ``slow``'s momentum matched to ``fast``'s (the
    claim's verdict) and, where the config has it, without momentum; a third line says when
    momentum changes the finding."""
    first = _find(choices, method=fast, basis=basis, full=True)
    if first is None:
        return []
    beta = momentum_of(cfg, first.optimizer)
    out: list[Finding] = []
    verdicts = []
    ways = [(beta, f"momentum matched, beta1 {beta:g}")]
    if beta:
        ways.append((0.0, f"{slow} without momentum, {fast} beta1 {beta:g}"))
    for mom, how in ways:
        other = _find(choices, method=slow, basis=basis, full=True, momentum=(cfg, mom))
        if other is None:
            continue
        a, b = _steps(first), _steps(other)
        ok = a < b if fast_wins else b <= a
        out.append(Finding(
            f"{claim} ({how})",
            f"{fast} {_f(a)} (lr {first.lr:g}) vs {other.optimizer} {_f(b)} (lr {other.lr:g})"
            + _edge(first) + _edge(other), ok, a))
        verdicts.append(ok)
    if len(verdicts) == 2 and verdicts[0] != verdicts[1]:
        out.append(Finding(f"{claim}: momentum changes the finding",
                           f"{'holds' if verdicts[0] else 'fails'} with matched momentum, "
                           f"{'holds' if verdicts[1] else 'fails'} without", None))
    return out


# -- paper B ------------------------------------------------------------------------------------
def paper_b(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    out: list[Finding] = []
    target = cfg.target_loss
    for gn, name in (("gn", "GN^-1"), ("gn-sqrt", "GN^-1/2")):
        out += _race(cfg, choices, fast="adam", slow=gn, basis="identity",
                     claim=f"B: full batch, identity basis: Adam needs fewer steps than {name} "
                           f"to loss {target:g}")
    quadratic = cfg.problem(cfg.variants[0])["loss"] in (None, "mse")
    if quadratic:
        # Newton (GN^-1 in the eigenbasis at lr 1) on a quadratic: GN^-1 no slower than Adam
        out += _race(cfg, choices, fast="adam", slow="gn", basis="eigen", fast_wins=False,
                     claim="B: full batch, eigenbasis: GN^-1 is Newton on a quadratic, no slower "
                           "than Adam")
    else:
        out += _race(cfg, choices, fast="adam", slow="gn", basis="eigen",
                     claim="B: full batch, eigenbasis (logistic regression): Adam beats GN^-1")
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
                 "spread q90/q10 of sqrt(v)/sqrt(diag G) is below sqrt of the spread of sqrt(diag G), "
                 "halfway to unrelated, and below full batch's)")
        if sg < FLAT:
            claim += f" [degenerate here: diag(G) is flat, spread < {FLAT}]"
            out.append(Finding(claim, measured, None, sm))
        else:
            ok = sm < math.sqrt(sg) and (sf is None or sm < sf)
            out.append(Finding(claim, measured + f" (threshold {_f(math.sqrt(sg))})", ok, sm))
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
    adam, l2, w, l1 = (_find(choices, method=m) for m in ("adam", "adam-l2", "adamw", "adam-l1"))
    if l2 and l2.median("dist_l2") is not None:
        d = l2.median("dist_l2")
        out.append(Finding(
            f"A: Adam + L2 converges to the L2 minimizer (H + lam I)^-1 H p*, whatever P "
            f"(relative distance < {FIXED_POINT_OK:g})", f"distance {_f(d)}", d < FIXED_POINT_OK, d))
    if w and w.median("dist_pw") is not None:
        dp, dl = w.median("dist_pw"), w.median("dist_l2")
        out.append(Finding(
            "A: AdamW converges to (H + lam M^-1)^-1 H p* with its own M = P^-1, not to the L2 "
            "minimizer (nearer the first: its M keeps drifting, so no distance bound is claimed)",
            f"distance {_f(dp)} to it vs {_f(dl)} to the L2 minimizer", dp < dl, dp))
    if l1 and l1.median("dist_wlasso") is not None and l1.median("dist_lasso") is not None:
        dw, dl = l1.median("dist_wlasso"), l1.median("dist_lasso")
        out.append(Finding(
            "A (derived): the L1 rule (soft threshold eta lam sqrt(M_ii)) converges to the weighted "
            "lasso minimizer of L(p) + lam sum_i |p_i| / sqrt(M_ii) with its own M = P^-1, solved "
            f"independently by coordinate descent (relative distance < {FIXED_POINT_OK:g}, and "
            "nearer it than the plain lasso's)",
            f"distance {_f(dw)} to it vs {_f(dl)} to the plain lasso minimizer",
            dw < FIXED_POINT_OK and dw < dl, dw))
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
            if b is None:
                continue
            kb, kn = b.median_end("block_kappa", 1), c.median_end("block_kappa", 1)
            claim = (f"A: {what} lowers kappa of the last layer's curvature block after the same "
                     f"training ({c.optimizer}, {cfg.steps} steps, lr tuned per variant)")
            if kb is not None and kn is not None:
                out.append(Finding(claim, f"{_f(kn)} vs {_f(kb)} raw", kn < kb, kn))
            elif kb is None and kn is not None and b.median("block_kappa_bound") is not None:
                # float64 cannot resolve the raw kappa: its lower bound decides only if it is above
                lo = min(r.block_kappa_bound for r in b.runs)
                out.append(Finding(claim, f"{_f(kn)} vs > {_f(lo)} raw (not resolved in float64)",
                                   True if kn < lo else None, kn))
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
        within = max(max(r.eq_eff_lr for r in g) / min(r.eq_eff_lr for r in g) for g in pairs)
        norms = max(max(r.eq_norm for r in g) / min(r.eq_norm for r in g) - 1 for g in pairs)
        lr_ratio = min(max(r.lr for r in g) / min(r.lr for r in g) for g in pairs)
        bound = math.sqrt(lr_ratio)
        out.append(Finding(
            f"C: runs with equal lr*wd reach the same effective lr lr/||w||^2 (within a factor "
            f"{bound:.3g} = sqrt of their lr ratio, halfway to an effective lr set by lr), though "
            "their norms differ",
            f"effective lr differs by {within - 1:.1%}, ||w|| by {norms:.1%}", within < bound,
            within - 1))
    ratios = [r.eq_angle / math.sqrt(2 * r.lr * r.weight_decay) for r in runs if r.eq_angle]
    if ratios:
        m = statistics.median(ratios)
        out.append(Finding(
            f"C (derived): the angular update per step (root mean square) tends to sqrt(2 lr wd) "
            f"(within a factor {ANGLE_OK:.3g}, halfway to sqrt(lr wd))",
            f"measured / predicted: median {m:.3f} (range {min(ratios):.3f}..{max(ratios):.3f})",
            1 / ANGLE_OK < m < ANGLE_OK, m))
    fit = _fit2([r.lr * r.weight_decay for r in runs], [r.lr / r.weight_decay for r in runs],
                [r.eq_eff_lr for r in runs])
    if fit is not None:
        a, b = fit
        out.append(Finding(
            f"C (derived): the equilibrium effective lr scales as (lr*wd)^(1/2) (lr/wd)^0 (both "
            f"exponents within {EXPONENT_OK:g}; an effective lr set by lr, at a fixed norm, has "
            "(1/2, 1/2))",
            f"fitted exponents {a:.2f} (lr*wd), {b:.2f} (lr/wd)",
            abs(a - 0.5) < EXPONENT_OK and abs(b) < EXPONENT_OK, a))
    slope = _slope([r.lr / r.weight_decay for r in runs], [r.eq_norm**2 for r in runs])
    if slope is not None:
        out.append(Finding(
            "C (derived): ||w||^2 at equilibrium scales as (lr/wd)^(1/2), sqrt(lr / (2 wd)) "
            f"sqrt(tr Sigma) (within {EXPONENT_OK:g})", f"fitted exponent {slope:.2f}", abs(slope - 0.5) < EXPONENT_OK, slope))
    reach = [(r.lr * r.weight_decay, r.steps_to_eq) for r in runs if r.steps_to_eq]
    slope = _slope([x for x, _ in reach], [y for _, y in reach])
    if slope is not None:
        out.append(Finding(
            "C (derived, reported): steps for the effective lr to reach its equilibrium scale "
            "as 1/(lr*wd), fitted exponent (-1 derived). Not the Fast Equilibrium Conjecture, "
            "which is about the distribution of the function; no verdict",
            f"fitted exponent {slope:.2f} over {len(reach)} runs", None, slope))
    return out


FINDERS: dict[str, Callable] = {"paper-b": paper_b, "paper-a-decay": paper_a_decay,
                                "paper-a-norm": paper_a_norm, "paper-c": paper_c}


def compute_findings(cfg: CompareConfig, choices: Sequence[Choice], runs: Sequence[RunSummary]) -> list[Finding]:
    """The findings ``cfg.findings`` names (none if it names none)."""
    return FINDERS[cfg.findings](cfg, choices, runs) if cfg.findings else []
