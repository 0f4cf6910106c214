"""Measure each check of a baseline and judge its guards.

``run_checks(baseline)`` calls :func:`condlab.pipeline.run_spectrum` once per check (tests pass
another ``measure``). A check whose measurement raises a :class:`CondlabError` that is not a
usage error (say, NaN curvature of a diverged model) gets the verdict ``error`` on every guard
and the other checks still run; a :class:`UsageError` stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from condlab.check.schema import Baseline, Check, Guard, Ref
from condlab.check.verdict import Verdict, judge
from condlab.errors import CondlabError, UsageError
from condlab.report.records import SpectrumResult

# on_progress(check name, setting, hvps done, hvp budget)
CheckProgress = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class GuardResult:
    """One guard's stored value ``old``, measured value ``new`` and verdict."""

    guard: Guard
    old: float | None
    new: float | None
    verdict: Verdict


@dataclass(frozen=True)
class CheckResult:
    """A check's guard results and the spectrum report they came from (None on ``error``)."""

    check: Check
    guards: tuple[GuardResult, ...]
    report: object | None  # condlab.pipeline.SpectrumReport
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return all(g.verdict.ok for g in self.guards)


@dataclass(frozen=True)
class CheckRun:
    """All checks run from one baseline file."""

    baseline: Baseline
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every guard passes, 1 when any fails (usage errors never get here: 2)."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        """How many guards got each verdict, in order of first appearance."""
        out: dict[str, int] = {}
        for c in self.checks:
            for g in c.guards:
                out[g.verdict.verdict] = out.get(g.verdict.verdict, 0) + 1
        return out


def metric_value(results: dict[str, SpectrumResult], ref: Ref) -> tuple[float | None, str | None]:
    """``(value, problem)`` of ``ref`` among one report's results by setting name; ``problem``
    is a sentence when the eigenvalues behind the value did not converge."""
    r = results.get(ref.setting)
    if r is None:
        raise UsageError(
            f"setting {ref.setting!r} was not measured; measured: {', '.join(results)}"
        )
    value = getattr(r, ref.metric)
    value = None if value is None else float(value)
    if ref.metric == "trace":
        return value, None
    flags = {
        "lambda_max": r.converged_top,
        "lambda_min": r.converged_bottom,
    }.get(ref.metric, (r.converged_top or []) + (r.converged_bottom or []))
    if flags and not all(flags):
        return value, (
            f"the eigenvalues behind {ref.text()} did not converge in {r.hvp_count} HVPs; "
            "raise max_hvps or loosen tol in the check's spectrum"
        )
    return value, None


def guard_value(results: dict[str, SpectrumResult], guard: Guard) -> tuple[float | None, str | None]:
    """The measured number ``guard`` watches (a ratio divides its two references)."""
    if guard.metric != "ratio":
        return metric_value(results, guard.refs()[0])
    (num, p1), (den, p2) = (metric_value(results, r) for r in guard.refs())
    if num is None or den is None or den == 0:
        return None, p1 or p2 or "a side of the ratio is missing or the denominator is 0"
    return num / den, p1 or p2


def judge_check(check: Check, results: list[SpectrumResult]) -> tuple[GuardResult, ...]:
    """Judge every guard of ``check`` on the spectrum ``results`` measured for it."""
    by_setting = {r.setting: r for r in results}
    out = []
    for g in check.guards:
        new, problem = guard_value(by_setting, g)
        out.append(GuardResult(g, g.value, new, judge(g, new, problem=problem)))
    return tuple(out)


def run_checks(
    baseline: Baseline,
    *,
    only: tuple[str, ...] = (),
    threads: int | None = None,
    measure: Callable | None = None,
    on_progress: CheckProgress | None = None,
) -> CheckRun:
    """Measure the checks of ``baseline`` (those named in ``only``, if given) and judge them.

    ``threads`` is passed on to ``measure(cfg, on_progress=..., threads=...)``, which returns a
    SpectrumReport; default ``run_spectrum`` (None: its choice of threads for the size).
    """
    if measure is None:
        from condlab.pipeline import run_spectrum as measure
    names = [c.name for c in baseline.checks]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise UsageError(f"no check named {', '.join(map(repr, unknown))}; the checks are {', '.join(names)}")
    out = []
    for check in baseline.checks:
        if only and check.name not in only:
            continue
        t0 = time.perf_counter()

        def progress(setting: str, done: int, budget: int, _name: str = check.name) -> None:
            if on_progress is not None:
                on_progress(_name, setting, done, budget)

        try:
            report = measure(check.spectrum, on_progress=progress, threads=threads)
            guards = judge_check(check, report.results)
        except UsageError as e:
            raise UsageError(f"check {check.name!r}: {e}") from e
        except CondlabError as e:
            verdict = Verdict("error", False, f"the measurement failed: {e}")
            guards = tuple(GuardResult(g, g.value, None, verdict) for g in check.guards)
            out.append(CheckResult(check, guards, None, str(e), time.perf_counter() - t0))
            continue
        out.append(CheckResult(check, guards, report, None, time.perf_counter() - t0))
    return CheckRun(baseline, tuple(out))
