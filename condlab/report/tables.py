"""Result records -> rich tables and notes. Nothing here computes curvature; tests render to a
StringIO.

Two levels: the default (:func:`spectrum_table` and :func:`key_notes`) shows the columns a user
decides with (setting, κ or its bound, stab., λ_max, λ_min, ok) and at most three notes, each
only when it applies (not resolved, indefinite, not converged); ``--explain``
(``full=True``, :func:`legend`, :func:`eigenvalue_lines`, :func:`definitions`, :func:`notes`)
adds every column, eigenvalue, definition and caveat. The JSON keeps every field."""

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


def _negatives(r: SpectrumResult) -> str:
    n = r.details.get("negative_count")
    if n is not None:
        exact = r.details.get("negative_count_stderr") == 0.0
        return str(int(n)) if exact else f"~{n:.0f}"
    if r.definiteness is None:
        return "-"
    return ">=1" if r.definiteness == "indefinite" else "0"


def _kappa(r: SpectrumResult) -> str:
    """κ, or ``> bound`` (yellow) when the dtype cannot resolve it."""
    if r.condition_number is None and r.condition_resolved is False and r.condition_bound:
        return f"[yellow]> {fmt(r.condition_bound, 2)}[/]"
    return fmt(r.condition_number)


def _nullity(r: SpectrumResult) -> str:
    if r.nullity is not None:
        return str(r.nullity)
    if r.nullity_lower_bound is not None:
        return f"≥ {r.nullity_lower_bound}"
    return "-"


def _stability(r: SpectrumResult) -> str:
    s = r.stability
    return "-" if not s else f"{s['ratio']:.3g}"


def spectrum_table(results: Sequence[SpectrumResult], title: str | None = None, *,
                   full: bool = False) -> Table:
    """One row per setting: setting, κ (or ``> bound``), stab. (when an lr is known), λ_max,
    λ_min, ok; ``full`` adds what ``--explain`` shows (below).

    With ``full``, settings after the first show their change against the first. Scale-free
    figures lead (kappa, the stability ratio ``lambda_max(P^-1 A) / threshold(lr)``,
    the negative-eigenvalue count); the lambda_max ratio is shown only for rows whose scale is
    comparable with the baseline's (not preconditioned: ``P`` has an arbitrary scale)."""
    if not full:
        return _short_table(results, title)
    base = results[0] if results else None
    compare = any(r.preconditioner or r.normalization for r in results[1:])
    stab = any(r.stability for r in results)
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("setting", no_wrap=True)
    table.add_column("curvature of", no_wrap=True)
    table.add_column("κ", justify="right", no_wrap=True)
    if compare:
        table.add_column("κ ratio", justify="right", no_wrap=True)
    if stab:
        table.add_column("stab.", justify="right", no_wrap=True)
    table.add_column("neg.", justify="right", no_wrap=True)
    table.add_column("λ_max", justify="right", no_wrap=True)
    table.add_column("λ_min", justify="right", no_wrap=True)
    if compare:
        table.add_column("λ_max ratio", justify="right", no_wrap=True)
    table.add_column("null", justify="right")
    table.add_column("trace", justify="right", no_wrap=True)
    table.add_column("HVPs/s", justify="right", no_wrap=True)
    table.add_column("ok", justify="center")
    for r in results:
        trace = "-" if r.trace is None else f"{fmt(r.trace)} ± {fmt(r.trace_stderr, 2)}"
        same = r is base
        row = [r.setting, str(r.objective or r.curvature), _kappa(r)]
        if compare:
            row.append("" if same else (_ratio(r.condition_number, base.condition_number)
                                        if r.kappa_scale_free else "n/a §"))
        if stab:
            row.append(_stability(r))
        row.append(_negatives(r))
        row += [fmt(r.lambda_max), fmt(r.lambda_min)]
        if compare:
            scaled = r.preconditioner is not None
            row.append("" if same else ("n/a" if scaled else _ratio(r.lambda_max, base.lambda_max)))
        row += [_nullity(r), trace, f"{r.hvp_count}/{r.seconds:.2f}"]
        row.append("[green]yes[/]" if r.converged else "[red]no[/]")
        table.add_row(*row)
    return table


