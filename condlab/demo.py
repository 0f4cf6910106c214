"""``condlab demo``: the main job on an embedded default, with no file of the user's.

Trains the MLP 64-32 (tanh)-10 of the peer comparison on 512 digits for 300 full-batch AdamW
steps (lr 1e-2, weight decay 1e-2; well under a second on a CPU), then measures in float64
the Hessian of the loss with its decoupled weight decay, ``H + lambda I``: the top-5 and
bottom-3 eigenvalues, the condition number, the trace, and what AdamW's own state
(``P^-1/2 H P^-1/2 + lambda I``), a diagonal Gauss-Newton preconditioner and input
standardization do to it.
"""

from __future__ import annotations

import dataclasses

from condlab.config import SpectrumConfig
from condlab.inputs import read_inputs
from condlab.pipeline import Progress, SpectrumReport, run_spectrum
from condlab.train.loop import train_from_config

DEMO_TRAIN = {
    "model": {"name": "mlp", "widths": [32], "activation": "tanh"},
    "data": "digits",
    "max_samples": 512,
    "loss": "cross-entropy",
    "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-2},
    "steps": 300,
    "seed": 0,
}

DEMO_SPECTRUM = {
    "checkpoint": "(demo)",
    "top": 5,
    "bottom": 3,
    "dtype": "float64",
    "tol": 1e-6,
    "trace": True,
    "precond": ("optimizer", "gn-sqrt"),
    "eps": 1e-8,  # constant pixels of digits have no curvature: diag(G) = 0 there
    "weight_decay": 1e-2,
    "decay": "decoupled",
    "norm": ("input",),
}


def run_demo(*, steps: int = 300, on_progress: Progress | None = None) -> SpectrumReport:
    train_cfg = {**DEMO_TRAIN, "steps": steps}
    _, ckpt = train_from_config(train_cfg)
    cfg = SpectrumConfig(**DEMO_SPECTRUM)
    inputs = read_inputs(cfg, checkpoint=ckpt)
    n = len(inputs.dataset)
    source = f"demo MLP 64-32-10 (tanh), digits ({n} samples), {steps} AdamW steps"
    inputs = dataclasses.replace(inputs, source=source)
    return run_spectrum(cfg, on_progress=on_progress, inputs=inputs)
