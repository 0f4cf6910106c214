"""Cost of one curvature product against a gradient and a plain double-backward HVP.

Problems (untrained weights, seed 0: the cost of a product does not depend on training):

- ``digits-mlp``: digits (512 samples), MLP 64-32-10 tanh, 2,410 parameters;
- ``cnn``: digits as 1x8x8 images (1,024 samples), conv 16, conv 32, 2x2 average pool,
  linear 512-88-10, tanh, 50,834 parameters;
- ``mlp-543k``: digits (512 samples), MLP 64-700-700-10 tanh, 543,210 parameters.

For each, in CPU seconds (least over ``--repeats``), divided by the time of one gradient:
``double-backward`` (the gradient graph built once with ``create_graph``, then one backward per
vector, as hessian-eigenthings and PyHessian do), condlab's Hessian and GGN operators on a
single vector (``A @ v``, direct and cached: the Hessian keeps the gradient's graph, the GGN
is linearized) and per vector in blocks of 8 and 32.

    python scripts/bench_products.py [--problems digits-mlp cnn mlp-543k] [--dtype float64]
        [--threads 1] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_peers import _cnn  # the same ~52k-parameter CNN as the peer benchmark
from torch import nn

import condlab
from condlab.operators import GGNOperator, HessianOperator
from condlab.problem import Problem


def _mlp(widths):
    return lambda: condlab.build_model(
        {"name": "mlp", "widths": widths, "activation": "tanh"}, (64,), 10, seed=0
    )


PROBLEMS = {"digits-mlp": (512, _mlp([32])), "cnn": (1024, _cnn), "mlp-543k": (512, _mlp([700, 700]))}


def cpu_seconds(fn, repeats: int) -> float:
    """Least CPU time of ``repeats`` calls after a warm-up (robust on a shared machine)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def double_backward(model: nn.Module, X, y):
    """``v -> H v`` by autograd: the gradient graph once, then one backward per vector."""
    params = list(model.parameters())
    loss = nn.functional.cross_entropy(model(X), y)
    g = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        parts, off = [], 0
        for p in params:
            parts.append(v[off : off + p.numel()].view_as(p))
            off += p.numel()
        hv = torch.autograd.grad(g, params, grad_outputs=parts, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])

    return hvp


def bench(name: str, dtype: torch.dtype, repeats: int) -> dict:
    n, factory = PROBLEMS[name]
    data = condlab.load_dataset("digits", max_samples=n)
    torch.manual_seed(0)
    model = factory().to(dtype)
    X, y = data.X.to(dtype), data.y
    problem = Problem(model, [(X, y)], "cross-entropy", dtype=dtype)
    P = problem.n_params
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(P, generator=gen, dtype=torch.float64).to(dtype)
    out = {"problem": name, "n_params": P, "n_samples": n, "dtype": str(dtype).split(".")[-1]}
    t_grad = cpu_seconds(problem.gradient, repeats)
    out["gradient_s"] = t_grad
    hvp = double_backward(problem.model, X, y)
    out["double_backward"] = cpu_seconds(lambda: hvp(v), repeats) / t_grad
    for label, op in (
        ("hessian", lambda **kw: HessianOperator(problem, **kw)),
        ("ggn", lambda **kw: GGNOperator(problem, **kw)),
    ):
        for cache in (False, True):
            A = op(cache=cache, block_size=32)
            key = f"{label}_{'cached' if cache else 'direct'}"
            out[key] = cpu_seconds(lambda A=A: A @ v, repeats) / t_grad
            for k in (8, 32):
                V = torch.randn(P, k, generator=gen, dtype=torch.float64).to(dtype)
                out[f"{key}_block{k}"] = cpu_seconds(lambda A=A, V=V: A @ V, repeats) / k / t_grad
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(p, getattr(torch, args.dtype), args.repeats) for p in args.problems]
    for r in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
