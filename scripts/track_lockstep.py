"""Would the Tracker's two rows pay in lockstep? What a product of two columns costs inside a
training loop, and how many products each row takes cold and warm.

The idea (issue 22's Tracker targets): run ``lambda_max(H)`` and ``lambda_max(P^-1/2 H P^-1/2)``
in lockstep, one Lanczos step of each per product of two columns, each row keeping its own
recurrence, stop test and warm start. In lockstep each row takes the products it takes alone
(the same recurrence; a batched product differs from a single one only by rounding), so the
cost follows from two measurements, both taken here in one training loop:

1. the products per row at every measurement of a 2,000-step Adam run (the setting of
   ``scripts/track_overhead.py``): the baseline cold (random start) and warm, the
   preconditioned row warm, cold from the baseline's vectors (its hint, which needs the
   baseline to finish first) and cold without the hint (what lockstep would run);
2. the CPU time of two columns through the measurement batch's kept gradient graph, right after
   100 training steps (caches as a measurement finds them), three ways, in turns:
   ``single``: two one-vector products (what the Tracker runs today);
   ``batched``: one vmapped backward of the two columns (``is_grads_batched``, the operators'
   own block product, ``condlab.operators.curvature._grad_with_outputs``);
   ``doubled``: one backward through a graph built at two stacked copies of the weights
   (``vmap(grad(loss))``: batched kernels, one pass), whose own build is timed against the
   single graph's. On that graph a row left alone still pays for two columns.

Each measurement's lockstep cost in single products is then
``min(k_1, k_2) c_pair + |k_1 - k_2| c_lone`` against ``k_1 + k_2`` in sequence (plus, doubled,
the extra build), ``c`` the timed costs over a single product's. CPU seconds
(``time.process_time``), one thread, float32, on a machine shared with other sessions.

    python scripts/track_lockstep.py --steps 2000 --every 100
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import condlab
import condlab.tracking.sharpness as sharpness
from condlab.losses import loss_fn
from condlab.operators.curvature import HessianOperator, _grad_with_outputs

sys.path.insert(0, str(Path(__file__).parent))
from track_overhead import SPECS  # noqa: E402

ROWS = ("baseline", "optimizer")


def _products(tracker) -> dict:
    """setting -> products of the tracker's last measurement."""
    step = tracker.rows[-1]["step"]
    return {r["setting"]: r["hvps"] for r in tracker.rows if r["step"] == step}


def _unhinted(tracker, opt) -> list:
    """A measurement with the preconditioned row's cold hint switched off (what lockstep runs:
    the baseline's vectors are not there yet when both rows start)."""
    hint, sharpness._hint = sharpness._hint, lambda *a: None
    try:
        return tracker.measure(opt)
    finally:
        sharpness._hint = hint


def _pair_times(problem, reps: int) -> dict:
    """CPU seconds of two columns through the graph, three ways, in turns; and both builds."""
    P = problem.n_params
    V = torch.randn(2, P, generator=torch.Generator().manual_seed(1), dtype=problem.dtype)
    out = {}
    t = time.process_time()
    A = HessianOperator(problem)
    A @ V[0]  # builds the graph (and takes one product, timed below alone)
    g, theta = A._maps[0].graph
    one = torch.ones((), dtype=g.dtype)
    t1 = time.process_time()
    _grad_with_outputs(g @ V[0], theta, one, False)
    single = time.process_time() - t1
    out["build_single"] = (t1 - t) - single
    t = time.process_time()
    Th = problem.theta.detach().expand(2, P).clone().requires_grad_(True)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G = torch.func.vmap(torch.func.grad(lambda th: problem.batch_loss(th, 0)))(Th)
    out["build_doubled"] = time.process_time() - t
    ways = {
        "single": lambda: (_grad_with_outputs(g @ V[0], theta, one, False),
                           _grad_with_outputs(g @ V[1], theta, one, False)),
        "batched": lambda: _grad_with_outputs(g, theta, V, True),
        "doubled": lambda: _grad_with_outputs((G * V).sum(), Th, one, False),
    }
    results = {name: torch.stack(list(f())) if name == "single" else f() for name, f in ways.items()}
    scale = float(results["single"].abs().max())
    out["mismatch"] = max(float((results[k] - results["single"]).abs().max()) / scale
                          for k in ("batched", "doubled"))  # the same two products, rounded
    for name in ways:
        out[name] = 0.0
    for r in range(reps):
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            t = time.process_time()
            ways[name]()
            out[name] += (time.process_time() - t) / reps
    return out


