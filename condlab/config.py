"""Run configuration: one frozen dataclass per command, built from YAML and/or CLI options.

A YAML file's keys are the option names with ``_`` (or ``-``); an unknown key is an error that
names it and lists the valid ones. CLI options override the file. The resolved config is
saved beside every result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from condlab.errors import UsageError

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class SpectrumConfig:
    """Everything ``condlab spectrum`` needs: what to load, what to measure, how precisely."""

    # what to load
    checkpoint: str | None = None
    model: str | None = None  # built-in name or package.module:factory
    model_args: dict = field(default_factory=dict)
    weights: str | None = None
    trust_checkpoint: bool = False
    data: Any = None  # dataset spec (str or dict); default: the checkpoint's
    target: str | None = None
    loss: str | None = None  # default: the checkpoint's, else from the task
    batch_size: int | None = None
    max_samples: int | None = None
    # the operator
    curvature: str = "hessian"
    params: tuple[str, ...] = ()
    bn_mode: str = "eval"
    dropout_mode: str = "eval"
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    block_size: int = 16
    # estimators
    top: int = 5
    bottom: int = 3
    tol: float | None = None  # default: 1e-6 in float64, 1e-4 in float32
    max_hvps: int = 1000
    max_basis: int | None = None
    damping: float = 0.0
    null_threshold: float | None = None  # relative to |lambda_max|; default: tol
    trace: bool = False
    trace_method: str = "hutch++"
    probes: int = 100
    density: bool = False
    density_probes: int = 8
    density_steps: int = 80
    per_layer: bool = False
    exact: bool = False
    # settings beside the baseline
    precond: tuple[str, ...] = ()
    optimizer_state: str | None = None
    precond_batch_size: int | None = None
    diag_estimator: str = "exact"
    eps: float | None = None
    basis: str = "identity"
    weight_decay: float = 0.0
    decay: str = "none"
    lr: float | None = None
    beta1: float | None = None
    norm: tuple[str, ...] = ()

    @property
    def torch_dtype(self):
        import torch

        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]

    @property
    def resolved_tol(self) -> float:
        if self.tol is not None:
            return self.tol
        return 1e-6 if self.dtype == "float64" else 1e-4

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tol"] = self.resolved_tol
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


_TUPLES = {"params", "precond", "norm"}


def build(cls, values: dict[str, Any], *, source: str = "config"):
    """``cls(**values)`` with keys normalized, unknown keys and bad values rejected by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        k = str(key).replace("-", "_")
        if k not in names:
            raise UsageError(
                f"unknown key {key!r} in {source}; valid keys: {', '.join(sorted(names))}"
            )
        if k in _TUPLES and value is not None:
            value = (value,) if isinstance(value, str) else tuple(value)
        clean[k] = value
    cfg = cls(**clean)
    _validate(cfg, source)
    return cfg


def _validate(cfg, source: str) -> None:
    if isinstance(cfg, SpectrumConfig):
        checks = [
            (cfg.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}"),
            (cfg.top >= 0 and cfg.bottom >= 0, "top and bottom must be >= 0"),
            (cfg.top + cfg.bottom > 0 or cfg.trace or cfg.density, "nothing to measure: set top, bottom, trace or density"),
            (cfg.tol is None or 0 < cfg.tol < 1, "tol must be in (0, 1)"),
            (cfg.max_hvps > 0, "max_hvps must be positive"),
            (cfg.probes > 0, "probes must be positive"),
            (cfg.batch_size is None or cfg.batch_size > 0, "batch_size must be positive"),
            (cfg.max_samples is None or cfg.max_samples > 0, "max_samples must be positive"),
            (cfg.damping >= 0, "damping must be >= 0"),
            (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
            (not cfg.weight_decay or cfg.decay != "none", "--weight-decay needs --decay coupled, decoupled or l1"),
            (cfg.lr is None or cfg.lr > 0, "lr must be positive"),
            (cfg.checkpoint or cfg.model, "say what to measure: a checkpoint, or --model"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(f"{msg} ({source})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with one-line errors for a missing or malformed file."""
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
