"""Atomic writers for JSON and CSV: write a temporary file beside the target, then rename.

A failed write never truncates or replaces what the user already has at ``path``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from condlab.errors import UsageError


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"output path '{path}' is a directory; give a file name")
    if not path.parent.exists():
        raise UsageError(f"output folder '{path.parent}' does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def json_text(doc: dict) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False, float_format="%.10g")
    return buf.getvalue()


def sidecar(path: str | Path, suffix: str) -> Path:
    """``results.csv`` -> ``results_eigenvalues.csv``: a second file beside the first."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{suffix}{path.suffix or '.csv'}")
