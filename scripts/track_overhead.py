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
(``time.process_time``, robust to other processes on a shared machine); the tracker's wall
seconds are printed beside them. Reported per run and start: the training time alone (untracked
run), the tracker's set-up (its construction: the model copied and checked, the modules a
measurement uses imported), the time spent in ``tracker.step``, the overhead (set-up plus steps
over the training time, and the steps alone), one measurement in training steps (the later ones'
mean and worst, and the first, cold, one), and the products per measurement (the first, and the
later ones' mean and range).

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
    setup_s = 0.0
    if tracker is not None:
        batch = [(data.X[:samples], data.y[:samples])]
        t0 = time.process_time()
        tr = condlab.Tracker(model, "cross-entropy", batch, every=every, warm=tracker == "warm",
                             **options)
        setup_s = time.process_time() - t0
    g = torch.Generator().manual_seed(0)
    train_s = track_s = wall_s = 0.0
    for _ in range(steps):
        t0 = time.process_time()
        idx = torch.randint(0, len(data.y), (64,), generator=g)
        opt.zero_grad()
        loss(model(data.X[idx]), data.y[idx]).backward()
        opt.step()
        t1, w1 = time.process_time(), time.perf_counter()
        if tr is not None:
            tr.step(opt)
        train_s += t1 - t0
        track_s += time.process_time() - t1
        wall_s += time.perf_counter() - w1
    out = {"train_s": train_s, "track_s": track_s, "setup_s": setup_s, "wall_s": wall_s,
           "params": sum(p.numel() for p in model.parameters())}
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
          "CPU seconds (process_time), one thread")
    print("| model | params | start | training CPU s | tracker set-up CPU s | tracker steps CPU s (wall s) "
          "| overhead: set-up + steps (steps alone) | one measurement, training steps: later mean / "
          "worst; first | products: first; later mean (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in a.models:
        plain = run(name, a.steps, a.every, a.samples, None)
        step_s = plain["train_s"] / a.steps
        for start in ("cold", "warm"):
            r = run(name, a.steps, a.every, a.samples, start, **({"tol": a.tol} if a.tol else {}))
            per = [c / step_s for c in r["cpu"]]
            hv, later, pl = r["hvps"], r["hvps"][1:], per[1:] or per
            total = r["setup_s"] + r["track_s"]
            print(f"| {name} | {r['params']} | {start} | {plain['train_s']:.2f} | {r['setup_s']:.3f} | "
                  f"{r['track_s']:.2f} ({r['wall_s']:.2f}) | {total / plain['train_s']:.1%} "
                  f"({r['track_s'] / plain['train_s']:.1%}) | {sum(pl) / len(pl):.1f} / {max(pl):.1f}; "
                  f"{per[0]:.1f} | {hv[0]}; {sum(later) / max(1, len(later)):.1f} "
                  f"({min(later, default=0)}-{max(later, default=0)}) |", flush=True)

if __name__ == "__main__":
    main()
