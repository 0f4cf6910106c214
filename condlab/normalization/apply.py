"""``apply_normalization``: the same model, reparameterized by a normalization, and how far its
function moved.

    input   x' = (x - mu) / s folded into the first layer     exact (function_change ~ rounding)
    batch   BatchNorm after each Linear/Conv -> activation     exact in eval mode (running stats
                                                               = the data's); train mode is not
    layer   LayerNorm / GroupNorm(1) likewise                  approximate: reported

``function_change = max |f_new(T(X)) - f_old(X)|`` over the dataset, in the model's dtype, both
models in eval mode (``T`` the transform: the standardization for ``input``, else the identity).
``function_change_batch_mode``: the same over the given fixed batches with every BatchNorm of both
models normalizing with the batch's statistics (computed when the new model has BatchNorm).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from condlab.errors import UsageError
from condlab.normalization.fold import find_first_layer, fold_input
from condlab.normalization.insert import batchnorm, layernorm
from condlab.normalization.invariance import predicted_nullity
from condlab.normalization.stats import as_input, chunks

KINDS = ("input", "batch", "layer")
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def identity(X: Tensor) -> Tensor:
    return X


@dataclass(frozen=True, eq=False)
class Normalized:
    """A normalized copy of a model and what the normalization did.

    ``transform`` maps the raw data to what ``model`` takes: apply it to every batch's X (the
    standardization ``(X - mu) / s`` for ``input``; the identity otherwise). ``mu``, ``s`` are in
    the raw sample shape (``input`` only). ``predicted_nullity`` counts the null directions of
    the GGN that the normalization adds with batch statistics and eps = 0 (see ``invariance``);
    use ``predicted_nullity(model, curvature=, bn_mode=)`` for the operator actually measured.
    """

    model: nn.Module
    kind: str
    transform: Callable[[Tensor], Tensor]
    function_change: float
    function_change_batch_mode: float | None
    params_added: int
    predicted_nullity: int
    mu: Tensor | None = None
    s: Tensor | None = None
    first_layer: str | None = None
    constant_features: tuple[int, ...] = ()
    inserted_at: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # batch/layer: each original parameter's name in ``model`` (insertion renumbers a Sequential)
    renamed: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready fields (no tensors, no model)."""
        return {
            "kind": self.kind,
            "function_change": self.function_change,
            "function_change_batch_mode": self.function_change_batch_mode,
            "params_added": self.params_added,
            "predicted_nullity": self.predicted_nullity,
            "first_layer": self.first_layer,
            "constant_features": list(self.constant_features),
            "inserted_at": list(self.inserted_at),
            "notes": list(self.notes),
        }


def apply_normalization(
    model: nn.Module,
    X: Tensor,
    kind: str,
    *,
    batches: Sequence[tuple[Tensor, Tensor]] | None = None,
    eps: float = 1e-5,
    first_layer: str | None = None,
    dtype: torch.dtype | None = None,
) -> Normalized:
    """Normalize a deep copy of ``model`` (cast to ``dtype`` if given) with statistics of ``X``.

    ``X [N, *sample_shape]`` is the whole dataset, raw. ``eps`` is the inserted norms' epsilon;
    ``first_layer`` names the layer to fold into when it cannot be found (``input``); ``batches``
    (raw, as given to the Problem) add ``function_change_batch_mode``. The caller's model is
    never modified.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown normalization {kind!r}; choose one of {', '.join(KINDS)}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise UsageError(
            f"eps must be a finite number > 0 (torch's BatchNorm needs it), got {eps!r}"
        )
    old = copy.deepcopy(model)
    if dtype is not None:
        old = old.to(dtype)
    old.eval()
    X = as_input(X, old)
    if X.ndim < 2 or len(X) == 0:
        raise UsageError(
            f"normalization needs data X [N, features] with N > 0, got shape {list(X.shape)}"
        )
    new = copy.deepcopy(old)
    transform: Callable[[Tensor], Tensor] = identity
    mu = s = name = None
    constant: list[int] = []
    inserted: list[str] = []
    renamed: dict[str, str] = {}  # input: folding keeps the names
    if kind == "input":
        name = find_first_layer(new, X, first_layer)
        new, transform, constant, notes = fold_input(new, name, X)
        mu, s = transform.mu, transform.s
    else:
        before = {id(p): n for n, p in new.named_parameters()}
        insert = batchnorm if kind == "batch" else layernorm
        inserted, notes = insert(old, new, X, float(eps))
        renamed = {before[id(p)]: n for n, p in new.named_parameters() if id(p) in before}
    new.eval()
    change = _change(old, new, X, transform)
    has_bn = any(isinstance(m, _BNS) for m in new.modules())
    change_batch = _batch_change(old, new, batches, transform) if batches and has_bn else None
    return Normalized(
        model=new,
        kind=kind,
        transform=transform,
        function_change=change,
        function_change_batch_mode=change_batch,
        params_added=_count(new) - _count(old),
        predicted_nullity=predicted_nullity(new) - predicted_nullity(old),
        mu=mu,
        s=s,
        first_layer=name,
        constant_features=tuple(constant),
        inserted_at=tuple(inserted),
        notes=tuple(notes),
        renamed=renamed,
    )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _change(old: nn.Module, new: nn.Module, X: Tensor, transform: Callable) -> float:
    worst = 0.0
    for Xc in chunks(X):
        worst = max(worst, float((new(transform(Xc)) - old(Xc)).abs().max()))
    return worst


def _batch_statistics(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorms normalize with each batch's statistics (and update nothing)."""
    model = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(model)
    for m in model.modules():
        if isinstance(m, _BNS):
            m.train()
    return model


@torch.no_grad()
def _batch_change(old, new, batches, transform) -> float:
    old_b, new_b = _batch_statistics(old), _batch_statistics(new)
    worst = 0.0
    for Xb, _ in batches:
        Xb = as_input(Xb, old)
        try:
            diff = new_b(transform(Xb)) - old_b(Xb)
        except ValueError as e:
            raise UsageError(
                f"train-mode BatchNorm failed on a batch ({e}); use batches of 2 or more samples"
            ) from e
        worst = max(worst, float(diff.abs().max()))
    return worst
