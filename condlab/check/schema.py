"""The baseline file of ``condlab check``: named checks, each a spectrum setting and its guards.

::

    checks:
      - name: digits-mlp                 # unique; names the check in tables, JSON and JUnit
        spectrum:                        # SpectrumConfig keys, as in `condlab spectrum --config`
          checkpoint: ../digits.pt       # relative paths: from this file's folder
          curvature: ggn
          precond: [adam]
        metrics:                         # the guards
          - metric: condition_number     # lambda_max | lambda_min | condition_number | trace
            setting: baseline            #   | lambda_min_positive | nullity | ratio
            value: 812.5                 # stored; written by `condlab check --update`
            tolerance: {rel: 0.2, direction: increase}
          - metric: ratio                # numerator / denominator, both of this check
            numerator: {setting: baseline, metric: condition_number}
            denominator: {setting: adam, metric: condition_number}
            min: 10                      # fixed bounds: min and/or max

Every key, its type, default and choices are declared in :mod:`condlab.options`
(``BASELINE_KEYS``, ``CHECK_KEYS``, ``GUARD_KEYS``, ``TOLERANCE_KEYS``, ``REF_KEYS``).
A guard needs a ``tolerance`` (then a stored ``value``, except under ``--update``) and/or
``min``/``max``. :mod:`condlab.check.load` reads and validates the file strictly;
:mod:`condlab.check.verdict` has the rules that judge a guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condlab.config import SpectrumConfig
from condlab.options import BETTER, DIRECTIONS, METRICS, REF_KEYS, TOLERANCE_KEYS, by_name

__all__ = ["BETTER", "DIRECTIONS", "EIGEN_METRICS", "METRICS", "Baseline", "Check", "Guard", "Ref",
           "Tolerance"]

EIGEN_METRICS = tuple(m for m in METRICS if m != "trace")
DEFAULT_BETTER = {"condition_number": "lower", "ratio": "higher"}


@dataclass(frozen=True)
class Tolerance:
    """The band a new value may take around the stored one ``old``:
    ``rel``: ``[old - rel |old|, old + rel |old|]``; ``abs``: ``[old - abs, old + abs]``.

    ``direction`` names the way out of the band that is a regression: ``increase`` (the value
    may not grow by more than the tolerance; any decrease passes), ``decrease``, or ``both``.
    """

    rel: float | None = None
    abs: float | None = None
    direction: str = by_name(TOLERANCE_KEYS)["direction"].default

    def band(self, old: float) -> tuple[float, float]:
        width = self.rel * abs(old) if self.rel is not None else self.abs
        return old - width, old + width

    def text(self) -> str:
        sign = {"increase": "+", "decrease": "-", "both": "±"}[self.direction]
        amount = f"{self.rel * 100:g}%" if self.rel is not None else f"{self.abs:g} abs"
        return f"{sign}{amount}"


@dataclass(frozen=True)
class Ref:
    """One measured number of a check: ``metric`` of the setting named ``setting``."""

    setting: str = by_name(REF_KEYS)["setting"].default
    metric: str = by_name(REF_KEYS)["metric"].default

    def text(self) -> str:
        return f"{self.metric}[{self.setting}]"


@dataclass(frozen=True)
class Guard:
    """One guarded number: a metric of one setting, or (``metric == "ratio"``) the quotient
    ``numerator / denominator`` of two, with its stored value and what it may do."""

    index: int  # position in the check's ``metrics`` list
    metric: str
    setting: str | None = None  # None for a ratio
    numerator: Ref | None = None
    denominator: Ref | None = None
    value: float | None = None
    tolerance: Tolerance | None = None
    min: float | None = None
    max: float | None = None
    better: str | None = None  # lower | higher | None (unknown)

    @property
    def metric_label(self) -> str:
        if self.metric != "ratio":
            return self.metric
        n, d = self.numerator, self.denominator
        return f"{n.metric} ratio" if n.metric == d.metric else f"{n.metric}/{d.metric} ratio"

    @property
    def setting_label(self) -> str:
        if self.metric != "ratio":
            return self.setting
        return f"{self.numerator.setting} / {self.denominator.setting}"

    @property
    def label(self) -> str:
        if self.metric != "ratio":
            return f"{self.metric} [{self.setting}]"
        return f"ratio {self.numerator.text()} / {self.denominator.text()}"

    def refs(self) -> tuple[Ref, ...]:
        if self.metric == "ratio":
            return (self.numerator, self.denominator)
        return (Ref(self.setting, self.metric),)


@dataclass(frozen=True)
class Check:
    """A named spectrum setting (``spectrum``, paths resolved) and the guards on its results."""

    index: int  # position in the file's ``checks`` list
    name: str
    spectrum: SpectrumConfig
    guards: tuple[Guard, ...]
    target: str  # what is measured, for titles: a checkpoint path (as given) or a model


@dataclass(frozen=True)
class Baseline:
    """A parsed baseline file, with the text it was parsed from (``--update`` edits that text)."""

    path: Path
    text: str
    checks: tuple[Check, ...]
