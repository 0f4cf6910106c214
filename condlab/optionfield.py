"""An option: a typed field with its help, check and choices, declared once.

Each pipeline stage declares its options as a plain frozen dataclass next to the code that uses
them (:class:`condlab.inputs.LoadOptions`, :class:`condlab.problem.ProblemOptions`,
:class:`condlab.measure.EstimatorSettings`, :class:`condlab.settings.SettingsOptions`), each
field made by :func:`option`, which keeps the help text, the check and the choices in the
field's metadata. :func:`options_of` turns those fields into :class:`Option` records, from which
:mod:`condlab.options` generates the command-line flags and the YAML keys; :func:`check_fields`
parses and checks a dataclass's values (the API gets the same checks as a YAML file).

Nothing here knows about the command line or imports anything heavy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from condlab.errors import UsageError

# a check: (predicate on the parsed value, what the value must be, in words)
Check = tuple[Callable[[Any], bool], str]
POSITIVE: Check = (lambda v: v > 0, "> 0")
NONNEGATIVE: Check = (lambda v: v >= 0, ">= 0")
UNIT_INTERVAL: Check = (lambda v: 0 < v < 1, "in (0, 1)")
BELOW_ONE: Check = (lambda v: 0 <= v < 1, "in [0, 1)")
DEVICE: Check = (lambda v: re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", v) is not None,
                 "cpu, cuda, cuda:N, mps or auto")

# option types besides int, float, bool and str
PATH = Path  # a file name: a str in the config
LIST = list  # a repeatable flag; a YAML string or list of strings; a tuple in the config
MAPPING = dict  # YAML only: a mapping
SPEC = object  # a str on the command line; a str or a mapping in YAML


class INTS:
    """YAML only: an integer or a list of integers; a tuple of ints in the config."""


class ITEMS:
    """YAML only: a non-empty list whose entries the command parses (optimizers, variants)."""


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
              PATH: "a file name", LIST: "a list of strings", MAPPING: "a mapping",
              SPEC: "a string or a mapping", INTS: "a list of integers", ITEMS: "a non-empty list"}


@dataclass(frozen=True)
class Option:
    """One option: the field/YAML key ``name``, its flag ``--name-with-dashes``, and the rest."""

    name: str
    type: Any  # int, float, bool, str, PATH, LIST, MAPPING or SPEC
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] = ()
    check: Check | None = None
    default_text: str | None = None  # the default in words, when it is resolved later
    flags: tuple[str, ...] | None = None  # None: --name-with-dashes; (): no flag (YAML and API)
    in_file: bool = True  # False: not a YAML key (a decision for the command line only)
    field: bool = True  # False: a flag of the command only (where to write, what to read)
    advanced: bool = False  # left out of the short --help (shown by --help-all)
    metavar: str | None = None
    hidden: bool = False  # a flag left out of --help (for tests and debugging)

    def __post_init__(self) -> None:
        if isinstance(self.choices, str):  # "package.module:NAME": the owner's tuple
            object.__setattr__(self, "choices", _choices(self.choices))

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if self.flags is not None:
            return self.flags
        flag = "--" + self.name.replace("_", "-")
        return (f"{flag}/--no-{flag[2:]}",) if self.type is bool else (flag,)

    @property
    def flag(self) -> str:
        """The flag as a user types it (``--top``), or the YAML key when there is none."""
        return self.cli_flags[0].split("/")[0] if self.cli_flags else self.name

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` and the docs show it."""
        if self.default_text is not None:
            return self.default_text
        d = self.default
        if d is None or d == () or d == {}:
            return "none"
        if isinstance(d, bool):
            return "true" if d else "false"
        if isinstance(d, tuple):
            return ", ".join(map(str, d))
        return str(d)

    def annotation(self) -> Any:
        """The field's type in the config dataclass."""
        t = {PATH: str, LIST: tuple[str, ...], SPEC: Any, INTS: tuple[int, ...], ITEMS: Any}.get(
            self.type, self.type)
        return t if self.default is not None or t is Any else Optional[t]

    def dataclass_field(self) -> tuple[str, Any, Any]:
        d = self.default
        spec = dataclasses.field(default_factory=dict) if isinstance(d, dict) else dataclasses.field(default=d)
        return self.name, self.annotation(), spec

    def parse(self, value: Any, where: str, key: str | None = None) -> Any:
        """``value`` (from YAML, the command line or the API) as the declared type, checked;
        a UsageError names ``where`` (a file) and ``key`` (default: the option's name)."""
        key = key or self.name
        if value is None:
            if self.default is None or self.type in (LIST, MAPPING):
                return dict(self.default) if self.type is MAPPING else self.default
            raise UsageError(f"{where}: {key} must be {self.expected()}, got null")
        v = _convert(self.type, value)
        if v is _BAD:
            raise UsageError(f"{where}: {key} must be {self.expected()}, got {value!r}")
        items = v if isinstance(v, tuple) else (v,)
        if self.choices:
            bad = [x for x in items if x not in self.choices]
            if bad:
                raise UsageError(f"{where}: {key} must be one of {', '.join(self.choices)}; "
                                 f"got {bad[0]!r}")
        if self.check is not None:
            ok, text = self.check
            if not all(ok(x) for x in items):
                raise UsageError(f"{where}: {key} must be {text}, got {value!r}")
        return v

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return TYPE_NAMES[self.type] + (f" {self.check[1]}" if self.check else "")


