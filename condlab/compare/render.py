"""A comparison's report as rich tables (nothing here computes; tests render to a StringIO)."""

from __future__ import annotations

import math
import statistics

from rich.table import Table

from condlab.compare import CompareReport
from condlab.compare.summary import Choice
from condlab.report.tables import fmt


def _steps(c: Choice, steps: int) -> str:
    vals = [math.inf if r.diverged or r.steps_to_target is None else r.steps_to_target for r in c.runs]
    med = statistics.median(vals)
    reached = sum(v != math.inf for v in vals)
    text = f"> {steps}" if math.isinf(med) else fmt(med)
    return text if reached in (0, len(vals)) else f"{text} ({reached}/{len(vals)} reached)"


def _arrow(a: float | None, b: float | None, converged: bool = True) -> str:
    if a is None and b is None:
        return "-"
    return ("" if converged else "~") + f"{fmt(a, 3)} -> {fmt(b, 3)}"


def _kappas(c: Choice, key: str, converged: bool) -> str:
    """Start -> end of ``key``; an end that no run resolved, ``> bound`` (the smallest of the
    runs' lower bounds) where every run has one."""
    end = c.median_end(key, 1)
    bounds = [getattr(r, f"{key}_bound") for r in c.runs]
    if end is None and bounds and all(x is not None for x in bounds):
        start = c.median_end(key, 0)
        return ("" if converged else "~") + f"{fmt(start, 3)} -> > {fmt(min(bounds), 2)}"
    return _arrow(c.median_end(key, 0), end, converged)


def summary_table(report: CompareReport) -> Table:
    """One row per (variant, optimizer) at its chosen lr; medians over seeds."""
    cfg = report.config
    many = len(cfg.variants) > 1
    title = f"condlab compare: {cfg.name}"
    table = Table(title=title, title_justify="left", header_style="bold")
    cols = (["variant"] if many else []) + [
        "optimizer", "lr", "seeds",
        f"steps to {fmt(cfg.target_loss)}" if cfg.target_loss is not None else "steps",
        "train loss", "test loss", "test acc", f"kappa({cfg.track.curvature})",
        "kappa(P^-1/2 A P^-1/2)", "max sharp/thr"]
    block = any(c.median_end("block_kappa", 0) is not None for c in report.choices)
    if block:
        cols.insert(-2, f"kappa(block {','.join(cfg.track.block)})")
    for c in cols:
        table.add_column(c, justify="left" if c in ("variant", "optimizer") else "right")
    for c in report.choices:
        acc = c.median("final_test_acc")
        ratio = [r.max_ratio for r in c.runs if r.max_ratio is not None]
        ok = all(r.converged for r in c.runs)
        row = ([c.variant] if many else []) + [
            c.optimizer, f"{c.lr:g}" + ("*" if c.tuned else ""), str(len(c.runs)),
            _steps(c, cfg.steps) if cfg.target_loss is not None else str(cfg.steps),
            fmt(c.median("final_train_loss")), fmt(c.median("final_test_loss")),
            "-" if acc is None else f"{acc:.3f}",
            _kappas(c, "kappa", ok), _kappas(c, "pre_kappa", ok),
            fmt(max(ratio), 3) if ratio else "-",
        ]
        if block:
            row.insert(-2, _kappas(c, "block_kappa", ok))
        table.add_row(*row)
    return table


def grid_table(report: CompareReport) -> Table | None:
    """The score of every lr tried by the tuned entries (None when nothing was tuned)."""
    tuned = [c for c in report.choices if c.tuned]
    if not tuned:
        return None
    crit = report.config.criterion
    table = Table(title=f"learning-rate grids (criterion: {crit}, median over seeds; * chosen)",
                  title_justify="left", header_style="bold")
    many = len(report.config.variants) > 1
    for col in (["variant"] if many else []) + ["optimizer", "lr: score"]:
        table.add_column(col)
    for c in tuned:
        cells = []
        for lr, (primary, tie) in c.grid:
            score = "diverged/never" if math.isinf(primary) else fmt(primary)
            if crit == "steps_to_target" and math.isinf(primary) and math.isfinite(tie):
                score = f"never (loss {fmt(tie, 3)})"
            cells.append(f"{lr:g}{'*' if lr == c.lr else ''}: {score}")
        if c.edge:
            cells.append(f"(best at the {c.edge} edge)")
        table.add_row(*(([c.variant] if many else []) + [c.optimizer, ", ".join(cells)]))
    return table


def edge_notes(report: CompareReport) -> list[str]:
    """One line per tuned entry whose chosen lr is at an end of its grid."""
    many = len(report.config.variants) > 1
    return [
        f"lr grid: {c.optimizer}{f' ({c.variant})' if many else ''} is best at the {c.edge} lr "
        f"{c.lr:g} of its grid: its optimum may lie outside; widen the grid"
        for c in report.choices
        if c.edge
    ]


def findings_table(report: CompareReport) -> Table | None:
    if not report.findings:
        return None
    table = Table(title=f"findings ({report.config.findings})", title_justify="left",
                  header_style="bold")
    table.add_column("claim")
    table.add_column("measured")
    table.add_column("agrees", justify="center")
    for f in report.findings:
        mark = "-" if f.agrees is None else ("[green]yes[/]" if f.agrees else "[red]no[/]")
        table.add_row(f.claim, f.measured, mark)
    return table


def findings_markdown(report: CompareReport) -> str:
    """The findings as a markdown table (for docs/reproductions.md)."""
    lines = ["| claim | measured | agrees |", "|---|---|---|"]
    for f in report.findings:
        mark = "-" if f.agrees is None else ("yes" if f.agrees else "**no**")
        lines.append(f"| {f.claim} | {f.measured} | {mark} |")
    return "\n".join(lines) + "\n"
