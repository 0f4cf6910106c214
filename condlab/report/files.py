"""Result files as text: JSON and CSV, and the name of a CSV's second file.

They are written with :func:`condlab.files.atomic_write_text` (one rule for every file).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from condlab.files import atomic_write_text

__all__ = ["atomic_write_text", "csv_text", "json_text", "sidecar"]


def json_text(doc: dict) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def csv_text(rows: list[dict]) -> str:
    import pandas as pd  # only where a CSV is written (0.5 s of start-up otherwise)

    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False, float_format="%.10g")
    return buf.getvalue()


def sidecar(path: str | Path, suffix: str) -> Path:
    """``results.csv`` -> ``results_eigenvalues.csv``: a second file beside the first."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{suffix}{path.suffix or '.csv'}")