def _short_table(results: Sequence[SpectrumResult], title: str | None) -> Table:
    """The columns a user decides with; narrow enough for 80 columns (long names fold)."""
    stab = any(r.stability for r in results)
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("setting", overflow="fold")
    table.add_column("κ", justify="right", no_wrap=True)
    if stab:
        table.add_column("stab.", justify="right", no_wrap=True)
    table.add_column("λ_max", justify="right", no_wrap=True)
    table.add_column("λ_min", justify="right", no_wrap=True)
    table.add_column("ok", justify="center", no_wrap=True)
    for r in results:
        row = [r.setting, _kappa(r) + ("" if r.kappa_scale_free else " §")]
        row += [_stability(r)] if stab else []
        row += [fmt(r.lambda_max), fmt(r.lambda_min), "[green]yes[/]" if r.converged else "[red]no[/]"]
        table.add_row(*row)
    return table


def key_notes(results: Sequence[SpectrumResult]) -> list[str]:
    """At most three lines under the default table, each only when it applies, the most
    pressing first: an eigenpair not converged, κ not resolved in this dtype, κ undefined for an
    indefinite operator, κ that moves with P's arbitrary scale (``§``)."""
    lines = []
    unconverged = [r.setting for r in results if not r.converged]
    if unconverged:
        lines.append(f"not converged ({', '.join(unconverged)}): estimates; raise --max-hvps or "
                     "loosen --tol")
    unresolved = [r.setting for r in results if r.condition_resolved is False]
    if unresolved:
        lines.append(f"κ not resolved ({', '.join(unresolved)}): only a lower bound '> x'; "
                     "the smallest eigenvalue is within the arithmetic noise (--dtype float64)")
    indefinite = [r.setting for r in results if r.definiteness == "indefinite"]
    if indefinite:
        lines.append(f"indefinite ({', '.join(indefinite)}): negative curvature, κ undefined; "
                     "--curvature ggn gives a positive semi-definite κ, --exact κ of the positive part")
    if not all(r.kappa_scale_free for r in results):
        lines.append("§ κ moves with P's arbitrary scale here (a shift after P: decoupled decay or "
                     "damping): compare it with no other row")
    lines += trust_lines(results)  # what the trust checks found (condlab.consistency)
    return lines[:3]  # the rest: --explain


def trust_lines(results: Sequence[SpectrumResult]) -> list[str]:
    """The trust checks' notes (condlab.consistency), one line per distinct note."""
    from condlab.consistency import trust_notes

    return trust_notes(results)


