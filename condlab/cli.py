"""The command line: parse, call one library function, render, write. Only this module prints.

Errors raised below it (:class:`condlab.errors.CondlabError`) become one line on stderr and exit
code 1 (a failure) or 2 (bad usage); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from condlab.cli_common import (
    Command,
    OneLineErrors,
    check_outputs,
    config_help,
    err,
    handle_errors,
    hvp_ticker,
    interrupted,
    out,
    progress_bar,
    spectrum_config,
    state,
    with_options,
)
from condlab.cli_options import SPECTRUM
from condlab.errors import UsageError
from condlab.options import DEMO, FORMATS, ROOT, TRAIN, TRAIN_FLAGS

app = typer.Typer(
    cls=OneLineErrors,
    help="How well-conditioned is your loss surface? Hessian and Gauss-Newton spectra, "
    "before and after preconditioning or normalization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
@with_options(ROOT)
def _root(*, given: dict, flags: dict) -> None:
    state["debug"] = flags["debug"]


# -- choices -------------------------------------------------------------------------------------
Format = Enum("Format", {f: f for f in FORMATS}, type=str)  # --format's choices, as declared


def _write_or_print(text: str, output: Optional[Path]) -> None:
    from condlab.report.files import atomic_write_text

    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(output, text)
        err.print(f"wrote {output}", highlight=False)


# -- spectrum ------------------------------------------------------------------------------------
@app.command(cls=Command)
@handle_errors
@with_options(SPECTRUM)
def spectrum(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A condlab checkpoint (from `condlab train`) or a state_dict file.", show_default=False)] = None,
    *,
    given: dict,
    flags: dict,
) -> None:
    """Extreme eigenvalues, condition number, trace and density of the Hessian or GGN.

    Example: condlab spectrum ckpt.pt --top 5 --bottom 3 --precond optimizer --format json
    """
    from condlab.distributed import init_from_env, is_main
    from condlab.pipeline import run_spectrum

    init_from_env()  # under torchrun: join the process group (a no-op in one process)
    fmt, output, plot = Format(flags["format"]), flags["output"], flags["plot"]
    density_output = flags["density_output"]
    if checkpoint is not None:
        given["checkpoint"] = checkpoint
    cfg = spectrum_config(given, flags)
    if plot is not None and not cfg.density:
        raise UsageError("--plot draws the spectral density: add --density")
    if fmt == Format.table and output is not None:
        raise UsageError("a table goes to the terminal; use --format csv or json with --output")
    check_outputs(
        {"--output": output, "--output (its eigenvalues)": sidecar_of(output, fmt),
         "--density-output": density_output if cfg.density else None, "--plot": plot},
        force=flags["force"],
    )

    if flags["list_params"]:
        return _list_params(cfg)
    if flags["verbose"]:  # the memory plan on stderr, before the work
        from condlab import memory

        memory.on_plan.append(lambda p: err.print(p.describe(), highlight=False, soft_wrap=True))
    with progress_bar() as bar:
        report = run_spectrum(cfg, on_progress=hvp_ticker(bar), threads=flags["threads"])
    if not is_main():  # under torchrun every rank holds the same report; rank 0 writes it
        return
    render_spectrum(report, fmt, output, command=" ".join(["condlab", *sys.argv[1:]]),
                    explain=flags["explain"])
    if report.densities:
        from condlab.report.files import atomic_write_text, csv_text

        atomic_write_text(density_output, csv_text([r for d in report.densities for r in d.rows()]))
        err.print(f"wrote {density_output}", highlight=False)
        if plot is not None:
            from condlab.report.plots import plot_density

            plot_density(report.densities, plot)
            err.print(f"wrote {plot}", highlight=False)


def _list_params(cfg) -> None:
    """The parameters of the model ``cfg`` loads, as ``--params`` globs see them."""
    import fnmatch

    from rich.table import Table

    from condlab.inputs import read_inputs

    model = read_inputs(cfg).model
    table = Table("name", "shape", "size", "trainable", "selected", title="parameters",
                  title_justify="left")
    for name, p in model.named_parameters():
        chosen = not cfg.params or any(fnmatch.fnmatchcase(name, g) for g in cfg.params)
        table.add_row(name, str(list(p.shape)), str(p.numel()), "yes" if p.requires_grad else "no",
                      "yes" if chosen and p.requires_grad else "no")
    out.print(table)


def sidecar_of(output: Optional[Path], fmt: Format) -> Optional[Path]:
    """The second file of a CSV ``--output``: its eigenvalues."""
    from condlab.report.files import sidecar

    return sidecar(output, "eigenvalues") if output is not None and fmt == Format.csv else None


def _print_whole(table) -> None:
    """A table at its natural width, never truncated: wider than the terminal, it wraps there."""
    from rich.measure import Measurement

    need = Measurement.get(out, out.options.update_width(10_000), table).maximum
    width = out.width
    out.width = max(width, need)
    try:
        out.print(table)
    finally:
        out.width = width


def render_spectrum(report, format: Format, output: Optional[Path], command: str,
                    explain: bool = False) -> None:
    """The table (with at most three notes; ``explain``: every column, eigenvalue, definition
    and caveat), or the CSV / JSON with every field."""
    from condlab.report import tables
    from condlab.report.files import csv_text, json_text
    from condlab.report.records import document

    if format == Format.table:
        title = f"condlab spectrum: {report.source}"
        table = tables.spectrum_table(report.results, title=title, full=explain)
        _print_whole(table)
        if not explain:
            for line in tables.key_notes(report.results):
                out.print(f"  {line}", highlight=False)
            return
        if report.loss:
            out.print(f"  {report.loss['description']}", highlight=False)
        out.print(f"  {tables.legend(report.results)}", highlight=False)
        for line in tables.eigenvalue_lines(report.results):
            out.print(f"  {line}", highlight=False)
        for line in tables.definitions(report.results):
            out.print(f"  kappa, {line}", highlight=False)
        for line in tables.notes(report.results):
            out.print(f"  {line}", highlight=False)
        return
    unconverged = [r.setting for r in report.results if not r.converged]
    if unconverged:
        err.print(
            f"[yellow]warning:[/] a listed eigenvalue is not known within tol * ||A|| (its true "
            f"residual or its certified error is larger): {', '.join(unconverged)}; raise "
            "--max-hvps, loosen --tol, or use --dtype float64 (JSON details: certificate_*, "
            "stop_reason)", highlight=False,
        )
    if format == Format.json:
        doc = document(command, report.config, report.results, source=report.source, loss=report.loss)
        _write_or_print(json_text(doc), output)
    else:
        _write_or_print(csv_text([r.scalar_row() for r in report.results]), output)
        if output is not None:
            eig = sidecar_of(output, format)
            _write_or_print(csv_text([row for r in report.results for row in r.eigen_rows()]), eig)


# -- train ---------------------------------------------------------------------------------------
@app.command(
    cls=Command,
    help=config_help("Train a model (built-in or 'package.module:factory') on a dataset and "
                     "write a condlab checkpoint (optimizer state included).\n\nExample: condlab train "
                     "configs/train_digits.yaml --out digits.pt", "CONFIG", "train"),
)
@handle_errors
@with_options(TRAIN_FLAGS)
def train(
    config: Annotated[Path, typer.Argument(help="A YAML file of the keys below.", show_default=False)],
    *,
    given: dict,
    flags: dict,
) -> None:
    from condlab.config import read_yaml
    from condlab.load.checkpoint import save_checkpoint
    from condlab.options import parse_mapping
    from condlab.train.loop import train_from_config

    out_path = flags["out"]
    if out_path is None:
        raise UsageError("say where the checkpoint goes: add --out PATH")
    check_outputs({"--out": out_path}, force=flags["force"])
    where = f"'{config}'"
    cfg = parse_mapping(TRAIN, read_yaml(config), where, required=("model", "data"))
    with progress_bar() as bar:
        task = bar.add_task("training", total=cfg["steps"])
        result, ckpt = train_from_config(
            cfg, callback=lambda step, *a: bar.update(task, completed=step), where=where
        )
    save_checkpoint(out_path, ckpt)
    out.print(
        f"trained {ckpt['model'].get('name')} for {len(result.history)} steps, "
        f"final loss {result.final_loss:.6g}; wrote {out_path}", highlight=False,
    )


# -- demo ----------------------------------------------------------------------------------------
@app.command(cls=Command)
@handle_errors
@with_options(DEMO)
def demo(*, given: dict, flags: dict) -> None:
    """Train a small MLP on scikit-learn's digits in seconds and print its spectrum (no files needed)."""
    from condlab.demo import run_demo

    with progress_bar() as bar:
        report = run_demo(steps=flags["steps"], on_progress=hvp_ticker(bar))
    render_spectrum(report, Format(flags["format"]), None, command="condlab demo",
                    explain=flags["explain"])


