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
worst, and the first, cold, one), the products per measurement (the first, and the later
ones' mean and range) and per row (the first's, and the later ones' mean: baseline /
preconditioned).

    python scripts/track_overhead.py --steps 2000 --every 100
    python scripts/track_overhead.py --steps 2000 --every 100 --stages   # where the time goes

``--stages`` also splits the warm copy's measurements into stages (CPU seconds, each stage's own
time, its callees' taken out; the wrappers add their own clock reads): the gradient graph of the
measurement batch, the curvature products, Lanczos' own work (Gram-Schmidt, the small
eigensolve, the start vectors, a step dispatched through the operator (the one that builds the
graph), setting up the direct product, and the rest: the recurrence's other tensor calls, the
``P^-1/2`` scalings, the stop tests), the settings (``P`` read from the optimizer, the
operators), the memory plan (first measurement only), moving the kept Problem to the weights,
the trust checks and records, and the rest of ``tracker.step``.
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


class Stages:
    """CPU seconds per stage of a measurement, each stage's own (its callees' taken out), by
    wrapping the functions a measurement calls (:meth:`install`; :meth:`remove` puts them
    back)."""

    def __init__(self):
        self.own: dict[str, float] = {}
        self._stack: list[float] = []  # the callees' seconds of each open stage
        self._undo: list = []

    def _wrap(self, owner, attr: str, label: str) -> None:
        f = getattr(owner, attr)

        def timed(*a, **k):
            self._stack.append(0.0)
            t = time.process_time()
            try:
                return f(*a, **k)
            finally:
                spent = time.process_time() - t
                inner = self._stack.pop()
                self.own[label] = self.own.get(label, 0.0) + spent - inner
                if self._stack:
                    self._stack[-1] += spent

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, f))

    def install(self) -> Stages:
        import condlab.consistency
        import condlab.operators.curvature as curvature
        import condlab.report.records
        import condlab.tracking.sharpness as sharpness
        import condlab.tracking.top as top

        for owner, attr, label in (
            (curvature.HessianOperator, "_linear_map", "graph"),
            (curvature, "_grad_with_outputs", "products"), (curvature, "_double_backward", "products"),
            (sharpness, "top_eigenpair", "lanczos rest"), (top, "basis_columns", "memory plan"),
            (top, "cgs2", "gram-schmidt"), (top, "_eigh", "eigensolve"),
            (top, "warm_vector", "start"), (top, "hinted_vector", "start"),
            (top, "_random_start", "start"), (top, "lanczos_step", "dispatched step"),
            (top, "_direct", "direct set-up"),
            (sharpness.Kept, "settings_for", "settings"), (sharpness.Kept, "at", "weights"),
            (condlab.consistency, "checked", "checks, records"),
            (condlab.report.records, "record", "checks, records"),
        ):
            self._wrap(owner, attr, label)
        return self

    def remove(self) -> None:
        for owner, attr, f in reversed(self._undo):
            setattr(owner, attr, f)
        self._undo.clear()

    def take(self) -> dict[str, float]:
        own, self.own = self.own, {}
        return own


def run(name: str, steps: int, every: int, samples: int, stages: bool = False, **options) -> dict:
    """Train the three copies of ``name`` in lockstep; one result per start (``stages``: the
    warm copy's measurements split into stages, under ``"stages"``)."""
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
    split = Stages().install() if stages else None
    per_stage = []
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
                if split is not None:
                    split.take()
                rows = c["tracker"].step(opt)
                if split is not None and rows and c["start"] == "warm":
                    per_stage.append(split.take())
            c["train_s"] += t1 - t0
            c["track_s"] += time.process_time() - t1
            c["wall_s"] += time.perf_counter() - w1
    if split is not None:
        split.remove()
    out = {"stages": per_stage} if stages else {}
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
    ap.add_argument("--stages", action="store_true", help="split the warm copy's measurements into stages")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"every {a.every} of {a.steps} steps, measurement batch {a.samples}, tol {a.tol or 'default'}, "
          "CPU seconds (process_time), one thread, the three copies in lockstep")
    print("| model | params | start | training CPU s | tracker set-up CPU s | tracker steps CPU s (wall s) "
          "| overhead: set-up + steps (steps alone) | one measurement, training steps: later mean / "
          "worst; first | products: first; later mean (min-max) | per row: first; later mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    stage_lines = []
    for name in a.models:
        out = run(name, a.steps, a.every, a.samples, a.stages, **({"tol": a.tol} if a.tol else {}))
        plain = out[None]
        step_s = plain["train_s"] / a.steps
        if a.stages:
            stage_lines.append(_stage_line(name, out["stages"], out["warm"]["cpu"], step_s))
        for start in ("cold", "warm"):
            r = out[start]
            per = [c / step_s for c in r["cpu"]]
            hv, later, pl = r["hvps"], r["hvps"][1:], per[1:] or per
            total = r["setup_s"] + r["track_s"]
            rows = _per_row(r["rows"])
            print(f"| {name} | {r['params']} | {start} | {plain['train_s']:.2f} | {r['setup_s']:.3f} | "
                  f"{r['track_s']:.2f} ({r['wall_s']:.2f}) | {total / plain['train_s']:.1%} "
                  f"({r['track_s'] / plain['train_s']:.1%}) | {sum(pl) / len(pl):.1f} / {max(pl):.1f}; "
                  f"{per[0]:.1f} | {hv[0]}; {sum(later) / max(1, len(later)):.1f} "
                  f"({min(later, default=0)}-{max(later, default=0)}) | {rows} |", flush=True)
    if stage_lines:
        print("\nwarm copy, one measurement in training steps by stage: the later ones' mean (the first's)")
        print("\n".join(stage_lines))


def _stage_line(name: str, stages: list[dict], cpu: list[float], step_s: float) -> str:
    """``name: stage later (first), ...``: each stage's CPU seconds in training steps, the rest of
    the measurement (outside every wrapped stage) as ``other``."""
    labels = ["graph", "products", "gram-schmidt", "eigensolve", "start", "dispatched step",
              "direct set-up", "lanczos rest", "settings", "memory plan", "weights",
              "checks, records"]
    later, first = stages[1:] or stages, stages[0]

    def steps_of(d: dict, c: float, label: str) -> float:
        return (c - sum(d.values()) if label == "other" else d.get(label, 0.0)) / step_s

    parts = []
    for label in labels + ["other"]:
        mean = sum(steps_of(d, c, label) for d, c in zip(later, cpu[1:] or cpu)) / len(later)
        parts.append(f"{label} {mean:.2f} ({steps_of(first, cpu[0], label):.2f})")
    return f"{name}: " + ", ".join(parts)


def _per_row(rows: list[dict]) -> str:
    """Each setting's products at the first measurement, and their mean over the later ones:
    ``first b / o; later b / o``."""
    steps = sorted({r["step"] for r in rows})
    by = {}
    for r in rows:
        by.setdefault(r["setting"], {})[r["step"]] = r["hvps"]
    first = " / ".join(str(v.get(steps[0], "-")) for v in by.values())
    later = " / ".join(f"{sum(v[s] for s in steps[1:] if s in v) / max(1, len(steps) - 1):.1f}"
                       for v in by.values())
    return f"{first}; {later}"


if __name__ == "__main__":
    main()