def run(name: str, steps: int, every: int, samples: int, reps: int) -> dict:
    data = condlab.load_dataset("digits")
    data = dataclasses.replace(data, X=data.X.float())
    loss = loss_fn("cross-entropy")
    batch = [(data.X[:samples], data.y[:samples])]
    torch.manual_seed(0)
    model = condlab.build_model(dict(SPECS[name]), tuple(data.X.shape[1:]), 10, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cold = condlab.Tracker(model, "cross-entropy", batch, every=every, warm=False)
    bare = condlab.Tracker(model, "cross-entropy", batch, every=every, warm=False)
    warm = condlab.Tracker(model, "cross-entropy", batch, every=every)
    gen = torch.Generator().manual_seed(0)
    train, counts, times = 0.0, [], []
    for step in range(1, steps + 1):
        t = time.process_time()
        idx = torch.randint(0, len(data.y), (64,), generator=gen)
        opt.zero_grad()
        loss(model(data.X[idx]), data.y[idx]).backward()
        opt.step()
        train += time.process_time() - t
        if step % every:
            continue
        times.append(_pair_times(warm.kept.at(model), reps))
        warm.kept.release()
        cold.count = bare.count = warm.count = step
        cold.measure(opt), _unhinted(bare, opt), warm.measure(opt)
        c, b, w = _products(cold), _products(bare), _products(warm)
        counts.append({"cold": (c["baseline"], c["optimizer"]), "bare": b["optimizer"],
                       "warm": (w["baseline"], w["optimizer"])})
    return {"counts": counts, "times": times, "step_s": train / steps}


def _lockstep(k1: int, k2: int, pair: float, lone: float) -> float:
    return min(k1, k2) * pair + abs(k1 - k2) * lone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--samples", type=int, default=64, help="measurement batch size")
    ap.add_argument("--reps", type=int, default=3, help="pairs timed per way and measurement")
    ap.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name in a.models:
        r = run(name, a.steps, a.every, a.samples, a.reps)
        T = {k: statistics.median(t[k] for t in r["times"]) for k in r["times"][0]}
        one = T["single"] / 2  # a single product
        steps = one / r["step_s"]
        print(f"\n## {name}: training step {r['step_s'] * 1e3:.2f} ms; a single product "
              f"{one * 1e3:.3f} ms = {steps:.2f} steps (medians over {len(r['times'])} measurements)")
        print(f"two columns, in single products: batched {T['batched'] / one:.2f}, doubled "
              f"{T['doubled'] / one:.2f} (against 2); graph build: single {T['build_single'] * 1e3:.2f} "
              f"ms, doubled {T['build_doubled'] * 1e3:.2f} ms (+{(T['build_doubled'] - T['build_single']) / one:.2f} products)")
        cold = [m["cold"] for m in r["counts"]]
        warm = [m["warm"] for m in r["counts"]]
        bare = [m["bare"] for m in r["counts"]]
        first = r["counts"][0]
        print(f"first measurement (cold): baseline {first['cold'][0]}, preconditioned hinted "
              f"{first['cold'][1]}, unhinted {first['bare']}")
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        extra = (T["build_doubled"] - T["build_single"]) / one
        print(f"the three ways agree to {max(t['mismatch'] for t in r['times']):.1e} (relative)")
        print("| start | in sequence: products (mean); steps | lockstep, batched: calls; cost in single "
              "products; steps | lockstep, doubled: cost in single products (build included); steps |")
        print("|---|---|---|---|")
        for label, pairs in (("cold, first", [(first["cold"][0], first["cold"][1], first["bare"])]),
                             ("cold, all", [(c[0], c[1], b) for c, b in zip(cold, bare)]),
                             ("warm, later", [(w[0], w[1], w[1]) for w in warm[1:]])):
            seq = mean([k1 + k2 for k1, k2, _ in pairs])
            calls = mean([max(k1, k3) for k1, _, k3 in pairs])
            batched = mean([_lockstep(k1, k3, T["batched"] / one, 1.0) for k1, _, k3 in pairs])
            doubled = mean([_lockstep(k1, k3, T["doubled"] / one, T["doubled"] / one) + extra
                            for k1, _, k3 in pairs])
            print(f"| {label} | {seq:.1f}; {seq * steps:.1f} | {calls:.1f}; {batched:.1f}; "
                  f"{batched * steps:.1f} | {doubled:.1f}; {doubled * steps:.1f} |")


if __name__ == "__main__":
    main()
