"""What every command of the CLI shares: the consoles, one-line errors, the progress bar,
the typer flags made from the option schema, and the check of the files a command will write.

Command modules (cli.py, cli_check.py, cli_compare.py) import from here; nothing here imports
them, so the command modules form no import circle.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand, TyperGroup

from condlab.errors import CondlabError


class OneLineErrors(TyperGroup):
    """Typer's group, with its boxed usage errors turned into the one ``error:`` line that every
    other error gets (exit 2), and Ctrl-C into one line and exit 130."""

    def format_help(self, ctx, formatter) -> None:
        _no_flag_types(self, ctx)
        return super().format_help(ctx, formatter)

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except KeyboardInterrupt:
            rv = interrupted()
        except Exception as e:
            if not hasattr(e, "format_message") or not hasattr(e, "exit_code"):
                raise  # not a click error: handle_errors has seen it already
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare `condlab`: the help
                sys.stdout.write(e.format_message() + "\n")
                rv = 0
            elif type(e).__name__ == "Abort":
                rv = interrupted()
            else:
                ctx = getattr(e, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                message = " ".join(e.format_message().split())
                err.print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", highlight=False,
                          soft_wrap=True)
                rv = e.exit_code
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _no_flag_types(command, ctx) -> None:
    """Flags (``--force``, ``--help``) take no value: ``--help`` shows no ``<bool>`` beside them."""
    for p in command.get_params(ctx):
        if getattr(p, "is_flag", False) and not getattr(p, "count", False) and p.metavar is None:
            p.metavar = ""


# the options left out of the short --help (declared ``advanced``), shown by --help-all
_ADVANCED: set[str] = set()


def _print_all_help(ctx) -> None:
    """``--help-all``: the help with the advanced options too."""
    shown = [p for p in ctx.command.params if p.hidden and p.name in _ADVANCED]
    for p in shown:
        p.hidden = False
    try:
        typer.echo(ctx.get_help(), color=ctx.color)
    finally:
        for p in shown:
            p.hidden = True


class Command(TyperCommand):
    """Typer's command, with flags shown without a value placeholder; ``--help-all`` (where
    declared) is eager, as ``--help`` is."""

    def parse_args(self, ctx, args):
        if "--help-all" in args and any(p.name == "help_all" for p in self.params):
            _print_all_help(ctx)
            ctx.exit()
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        _no_flag_types(self, ctx)
        return super().format_help(ctx, formatter)


def interrupted() -> int:
    err.print("[bold red]error:[/] interrupted (Ctrl-C)", highlight=False)
    return 130



# results go to stdout; a pipe or file gets 140 columns (not rich's 80) unless COLUMNS says
out = Console(soft_wrap=True,
              width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
err = Console(stderr=True)
state = {"debug": False}


def _fail(message: str, code: int, *, every_rank: bool = False) -> None:
    """Under torchrun only rank 0 reports a CondlabError (every rank raises the same one);
    an unexpected error is reported by every rank that hits it."""
    from condlab.distributed import is_main, rank

    if is_main():
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    elif every_rank:
        err.print(f"[bold red]error (rank {rank()}):[/] {escape(message)}", highlight=False,
                  soft_wrap=True)
    raise typer.Exit(code)


def debug_command() -> str:
    """This command line with ``--debug`` where it works: before the subcommand."""
    import shlex

    args = [a for a in sys.argv[1:] if a != "--debug"]
    return " ".join(["condlab", "--debug", *map(shlex.quote, args)])


def handle_errors(fn):
    """One line and an exit code for every error below the CLI; a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            if state["debug"]:
                raise
            raise typer.Exit(interrupted()) from None
        except CondlabError as e:
            if state["debug"]:
                raise
            _fail(str(e), e.exit_code)
        except Exception as e:  # a bug or an unexpected library error: still one line
            if state["debug"]:
                raise
            _fail(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                  f"(for the traceback run: {debug_command()})", 1, every_rank=True)

    return wrapper



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
        hidden=o.hidden or o.advanced,
    )
    if o.advanced and not o.hidden:
        _ADVANCED.add(o.name)
    default = None if o.type is LIST else o.default
    kind = kind if o.type is bool else Optional[kind]
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, info])


def _keys_help(options, prefix: str = "") -> str:
    """A YAML config's keys for --help, each with its default (from the option schema)."""
    from condlab.options import MAPPING

    return "\n\n".join(
        f"  {prefix}{o.name}: {_escape(o.help)}"
        + ("" if o.type is MAPPING else f" \\[default: {_escape(o.shown_default)}]")
        + (f" (one of: {', '.join(o.choices)})" if o.choices else "")
        for o in options
    )


def config_help(summary: str, what: str, command: str) -> str:
    """A command's help: ``summary``, then the keys of its YAML file ``what`` and of the
    mappings inside it, each with its help and default (from the option schema)."""
    from condlab.cli_options import COMMANDS
    from condlab.options import NESTED_KEYS

    keys = [o for o in COMMANDS[command] if not o.cli_flags and o.in_file]
    parts = [summary, f"The keys of {what}:", _keys_help(keys)]
    for prefix, options in NESTED_KEYS.get(command, ()):
        parts += [f"The keys of {prefix.rstrip('.')}:", _keys_help(options, prefix)]
    return "\n\n".join(parts)


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
                    if value is not None and o.check is not None:  # checked as a field would be
                        o.parse(value, "the command line", o.flag)
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


# command options (not config fields: how this machine runs, not what is measured) that a
# --config file may set as well
FILE_FLAGS = ("threads",)


def spectrum_config(given: dict, flags: dict):
    """The SpectrumConfig of the ``--config`` file overridden by the options ``given``."""
    from condlab.cli_options import SPECTRUM
    from condlab.config import SpectrumConfig, build, read_yaml
    from condlab.options import by_name

    config = flags["config"]
    values: dict[str, Any] = read_yaml(config) if config else {}
    for name in FILE_FLAGS:  # a file may set these command options too; the command line wins
        key = next((k for k in values if str(k).replace("-", "_") == name), None)
        if key is not None:
            value = by_name(SPECTRUM)[name].parse(values.pop(key), f"'{config}'", key)
            flags[name] = value if flags.get(name) is None else flags[name]
    if flags["model_config"] is not None:
        given["model_args"] = read_yaml(flags["model_config"])
    return build(SpectrumConfig, values, source=f"'{config}'" if config else "the options",
                 cli={k: v for k, v in given.items() if v != []})


def progress_bar() -> Progress:
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


def hvp_ticker(bar: Progress):
    """``on_progress(setting, done, budget)``: one bar per setting, in curvature products."""
    tasks: dict[str, int] = {}

    def on_progress(setting: str, done: int, budget: int) -> None:
        if setting not in tasks:
            tasks[setting] = bar.add_task(setting, total=budget)
        bar.update(tasks[setting], completed=min(done, budget))

    return on_progress



def check_outputs(paths: dict[str, Optional[Path]], *, force: bool) -> None:
    """Every file the command will write, checked before any work (see condlab.files)."""
    from condlab.files import check_output

    for flag, path in paths.items():
        if path is None:
            continue
        check_output(path, force=force, flag=flag.split()[0])
        if path.suffix.lower() == ".png":
            from condlab.report.plots import pyplot

            pyplot()  # fail before the work when matplotlib is missing


