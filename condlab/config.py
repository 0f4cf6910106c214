"""The run configuration of ``condlab spectrum``: the stages' options joined in one frozen
dataclass, built from YAML and/or CLI options.

:class:`SpectrumConfig` is the stages' own dataclasses side by side: what to load
(:class:`condlab.inputs.LoadOptions`), how the problem is posed
(:class:`condlab.problem.ProblemOptions`), how to estimate
(:class:`condlab.measure.EstimatorSettings`) and what to measure beside the baseline
(:class:`condlab.settings.SettingsOptions`). Each field is declared once, in its stage, with its
help and check. A YAML file's keys are the field names with ``_`` (or ``-``), each value parsed
to the field's type; an unknown key is an error that names it and lists the valid ones. CLI
options override the file. The resolved config is saved beside every result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condlab.errors import UsageError
from condlab.estimator_options import EstimatorSettings
from condlab.inputs import LoadOptions
from condlab.optionfield import by_name, check_fields, default_tol, options_of
from condlab.problem_options import DTYPES, ProblemOptions
from condlab.settings import SettingsOptions

__all__ = ["DTYPES", "SpectrumConfig", "build", "default_tol", "read_yaml", "validate"]


@dataclass(frozen=True)
class SpectrumConfig(SettingsOptions, EstimatorSettings, ProblemOptions, LoadOptions):
    """Everything ``condlab spectrum`` needs: what to load, what to measure, how precisely.
    Each field is declared (type, default, help, check) in the stage that uses it."""

    def __post_init__(self) -> None:
        check_fields(self)  # the API gets the same types and checks as a YAML file
        validate(self)

    @property
    def resolved_tol(self) -> float:
        return self.tol if self.tol is not None else default_tol(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tol"] = self.resolved_tol
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def build(cls, values: dict[str, Any], *, source: str = "config", cli: dict[str, Any] | None = None):
    """``cls(**values)`` from a file's ``values`` (named by ``source``), overridden by the
    command line's ``cli``: keys normalized, each value parsed to its declared type; unknown
    keys, bad values and keys that a file may not set are rejected by name."""
    options = by_name(options_of(cls))
    clean: dict[str, Any] = {}
    for given, where in ((values, source), (cli or {}, "the command line")):
        for key, value in given.items():
            k = str(key).replace("-", "_")
            o = options.get(k)
            if o is None or not o.field:
                valid = ", ".join(n for n, x in options.items() if x.field and x.in_file)
                raise UsageError(f"unknown key {key!r} in {where}; valid keys: {valid}")
            if given is values and not o.in_file:
                raise UsageError(f"{where} sets {k!r}; only the command line can ({o.flag})")
            clean[k] = o.parse(value, where, o.flag if given is cli else key)
    try:
        return cls(**clean)
    except UsageError as e:
        raise UsageError(f"{e} ({source})") from None


def validate(cfg) -> None:
    """The checks that relate several options; each option's own check is in its declaration."""
    checks = [
        (cfg.top + cfg.bottom > 0 or cfg.trace or cfg.density,
         "nothing to measure: set top, bottom, trace or density"),
        (not cfg.weight_decay or cfg.decay != "none",
         "--weight-decay needs --decay coupled, decoupled or l1"),
        (cfg.checkpoint or cfg.model, "say what to measure: a checkpoint, or --model"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with one-line errors for a missing or malformed file."""
    import yaml  # here, not at the top: a run without a config file never parses YAML

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"'{path}' is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"'{path}' must hold a mapping of settings, not a {type(data).__name__}")
    return data