# -- listings ------------------------------------------------------------------------------------
@app.command("list", cls=Command)
@handle_errors
def list_(
    what: Annotated[str, typer.Argument(help="models or datasets")] = "models",
) -> None:
    """List the built-in models or datasets."""
    from rich.table import Table

    if what == "models":
        from condlab.load.models import list_models as lister
    elif what == "datasets":
        from condlab.load.data import list_datasets as lister
    else:
        raise UsageError(f"unknown listing {what!r}; choose models or datasets")
    table = Table("name", "description", title=f"built-in {what}", title_justify="left")
    if what == "models":  # and the arguments each takes (YAML for --model-config)
        from condlab.load.models import model_arguments

        args = model_arguments()
        table.add_column("arguments (--model-config) and defaults")
    for name, desc in lister().items():
        table.add_row(name, desc, *([args[name]] if what == "models" else []))
    out.print(table)


def main() -> None:
    """The ``condlab`` command: Ctrl-C anywhere, start-up included, is one line and exit 130."""
    import os

    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: join the process group
            from condlab.distributed import init_from_env

            init_from_env()
        app()
    except KeyboardInterrupt:
        sys.exit(interrupted())


def _register_commands() -> None:
    """``check``, ``compare`` and ``track`` live in their own modules; they register on the same app."""
    from condlab.cli_check import register as register_check
    from condlab.cli_compare import register as register_compare
    from condlab.cli_track import register as register_track

    register_check(app, handle_errors, out, err)
    register_compare(app, handle_errors, out, err)
    register_track(app, handle_errors, out, err)


_register_commands()
