"""``condlab compare CONFIG.yaml``: the command, registered on the app of :mod:`condlab.cli`.

Parse, call :func:`condlab.compare.compare`, render, write. A live progress display goes to
stderr; the tables and findings to stdout; the CSV is written by the library row by row.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from condlab.cli_common import Command, check_outputs, config_help, with_options
from condlab.errors import UsageError
from condlab.options import COMPARE_FLAGS


def progress_bar(err) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=True,
    )


def _info(row: dict) -> str:
    from condlab.report.tables import fmt

    parts = [f"loss {fmt(row['train_loss'])}"]
    if row.get("kappa") is not None:
        parts.append(f"kappa {fmt(row['kappa'], 3)}")
    if row.get("pre_kappa") is not None:
        parts.append(f"pre-kappa {fmt(row['pre_kappa'], 3)}")
    if row.get("si_eff_lr") is not None:
        parts.append(f"eff lr {fmt(row['si_eff_lr'], 3)}")
    return "  ".join(parts)


HELP = config_help(
    "Train one problem with several optimizers; compare losses and conditioning.\n\n"
    "Example: condlab compare configs/compare_b_linreg.yaml --output b.csv --plot b.png",
    "CONFIG", "compare",
)


def register(app: typer.Typer, handle_errors, out, err) -> None:
    """Add the ``compare`` command to ``app`` (called once, from the end of condlab.cli)."""

    @app.command("compare", cls=Command, help=HELP)
    @handle_errors
    @with_options(COMPARE_FLAGS)
    def compare_cmd(
        config: Annotated[Path, typer.Argument(help="YAML: the problem, tracking settings and an 'optimizers:' list (see configs/compare_*.yaml and the keys below).", show_default=False)],
        *,
        given: dict,
        flags: dict,
    ) -> None:
        import os

        from condlab.compare import compare, load_config
        from condlab.compare.render import (
            SCALE_NOTE,
            edge_notes,
            findings_table,
            grid_table,
            scale_dependent,
            summary_table,
        )

        output, resume, force, plot = flags["output"], flags["resume"], flags["force"], flags["plot"]
        quick = flags["quick"]
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError(
                "condlab compare runs in one process (its tracking is not sharded across ranks "
                "yet); start it without torchrun"
            )
        cfg = load_config(config, quick=quick)
        if resume and output is None:
            raise UsageError("--resume continues the CSV of --output; add --output PATH")
        if resume and force:
            raise UsageError("--resume and --force contradict each other; pass one of them")
        outputs = {"--plot": plot}
        if output is not None and not resume:  # --resume continues the file (checked there)
            outputs["--output"] = output
        check_outputs(outputs, force=force)
        with progress_bar(err) as bar:
            runs = bar.add_task("runs", total=None, info="")
            current = bar.add_task("", total=cfg.steps, info="")

            def on_event(kind: str, payload: dict) -> None:
                if kind == "run":
                    bar.update(runs, total=payload["total"], completed=payload["index"])
                    bar.reset(current, total=cfg.steps, description=payload["spec"].describe(),
                              info="resuming" if payload["resumed"] else "")
                else:
                    bar.update(current, completed=payload["step"], info=_info(payload))

            try:
                report = compare(cfg, output=output, resume=resume, force=force,
                                 on_event=on_event, stop_after_rows=flags["stop_after_rows"],
                                 threads=flags["threads"])
            except KeyboardInterrupt:
                bar.stop()
                where = f"; rows so far are in {output}: continue with --resume" if output else ""
                err.print(f"[yellow]interrupted[/]{where}", highlight=False)
                raise typer.Exit(130) from None
        out.print(summary_table(report))
        for table in (grid_table(report), findings_table(report)):
            if table is not None:
                out.print(table)
        for line in edge_notes(report):
            out.print(f"  [yellow]{line}[/]", highlight=False)
        if any(scale_dependent(c) for c in report.choices):
            out.print(f"  {SCALE_NOTE}", highlight=False)
        out.print(
            f"  kappa: the positive-part condition number lambda_max / lambda_min+ of "
            f"{cfg.track.curvature} (exact: {cfg.track.exact}); P^-1/2 A P^-1/2 uses each "
            "optimizer's live P (weight decay included); max sharp/thr = lambda_max of it over "
            "the method's stability threshold; * = lr chosen from a grid; ~ = some eigenvalues did not "
            "converge within track.max_hvps (estimates).", highlight=False)
        if output is not None:
            extra = f" ({report.resumed_rows} kept from before)" if report.resumed_rows else ""
            err.print(f"wrote {output}: {len(report.rows)} rows{extra}", highlight=False)
        if plot is not None:
            from condlab.compare.plots import plot_report

            plot_report(report, plot)
            err.print(f"wrote {plot}", highlight=False)
        err.print(f"{len(report.runs)} runs in {report.seconds:.1f} s "
                  f"({'quick' if quick else 'full'} size)", highlight=False)
        sys.stdout.flush()
