"""The command line: parse, call one library function, render, write. Only this module prints.

Errors raised below it (:class:`condlab.errors.CondlabError`) become one line on stderr and exit
code 1 (a failure) or 2 (bad usage); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from condlab.errors import CondlabError, UsageError

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
class Curvature(str, Enum):
    hessian = "hessian"
    ggn = "ggn"


class Loss(str, Enum):
    cross_entropy = "cross-entropy"
    mse = "mse"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class TraceMethod(str, Enum):
    hutchpp = "hutch++"
    hutchinson = "hutchinson"


class BNMode(str, Enum):
    eval = "eval"
    batch = "batch"


class DropoutMode(str, Enum):
    eval = "eval"
    fixed = "fixed"


class Precond(str, Enum):
    optimizer = "optimizer"
    adam = "adam"
    rmsprop = "rmsprop"
    adagrad = "adagrad"
    gn = "gn"
    gn_sqrt = "gn-sqrt"
    jacobi = "jacobi"


class Norm(str, Enum):
    input = "input"
    batch = "batch"
    layer = "layer"


class Basis(str, Enum):
    identity = "identity"
    eigen = "eigen"


class Decay(str, Enum):
    none = "none"
    coupled = "coupled"
    decoupled = "decoupled"
    l1 = "l1"


class DiagEstimator(str, Enum):
    exact = "exact"
    hutchinson = "hutchinson"


def _value(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


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
G_LOAD = "What to load"
G_OP = "Operator"
G_EST = "Estimators"
G_SET = "Preconditioners and normalization"
G_OUT = "Output"


@app.command()
@handle_errors
def spectrum(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A condlab checkpoint (from `condlab train`) or a state_dict file.", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option(help="A YAML file of these options (keys as option names); options given here override it.", rich_help_panel=G_LOAD)] = None,
    model: Annotated[Optional[str], typer.Option(help="A built-in model (linear, mlp, cnn, transformer) or 'package.module:factory'.", rich_help_panel=G_LOAD)] = None,
    model_config: Annotated[Optional[Path], typer.Option(help="YAML of the model's arguments (e.g. widths: [32], norm: batch).", rich_help_panel=G_LOAD)] = None,
    weights: Annotated[Optional[Path], typer.Option(help="A state_dict file for --model.", rich_help_panel=G_LOAD)] = None,
    trust_checkpoint: Annotated[Optional[bool], typer.Option("--trust-checkpoint", help="Allow loading a pickled full-module file (runs code from it).", rich_help_panel=G_LOAD)] = None,
    data: Annotated[Optional[str], typer.Option(help="digits, iris, wine, breast_cancer, diabetes, a synthetic spec (linreg:d=10,kappa=1e3), or a .npz/.csv/.pt file. Default: the checkpoint's.", rich_help_panel=G_LOAD)] = None,
    target: Annotated[Optional[str], typer.Option(help="The target column of a .csv file (default: the last).", rich_help_panel=G_LOAD)] = None,
    loss: Annotated[Optional[Loss], typer.Option(help="Default: the checkpoint's, else from the task.", rich_help_panel=G_LOAD)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Samples per batch; products are summed over batches weighted by size (exact mean loss).", rich_help_panel=G_LOAD)] = None,
    max_samples: Annotated[Optional[int], typer.Option(help="Use the first N samples.", rich_help_panel=G_LOAD)] = None,
    curvature: Annotated[Optional[Curvature], typer.Option(help="hessian, or ggn (generalized Gauss-Newton J^T H_loss J). [default: hessian]", show_default=False, rich_help_panel=G_OP)] = None,
    params: Annotated[Optional[list[str]], typer.Option("--params", help="Only parameters whose names match this glob (repeatable), e.g. '2.*'.", rich_help_panel=G_OP)] = None,
    bn_mode: Annotated[Optional[BNMode], typer.Option(help="BatchNorm with running statistics (eval) or per-batch statistics (batch). [default: eval]", show_default=False, rich_help_panel=G_OP)] = None,
    dropout_mode: Annotated[Optional[DropoutMode], typer.Option(help="Dropout off (eval) or on with one fixed mask per batch (fixed). [default: eval]", show_default=False, rich_help_panel=G_OP)] = None,
    dtype: Annotated[Optional[DType], typer.Option(help="[default: float32]", show_default=False, rich_help_panel=G_OP)] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or auto. [default: cpu]", show_default=False, rich_help_panel=G_OP)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seeds Lanczos, probes and model initialization. [default: 0]", show_default=False, rich_help_panel=G_OP)] = None,
    damping: Annotated[Optional[float], typer.Option(help="Measure A + damping * I. [default: 0]", show_default=False, rich_help_panel=G_OP)] = None,
    top: Annotated[Optional[int], typer.Option(help="Largest eigenvalues to report. [default: 5]", show_default=False, rich_help_panel=G_EST)] = None,
    bottom: Annotated[Optional[int], typer.Option(help="Smallest eigenvalues to report. [default: 3]", show_default=False, rich_help_panel=G_EST)] = None,
    tol: Annotated[Optional[float], typer.Option(help="Every reported pair has ||Av - lambda v|| <= tol * |lambda_max|. [default: 1e-6 in float64, 1e-4 in float32]", show_default=False, rich_help_panel=G_EST)] = None,
    max_hvps: Annotated[Optional[int], typer.Option(help="Budget of curvature products for the eigenvalues. [default: 1000]", show_default=False, rich_help_panel=G_EST)] = None,
    null_threshold: Annotated[Optional[float], typer.Option(help="Eigenvalues with |lambda| <= this * |lambda_max| count as zero. [default: tol]", show_default=False, rich_help_panel=G_EST)] = None,
    trace: Annotated[Optional[bool], typer.Option("--trace", help="Estimate the trace with a standard error.", rich_help_panel=G_EST)] = None,
    trace_method: Annotated[Optional[TraceMethod], typer.Option(help="[default: hutch++]", show_default=False, rich_help_panel=G_EST)] = None,
    probes: Annotated[Optional[int], typer.Option(help="Products spent on the trace. [default: 100]", show_default=False, rich_help_panel=G_EST)] = None,
    density: Annotated[Optional[bool], typer.Option("--density", help="Spectral density by stochastic Lanczos quadrature, written as a CSV grid.", rich_help_panel=G_EST)] = None,
    density_output: Annotated[Path, typer.Option(help="Where the density grid goes.", rich_help_panel=G_EST)] = Path("density.csv"),
    plot: Annotated[Optional[Path], typer.Option(help="Plot the density to this PNG (needs matplotlib: pip install condlab[plot]).", rich_help_panel=G_EST)] = None,
    per_layer: Annotated[Optional[bool], typer.Option("--per-layer", help="Also measure each parameter tensor's diagonal block.", rich_help_panel=G_EST)] = None,
    exact: Annotated[Optional[bool], typer.Option("--exact", help="Dense eigendecomposition (small models): exact nullity and positive-part kappa.", rich_help_panel=G_EST)] = None,
    precond: Annotated[Optional[list[Precond]], typer.Option("--precond", help="Also measure P^-1/2 A P^-1/2 for this diagonal preconditioner (repeatable).", rich_help_panel=G_SET)] = None,
    optimizer_state: Annotated[Optional[Path], typer.Option(help="A torch optimizer state_dict for --precond optimizer.", rich_help_panel=G_SET)] = None,
    precond_batch_size: Annotated[Optional[int], typer.Option(help="Mini-batch size of the gradients behind --precond adam/rmsprop/adagrad. [default: --batch-size, else full batch]", show_default=False, rich_help_panel=G_SET)] = None,
    diag_estimator: Annotated[Optional[DiagEstimator], typer.Option(help="Exact diagonal, or Hutchinson with --probes samples. [default: exact]", show_default=False, rich_help_panel=G_SET)] = None,
    eps: Annotated[Optional[float], typer.Option(help="Added to the diagonal preconditioner.", rich_help_panel=G_SET)] = None,
    basis: Annotated[Optional[Basis], typer.Option(help="Apply the diagonal rule in the identity basis or the eigenbasis of G. [default: identity]", show_default=False, rich_help_panel=G_SET)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay lambda. [default: 0]", show_default=False, rich_help_panel=G_SET)] = None,
    decay: Annotated[Optional[Decay], typer.Option(help="coupled (Adam + L2), decoupled (AdamW) or l1. [default: none]", show_default=False, rich_help_panel=G_SET)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate: compare the preconditioned sharpness with the stability threshold.", rich_help_panel=G_SET)] = None,
    beta1: Annotated[Optional[float], typer.Option(help="Momentum of the method for the stability threshold.", rich_help_panel=G_SET)] = None,
    norm: Annotated[Optional[list[Norm]], typer.Option("--norm", help="Also measure after this normalization (repeatable).", rich_help_panel=G_SET)] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch. [default: 1 for small problems (P x N < 5e7), else torch's default]", show_default=False, rich_help_panel=G_OP)] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table, csv or json.", rich_help_panel=G_OUT)] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout (CSV: eigenvalues go to NAME_eigenvalues.csv).", rich_help_panel=G_OUT)] = None,
) -> None:
    """Extreme eigenvalues, condition number, trace and density of the Hessian or GGN.

    Example: condlab spectrum ckpt.pt --top 5 --bottom 3 --precond optimizer --format json
    """
    from condlab.config import SpectrumConfig, build, read_yaml
    from condlab.distributed import init_from_env, is_main
    from condlab.spectrum import run_spectrum

    init_from_env()  # under torchrun: join the process group (a no-op in one process)
    values: dict[str, Any] = read_yaml(config) if config else {}
    given = dict(
        checkpoint=checkpoint, model=model, weights=weights, trust_checkpoint=trust_checkpoint,
        data=data, target=target, loss=loss, batch_size=batch_size, max_samples=max_samples,
        curvature=curvature, params=params, bn_mode=bn_mode, dropout_mode=dropout_mode,
        dtype=dtype, device=device, seed=seed, damping=damping, top=top, bottom=bottom, tol=tol,
        max_hvps=max_hvps, null_threshold=null_threshold, trace=trace, trace_method=trace_method,
        probes=probes, density=density, per_layer=per_layer, exact=exact, precond=precond,
        optimizer_state=optimizer_state, precond_batch_size=precond_batch_size,
        diag_estimator=diag_estimator, eps=eps, basis=basis, weight_decay=weight_decay,
        decay=decay, lr=lr, beta1=beta1, norm=norm,
    )
    values.update({k: _value(v) for k, v in given.items() if v is not None and v != []})
    if model_config is not None:
        values["model_args"] = read_yaml(model_config)
    cfg = build(SpectrumConfig, values, source=str(config) if config else "the options")
    if plot is not None and not cfg.density:
        raise UsageError("--plot draws the spectral density: add --density")

    with _progress() as bar:
        report = run_spectrum(cfg, on_progress=_hvp_ticker(bar), threads=threads)
    if not is_main():  # under torchrun every rank holds the same report; rank 0 writes it
        return
    render_spectrum(report, format, output, command=" ".join(["condlab", *sys.argv[1:]]))
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
    from condlab.report.tables import definitions, spectrum_table

    if format == Format.table:
        if output is not None:
            raise UsageError("a table goes to the terminal; use --format csv or json with --output")
        out.print(spectrum_table(report.results, title=f"condlab spectrum: {report.source}"))
        for line in definitions(report.results):
            out.print(f"  kappa, {line}", highlight=False)
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
    from condlab.distributed import init_from_env

    init_from_env()  # under torchrun: join the process group (a no-op in one process)
    app()


def _register_commands() -> None:
    """``check`` and ``compare`` live in their own modules; they register on the same app."""
    from condlab.cli_check import register as register_check
    from condlab.cli_compare import register as register_compare

    register_check(app, handle_errors, out, err)
    register_compare(app, handle_errors, out, err)


_register_commands()
