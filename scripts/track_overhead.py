"""What ``condlab.Tracker`` costs inside a training loop, and what warm starts save.

Two runs, each trained with Adam (lr 1e-3, mini-batches of 64 drawn from a seeded generator,
float32, one CPU thread) while a Tracker with its defaults measures every ``--every`` steps:
``lambda_max`` of the Hessian (row ``baseline``) and of Adam's ``P^-1 H`` (row ``optimizer``)
on a fixed measurement batch of ``--samples`` (default 64, a training-size batch), the
Tracker's tol (1e-3: lambda_max to 0.1%) unless ``--tol``:

- ``mlp``: the digits MLP (64-32-10, tanh, 2 410 parameters);
- ``cnn``: condlab's built-in CNN on the 8x8 digits images (channels [8, 16], 1 418 parameters).

Each run is trained three times from the same seed: without the tracker, with it cold-started
(``warm=False``) and warm-started. Times are CPU seconds of this process
(``time.process_time``, robust to other processes on a shared machine). Reported per run and
start: the training time alone (untracked run), the time spent in ``tracker.step``, its share of
the training time (the overhead), one measurement in training steps (mean and worst), and the
products per measurement (mean over all, and the warm ones: every measurement but the first).

    python scripts/track_overhead.py --steps 2000 --every 100
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import condlab
from condlab.losses import loss_fn

SPECS = {
    "mlp": {"name": "mlp", "widths": [32], "activation": "tanh"},
    "cnn": {"name": "cnn", "channels": [8, 16]},
}


def run(name: str, steps: int, every: int, samples: int, tracker: str | None, **options) -> dict:
    torch.manual_seed(0)
    data = condlab.load_dataset("digits")
    data = dataclasses.replace(data, X=data.X.float())  # train in float32
    model = condlab.build_model(dict(SPECS[name]), tuple(data.X.shape[1:]), 10, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = loss_fn("cross-entropy")
    tr = None
    if tracker is not None:
        batch = [(data.X[:samples], data.y[:samples])]
        tr = condlab.Tracker(model, "cross-entropy", batch, every=every, warm=tracker == "warm",
                             **options)
    g = torch.Generator().manual_seed(0)
    train_s = track_s = 0.0
    for _ in range(steps):
        t0 = time.process_time()
        idx = torch.randint(0, len(data.y), (64,), generator=g)
        opt.zero_grad()
        loss(model(data.X[idx]), data.y[idx]).backward()
        opt.step()
        t1 = time.process_time()
        if tr is not None:
            tr.step(opt)
        train_s += t1 - t0
        track_s += time.process_time() - t1
    out = {"train_s": train_s, "track_s": track_s, "params": sum(p.numel() for p in model.parameters())}
    if tr is not None:
        m = tr.measurements
        out.update(measurements=len(m), hvps=[e["hvps"] for e in m], cpu=[e["cpu_seconds"] for e in m],
                   rows=tr.rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--samples", type=int, default=64, help="measurement batch size")
    ap.add_argument("--tol", type=float, default=None, help="the Tracker tol (default: its own, 1e-3)")
    ap.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"every {a.every} of {a.steps} steps, measurement batch {a.samples}, tol {a.tol or 'default'}, "
          "CPU seconds, one thread")
    print("| model | params | start | train s | tracker s | overhead | one measurement = steps (mean / worst) "
          "| products / measurement (all / warm, min-max) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.models:
        plain = run(name, a.steps, a.every, a.samples, None)
        step_s = plain["train_s"] / a.steps
        for start in ("cold", "warm"):
            r = run(name, a.steps, a.every, a.samples, start, **({"tol": a.tol} if a.tol else {}))
            per = [c / step_s for c in r["cpu"]]
            hv, later = r["hvps"], r["hvps"][1:]
            print(f"| {name} | {r['params']} | {start} | {plain['train_s']:.2f} | {r['track_s']:.2f} | "
                  f"{r['track_s'] / plain['train_s']:.1%} | {sum(per) / len(per):.1f} / {max(per):.1f} | "
                  f"{sum(hv) / len(hv):.1f} / {sum(later) / max(1, len(later)):.1f}, "
                  f"{min(later, default=0)}-{max(later, default=0)} |", flush=True)


if __name__ == "__main__":
    main()
