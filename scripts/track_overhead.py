"""What ``condlab.Tracker`` costs inside a training loop, and what warm starts save.

Each model is trained with Adam (lr 1e-3, mini-batches of 64 drawn from a seeded generator,
float32, one CPU thread) while a Tracker with its defaults measures every ``--every`` steps:
``lambda_max`` of the Hessian (row ``baseline``) and of Adam's ``P^-1 H`` (row ``optimizer``)
on a fixed measurement batch of ``--samples`` (default 64, a training-size batch), the
Tracker's tol (1e-3: lambda_max to 0.1%) unless ``--tol``:

- ``mlp``: the digits MLP (64-32-10, tanh, 2 410 parameters);
- ``cnn``: condlab's built-in CNN on the 8x8 digits images (channels [8, 16], 1 418 parameters).

Three copies of each model are trained from the same seed *in lockstep*, one training step of
each in turn: without the tracker, with it cold-started (``warm=False``) and warm-started. On a
shared machine other processes slow a process down by varying amounts from one second to the
next (CPU seconds included: caches and cores are shared); interleaved step by step, the three
copies see the same disturbance, so the ratio of the tracker's CPU time to the untracked
copy's training CPU time holds still where separate runs moved it by tens of percent. Times are
CPU seconds of this process (``time.process_time``); the tracker's wall seconds are printed
beside them. Reported per model and start: the untracked copy's training time, the tracker's
set-up (its construction: the model copied and checked, the modules a measurement uses
imported: paid by the process's first Tracker, the cold one), the time spent in
``tracker.step``, the overhead (set-up plus steps over the untracked training, and the steps
alone), one measurement in training steps of the untracked copy (the later ones' mean and
worst, and the first, cold, one), and the products per measurement (the first, and the later
ones' mean and range).

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
STARTS = (None, "cold", "warm")  # the untracked copy, then the two tracked ones


def run(name: str, steps: int, every: int, samples: int, **options) -> dict:
    """Train the three copies of ``name`` in lockstep; one result per start."""
    data = condlab.load_dataset("digits")
    data = dataclasses.replace(data, X=data.X.float())  # train in float32
    loss = loss_fn("cross-entropy")
    batch = [(data.X[:samples], data.y[:samples])]
    copies = []
    for start in STARTS:
        torch.manual_seed(0)
        model = condlab.build_model(dict(SPECS[name]), tuple(data.X.shape[1:]), 10, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        tr, setup_s = None, 0.0
        if start is not None:
            t0 = time.process_time()
            tr = condlab.Tracker(model, "cross-entropy", batch, every=every, warm=start == "warm",
                                 **options)
            setup_s = time.process_time() - t0
        copies.append({"start": start, "model": model, "opt": opt, "tracker": tr, "setup_s": setup_s,
                       "gen": torch.Generator().manual_seed(0), "train_s": 0.0, "track_s": 0.0,
                       "wall_s": 0.0})
    for _ in range(steps):
        for c in copies:
            model, opt = c["model"], c["opt"]
            t0 = time.process_time()
            idx = torch.randint(0, len(data.y), (64,), generator=c["gen"])
            opt.zero_grad()
            loss(model(data.X[idx]), data.y[idx]).backward()
            opt.step()
            t1, w1 = time.process_time(), time.perf_counter()
            if c["tracker"] is not None:
                c["tracker"].step(opt)
            c["train_s"] += t1 - t0
            c["track_s"] += time.process_time() - t1
            c["wall_s"] += time.perf_counter() - w1
    out = {}
    for c in copies:
        r = {k: c[k] for k in ("train_s", "track_s", "setup_s", "wall_s")}
        r["params"] = sum(p.numel() for p in c["model"].parameters())
        if c["tracker"] is not None:
            m = c["tracker"].measurements
            r.update(measurements=len(m), hvps=[e["hvps"] for e in m],
                     cpu=[e["cpu_seconds"] for e in m], rows=c["tracker"].rows)
        out[c["start"]] = r
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
          "CPU seconds (process_time), one thread, the three copies in lockstep")
    print("| model | params | start | training CPU s | tracker set-up CPU s | tracker steps CPU s (wall s) "
          "| overhead: set-up + steps (steps alone) | one measurement, training steps: later mean / "
          "worst; first | products: first; later mean (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in a.models:
        out = run(name, a.steps, a.every, a.samples, **({"tol": a.tol} if a.tol else {}))
        plain = out[None]
        step_s = plain["train_s"] / a.steps
        for start in ("cold", "warm"):
            r = out[start]
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
