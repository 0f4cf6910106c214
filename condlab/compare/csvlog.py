"""The comparison's CSV: one row per logged step of every run, written as the steps complete.

The CSV is the source of truth. Rows are appended and flushed one by one (so a crash or
Ctrl-C loses nothing already written) and fsync'ed at least every ``FSYNC_SECONDS`` and when a
run ends or the file closes (an fsync costs milliseconds; one per row would dominate small
runs). Floats are written with ``repr`` so that reading a row back gives the same numbers, and
the summary, table and findings are computed from rows in exactly that form whether they were
just measured or read back by ``--resume``.

Beside ``results.csv`` the resolved config goes to ``results.config.json``; ``--resume`` refuses
a CSV written by another config, drops a torn last line, and returns the rows already there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from condlab.errors import UsageError

FSYNC_SECONDS = 1.0
RUN_COLUMNS = ("variant", "optimizer", "method", "basis", "batch_size", "lr", "weight_decay",
               "tuned", "seed")
STEP_COLUMNS = ("step", "status", "train_loss", "test_loss", "train_acc", "test_acc",
                "lambda_max", "kappa", "nullity", "pre_lambda_max", "pre_kappa", "threshold",
                "sharpness_ratio", "block_lambda_max", "block_kappa", "si_norm", "si_eff_lr",
                "si_angle", "v_gn_spread", "v_h_spread", "gn_spread", "dist_l2", "dist_pw", "dist_wlasso", "dist_lasso", "converged",
                "kappa_bound", "pre_kappa_bound", "block_kappa_bound", "dist_pstar",
                "dist_lasso_sq")
COLUMNS = RUN_COLUMNS + STEP_COLUMNS
_INTS = {"batch_size", "seed", "step", "nullity", "hvps"}
_STRS = {"variant", "optimizer", "method", "basis", "status", "checkpoint", "setting"}
_BOOLS = {"tuned", "converged"}


def _cell(key: str, v: Any) -> str:
    if v is None:
        return ""
    if key in _BOOLS:
        return "true" if v else "false"
    if key in _INTS:
        return str(int(v))
    if key in _STRS:
        return str(v)
    return repr(float(v))


def _value(key: str, s: str) -> Any:
    if s == "":
        return None
    if key in _BOOLS:
        return s == "true"
    if key in _INTS:
        return int(s)
    if key in _STRS:
        return s
    return float(s)


def format_row(row: dict, columns: tuple[str, ...] = COLUMNS) -> str:
    """One CSV line (with its newline) in ``columns`` order."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(k, row.get(k)) for k in columns])
    return buf.getvalue()


def normalize(row: dict, columns: tuple[str, ...] = COLUMNS) -> dict:
    """The row as it reads back from the CSV (every column, parsed)."""
    line = next(csv.reader([format_row(row, columns)]))
    return {k: _value(k, s) for k, s in zip(columns, line, strict=True)}


def config_path(path: Path) -> Path:
    return path.with_name(path.stem + ".config.json")


def _json(doc: dict) -> str:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return repr(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(doc), indent=2, sort_keys=True) + "\n"


class CsvLog:
    """Appends rows to ``path``; see the module docstring for the guarantees."""

    def __init__(self, path: Path, *, append: bool, columns: tuple[str, ...] = COLUMNS):
        self.path, self.columns = path, columns
        self._fh = open(path, "a" if append else "w", encoding="utf-8", newline="")
        if not append:
            self._fh.write(",".join(columns) + "\n")
            self.sync()
        self._last_sync = time.monotonic()

    def write(self, row: dict) -> None:
        self._fh.write(format_row(row, self.columns))
        self._fh.flush()
        if time.monotonic() - self._last_sync >= FSYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_log(
    path: Path, config: dict, *, resume: bool, force: bool, threads: int | None = None,
    columns: tuple[str, ...] = COLUMNS, what: str = "compare",
) -> tuple[CsvLog, list[dict]]:
    """The log at ``path`` (with ``columns``) and the rows it already holds (``resume``), or a
    fresh one.

    ``NAME.config.json`` beside it records the config and ``threads``; a resume with another
    config or thread count (which changes the numbers) or without that record is refused.
    """
    from condlab.files import atomic_write_text, check_output

    path = Path(path)
    side = config_path(path)
    record = {"config": config, "threads": threads}
    text = _json(record)
    if resume and path.exists():
        if not side.exists():
            raise UsageError(
                f"'{path}' has no {side.name} beside it, so condlab cannot tell which config "
                "wrote its rows; drop --resume to start over, or restore that file"
            )
        old = json.loads(side.read_text(encoding="utf-8"))
        if old.get("config") != json.loads(text)["config"]:
            raise UsageError(
                f"'{path}' was written by a different config (see {side.name}); drop --resume to "
                "start over, or choose another --output"
            )
        if old.get("threads") != threads:
            raise UsageError(
                f"'{path}' was written with --threads {old.get('threads') or 'default'}; resume "
                "with the same --threads (thread counts change the last digits of every number)"
            )
        rows = read_rows(path, repair=True, columns=columns, what=what)
        return CsvLog(path, append=True, columns=columns), rows
    if path.exists() and not force:
        raise UsageError(f"'{path}' exists; pass --resume to continue it or --force to overwrite it")
    check_output(path, force=force, flag="--output")
    atomic_write_text(side, text)
    return CsvLog(path, append=False, columns=columns), []


def read_rows(
    path: Path, *, repair: bool = False, columns: tuple[str, ...] = COLUMNS, what: str = "compare"
) -> list[dict]:
    """The parsed rows of a ``what`` CSV; ``repair`` drops a torn last line from the file."""
    raw = Path(path).read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(cut)
        raw = raw[:cut]
    lines = raw.decode("utf-8").splitlines()
    if not lines:
        raise UsageError(f"'{path}' is empty; drop --resume to start over")
    if tuple(lines[0].split(",")) != columns:
        raise UsageError(f"'{path}' is not a condlab {what} CSV (its header differs); choose "
                         "another --output or drop --resume")
    return [{k: _value(k, s) for k, s in zip(columns, rec, strict=True)}
            for rec in csv.reader(lines[1:])]