_BAD = object()


def _convert(kind: Any, value: Any) -> Any:
    """Strict conversion: YAML's ``1e-8`` (a str to PyYAML) is a float; ``"no"`` is not a bool."""
    if isinstance(value, Path):
        value = str(value)
    if kind is bool:
        return value if isinstance(value, bool) else _BAD
    if kind is int:
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, int):
            return value
        x = _number(value)
        return int(x) if x is not _BAD and math.isfinite(x) and float(x).is_integer() else _BAD
    if kind is float:
        x = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _number(value)
        return float(x) if x is not _BAD and math.isfinite(x) else _BAD
    if kind in (str, PATH):
        return value if isinstance(value, str) and value else _BAD
    if kind is LIST:
        items = (value,) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(x, str) and x for x in items):
            return tuple(items)
        return _BAD
    if kind is MAPPING:
        return dict(value) if isinstance(value, dict) else _BAD
    if kind is SPEC:
        return value if isinstance(value, (str, dict)) and value else _BAD
    if kind is INTS:
        items = [value] if not isinstance(value, (list, tuple)) else value
        ints = tuple(_convert(int, x) for x in items)
        return ints if ints and _BAD not in ints else _BAD
    if kind is ITEMS:
        return list(value) if isinstance(value, (list, tuple)) and value else _BAD
    raise TypeError(f"unknown option type {kind!r}")


def as_number(value: Any) -> Any:
    """``value`` as a finite float when it is a number or YAML's number-like string (``1e-2``,
    which PyYAML 1.1 reads as a str), else ``value`` unchanged (for the caller to reject)."""
    x = _convert(float, value) if not isinstance(value, bool) else _BAD
    return value if x is _BAD else x


def as_integer(value: Any) -> Any:
    """``value`` as an int when it is one or a whole number (``1e3``, ``300.0``), else unchanged."""
    x = _convert(int, value)
    return value if x is _BAD else x


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return _BAD
    return _BAD


def default_tol(dtype: Any) -> float:
    """``tol`` when none is given: the relative residual float64 or float32 products can reach."""
    return 1e-6 if str(dtype).replace("torch.", "") == "float64" else 1e-4


def option(kind: Any, default: Any, help: str, group: str | None = None, **kw: Any):
    """A dataclass field that is also an option: ``kind`` (int, float, bool, str, PATH, LIST,
    MAPPING, SPEC, ...), its default, help text and the rest of :class:`Option`'s keywords,
    kept in the field's metadata. ``choices`` may name a tuple owned elsewhere as
    ``"package.module:NAME"``; it is imported when the options are first listed."""
    meta = {"option": dict(kind=kind, help=help, group=group, **kw)}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _owned(ref: str) -> tuple[str, ...]:
    """The tuple ``NAME`` of ``package.module`` (``ref = "package.module:NAME"``), read from the
    module's source when it is a literal there, so that listing the options (``--help``) does
    not import the module and what it imports (torch); imported otherwise."""
    import ast
    import importlib.util
    from pathlib import Path

    module, name = ref.split(":")
    top, *rest = module.split(".")
    root = importlib.util.find_spec(top)
    path = Path(root.origin).parent.joinpath(*rest).with_suffix(".py") if root and root.origin else None
    if path is not None and path.is_file():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                try:
                    return tuple(ast.literal_eval(node.value))
                except ValueError:
                    break
    return tuple(getattr(importlib.import_module(module), name))


def _choices(value: Any) -> tuple[str, ...]:
    return _owned(value) if isinstance(value, str) else tuple(value)


@functools.cache
def options_of(cls: type) -> tuple[Option, ...]:
    """The :class:`Option` of every field of the dataclass ``cls`` made by :func:`option`."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        meta = dict(meta)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        owner = next((c for c in cls.__mro__ if f.name in c.__dict__.get("__annotations__", {})), cls)
        group = meta.pop("group") or getattr(owner, "GROUP", "Options")
        choices = _choices(meta.pop("choices", ()))
        out.append(Option(f.name, meta.pop("kind"), default, meta.pop("help"), group,
                          choices=choices, **meta))
    return tuple(out)


def check_fields(obj: Any) -> None:
    """Parse and check every option field of the frozen dataclass ``obj`` in place."""
    where = type(obj).__name__
    for o in options_of(type(obj)):
        object.__setattr__(obj, o.name, o.parse(getattr(obj, o.name), where))


def fields_of(options: Sequence[Option]) -> list[tuple]:
    """``make_dataclass`` fields of YAML-only key tables (``compare``'s, ``track:``'s)."""
    return [o.dataclass_field() for o in options if o.field]


def by_name(options: Sequence[Option]) -> dict[str, Option]:
    return {o.name: o for o in options}
