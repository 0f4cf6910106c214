"""Read a baseline file into :mod:`condlab.check.schema` objects, validating it strictly.

Every mapping is checked for unknown keys (a UsageError naming the key and the check); the
``spectrum`` part goes through :func:`condlab.config.build` like a ``--config`` file; paths in it
(checkpoint, weights, optimizer_state, a data file) resolve from the baseline file's folder and
must exist; every guard must name a setting the spectrum measures and a metric it computes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from condlab.check.schema import (
    BETTER,
    DEFAULT_BETTER,
    DIRECTIONS,
    EIGEN_METRICS,
    METRICS,
    Baseline,
    Check,
    Guard,
    Ref,
    Tolerance,
)
from condlab.config import SpectrumConfig, build
from condlab.errors import UsageError
from condlab.options import (
    BASELINE_KEYS,
    CHECK_KEYS,
    GUARD_KEYS,
    REF_KEYS,
    TOLERANCE_KEYS,
    as_number,
    by_name,
)

PATH_KEYS = ("checkpoint", "weights", "optimizer_state")
DATA_SUFFIXES = (".npz", ".csv", ".pt")

# the keys of each mapping, as condlab.options declares them
_TOP_KEYS = tuple(by_name(BASELINE_KEYS))
_CHECK_KEYS = tuple(by_name(CHECK_KEYS))
_GUARD_KEYS = tuple(k for k in by_name(GUARD_KEYS) if k not in ("numerator", "denominator"))
_RATIO_KEYS = tuple(k for k in by_name(GUARD_KEYS) if k != "setting")
_TOL_KEYS = tuple(by_name(TOLERANCE_KEYS))
_REF = by_name(REF_KEYS)
_SETTING = by_name(GUARD_KEYS)["setting"].default
_DIRECTION = by_name(TOLERANCE_KEYS)["direction"].default


def load_baseline(path: str | Path, *, need_values: bool = True, trust: bool = False) -> Baseline:
    """Read and validate the baseline at ``path``. With ``need_values`` (a check, not an
    update) every guard with a tolerance must have a stored ``value``. ``trust`` (only from
    the command line's --trust-checkpoint) allows pickled checkpoints; the file cannot."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"baseline file '{path}' does not exist; give the path to a checks YAML")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"'{path}' is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_baseline(data, path=path, text=text, need_values=need_values, trust=trust)


def parse_baseline(
    data: Any, *, path: Path, text: str = "", need_values: bool = True, trust: bool = False
) -> Baseline:
    """Validate the loaded YAML ``data`` of the file ``path`` (see the module docstring)."""
    if not isinstance(data, dict) or "checks" not in data:
        raise UsageError(f"'{path}' needs a top-level 'checks:' list (see docs/ci.md)")
    _keys(data, _TOP_KEYS, f"'{path}'")
    items = data["checks"]
    if not isinstance(items, list) or not items:
        raise UsageError(f"'checks' in '{path}' must be a non-empty list of checks")
    checks, seen = [], set()
    for i, item in enumerate(items):
        check = _check(item, i, path, need_values, trust)
        if check.name in seen:
            raise UsageError(f"two checks are named {check.name!r} in '{path}'; names must be unique")
        seen.add(check.name)
        checks.append(check)
    return Baseline(path=path, text=text, checks=tuple(checks))


def _keys(d: dict, valid: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in valid:
            raise UsageError(f"unknown key {key!r} in {where}; valid keys: {', '.join(valid)}")


def _check(item: Any, i: int, path: Path, need_values: bool, trust: bool) -> Check:
    if not isinstance(item, dict):
        raise UsageError(f"check #{i + 1} in '{path}' must be a mapping with name, spectrum, metrics")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"check #{i + 1} in '{path}' needs a 'name' (a non-empty string)")
    where = f"check {name!r} in '{path}'"
    _keys(item, _CHECK_KEYS, where)
    spec = item.get("spectrum")
    if not isinstance(spec, dict):
        raise UsageError(f"{where} needs a 'spectrum' mapping of spectrum options")
    values, target = _resolve_paths(spec, path.parent, where)
    cfg = build(SpectrumConfig, values, source=where, cli={"trust_checkpoint": True} if trust else None)
    metrics = item.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise UsageError(f"{where} needs a non-empty 'metrics' list of guards")
    guards = tuple(_guard(g, j, cfg, where, path, need_values) for j, g in enumerate(metrics))
    return Check(index=i, name=name, spectrum=cfg, guards=guards, target=target)


def _resolve_paths(spec: dict, folder: Path, where: str) -> tuple[dict, str]:
    """Paths in ``spec`` made relative to ``folder`` (the baseline's), checked to exist."""
    values = dict(spec)

    def resolve(p: Any, what: str) -> str:
        if not isinstance(p, (str, os.PathLike)):
            raise UsageError(f"{what} in {where} must be a path string, got {p!r}")
        full = Path(p) if Path(p).is_absolute() else folder / p
        if not full.exists():
            raise UsageError(
                f"{what} '{full}' of {where} does not exist; create it (e.g. with condlab train) "
                "or fix the path (relative paths start at the baseline file's folder)"
            )
        return str(full)

    for key in PATH_KEYS:
        if values.get(key) is not None:
            values[key] = resolve(values[key], key)
    data = values.get("data")
    if isinstance(data, str) and Path(data).suffix in DATA_SUFFIXES:
        values["data"] = resolve(data, "data")
    elif isinstance(data, dict) and isinstance(data.get("path"), str):
        values["data"] = {**data, "path": resolve(data["path"], "data")}
    target = spec.get("checkpoint") or spec.get("model") or "?"
    return values, str(target)


def _guard(g: Any, j: int, cfg: SpectrumConfig, where: str, path: Path, need_values: bool) -> Guard:
    if not isinstance(g, dict) or "metric" not in g:
        raise UsageError(f"metric #{j + 1} of {where} must be a mapping with a 'metric' key")
    metric = g["metric"]
    gwhere = f"metric #{j + 1} ({metric}) of {where}"
    settings = _settings(cfg)
    if metric == "ratio":
        _keys(g, _RATIO_KEYS, gwhere)
        for side in ("numerator", "denominator"):
            if side not in g:
                raise UsageError(f"{gwhere} needs a {side!r}: {{setting: ..., metric: ...}}")
        parts: dict[str, Any] = {s: _ref(g[s], cfg, settings, f"{s} of {gwhere}") for s in ("numerator", "denominator")}
    elif metric in METRICS:
        _keys(g, _GUARD_KEYS, gwhere)
        setting = g.get("setting", _SETTING)
        _need(Ref(setting, metric), cfg, settings, gwhere)
        parts = {"setting": setting}
    else:
        raise UsageError(f"{gwhere}: unknown metric {metric!r}; choose one of {', '.join((*METRICS, 'ratio'))}")
    tol = _tolerance(g["tolerance"], gwhere) if g.get("tolerance") is not None else None
    value, lo, hi = (_number(g.get(k), f"{k} of {gwhere}") for k in ("value", "min", "max"))
    better = g.get("better", DEFAULT_BETTER.get(metric))
    if better is not None and better not in BETTER:
        raise UsageError(f"better of {gwhere} must be lower or higher, got {better!r}")
    if tol is None and lo is None and hi is None:
        raise UsageError(f"{gwhere} guards nothing: add a tolerance (e.g. {{rel: 0.1}}) or min/max")
    if tol is not None and value is None and need_values:
        raise UsageError(
            f"{gwhere} has a tolerance but no stored value; record one with "
            f"`condlab check {path} --update`"
        )
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"{gwhere}: min {lo:g} is above max {hi:g}")
    return Guard(index=j, metric=metric, value=value, tolerance=tol, min=lo, max=hi, better=better, **parts)


