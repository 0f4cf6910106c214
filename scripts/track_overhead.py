"""What ``condlab.Tracker`` costs inside a training loop, and what warm starts save.

Two runs, each trained with Adam (lr 1e-3, mini-batches of 64, float32, one CPU thread) while a
Tracker measures every ``--every`` steps on a fixed measurement set of 512 samples:

- ``mlp``: the digits MLP (64-32-10, tanh, 2 410 parameters);
- ``cnn``: condlab's built-in CNN on the 8x8 digits images (channels [8, 16]).

Each run is trained three times from the same seed: without the tracker, with it cold-started
and with it warm-started (Lanczos from the previous measurement's Ritz vectors). Reported per
run and start: the training time alone, the time spent in ``tracker.step`` and its fraction of
the training time, one measurement in training steps, and the curvature products per
measurement. Rows: baseline (the Hessian: top 1, bottom 1 -> lambda_max and lambda_min) and
``optimizer`` (Adam's preconditioned Hessian), tol 1e-4.

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


def run(name: str, steps: int, every: int, tracker: str | None) -> dict:
    torch.manual_seed(0)
    data = condlab.load_dataset("digits")
    data = dataclasses.replace(data, X=data.X.float())  # train in float32
    model = condlab.build_model(dict(SPECS[name]), tuple(data.X.shape[1:]), 10, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = loss_fn("cross-entropy")
    measure = [(data.X[:512], data.y[:512])]
    tr = None
    if tracker is not None:
        tr = condlab.Tracker(model, "cross-entropy", measure, every=every, top=1, bottom=1,
                             tol=1e-4, warm=tracker == "warm")
    g = torch.Generator().manual_seed(0)
    train_s = track_s = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(data.y), (64,), generator=g)
        opt.zero_grad()
        loss(model(data.X[idx]), data.y[idx]).backward()
        opt.step()
        t1 = time.perf_counter()
        if tr is not None:
            tr.step(opt)
        train_s += t1 - t0
        track_s += time.perf_counter() - t1
    out = {"train_s": train_s, "track_s": track_s, "params": sum(p.numel() for p in model.parameters())}
    if tr is not None:
        n = len({r["step"] for r in tr.rows})
        out.update(measurements=n, hvps=sum(r["hvps"] for r in tr.rows) / n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"| model | params | start | train s | tracker s | overhead | one measurement = steps "
          f"| products / measurement |  (every {a.every} of {a.steps} steps)")
    print("|---|---|---|---|---|---|---|---|")
    for name in SPECS:
        plain = run(name, a.steps, a.every, None)
        step_s = plain["train_s"] / a.steps
        for start in ("cold", "warm"):
            r = run(name, a.steps, a.every, start)
            per = r["track_s"] / r["measurements"]
            print(f"| {name} | {r['params']} | {start} | {plain['train_s']:.2f} | {r['track_s']:.2f} | "
                  f"{r['track_s'] / plain['train_s']:.0%} | {per / step_s:.0f} | {r['hvps']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
