"""The ``condlab compare`` config: one problem, optional variants of it, a list of optimizers.

A YAML mapping (``yaml.safe_load``); every unknown key is an error that names it::

    name: paper-b-linreg               # a title
    model: {name: linear}              # condlab.load.models spec
    data: {name: linreg, n: 1024, d: 16, blocks: [8, 5, 3], e: 0.05}
    loss: mse                          # default: from the task
    test_fraction: 0.2                 # held-out share (0: no test set); split_seed: 0
    standardize: false                 # inputs (x - mean) / std with the training statistics
    params: []                         # globs of the trained parameters (default: all)
    bn_mode: batch                     # BatchNorm on batch statistics (or eval)
    dtype: float64
    init_scale: 1.0                    # multiplies the trained parameters at initialization
    steps: 300
    batch_size: null                   # null: full batch; else a fresh permutation per epoch
    seeds: [0, 1]                      # initialization, batch order and probes
    log_every: 1                       # a CSV row every k steps (and the last)
    target_loss: 0.05                  # for "steps to target"
    criterion: steps_to_target         # choosing a tuned lr: steps_to_target | final_loss | test_loss
    divergence: 1.0e+6                 # stop a run whose loss grows past divergence x its start (runner.diverged)
    track: {every: 25, curvature: ggn, exact: true, ...}     # see condlab.train.track
    variants: [{label: full}, {label: mini, batch_size: 32}] # problem overrides, one set of runs each
    optimizers:
      - {name: adam, lr: {grid: [1.0e-3, 1.0e-2]}, basis: identity, betas: [0.9, 0.999]}
      - {name: gn, lr: 1.0, basis: eigen, refresh: 10, label: "GN^-1 eigen"}
      - {name: sgd, sweep: {lr: [0.1, 0.2], weight_decay: [1.0e-3, 5.0e-3]}}   # 4 entries
    findings: paper-b                  # the claims checked after the table (condlab.compare.findings)
    quick: {steps: 60, data: {n: 256}} # deep-merged over the config by --quick

An optimizer's ``lr`` is a number or ``{grid: [...]}`` (tuned: every value runs, the best by
``criterion`` is chosen); ``sweep`` expands into one entry per combination (all reported). An
entry's label defaults to its name (``/eigen`` in the eigenbasis), followed by the
hyperparameters it sets (then its lr) where that is needed to tell entries apart.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from condlab.errors import UsageError
from condlab.options import (
    COMPARE_KEYS,
    CRITERIA,
    FINDINGS,
    as_number,
    by_name,
    fields_of,
    parse_mapping,
)
from condlab.train.diag_optimizers import resolve_hparams
from condlab.train.track import TrackSettings

__all__ = ["CRITERIA", "FINDINGS", "CompareConfig", "OptimizerEntry", "Variant", "parse_config"]
BASES = ("identity", "eigen")
PROBLEM_KEYS = ("model", "data", "loss", "test_fraction", "split_seed", "standardize", "params",
                "bn_mode", "init_scale", "batch_size")
KEYS = by_name(COMPARE_KEYS)


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer of the comparison: a rule, its basis, its lr (or lr grid), hyperparameters."""

    label: str
    name: str
    lrs: tuple[float, ...]
    tuned: bool
    basis: str = "identity"
    hparams: dict = field(default_factory=dict)  # without lr
    given: tuple[str, ...] = ()  # the hyperparameters the config set (for automatic labels)


@dataclass(frozen=True)
class Variant:
    """A label and the problem keys it overrides (``PROBLEM_KEYS``)."""

    label: str
    overrides: dict = field(default_factory=dict)


class _CompareMethods:
    """What ``CompareConfig`` computes from its fields (which come from :data:`COMPARE_KEYS`)."""

    def problem(self, variant: Variant) -> dict[str, Any]:
        """The problem keys of ``variant``: the config's, overridden by the variant's."""
        base = {k: getattr(self, k) for k in PROBLEM_KEYS}
        return merge(base, variant.overrides)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


