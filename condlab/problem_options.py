"""The options of the problem stage (:mod:`condlab.problem`): how the loss is posed.

Declared apart from :class:`condlab.problem.Problem`, which needs torch, so that the command
line lists them (``--help``) without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from condlab.optionfield import DEVICE, LIST, POSITIVE, option

BN_MODES = ("eval", "batch")
DROPOUT_MODES = ("eval", "fixed")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class ProblemOptions:
    """How the loss is posed: batches, the parameters measured, modes, dtype, device, and the
    curvature operator built on it."""

    GROUP: ClassVar[str] = "Operator"

    curvature: str = option(
        str, "hessian", "hessian, or ggn (generalized Gauss-Newton J^T H_loss J).",
        choices="condlab.operators.curvature:CURVATURES")
    params: tuple[str, ...] = option(
        LIST, (), "Only parameters whose names match this glob (repeatable), e.g. '2.*'.",
        default_text="all")
    batch_size: int | None = option(
        int, None, "Samples per batch; products are summed over batches weighted by size (exact "
        "mean loss).", group="What to load", check=POSITIVE, default_text="all samples in one batch")
    output_key: str | None = option(
        str, None, "The entry of a dict / Hugging Face ModelOutput (or the index in a tuple) that "
        "the loss takes.", group="What to load", default_text="logits; a tuple's first",
        advanced=True)
    bn_mode: str = option(
        str, "eval", "BatchNorm with running statistics (eval) or per-batch statistics (batch).",
        choices=BN_MODES, advanced=True)
    dropout_mode: str = option(
        str, "eval", "Dropout off (eval) or on with one fixed mask per batch (fixed).",
        choices=DROPOUT_MODES, advanced=True)
    dtype: str = option(str, "float32", "Floating-point type of the model, data and products.",
                        choices=DTYPES)
    device: str = option(str, "cpu", "cpu, cuda, cuda:N, mps or auto (cuda when available).",
                         check=DEVICE)
    product_block: int = option(
        int, 16, "Vectors per vmapped curvature product call (activations are held once per "
        "vector).", check=POSITIVE, advanced=True)

    @property
    def torch_dtype(self):
        import torch

        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]
