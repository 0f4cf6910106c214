"""Benchmark condlab spectrum on the peer-comparison problem of shared/peers.md.

digits (512 samples, features / 16), MLP 64 -> 32 (tanh) -> 10 (2,410 parameters), mean
cross-entropy, 300 full-batch Adam steps (lr 1e-2, seed 0). Float64, one thread. Reports:

- HVPs and seconds to the top-5 eigenvalues at tol 1e-6 (residual <= 1e-6 * lambda_max),
- HVPs and seconds to the bottom-3 at the same tol, each with the default block (as many
  vectors as values) and with single-vector Lanczos (``_block1``),
- the error of each against a dense eigendecomposition of the exact Hessian,
- the time of one HVP over the time of one gradient (median of repeats), with the gradient's
  graph kept (``cache=True``, what 'auto' does when it fits) and recomputed every time
  (``cache=False``).

    python scripts/bench_spectrum.py [--threads 1] [--repeats 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from condlab.estimators import extreme_eigenpairs
from condlab.load.checkpoint import model_from_checkpoint
from condlab.load.data import load_dataset, make_batches
from condlab.operators import HessianOperator, dense_hessian
from condlab.problem import Problem
from condlab.train.loop import train_from_config

TRAIN = Path(__file__).resolve().parents[1] / "configs" / "train_digits.yaml"


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    _, ckpt = train_from_config(yaml.safe_load(TRAIN.read_text()))
    data = load_dataset(ckpt["data"])
    problem = Problem(
        model_from_checkpoint(ckpt), make_batches(data, None), "cross-entropy", dtype=torch.float64
    )
    P = problem.n_params

    t0 = time.perf_counter()
    exact = torch.linalg.eigvalsh(dense_hessian(problem))
    t_dense = time.perf_counter() - t0
    top_true, bottom_true = exact.flip(0)[:5], exact[:3]
    lam_max = top_true[0].item()

    HessianOperator(problem) @ torch.randn(P, dtype=torch.float64)  # warm up torch.func
    out = {"n_params": P, "n_samples": problem.n_samples, "threads": args.threads, "tol": args.tol}
    ends = (("top5", 5, 0, top_true), ("bottom3", 0, 3, bottom_true))
    # the default block (as many vectors as values: multiplicities listed) and single-vector
    for (end, k_top, k_bottom, truth), b in [(e, b) for e in ends for b in (None, 1)]:
        A = HessianOperator(problem)
        t0 = time.perf_counter()
        eig = extreme_eigenpairs(A, top=k_top, bottom=k_bottom, tol=args.tol, max_matvecs=3000,
                                 block_size=b)
        secs = time.perf_counter() - t0
        got = torch.as_tensor(eig.eigenvalues_top if k_top else eig.eigenvalues_bottom)
        out[end if b is None else f"{end}_block1"] = {
            "block_size": eig.block_size,
            "hvps": A.matvecs,
            "seconds": round(secs, 3),
            "converged": bool(eig.converged),
            "max_abs_error_rel_lambda_max": float((got - truth).abs().max() / lam_max),
            "eigenvalues": [float(v) for v in got],
            "exact": [float(v) for v in truth],
        }

    v = torch.randn(P, dtype=torch.float64)
    t_grad = median_time(lambda: problem.gradient(), args.repeats)
    A = HessianOperator(problem, cache=True)  # the gradient's graph kept
    t0 = time.perf_counter()
    A @ v
    out["first_product_seconds"] = time.perf_counter() - t0  # the graph and one HVP
    t_hvp = median_time(lambda: A @ v, args.repeats)
    direct = HessianOperator(problem, cache=False)  # jvp(grad) recomputed for every product
    t_direct = median_time(lambda: direct @ v, args.repeats)
    out["gradient_seconds"] = t_grad
    out["hvp_seconds"] = t_hvp
    out["hvp_over_gradient"] = t_hvp / t_grad
    out["hvp_uncached_over_gradient"] = t_direct / t_grad
    out["dense_hessian_plus_eigvalsh_seconds"] = round(t_dense, 2)
    out["trace_exact"] = float(exact.sum())
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
