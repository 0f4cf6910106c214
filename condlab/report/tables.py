"""Result records -> rich tables. Nothing here computes curvature; tests render to a StringIO."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from condlab.report.records import SpectrumResult


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.{digits - 1}e}"


def _ratio(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "-"
    return f"x{new / old:.3g}"


def spectrum_table(results: Sequence[SpectrumResult], title: str | None = None) -> Table:
    """One row per setting; settings after the first show their change against the first."""
    base = results[0] if results else None
    compare = any(r.preconditioner or r.normalization for r in results[1:])
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("setting", no_wrap=True)
    table.add_column("λ_max", justify="right", no_wrap=True)
    table.add_column("λ_min", justify="right", no_wrap=True)
    table.add_column("κ", justify="right", no_wrap=True)
    if compare:
        table.add_column("κ ratio", justify="right", no_wrap=True)
        table.add_column("λ_max ratio", justify="right", no_wrap=True)
    table.add_column("nullity", justify="right")
    table.add_column("trace", justify="right", no_wrap=True)
    table.add_column("HVPs", justify="right")
    table.add_column("s", justify="right")
    table.add_column("ok", justify="center")
    for r in results:
        trace = "-" if r.trace is None else f"{fmt(r.trace)} ± {fmt(r.trace_stderr, 2)}"
        nullity = "-" if r.nullity is None else str(r.nullity)
        row = [r.setting, fmt(r.lambda_max), fmt(r.lambda_min), fmt(r.condition_number)]
        if compare:
            same = r is base
            row += [
                "" if same else _ratio(r.condition_number, base.condition_number),
                "" if same else _ratio(r.lambda_max, base.lambda_max),
            ]
        row += [nullity, trace, str(r.hvp_count), f"{r.seconds:.2f}"]
        row.append("[green]yes[/]" if r.converged else "[red]no[/]")
        table.add_row(*row)
    return table


def eigenvalue_table(result: SpectrumResult) -> Table:
    """The eigenvalues of one setting with their residuals and convergence flags."""
    table = Table(title=f"eigenvalues: {result.setting}", title_justify="left")
    for col in ("end", "rank", "eigenvalue", "residual", "converged"):
        table.add_column(col, justify="right" if col != "end" else "left")
    for row in result.eigen_rows():
        table.add_row(
            row["end"],
            str(row["rank"]),
            f"{row['eigenvalue']:.8g}",
            fmt(row["residual"], 2),
            "yes" if row["converged"] else "no",
        )
    return table


def definitions(results: Sequence[SpectrumResult]) -> list[str]:
    """The distinct condition-number definitions used, one line each, for a footnote."""
    seen: list[str] = []
    for r in results:
        line = f"{r.setting}: {r.condition_definition}" if r.condition_definition else None
        if line and r.condition_definition not in [s.split(": ", 1)[1] for s in seen]:
            seen.append(line)
    return seen
