"""scripts/bench_peers.py keeps running against condlab's API (quick mode, condlab alone).

Only that it runs and reports what it ran: no timing is asserted.
"""

import csv
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_peers_quick_mode_runs_on_condlab_alone(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_peers", bench)  # dataclasses look the module up
    spec.loader.exec_module(bench)
    argv = ["--quick", "--tools", "condlab", "--tasks", "top5,trace", "--no-cli",
            "--no-reference", "--out-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    with open(tmp_path / "out" / "bench_peers.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["task"], r["tool"]) for r in rows] == [("top5", "condlab"), ("trace", "condlab")]
    top5, trace = rows
    assert int(top5["hvps"]) >= 5 and top5["converged"] == "True"
    assert int(trace["hvps"]) == bench.TRACE_PRODUCTS
    assert "| digits-mlp (2,410 p) | float64 | 1 | top5 |" in (tmp_path / "out" / "bench_peers.md").read_text()
