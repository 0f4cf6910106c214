"""Verdicts: how a new measurement compares with a guard's stored value, tolerance and bounds.

With ``lo, hi = tolerance.band(old)`` (see :class:`~condlab.check.schema.Tolerance`):

- ``pass``: ``lo <= new <= hi`` and within ``min``/``max``.
- ``regressed`` (fails): outside ``min``/``max``, or out of the band the guarded way: above ``hi``
  for ``direction: increase``, below ``lo`` for ``decrease``; for ``both``, the worse way, which
  ``better`` names (default: lower for condition_number, higher for ratio).
- ``improved``: out of the band the other way. One-sided tolerances pass it; a two-sided one
  fails it, since the stored baseline is then stale (``condlab check --update`` refreshes it).
- ``changed`` (fails): out of a two-sided band for a metric with no ``better`` way.
- ``missing`` (fails): nothing measured (null or not finite); ``unconverged`` (fails): the
  eigenvalues behind the number did not converge; ``error`` (fails): the measurement raised.
- ``new``: a tolerance but no stored value yet (only under ``--update``, which records it).

Changes are the ratio ``new / old`` and the percentage ``100 (new - old) / |old|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from condlab.check.schema import Guard

VERDICTS = ("pass", "improved", "regressed", "changed", "missing", "unconverged", "error", "new")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one guard: the verdict, whether it passes, and a sentence saying why."""

    verdict: str
    ok: bool
    message: str


def judge(guard: Guard, new: float | None, *, problem: str | None = None) -> Verdict:
    """The verdict on ``new`` for ``guard``; ``problem`` (a sentence) marks it unconverged."""
    if new is None or not math.isfinite(new):
        return Verdict("missing", False, problem or "nothing was measured for this metric")
    if problem is not None:
        return Verdict("unconverged", False, problem)
    if guard.min is not None and new < guard.min:
        return Verdict("regressed", False, f"{new:.6g} is below the minimum {guard.min:g}")
    if guard.max is not None and new > guard.max:
        return Verdict("regressed", False, f"{new:.6g} is above the maximum {guard.max:g}")
    tol, old = guard.tolerance, guard.value
    if tol is None:
        return Verdict("pass", True, "within the bounds")
    if old is None:  # only under --update, which is about to record it
        return Verdict("new", True, "no stored value yet")
    lo, hi = tol.band(old)
    if lo <= new <= hi:
        return Verdict("pass", True, f"{change_text(old, new)} is within {tol.text()}")
    way = "increase" if new > hi else "decrease"
    moved = f"{change_text(old, new)} is beyond {tol.text()} (stored {old:.6g}, now {new:.6g})"
    if tol.direction != "both":
        if way == tol.direction:
            return Verdict("regressed", False, moved)
        return Verdict("improved", True, f"{moved}; tighten the baseline with --update")
    if guard.better is None:
        return Verdict("changed", False, f"{moved}; refresh the baseline with --update if intended")
    worse = "increase" if guard.better == "lower" else "decrease"
    if way == worse:
        return Verdict("regressed", False, moved)
    return Verdict("improved", False, f"{moved}: the baseline is stale; refresh it with --update")


def change(old: float | None, new: float | None) -> tuple[float | None, float | None]:
    """``(new / old, 100 (new - old) / |old|)``; None where undefined (a missing side, old = 0)."""
    if old is None or new is None or old == 0 or not math.isfinite(new):
        return None, None
    return new / old, 100.0 * (new - old) / abs(old)


def change_text(old: float | None, new: float | None) -> str:
    """``+23.1%``; ``x13.4`` beyond a factor 2 either way; ``+0.5`` (absolute) when ``old``
    is 0; ``-`` when undefined. The JSON output holds the ratio and the percentage both."""
    ratio, pct = change(old, new)
    if ratio is None:
        if old == 0 and new is not None and math.isfinite(new):
            return f"{new - old:+.3g}"
        return "-"
    if ratio >= 2 or 0 < ratio <= 0.5:
        return f"x{ratio:.3g}"
    if pct == 0:
        return "0%"
    return f"{pct:+.2g}%" if abs(pct) < 0.1 else f"{pct:+.3g}%"
