"""``condlab track``: the CLI layer over :mod:`condlab.tracking.sweep` (parse, sweep, plot).

Its loading and measuring options are ``condlab spectrum``'s, from the one option schema
(:data:`condlab.cli_options.TRACK`: its own, then SPECTRUM's less the single-file ones), so the two commands cannot
drift apart. Exit codes: 0 done (with a warning per skipped checkpoint), 1 a checkpoint failed
under ``--on-error stop``, 2 a usage error found before any measurement.
"""

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, handle_errors, out, err) -> None:
    """Add ``track`` to ``app``; ``out``/``err`` are the rich consoles for results/diagnostics."""
    from condlab.cli_common import (
        Command,
        check_outputs,
        progress_bar,
        spectrum_config,
        with_options,
    )
    from condlab.cli_options import TRACK

    @app.command("track", cls=Command)
    @handle_errors
    @with_options(TRACK)
    def track(
        checkpoints: Annotated[list[str], typer.Argument(help="Checkpoint files: folders and/or quoted globs such as 'run/ckpt_*.pt'.", show_default=False)],
        *,
        given: dict,
        flags: dict,
    ) -> None:
        """Measure every checkpoint of a run in step order into a CSV, and plot it.

        Takes spectrum's options (model, data, loss, curvature, --precond, --norm, estimators).
        lr and beta1 come from each checkpoint's optimizer state unless given.
        Example: condlab track 'run/ckpt_*.pt' --model mlp --data digits --precond optimizer --plot eos.png
        """
        from condlab.compare.csvlog import open_log
        from condlab.errors import UsageError
        from condlab.tracking.rows import COLUMNS
        from condlab.tracking.sweep import Sweep, discover, run_sweep, warm_path

        force, resume, plot, output = flags["force"], flags["resume"], flags["plot"], Path(flags["output"])
        warm = flags["warm_start"]
        if resume and force:
            raise UsageError("--resume continues --output and --force replaces it: pass one")
        if plot is not None and plot.suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG; give a file name ending in .png, not '{plot}'")
        check_outputs({"--plot": plot}, force=force or resume)  # redrawn from the whole CSV
        cfg = spectrum_config({**given, "checkpoint": checkpoints[0]}, flags)
        found = discover(checkpoints, trust=cfg.trust_checkpoint)
        record = {**cfg.to_dict(), "checkpoints": list(checkpoints), "warm_start": warm}
        sweep = Sweep(cfg, found, warm=warm, threads=flags["threads"])
        log, done = open_log(output, record, resume=resume, force=force, threads=flags["threads"],
                             columns=COLUMNS, what="track")
        with log, progress_bar() as bar:
            task = bar.add_task("checkpoints", total=len(found))
            bar.update(task, completed=len({r["checkpoint"] for r in done}))
            summary = run_sweep(
                sweep, log, done, on_error=flags["on_error"],
                on_checkpoint=lambda i, n, c: bar.update(task, description=f"step {c.step}",
                                                         completed=len(found) - n + i),
            )
        for line in summary.skipped:
            err.print(f"[yellow]warning:[/] skipped {line}", highlight=False, soft_wrap=True)
        if summary.replayed:
            stale = f" ({warm_path(output).name} did not match the CSV)" if summary.stale_warm else ""
            err.print(f"re-measured {summary.replayed} checkpoint(s) already in the CSV to rebuild "
                      f"the warm start{stale}", highlight=False)
        done_text = f", {summary.resumed} already there" if summary.resumed else ""
        err.print(f"measured {summary.measured} checkpoint(s){done_text} ({summary.hvps} curvature "
                  f"products); wrote {output}", highlight=False)
        if plot is not None:
            from condlab.compare.csvlog import read_rows
            from condlab.tracking.plots import plot_track

            rows = read_rows(output, columns=COLUMNS, what="track")
            steps = sorted({r["step"] for r in rows if r["step"] is not None})
            plot_track(rows, plot, title=f"condlab track: {len(steps)} checkpoints, "
                       f"steps {steps[0]}-{steps[-1]}" if steps else "condlab track")
            err.print(f"wrote {plot}", highlight=False)
