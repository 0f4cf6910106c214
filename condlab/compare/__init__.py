"""``condlab compare``: train one problem with several optimizers and compare their conditioning.

    cfg = load_config("configs/compare_b_linreg.yaml", quick=True)
    report = compare(cfg, output=Path("out.csv"))        # rows, chosen lrs, findings

Modules, in pipeline order: ``config`` (the YAML schema), ``setup`` (data, model, Problem per
variant and seed), ``runner`` (the training loop and resume), ``csvlog`` (the row-by-row CSV),
``summary`` (per-run summaries, lr choice), ``findings`` (the papers' claims, measured),
``render`` (rich tables) and ``plots`` (matplotlib, optional).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from condlab.compare.config import CompareConfig, parse_config
from condlab.compare.csvlog import open_log
from condlab.compare.findings import Finding, compute_findings
from condlab.compare.runner import Event, plan, run_all
from condlab.compare.summary import Choice, RunSummary, choose, summarize_runs


@dataclass(frozen=True)
class CompareReport:
    """Everything a comparison produced, computed from its rows (the CSV's content)."""

    config: CompareConfig
    rows: list[dict]
    runs: list[RunSummary]
    choices: list[Choice]
    findings: list[Finding]
    seconds: float
    resumed_rows: int


def load_config(path: str | Path, *, quick: bool = False) -> CompareConfig:
    from condlab.config import read_yaml

    return parse_config(read_yaml(path), quick=quick, source=str(path))


def report_from_rows(cfg: CompareConfig, rows: list[dict], seconds: float = 0.0,
                     resumed_rows: int = 0) -> CompareReport:
    runs = summarize_runs(rows, cfg)
    choices = choose(runs, cfg)
    return CompareReport(cfg, rows, runs, choices, compute_findings(cfg, choices, runs),
                         seconds, resumed_rows)


def compare(
    cfg: CompareConfig,
    *,
    output: Path | None = None,
    resume: bool = False,
    force: bool = False,
    on_event: Event | None = None,
    stop_after_rows: int | None = None,
    threads: int | None = None,
) -> CompareReport:
    """Run (or continue, ``resume``) the comparison; rows go to the CSV ``output`` as they come.

    ``stop_after_rows`` (a debug hook for resume tests) raises ``KeyboardInterrupt`` after that
    many new rows, as a Ctrl-C would. ``threads``: torch CPU threads (None: one for small
    problems); resume with the same number to get the same last digits.
    """
    t0 = time.perf_counter()
    log, existing = (None, [])
    if output is not None:
        log, existing = open_log(Path(output), cfg.to_dict(), resume=resume, force=force,
                                 threads=threads)
    written = [0]

    def emit(row: dict) -> None:
        if log is not None:
            log.write(row)
        written[0] += 1
        if stop_after_rows is not None and written[0] >= stop_after_rows:
            raise KeyboardInterrupt(f"stopped after {written[0]} rows (stop_after_rows)")

    try:
        rows = run_all(cfg, existing=existing, emit=emit, on_event=on_event, threads=threads)
    finally:
        if log is not None:
            log.close()
    return report_from_rows(cfg, rows, time.perf_counter() - t0, len(existing))


__all__ = ["CompareConfig", "CompareReport", "compare", "load_config", "parse_config", "plan",
           "report_from_rows"]
