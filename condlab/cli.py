"""The command line: parse, call one library function, render, write. Only this module prints.

Errors raised below it (:class:`condlab.errors.CondlabError`) become one line on stderr and exit
code 1 (a failure) or 2 (bad usage); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from condlab.errors import CondlabError, UsageError
from condlab.options import SPECTRUM

app = typer.Typer(
    help="How well-conditioned is your loss surface? Hessian and Gauss-Newton spectra, "
    "before and after preconditioning or normalization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# results go to stdout; a pipe or file gets a wide table instead of rich's default 80 columns
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)
_state = {"debug": False}


def _fail(message: str, code: int, *, every_rank: bool = False) -> None:
    """Under torchrun only rank 0 reports a CondlabError (every rank raises the same one);
    an unexpected error is reported by every rank that hits it."""
    from condlab.distributed import is_main, rank

    if is_main():
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    elif every_rank:
        err.print(f"[bold red]error (rank {rank()}):[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn):
    """One line and an exit code for every error below the CLI; a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except CondlabError as e:
            if _state["debug"]:
                raise
            _fail(str(e), e.exit_code)
        except Exception as e:  # a bug or an unexpected library error: still one line
            if _state["debug"]:
                raise
            _fail(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                  "(run again with --debug for the traceback)", 1, every_rank=True)

    return wrapper


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    _state["debug"] = debug


# -- choices -------------------------------------------------------------------------------------
class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


# -- options from the schema ---------------------------------------------------------------------
def _escape(text: str) -> str:
    """Help text shown as written: rich markup would swallow ``[plot]`` or ``[default: 5]``."""
    return text.replace("[", "\\[")


def _parameter(o) -> inspect.Parameter:
    """The typer option of one schema entry, its default shown as the schema states it."""
    from condlab.options import LIST, PATH, SPEC

    kind = {PATH: Path, LIST: str, SPEC: str}.get(o.type, o.type)
    if o.choices:  # typer's choices are an Enum's values
        kind = Enum(o.name, {c: c for c in o.choices}, type=str)
    if o.type is LIST:
        kind = list[kind]
    info = typer.Option(
        *o.cli_flags,
        help=_escape(o.help),
        rich_help_panel=o.group,
        # a plain default as typer shows it ("[default: 5]"), else the schema's words in brackets
        show_default=True if o.default_text is None and o.default not in (None, ()) and o.type is not bool
        else _escape(o.shown_default),
        metavar=o.metavar,
    )
    default = None if o.type is LIST else o.default
    kind = kind if o.type is bool else Optional[kind]
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, info])


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def with_options(options):
    """Give the command a flag per entry of ``options`` (the schema) that has one.

    The command receives ``given``: the config fields set on the command line, by name (a
    default is not "given", so a ``--config`` file's value stands), and ``flags``: the values
    of the command's own options (``field=False``: where to write, what to read)."""

    def decorate(fn):
        import typing

        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints[p.name]) for p in sig.parameters.values()
               if p.name not in ("given", "flags")]
        extra = [_parameter(o) for o in options if o.cli_flags]

        @functools.wraps(fn)
        def wrapper(ctx: typer.Context, **kwargs):
            given, flags = {}, {}
            for o in options:
                if o.name not in kwargs:
                    continue
                value = _plain(kwargs.pop(o.name))
                if not o.field:
                    flags[o.name] = value
                elif getattr(ctx.get_parameter_source(o.name), "name", "") == "COMMANDLINE":
                    given[o.name] = value
            return fn(given=given, flags=flags, **kwargs)

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=typer.Context)
        params = [context, *own, *extra]
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _progress() -> Progress:
    from condlab.distributed import is_main

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("HVPs"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not is_main(),  # under torchrun only rank 0 shows progress
    )


def _hvp_ticker(bar: Progress):
    """``on_progress(setting, done, budget)``: one bar per setting, in curvature products."""
    tasks: dict[str, int] = {}

    def on_progress(setting: str, done: int, budget: int) -> None:
        if setting not in tasks:
            tasks[setting] = bar.add_task(setting, total=budget)
        bar.update(tasks[setting], completed=min(done, budget))

    return on_progress


def _write_or_print(text: str, output: Optional[Path]) -> None:
    from condlab.report.files import atomic_write_text

    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(output, text)
        err.print(f"wrote {output}", highlight=False)


