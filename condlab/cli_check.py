"""``condlab check``: the CLI layer over :mod:`condlab.check` (parse, run, render, write).

``register(app, handle_errors, out, err)`` adds the command to condlab's typer app; cli.py calls
it once at import. Exit codes: 0 every guard passes, 1 any fails, 2 a usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from condlab.cli_common import Command, check_outputs, config_help, progress_bar, with_options
from condlab.options import CHECK_FLAGS

HELP = config_help(
    "Re-measure the checks in BASELINE and compare them with the stored values.\n\n"
    "Exit 0 when every guarded metric passes, 1 when any regresses (or is missing), 2 on a "
    "usage error. Example: condlab check configs/check_baseline.yaml --junit report.xml",
    "BASELINE", "check",
)


def register(app: typer.Typer, handle_errors, out, err) -> None:
    """Add ``check`` to ``app``; ``out``/``err`` are the rich consoles for results/diagnostics."""

    @app.command("check", cls=Command, help=HELP)
    @handle_errors
    @with_options(CHECK_FLAGS)
    def check(
        baseline: Annotated[Path, typer.Argument(help="The baseline YAML: a top-level 'checks:' list (see docs/ci.md).", show_default=False)],
        *,
        given: dict,
        flags: dict,
    ) -> None:
        from rich.markup import escape

        from condlab.check import (
            check_table,
            json_document,
            junit_xml,
            load_baseline,
            run_checks,
            summary,
            update_baseline,
        )
        from condlab.check.render import failure_lines
        from condlab.check.update import NOT_STORED
        from condlab.distributed import init_from_env, is_main
        from condlab.errors import UsageError
        from condlab.report.files import json_text

        update, junit, force, only = flags["update"], flags["junit"], flags["force"], flags["only"]
        json_format = flags["format"] == "json"
        init_from_env()  # under torchrun each check's products are sharded across ranks
        if update and junit is not None:
            raise UsageError("--junit reports a check; run --update without it")
        if junit is not None:
            check_outputs({"--junit": junit}, force=force)
        base = load_baseline(baseline, need_values=not update, trust=flags["trust_checkpoint"])

        with progress_bar() as bar:
            tasks: dict[tuple[str, str], int] = {}

            def on_progress(name: str, setting: str, done: int, budget: int) -> None:
                key = (name, setting)
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{name}: {setting}", total=budget)
                bar.update(tasks[key], completed=min(done, budget))

            run = run_checks(base, only=tuple(only or ()), threads=flags["threads"], on_progress=on_progress)
        if not is_main():  # every rank measured the same numbers; rank 0 reports and writes
            raise typer.Exit(run.exit_code)

        if json_format:
            doc = json_document(run, " ".join(["condlab", *sys.argv[1:]]))
            sys.stdout.write(json_text(doc))
            sys.stdout.flush()
        else:
            for i, c in enumerate(run.checks):
                out.print(*([""] if i else []), check_table(c))
        if junit is not None:
            from condlab.files import atomic_write_text

            atomic_write_text(junit, junit_xml(run))
            err.print(f"wrote {junit}", highlight=False)
        if update:
            n = update_baseline(run)
            err.print(f"wrote {n} values to {baseline}", highlight=False)
            kept = [
                f"{c.check.name} / {g.guard.label}: {g.verdict.message}"
                for c in run.checks
                for g in c.guards
                if g.verdict.verdict in NOT_STORED
            ]
            for line in kept:
                err.print(f"[red]not updated:[/] {escape(line)}", highlight=False)
            raise typer.Exit(1 if kept else 0)
        console = err if json_format else out
        for line in failure_lines(run):
            console.print(f"[red]fail:[/] {escape(line)}", highlight=False)
        console.print(summary(run), style="bold green" if run.ok else "bold red", highlight=False)
        raise typer.Exit(run.exit_code)


