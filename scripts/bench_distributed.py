"""Wall time of one fixed ``condlab spectrum`` problem against the number of processes.

The problem: digits (1,797 samples), the built-in MLP 64 -> 256 -> 256 -> 10 (tanh; 85,002
parameters) at its seeded initialization, float64 Hessian, the top-5 eigenvalues (tol 1e-6) and a
Hutchinson trace, batches of 128 samples (15 batches; shards of 7 and 8 on two processes).
Each process count runs under ``torchrun`` (gloo on the CPU; nccl with ``--device cuda``),
with ``--threads`` threads per process, ``--repeats`` times; the table gives the fastest repeat:

- ``wall``: the whole command, from launch to exit (interpreter start, torch import, rendezvous),
- ``measure``: the estimation itself (the result's ``seconds``: Lanczos + Hutchinson products),
- ``speedup``: ``measure`` of one process over ``measure`` of N,

and checks that every run printed the numbers of the one-process run (to 1e-10 relative).

    python scripts/bench_distributed.py [--procs 1 2] [--threads 1] [--repeats 3] [--json out.json]
    python scripts/bench_distributed.py --device cuda --procs 1      # one GPU
    CONDLAB_BACKEND=gloo python scripts/bench_distributed.py --device cuda --procs 1 2  # ranks share a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = "widths: [256, 256]\n"
PROBLEM = [
    "spectrum", "--model", "mlp", "--model-config", "WIDTHS", "--data", "digits", "--dtype", "float64", "--batch-size", "128",
    "--top", "5", "--bottom", "0", "--trace", "--trace-method", "hutchinson", "--probes", "40",
    "--format", "json",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(procs: int, threads: int, device: str, widths: Path) -> tuple[float, dict]:
    """(wall seconds, the result record) of one launch with ``procs`` processes."""
    problem = [str(widths) if a == "WIDTHS" else a for a in PROBLEM]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        "-m", "condlab", *problem, "--device", device, "--threads", str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)["results"][0]


def _numbers(r: dict) -> list[float]:
    return [*r["eigenvalues_top"], r["trace"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    rows, reference = [], None
    tmp = tempfile.TemporaryDirectory()
    widths = Path(tmp.name) / "mlp.yaml"
    widths.write_text(WIDTHS)
    for procs in args.procs:
        runs = [run_once(procs, args.threads, args.device, widths) for _ in range(args.repeats)]
        wall, record = min(runs, key=lambda wr: wr[1]["seconds"])
        reference = reference or record
        scale = abs(reference["eigenvalues_top"][0])
        diff = max(abs(a - b) for a, b in zip(_numbers(record), _numbers(reference), strict=True))
        rows.append({
            "procs": procs,
            "threads_per_proc": args.threads,
            "wall_s": round(min(w for w, _ in runs), 2),
            "measure_s": round(record["seconds"], 2),
            "hvps": record["hvp_count"],
            "peak_memory_mb": record["details"].get("peak_memory_mb"),
            "max_rel_diff_vs_first": diff / scale,
        })
    base = rows[0]["measure_s"]
    for r in rows:
        r["speedup"] = round(base / r["measure_s"], 2)

    head = f"{'procs':>5} {'threads':>7} {'wall s':>7} {'measure s':>9} {'speedup':>7} {'HVPs':>5} {'peak MiB':>8} {'max diff':>9}"
    print(head)
    for r in rows:
        print(f"{r['procs']:>5} {r['threads_per_proc']:>7} {r['wall_s']:>7.2f} {r['measure_s']:>9.2f} "
              f"{r['speedup']:>7.2f} {r['hvps']:>5} {r['peak_memory_mb']:>8} {r['max_rel_diff_vs_first']:>9.1e}")
    out = {
        "command": "condlab " + " ".join(PROBLEM).replace("WIDTHS", "mlp.yaml")
        + f" --device {args.device} --threads {args.threads}",
        "mlp.yaml": WIDTHS.strip(),
        "device": args.device,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    if any(r["max_rel_diff_vs_first"] > 1e-10 for r in rows):
        raise SystemExit("the runs disagree beyond 1e-10")


if __name__ == "__main__":
    main()