def _settings(cfg: SpectrumConfig) -> tuple[str, ...]:
    return ("baseline", *cfg.precond, *cfg.norm)


def _ref(r: Any, cfg: SpectrumConfig, settings: tuple[str, ...], where: str) -> Ref:
    if not isinstance(r, dict):
        raise UsageError(f"{where} must be a mapping {{setting: ..., metric: ...}}, got {r!r}")
    _keys(r, tuple(_REF), where)
    ref = Ref(r.get("setting", _REF["setting"].default), r.get("metric", _REF["metric"].default))
    if ref.metric not in METRICS:
        raise UsageError(f"{where}: unknown metric {ref.metric!r}; choose one of {', '.join(METRICS)}")
    _need(ref, cfg, settings, where)
    return ref


def _need(ref: Ref, cfg: SpectrumConfig, settings: tuple[str, ...], where: str) -> None:
    """``ref`` must name a setting the spectrum measures and a metric it computes."""
    s = ref.setting
    if not isinstance(s, str) or (s not in settings and not (cfg.per_layer and s.startswith("layer:"))):
        raise UsageError(
            f"{where}: setting {s!r} is not measured; choose one of {', '.join(settings)} "
            "(add a name to the spectrum's precond or norm list to measure it)"
        )
    if ref.metric == "trace" and not cfg.trace:
        raise UsageError(f"{where} guards the trace: add 'trace: true' to the check's spectrum")
    if ref.metric in EIGEN_METRICS and cfg.top + cfg.bottom == 0 and not cfg.exact:
        raise UsageError(f"{where} guards {ref.metric}: set top and bottom >= 1 in the check's spectrum")


def _tolerance(t: Any, where: str) -> Tolerance:
    where = f"the tolerance of {where}"
    if not isinstance(t, dict):
        raise UsageError(f"{where} must be a mapping like {{rel: 0.2, direction: increase}}")
    _keys(t, _TOL_KEYS, where)
    if ("rel" in t) == ("abs" in t):
        raise UsageError(f"{where} needs exactly one of 'rel' (0.2 = 20%) or 'abs'")
    key = "rel" if "rel" in t else "abs"
    amount = _number(t[key], f"{key} of {where}")
    if amount is None or amount < 0:
        raise UsageError(f"{key} of {where} must be a number >= 0")
    direction = t.get("direction", _DIRECTION)
    if direction not in DIRECTIONS:
        raise UsageError(f"direction of {where} must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return Tolerance(**{key: amount}, direction=direction)


def _number(x: Any, where: str) -> float | None:
    if x is None:
        return None
    x = as_number(x)  # YAML 1.1 reads 1e-3 as a string
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise UsageError(f"{where} must be a finite number, got {x!r}")
    return float(x)