CompareConfig = dataclasses.make_dataclass(
    "CompareConfig", fields_of([o for o in COMPARE_KEYS if o.name != "quick"]),
    bases=(_CompareMethods,), frozen=True, namespace={"__module__": __name__},
)
CompareConfig.__doc__ = """A parsed ``condlab compare`` config (:func:`parse_config`): one field per
key of :data:`condlab.options.COMPARE_KEYS` (``quick`` is merged in by then); ``model`` a
mapping, ``optimizers`` :class:`OptimizerEntry` s, ``variants`` :class:`Variant` s, ``track``
:class:`condlab.train.track.TrackSettings`."""


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# -- parsing ----------------------------------------------------------------------------------
def merge(base: dict, over: dict) -> dict:
    """``over`` deep-merged into ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fail(where: str, msg: str) -> UsageError:
    return UsageError(f"{where}: {msg}")


def _lr(where: str, v: Any) -> float:
    x = as_number(v)  # YAML 1.1 reads 1e-2 as a string
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise _fail(where, f"lr={v!r} must be a number > 0")
    return float(x)


def _lrs(where: str, v: Any) -> tuple[tuple[float, ...], bool]:
    if isinstance(v, dict):
        if set(v) != {"grid"} or not isinstance(v["grid"], list) or not v["grid"]:
            raise _fail(where, "lr must be a number or {grid: [lr1, lr2, ...]}")
        return tuple(_lr(where, x) for x in v["grid"]), len(v["grid"]) > 1
    return (_lr(where, v),), False


def _entries(raw: Any) -> list[OptimizerEntry]:
    if not isinstance(raw, list) or not raw:
        raise UsageError("the config needs an 'optimizers' list, e.g. [{name: adam, lr: 1.0e-3}]")
    out: list[OptimizerEntry] = []
    auto: list[bool] = []
    for i, item in enumerate(raw):
        item = {"name": item} if isinstance(item, str) else item
        where = f"optimizers[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _fail(where, "each optimizer is a mapping with a 'name'")
        item = dict(item)
        sweep = item.pop("sweep", None)
        combos: list[dict] = [{}]
        if sweep is not None:
            if not isinstance(sweep, dict) or not sweep or not all(
                isinstance(v, list) and v for v in sweep.values()
            ):
                raise _fail(where, "sweep must map hyperparameters to non-empty lists")
            keys = list(sweep)
            combos = [dict(zip(keys, vals)) for vals in itertools.product(*sweep.values())]
        for combo in combos:
            out.append(_entry(where, {**item, **combo}))
            auto.append("label" not in item)
    # automatic labels: name(/eigen), then its fixed lr and the hyperparameters it sets
    labels = [e.label for e in out]
    for k, e in enumerate(out):
        if auto[k] and labels.count(e.label) > 1:
            lr = {} if e.tuned else {"lr": e.lrs[0]}
            given = {key: v for key, v in e.hparams.items() if key in e.given}
            out[k] = dataclasses.replace(e, label=f"{e.label} {_suffix({**lr, **given})}".strip())
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UsageError(f"optimizer labels must be unique, {', '.join(dup)} repeats; add label: ...")
    return out


def _suffix(combo: dict) -> str:
    short = {"weight_decay": "wd", "momentum": "mu"}
    return " ".join(f"{short.get(k, k)}={v:g}" for k, v in combo.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool))


def _entry(where: str, item: dict) -> OptimizerEntry:
    name = item.pop("name")
    basis = item.pop("basis", "identity")
    if basis not in BASES:
        raise _fail(where, f"basis {basis!r} must be one of {', '.join(BASES)}")
    label = item.pop("label", None)
    if "lr" not in item:
        raise _fail(where, f"optimizer {name!r} needs an lr (a number or {{grid: [...]}})")
    lrs, tuned = _lrs(where, item.pop("lr"))
    hparams = resolve_hparams(name, {**item, "lr": lrs[0]})
    hparams.pop("lr")
    if label is None:
        label = name + ("/eigen" if basis == "eigen" else "")
    return OptimizerEntry(str(label), name, lrs, tuned, basis, hparams, tuple(sorted(item)))


def _variants(raw: Any, source: str) -> tuple[Variant, ...]:
    if raw is None:
        return (Variant("default"),)
    out = []
    for i, v in enumerate(raw):
        if not isinstance(v, dict) or not isinstance(v.get("label"), str):
            raise _fail(f"variants[{i}]", "each variant is a mapping with a 'label'")
        over = {k: x for k, x in v.items() if k != "label"}
        unknown = sorted(set(over) - set(PROBLEM_KEYS))
        if unknown:
            raise _fail(f"variants[{i}]", f"unknown key(s) {', '.join(unknown)}; a variant may "
                        f"override {', '.join(PROBLEM_KEYS)}")
        where = f"{source}: variants[{i}]"
        out.append(Variant(v["label"], {k: KEYS[k].parse(x, where) for k, x in over.items()}))
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels):
        raise UsageError("variant labels must be unique")
    return tuple(out)


def parse_config(raw: dict, *, quick: bool = False, source: str = "the config") -> CompareConfig:
    """A validated :class:`CompareConfig` from a YAML mapping (``quick`` merges ``quick:``):
    each key parsed to its type in :data:`condlab.options.COMPARE_KEYS`, then the optimizers,
    variants and track block by their own rules."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source} must be a mapping of settings")
    raw = dict(raw)
    quick_over = KEYS["quick"].parse(raw.pop("quick", None), source)
    if quick:
        raw = merge(raw, quick_over)
    if not raw.get("optimizers"):  # the one missing key that needs an example
        raise UsageError("the config needs an 'optimizers' list, e.g. [{name: adam, lr: 1.0e-3}]")
    vals = parse_mapping(COMPARE_KEYS, raw, source, required=("model", "data"))
    vals.pop("quick")
    if isinstance(vals["model"], str):
        vals["model"] = {"name": vals["model"]}
    vals["optimizers"] = tuple(_entries(vals["optimizers"]))
    vals["variants"] = _variants(vals["variants"], source)
    vals["track"] = TrackSettings.from_dict(vals["track"], where=f"{source}: track")
    if (vals["criterion"] == "steps_to_target" and vals["target_loss"] is None
            and any(e.tuned for e in vals["optimizers"])):
        raise _fail(source, "criterion steps_to_target needs a target_loss (or choose criterion: "
                    "final_loss)")
    return CompareConfig(**vals)
