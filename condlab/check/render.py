"""A check run -> rows -> a rich table per check, a summary line, a JSON document, JUnit XML.

Nothing here measures. One row per guard (:func:`rows`) feeds all three formats. JUnit: one
``<testsuite>`` per check, one ``<testcase>`` per guard; a failing verdict is a ``<failure>``
(``error``: an ``<error>``) whose ``message`` is the verdict's sentence.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from condlab.check.run import CheckResult, CheckRun
from condlab.check.verdict import change, change_text
from condlab.report.tables import fmt

SHORT = {"condition_number": "kappa", "lambda_min_positive": "lambda_min+"}  # table names


def tolerance_text(guard) -> str:
    """``±20%``, ``+0.1 abs``, ``>= 10``; several joined by ``, ``."""
    parts = [guard.tolerance.text()] if guard.tolerance else []
    if guard.min is not None:
        parts.append(f">= {guard.min:g}")
    if guard.max is not None:
        parts.append(f"<= {guard.max:g}")
    return ", ".join(parts)


def rows(check: CheckResult) -> list[dict[str, Any]]:
    """One JSON-able row per guard: what it watches, old, new, change, tolerance, verdict."""
    out = []
    for g in check.guards:
        ratio, pct = change(g.old, g.new)
        t = g.guard.tolerance
        out.append(
            {
                "check": check.check.name,
                "metric": g.guard.metric_label,
                "setting": g.guard.setting_label,
                "label": g.guard.label,
                "old": g.old,
                "new": g.new,
                "change_ratio": ratio,
                "change_percent": pct,
                "tolerance": None if t is None else {"rel": t.rel, "abs": t.abs, "direction": t.direction},
                "min": g.guard.min,
                "max": g.guard.max,
                "verdict": g.verdict.verdict,
                "ok": g.verdict.ok,
                "message": g.verdict.message,
            }
        )
    return out


def check_table(check: CheckResult) -> Table:
    """The guards of one check: metric, setting (unless all are the baseline), old, new,
    change, tolerance, verdict. Compact enough for an 80-column CI log: condition_number
    reads ``kappa`` and lambda_min_positive ``lambda_min+``, as in the spectrum table."""
    seconds = f", {check.seconds:.1f} s" if check.seconds else ""
    table = Table(
        title=escape(f"check {check.check.name}: {check.check.target}{seconds}"),
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    settings = any(g.guard.setting_label != "baseline" for g in check.guards)
    cols = ("metric", "setting", "old", "new", "change", "tolerance", "verdict")
    for col in cols if settings else [c for c in cols if c != "setting"]:
        right = col in ("old", "new", "change")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "setting")
    for g in check.guards:
        v = g.verdict.verdict
        style = ("green" if v == "pass" else "cyan") if g.verdict.ok else "bold red"
        metric = g.guard.metric_label
        for long, short in SHORT.items():
            metric = metric.replace(long, short)
        row = [escape(metric)] + ([escape(g.guard.setting_label)] if settings else [])
        row += [fmt(g.old), fmt(g.new), change_text(g.old, g.new), tolerance_text(g.guard)]
        table.add_row(*row, f"[{style}]{v}[/]")
    return table


def failure_lines(run: CheckRun) -> list[str]:
    """``check / guard: verdict: message`` for every failing guard."""
    return [
        f"{c.check.name} / {g.guard.label}: {g.verdict.verdict}: {g.verdict.message}"
        for c in run.checks
        for g in c.guards
        if not g.verdict.ok
    ]


def summary(run: CheckRun) -> str:
    """``PASSED: 2 checks, 5 metrics (pass 4, improved 1)`` or ``FAILED: ...``."""
    counts = run.counts()
    n = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    head = "PASSED" if run.ok else "FAILED"
    k = len(run.checks)
    return f"{head}: {k} check{'s' * (k != 1)}, {n} metric{'s' * (n != 1)} ({detail})"


def json_document(run: CheckRun, command: str) -> dict:
    """Every check's guards (rows), measured results and resolved config, plus versions."""
    import platform

    import torch

    from condlab import __version__
    from condlab.report.records import jsonable as _jsonable

    checks = []
    for c in run.checks:
        report = c.report
        checks.append(
            {
                "name": c.check.name,
                "target": c.check.target,
                "ok": c.ok,
                "error": c.error,
                "seconds": c.seconds,
                "config": report.config if report is not None else c.check.spectrum.to_dict(),
                "guards": rows(c),
                "results": [r.to_dict() for r in report.results] if report is not None else [],
            }
        )
    return _jsonable(
        {
            "condlab_version": __version__,
            "command": command,
            "baseline": str(run.baseline.path),
            "ok": run.ok,
            "exit_code": run.exit_code,
            "counts": run.counts(),
            "versions": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
            },
            "checks": checks,
        }
    )


def junit_xml(run: CheckRun) -> str:
    """JUnit XML: a testsuite per check, a testcase per guard, failures with their messages."""
    suites = ET.Element("testsuites", name="condlab check")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for c in run.checks:
        suite = ET.SubElement(suites, "testsuite", name=c.check.name)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        labels = [g.guard.label for g in c.guards]
        for g in c.guards:
            name = g.guard.label
            if labels.count(name) > 1:  # CI systems merge testcases of the same name
                name += f" (metric #{g.guard.index + 1})"
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"condlab.check.{c.check.name}",
                name=name,
                time=f"{c.seconds / max(len(c.guards), 1):.3f}",
            )
            counts["tests"] += 1
            if not g.verdict.ok:
                kind = "error" if g.verdict.verdict == "error" else "failure"
                counts["errors" if kind == "error" else "failures"] += 1
                el = ET.SubElement(case, kind, message=g.verdict.message, type=g.verdict.verdict)
                el.text = (
                    f"old {fmt(g.old, 8)}, new {fmt(g.new, 8)}, change {change_text(g.old, g.new)}, "
                    f"allowed {tolerance_text(g.guard)}"
                )
        suite.set("tests", str(counts["tests"]))
        suite.set("failures", str(counts["failures"]))
        suite.set("errors", str(counts["errors"]))
        suite.set("time", f"{c.seconds:.3f}")
        for k in totals:
            totals[k] += counts[k]
    for k, v in totals.items():
        suites.set(k, str(v))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