# -- spectrum ------------------------------------------------------------------------------------
@app.command()
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
    from condlab.config import SpectrumConfig, build, read_yaml
    from condlab.distributed import init_from_env, is_main
    from condlab.spectrum import run_spectrum

    init_from_env()  # under torchrun: join the process group (a no-op in one process)
    config, fmt, output, plot = flags["config"], Format(flags["format"]), flags["output"], flags["plot"]
    density_output = flags["density_output"]
    values: dict[str, Any] = read_yaml(config) if config else {}
    if checkpoint is not None:
        given["checkpoint"] = checkpoint
    if flags["model_config"] is not None:
        given["model_args"] = read_yaml(flags["model_config"])
    cfg = build(SpectrumConfig, values, source=f"'{config}'" if config else "the options",
                cli={k: v for k, v in given.items() if v != []})
    if plot is not None and not cfg.density:
        raise UsageError("--plot draws the spectral density: add --density")
    if fmt == Format.table and output is not None:
        raise UsageError("a table goes to the terminal; use --format csv or json with --output")

    with _progress() as bar:
        report = run_spectrum(cfg, on_progress=_hvp_ticker(bar), threads=flags["threads"])
    if not is_main():  # under torchrun every rank holds the same report; rank 0 writes it
        return
    render_spectrum(report, fmt, output, command=" ".join(["condlab", *sys.argv[1:]]))
    if report.densities:
        from condlab.report.files import atomic_write_text, csv_text

        atomic_write_text(density_output, csv_text([r for d in report.densities for r in d.rows()]))
        err.print(f"wrote {density_output}", highlight=False)
        if plot is not None:
            from condlab.report.plots import plot_density

            plot_density(report.densities, plot)
            err.print(f"wrote {plot}", highlight=False)


def render_spectrum(report, format: Format, output: Optional[Path], command: str) -> None:
    from condlab.report.files import csv_text, json_text, sidecar
    from condlab.report.records import document
    from condlab.report.tables import definitions, notes, spectrum_table

    if format == Format.table:
        out.print(spectrum_table(report.results, title=f"condlab spectrum: {report.source}"))
        for line in definitions(report.results):
            out.print(f"  kappa, {line}", highlight=False)
        for line in notes(report.results):
            out.print(f"  {line}", highlight=False)
        unconverged = [r.setting for r in report.results if not r.converged]
        if unconverged:
            err.print(
                f"[yellow]warning:[/] not converged within --max-hvps: {', '.join(unconverged)}; "
                "raise --max-hvps or loosen --tol", highlight=False,
            )
    elif format == Format.json:
        doc = document(command, report.config, report.results, source=report.source)
        _write_or_print(json_text(doc), output)
    else:
        _write_or_print(csv_text([r.scalar_row() for r in report.results]), output)
        if output is not None:
            eig = sidecar(output, "eigenvalues")
            _write_or_print(csv_text([row for r in report.results for row in r.eigen_rows()]), eig)


# -- train ---------------------------------------------------------------------------------------
@app.command()
@handle_errors
def train(
    config: Annotated[Path, typer.Argument(help="YAML: model, data, loss, optimizer, steps, batch_size, seed.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the condlab checkpoint.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing checkpoint at --out.")] = False,
) -> None:
    """Train a built-in model on a dataset and write a condlab checkpoint (optimizer state included)."""
    from condlab.config import read_yaml
    from condlab.load.checkpoint import save_checkpoint
    from condlab.train.loop import train_from_config

    if out_path.exists() and not force:
        raise UsageError(f"'{out_path}' exists; pass --force to replace it, or choose another --out")
    cfg = read_yaml(config)
    with _progress() as bar:
        task = bar.add_task("training", total=int(cfg.get("steps", 0)) or None)
        result, ckpt = train_from_config(
            cfg, callback=lambda step, *a: bar.update(task, completed=step)
        )
    save_checkpoint(out_path, ckpt)
    out.print(
        f"trained {ckpt['model'].get('name')} for {len(result.history)} steps, "
        f"final loss {result.final_loss:.6g}; wrote {out_path}", highlight=False,
    )


# -- demo ----------------------------------------------------------------------------------------
@app.command()
@handle_errors
def demo(
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    steps: Annotated[int, typer.Option(help="AdamW steps of the demo training.")] = 300,
) -> None:
    """Train a small MLP on scikit-learn's digits in seconds and print its spectrum (no files needed)."""
    from condlab.demo import run_demo

    with _progress() as bar:
        report = run_demo(steps=steps, on_progress=_hvp_ticker(bar))
    render_spectrum(report, format, None, command="condlab demo")


# -- listings ------------------------------------------------------------------------------------
@app.command("list")
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
    for name, desc in lister().items():
        table.add_row(name, desc)
    out.print(table)


def main() -> None:
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: join the process group
        from condlab.distributed import init_from_env

        init_from_env()
    app()


def _register_commands() -> None:
    """``check`` and ``compare`` live in their own modules; they register on the same app."""
    from condlab.cli_check import register as register_check
    from condlab.cli_compare import register as register_compare

    register_check(app, handle_errors, out, err)
    register_compare(app, handle_errors, out, err)


_register_commands()