def notes(results: Sequence[SpectrumResult]) -> list[str]:
    """What the rows mean beyond their numbers: scale caveats, objectives, indefiniteness."""
    lines: list[str] = []
    lams = {r.objective_lambda for r in results} - {None}
    if lams:
        lam = ", ".join(f"{x:g}" for x in sorted(lams))
        lines.append(f"curvature of: λ = {lam} (weight decay), P = the row's diagonal preconditioner")
    for r in results:
        s = r.stability
        if s:
            lines.append(
                f"stab., {r.setting}: lambda_max / threshold, lr {s['lr']:g} ({s['lr_source']}), "
                f"{s['method']} threshold {fmt(s['threshold'])}: {s['ratio']:.3g} ({s['regime']})"
            )
    if not all(r.kappa_scale_free for r in results):
        lines.append(
            "§ κ of " + ", ".join(r.setting for r in results if not r.kappa_scale_free)
            + " depends on P's arbitrary scale (a shift after P: decoupled decay or damping); no "
            "κ ratio for it")
    if any(r.preconditioner for r in results):
        lines.append(
            "λ_max ratio n/a for preconditioned rows: P's overall scale is arbitrary up to the "
            "learning rate; compare κ and stab. (give --lr, or measure an optimizer state)"
        )
    objectives = {str(r.objective) for r in results if r.layer is None}
    decayed = [r for r in results if r.layer is None and r.objective_lambda]
    if decayed and len(objectives) > 1:
        lines.append(
            "rows are curvatures of different objectives (see 'curvature of'); at a converged "
            "point the decay term can dominate both κ; without --weight-decay the rows compare "
            "H with P^-1/2 H P^-1/2"
        )
    for r in results:
        opt_wd = r.details.get("optimizer_weight_decay")
        if opt_wd and not (r.details.get("weight_decay") and r.details.get("decay") != "none"):
            lines.append(
                f"{r.setting}: the optimizer stepped with weight decay {opt_wd:g} "
                f"({r.details.get('optimizer_decay')}); this row leaves it out "
                "(--weight-decay, --decay to include it)"
            )
    for r in results:  # repeated eigenvalues and proven null spaces, once per distinct text
        for note in (r.multiplicity_note, r.nullity_bound_reason and (
                f"nullity >= {r.nullity_lower_bound}: {r.nullity_bound_reason}")):
            if note and not any(line.endswith(f": {note}") for line in lines):
                lines.append(f"{r.setting}: {note}")
    lines += [line for line in trust_lines(results) if line not in lines]
    indefinite = [r for r in results if r.definiteness == "indefinite"]
    for r in indefinite:
        n = r.details.get("negative_count")
        count = (
            f"{_negatives(r)} eigenvalues below -{fmt(r.details['negative_threshold'], 2)} "
            f"({r.details['negative_method']}), "
            f"{100 * r.details['negative_mass']:.3g}% of the absolute spectral mass"
            if n is not None
            else "negative eigenvalues not counted (--density for an SLQ count, --exact)"
        )
        lines.append(f"indefinite, {r.setting}: {count}")
    if indefinite and any(r.preconditioner for r in results):
        lines.append(
            "a diagonal P does not create negative eigenvalues (Sylvester's law of inertia: "
            "P^-1/2 H P^-1/2 has exactly as many as H; counts above differ only by eigenvalues "
            "within round-off of 0, which P rescales across the threshold; a shift +λI after P "
            "covers less of them than H+λI); for a conditioning figure of an indefinite Hessian "
            "use κ of the positive semi-definite GGN (--curvature ggn)"
        )
    return lines


def legend(results: Sequence[SpectrumResult]) -> str:
    """What each column of :func:`spectrum_table` holds, for the columns it shows."""
    compare = any(r.preconditioner or r.normalization for r in results[1:])
    parts = ["κ = condition number (its definition below)"]
    if compare:
        parts.append("κ ratio = κ / the first row's κ")
    if any(r.stability for r in results):
        parts.append("stab. = λ_max of P^-1 A / the method's stability threshold")
    parts.append("neg. = eigenvalues below -threshold")
    if compare:
        parts.append("λ_max ratio = λ_max / the first row's")
    parts += ["null = eigenvalues within ±threshold of 0", "trace ± its standard error",
              "HVPs/s = curvature products / seconds",
              "ok = every requested eigenpair met --tol (no: estimates, raise --max-hvps)"]
    return "columns: " + "; ".join(parts)


def eigenvalue_lines(results: Sequence[SpectrumResult]) -> list[str]:
    """The eigenvalues each setting was asked for (``--top``, ``--bottom``), largest first at the
    top end and smallest first at the bottom; ``*`` marks one that did not meet ``--tol``."""

    def values(vals, ok) -> str:
        return ", ".join(f"{v:.6g}{'' if c else '*'}" for v, c in zip(vals, ok))

    lines = []
    for r in results:
        ends = [f"top {values(r.eigenvalues_top, r.converged_top)}" if r.eigenvalues_top else "",
                f"bottom {values(r.eigenvalues_bottom, r.converged_bottom)}"
                if r.eigenvalues_bottom else ""]
        if any(ends):
            lines.append(f"eigenvalues, {r.setting}: " + "; ".join(e for e in ends if e))
    if any(not all(r.converged_top or [True]) or not all(r.converged_bottom or [True])
           for r in results):
        lines.append("* = not converged to --tol within --max-hvps (an estimate)")
    return lines


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
