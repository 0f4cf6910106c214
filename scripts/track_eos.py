"""The edge-of-stability picture of README, made by ``condlab track`` from a plain PyTorch run.

Two full-batch runs of a tanh MLP (64-32-10) on 512 digits, mean squared error against one-hot
labels (the loss of Cohen et al.'s edge-of-stability experiments), float64, saving
``{"model", "optimizer", "step"}`` checkpoints every ``--every`` steps:

- gradient descent (torch.optim.SGD, lr 1.0): the Hessian's lambda_max against 2 / lr;
- Adam (lr 1e-2): the preconditioned sharpness lambda_max(P^-1 H), P from Adam's state,
  against its threshold (2 + 2 beta1) / ((1 - beta1) lr) = 38 / lr.

Then, per run, the command the README shows::

    condlab track RUN --model mlp --model-config RUN/model.yaml --data digits --max-samples 512 \
        --loss mse --dtype float64 --top 1 --bottom 0 --max-hvps 300 [--precond optimizer] \
        -o RUN/track.csv --plot docs/eos_RUN.png

    python scripts/track_eos.py --out runs/eos        # writes docs/eos_gd.png, docs/eos_adam.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

import condlab
from condlab.losses import mse

SPEC = {"name": "mlp", "widths": [32], "activation": "tanh"}


def train(run: Path, optimizer: str, lr: float, steps: int, every: int) -> None:
    data = condlab.load_dataset("digits", max_samples=512)
    model = condlab.build_model(dict(SPEC), (64,), 10, seed=0).double()  # digits load as float64
    opt = (torch.optim.SGD(model.parameters(), lr=lr) if optimizer == "gd"
           else torch.optim.Adam(model.parameters(), lr=lr))
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.yaml").write_text("widths: [32]\nactivation: tanh\n")
    for step in range(steps + 1):
        if step % every == 0 and (step > 0 or optimizer == "gd"):  # Adam has no state at step 0
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                       run / f"ckpt_{step:05d}.pt")
        if step == steps:
            break
        opt.zero_grad()
        loss = mse(model(data.X), data.y)
        loss.backward()
        opt.step()
    print(f"{optimizer}: final loss {loss.item():.4f}", file=sys.stderr)


def track(run: Path, png: Path, precond: bool) -> None:
    cmd = ["condlab", "track", str(run), "--model", "mlp", "--model-config", str(run / "model.yaml"),
           "--data", "digits", "--max-samples", "512", "--loss", "mse", "--dtype", "float64",
           "--top", "1", "--bottom", "0",
           "--max-hvps", "300", "-o", str(run / "track.csv"), "--force", "--plot", str(png)]
    if precond:
        cmd += ["--precond", "optimizer"]
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/eos"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(1)
    train(a.out / "gd", "gd", 1.0, a.steps, a.every)
    track(a.out / "gd", a.docs / "eos_gd.png", precond=False)
    train(a.out / "adam", "adam", 1e-2, a.steps, a.every)
    track(a.out / "adam", a.docs / "eos_adam.png", precond=True)


if __name__ == "__main__":
    main()
