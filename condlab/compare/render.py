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


def scale_dependent(c: Choice) -> bool:
    """Whether the row's ``kappa(P^-1/2 A P^-1/2)`` moves with ``P``'s arbitrary scale: decoupled
    decay (``P^-1/2 A P^-1/2 + lam I``); coupled decay and none are scale-free."""
    from condlab.train.diag_optimizers import DECAY_KIND

    r = c.runs[0]
    return DECAY_KIND.get(r.method) == "decoupled" and r.weight_decay > 0


SCALE_NOTE = ("§ = depends on P's arbitrary scale (decoupled decay: P^-1/2 A P^-1/2 + lam I "
              "moves when P -> c P); compare it with no other row")


def summary_rows(report: CompareReport) -> tuple[list[str], list[list[str]]]:
    """The summary's columns and rows: one row per (variant, optimizer) at its chosen lr;
    medians over seeds."""
    cfg = report.config
    many = len(cfg.variants) > 1
    cols = (["variant"] if many else []) + [
        "optimizer", "lr", "seeds",
        f"steps to {fmt(cfg.target_loss)}" if cfg.target_loss is not None else "steps",
        "train loss", "test loss", "test acc", f"kappa({cfg.track.curvature})",
        "kappa(P^-1/2 A P^-1/2)", "max sharp/thr"]
    block = any(c.median_end("block_kappa", 0) is not None for c in report.choices)
    if block:
        cols.insert(-2, f"kappa(block {','.join(cfg.track.block)})")
    rows = []
    for c in report.choices:
        acc = c.median("final_test_acc")
        ratio = [r.max_ratio for r in c.runs if r.max_ratio is not None]
        ok = all(r.converged for r in c.runs)
        row = ([c.variant] if many else []) + [
            c.optimizer, f"{c.lr:g}" + ("*" if c.tuned else ""), str(len(c.runs)),
            _steps(c, cfg.steps) if cfg.target_loss is not None else str(cfg.steps),
            fmt(c.median("final_train_loss")), fmt(c.median("final_test_loss")),
            "-" if acc is None else f"{acc:.3f}",
            _kappas(c, "kappa", ok), _kappas(c, "pre_kappa", ok) + (" §" if scale_dependent(c) else ""),
            fmt(max(ratio), 3) if ratio else "-",
        ]
        if block:
            row.insert(-2, _kappas(c, "block_kappa", ok))
        rows.append(row)
    return cols, rows


def summary_table(report: CompareReport) -> Table:
    """One row per (variant, optimizer) at its chosen lr; medians over seeds."""
    table = Table(title=f"condlab compare: {report.config.name}", title_justify="left",
                  header_style="bold")
    cols, rows = summary_rows(report)
    for c in cols:
        table.add_column(c, justify="left" if c in ("variant", "optimizer") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def grid_rows(report: CompareReport) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the lr grids: the score of every lr tried by the tuned entries."""
    crit = report.config.criterion
    many = len(report.config.variants) > 1
    rows = []
    for c in (c for c in report.choices if c.tuned):
        cells = []
        for lr, (primary, tie) in c.grid:
            score = "diverged/never" if math.isinf(primary) else fmt(primary)
            if crit == "steps_to_target" and math.isinf(primary) and math.isfinite(tie):
                score = f"never (loss {fmt(tie, 3)})"
            cells.append(f"{lr:g}{'*' if lr == c.lr else ''}: {score}")
        if c.edge:
            cells.append(f"(best at the {c.edge} edge)")
        rows.append(([c.variant] if many else []) + [c.optimizer, ", ".join(cells)])
    return (["variant"] if many else []) + ["optimizer", "lr: score"], rows


def grid_table(report: CompareReport) -> Table | None:
    """The score of every lr tried by the tuned entries (None when nothing was tuned)."""
    cols, rows = grid_rows(report)
    if not rows:
        return None
    table = Table(title=f"learning-rate grids (criterion: {report.config.criterion}, median "
                        "over seeds; * chosen)", title_justify="left", header_style="bold")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(cols: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def edge_notes(report: CompareReport) -> list[str]:
    """One line per tuned entry whose chosen lr is at an end of its grid."""
    many = len(report.config.variants) > 1
    return [
        f"lr grid: {c.optimizer}{f' ({c.variant})' if many else ''} is best at the {c.edge} lr "
        f"{c.lr:g} of its grid: its optimum may lie outside; widen the grid"
        for c in report.choices
        if c.edge
    ]


COLOURS = {"yes": "green", "no": "red", "tie": "yellow", "inconclusive": "yellow",
           "not distinguishable": "yellow"}


def findings_table(report: CompareReport) -> Table | None:
    if not report.findings:
        return None
    table = Table(title=f"findings ({report.config.findings})", title_justify="left",
                  header_style="bold")
    table.add_column("claim")
    table.add_column("source")
    table.add_column("control (wins if the claim is false)")
    table.add_column("measured")
    table.add_column("verdict", justify="center")
    for f in report.findings:
        colour = COLOURS.get(f.verdict)
        mark = f"[{colour}]{f.verdict}[/]" if colour else f.verdict
        table.add_row(f.claim, f.source, f.control or "-", f.measured, mark)
    return table


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def findings_markdown(report: CompareReport) -> str:
    """The findings as a markdown table (for docs/reproductions.md)."""
    lines = ["| claim | source | control (wins if the claim is false) | measured | verdict |",
             "|---|---|---|---|---|"]
    for f in report.findings:
        mark = f"**{f.verdict}**" if f.verdict in ("no", "inconclusive", "not distinguishable",
                                                   "tie") else f.verdict
        lines.append(f"| {_md(f.claim)} | {f.source} | {_md(f.control or '-')} | "
                     f"{_md(f.measured)} | {mark} |")
    return "\n".join(lines) + "\n"
