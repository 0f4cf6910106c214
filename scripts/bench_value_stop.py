"""How early a verified top-5 list's first run could stop on its values (issue 22 item 2).

The default top-5 (``extreme_eigenpairs(top=5)`` on a CPU) is single-vector Lanczos stopped on
its residuals (``<= tol ||A||``), then a short run from a fresh start on the operator deflated by
the list, whose end certificate ``U >= lambda_max(A_perp)`` gives each listed value the error
``2 e^2 / (eta + sqrt(eta^2 + 4 e^2))`` (C.-K. Li & R.-C. Li 2005), ``e = ||A Y - Y Theta||_2``
and ``eta = min(Theta) - U``. That bound needs only ``e ~ sqrt(tol ||A|| eta)``, not ``e <= tol
||A||``: this script measures how many products the first run would save if it stopped once
the bound is within ``tol ||A||``, which is the most that stopping on values could save.

For each depth ``k`` it runs single-vector Lanczos for ``k`` products (``block_size=1``,
``certify=False``, ``max_matvecs=k``: the first run's steps, the same seed) and prints the
listed values' largest true residual, ``e`` (one product per listed vector, not counted), the
Li-Li bound with the best ``U`` the verification could reach, ``lambda_6`` itself (from a block
run at tol 1e-9), the ``eta`` it needs for the bound to meet ``tol ||A||`` and the values' true
error. A real verification reaches ``U`` somewhat above ``lambda_6``, so the bound printed is a
floor: where it misses ``tol ||A||`` no stop on values could be backed at that depth.

    python scripts/bench_value_stop.py --problems digits-mlp,cnn,mlp-543k --steps 12-17

Problems and checkpoints are ``scripts/bench_peers.py``'s (trained once and cached there);
float64, ``tol`` 1e-6. No timing: products only.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import condlab

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402  (the benchmark problems and their cache)

TOL = 1e-6
TOP = 5


def li_li(e: float, eta: float) -> float:
    """C.-K. Li & R.-C. Li's bound on a listed value's error: ``2 e^2 / (eta + sqrt(eta^2 +
    4 e^2))``, at most ``min(e, e^2 / eta)``; ``inf`` where ``eta <= 0``."""
    if eta <= 0:
        return math.inf
    return 2 * e * e / (eta + math.sqrt(eta * eta + 4 * e * e))


def depths(H, steps: range, reference: list[float]) -> list[dict]:
    """The first run stopped after each ``k`` in ``steps``: its largest true residual, ``e``, the
    Li-Li floor (``U = lambda_6``), the ``eta`` the bound needs and the true error, all over
    ``lambda_max``."""
    lam_max, lam6 = reference[0], reference[TOP]
    rows = []
    for k in steps:
        r = condlab.extreme_eigenpairs(H, top=TOP, bottom=0, tol=TOL, max_matvecs=k,
                                       block_size=1, certify=False, return_vectors=True)
        Y = r.vectors_top
        theta = torch.as_tensor(r.eigenvalues_top, dtype=torch.float64)
        R = (H @ Y) - Y * theta
        e = float(torch.linalg.matrix_norm(R, ord=2))
        eta = float(theta.min()) - lam6
        rows.append({
            "k": k, "products": r.matvecs,
            "residual": float(torch.linalg.vector_norm(R, dim=0).max()) / lam_max,
            "e": e / lam_max,
            "li_li": li_li(e, eta) / lam_max,
            "eta_needed": e * e / (TOL * lam_max) / lam_max,
            "eta_best": eta / lam_max,
            "error": max(abs(a - b) for a, b in zip(theta.tolist(), reference[:TOP])) / lam_max,
        })
    return rows


def reference_values(H) -> list[float]:
    """The top ``TOP + 2`` eigenvalues: a block run at tol 1e-9 (its own certificate)."""
    ref = condlab.extreme_eigenpairs(H, top=TOP + 2, bottom=0, tol=1e-9, max_matvecs=2000,
                                     block_size=TOP + 2)
    if not ref.converged:
        raise SystemExit("the reference run did not converge; raise its max_matvecs")
    return [float(v) for v in ref.eigenvalues_top]


def table(name: str, rows: list[dict], stop_at: int) -> str:
    out = [f"\n{name}: the first run stops on its residuals at {stop_at} products\n",
           "| products | largest true residual | e | Li-Li, U = lambda_6 | eta needed | "
           "eta at U = lambda_6 | true error | backed at tol? |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['products']} | {r['residual']:.1e} | {r['e']:.1e} | {r['li_li']:.1e} | "
                   f"{r['eta_needed']:.2g} | {r['eta_best']:.3f} | {r['error']:.1e} | "
                   f"{'yes' if r['li_li'] <= TOL else 'no'} |")
    out.append("\n(all over lambda_max; tol 1e-6)")
    return "\n".join(out)


def summary(results: list[tuple[str, list[dict], int]]) -> str:
    """Per problem, the first depth whose best-case bound meets tol (docs/benchmarks.md)."""
    out = ["\n| problem | first run today (residuals at tol) | first depth with the bound <= tol, "
           "best case | bound there | its true error | eta it needs / eta at U = lambda_6 (over "
           "lambda_max) |", "|---|---|---|---|---|---|"]
    for name, rows, stop_at in results:
        ok = [r for r in rows if r["li_li"] <= TOL]
        if not ok:
            out.append(f"| {name} | {stop_at} | none up to {rows[-1]['products']} | | | |")
            continue
        r = ok[0]
        before = [x for x in rows if x["products"] == r["products"] - 1]
        miss = f" ({before[0]['products']}: {before[0]['li_li']:.1e})" if before else ""
        out.append(f"| {name} | {stop_at} | {r['products']}{miss} | {r['li_li']:.1e} | "
                   f"{r['error']:.1e} | {r['eta_needed']:.2g} / {r['eta_best']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="digits-mlp,cnn,mlp-543k")
    ap.add_argument("--steps", default="12-17", help="first and last depth, e.g. 12-17")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "condlab-bench")
    args = ap.parse_args(argv)
    try:
        lo, hi = (int(x) for x in args.steps.split("-"))
    except ValueError:
        ap.error(f"--steps must be FIRST-LAST, e.g. 12-17, got {args.steps!r}")
    if not 1 <= lo <= hi:
        ap.error(f"--steps must have 1 <= FIRST <= LAST, got {args.steps!r}")
    unknown = set(args.problems.split(",")) - set(bench_peers.PROBLEMS)
    if unknown:
        ap.error(f"unknown problem {', '.join(sorted(unknown))}; choose from "
                 f"{', '.join(bench_peers.PROBLEMS)}")
    torch.set_num_threads(1)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.problems.split(","):
        b = bench_peers.build_bench(name, args.cache_dir)
        problem = condlab.Problem(b.model, [(b.X, b.y)], "cross-entropy", dtype=torch.float64)
        H = condlab.HessianOperator(problem)
        reference = reference_values(H)
        stop_at = condlab.extreme_eigenpairs(H, top=TOP, bottom=0, tol=TOL, block_size=1,
                                             certify=False).matvecs
        rows = depths(H, range(lo, hi + 1), reference)
        results.append((name, rows, stop_at))
        print(table(name, rows, stop_at), flush=True)
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
