"""Matvec budgets of ``extreme_eigenpairs`` on a synthetic Hessian-like spectrum.

The reference problem (docs: scikit-learn digits, MLP 64 -> 32 -> 10, 2,410 parameters) has
top-5 eigenvalues 0.167480 0.125386 0.104591 0.073875 0.068216, bottom-3 -0.000301 -0.000270
-0.000245, trace 1.242667, a cluster of ~350 eigenvalues at zero and a heavy-tailed bulk.
This script builds ``A = Q diag(lam) Q^T`` (P = 2410, float64, random orthogonal ``Q``) with

- those top-5 and bottom-3 eigenvalues;
- 497 more negative eigenvalues ``-0.000241 (j / 497)^5`` (dense next to the bottom-3, as in a
  trained MLP, where the 4th smallest is within 2% of the 3rd);
- 350 eigenvalues spread over [-1e-8, 1e-8] (the GGN null space);
- a power-law bulk ``0.068 ((i + 5) / 6)^-a`` with ``a`` fitted so that the trace is 1.242667;

and checks that top-5 and bottom-3 reach residual <= 1e-6 * lambda_max within 25 and 500
matvecs for several seeds (exit code 1 otherwise). Usage:

    python scripts/check_lanczos_budget.py [--seeds 5] [--max-basis 100]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from scipy.optimize import brentq

from condlab.estimators import extreme_eigenpairs

TOP5 = np.array([0.167480, 0.125386, 0.104591, 0.073875, 0.068216])
BOTTOM3 = np.array([-0.000301, -0.000270, -0.000245])
TRACE, P = 1.242667, 2410
BUDGETS = {"top-5": 25, "bottom-3": 500}


def hessian_like_spectrum(n_neg: int = 500, n_null: int = 350) -> np.ndarray:
    """The ``[P]`` spectrum described in the module docstring, ascending."""
    negs = BOTTOM3[-1] * 0.984 * (np.arange(n_neg - 3, 0, -1) / (n_neg - 3)) ** 5
    null = 1e-8 * np.linspace(-1, 1, n_null)
    i = np.arange(1, P - 5 - n_neg - n_null + 1)
    rest = TRACE - TOP5.sum() - BOTTOM3.sum() - negs.sum() - null.sum()
    a = brentq(lambda a: (0.068 * ((i + 5) / 6.0) ** -a).sum() - rest, 0.1, 10.0)
    bulk = 0.068 * ((i + 5) / 6.0) ** -a
    return np.sort(np.concatenate([TOP5, BOTTOM3, negs, null, bulk]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-basis", type=int, default=None)
    args = parser.parse_args()
    lam = torch.from_numpy(hessian_like_spectrum())
    gen = torch.Generator().manual_seed(1234)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    A = (Q * lam) @ Q.T  # [P, P]
    truth_top, truth_bottom = lam.flip(0)[:5], lam[:3]
    print(f"P={P} trace={float(lam.sum()):.6f} max_basis={args.max_basis or 'default'}")
    ok = True
    for name, top, bottom in [("top-5", 5, 0), ("bottom-3", 0, 3), ("top-5+bottom-3", 5, 3)]:
        counts = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = extreme_eigenpairs(
                A,
                top=top,
                bottom=bottom,
                tol=1e-6,
                max_matvecs=3000,
                max_basis=args.max_basis,
                seed=seed,
            )
            seconds = time.perf_counter() - t0
            err = max(
                (r.eigenvalues_top - truth_top[:top]).abs().max().item() if top else 0.0,
                (r.eigenvalues_bottom - truth_bottom[:bottom]).abs().max().item()
                if bottom
                else 0.0,
            )
            counts.append(r.matvecs)
            print(
                f"{name:15s} seed={seed} matvecs={r.matvecs:4d} restarts={r.restarts} "
                f"converged={r.converged} max|error|={err:.1e} {seconds:.2f}s"
            )
            ok &= r.converged and err < 1e-6 * float(lam.abs().max())
        budget = BUDGETS.get(name, BUDGETS["bottom-3"])
        ok &= max(counts) <= budget
        print(f"{name:15s} max matvecs over {args.seeds} seeds: {max(counts)} (budget {budget})")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
