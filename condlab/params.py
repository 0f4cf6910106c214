"""Named parameter tensors <-> one flat vector ``theta`` of shape ``[P]``.

This is the only place that converts. The order is the order of ``model.named_parameters()``
(restricted to the selected names), so ``flatten(unflatten(theta)) == theta``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from condlab.errors import UsageError


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of the parameter tensors that make up ``theta``."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @cached_property  # the spec is frozen: computed once (a per-name loop would redo it each time)
    def numels(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for n in self.numels:
            out.append(acc)
            acc += n
        return tuple(out)

    @property
    def size(self) -> int:
        return sum(self.numels)

    def slice(self, name: str) -> slice:
        """The slice of ``theta`` that holds parameter ``name``."""
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + self.numels[i])

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """``{name: tensor}`` -> ``[P]``."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """``[P]`` -> ``{name: tensor}`` (views into ``theta`` where strides allow)."""
        parts = torch.split(theta, self.numels)
        return {n: p.reshape(s) for n, p, s in zip(self.names, parts, self.shapes)}


def select_params(
    named: Iterable[tuple[str, Tensor]], patterns: Iterable[str] | None = None
) -> ParamSpec:
    """The spec of the trainable parameters (``requires_grad``) whose names match any glob in
    ``patterns`` (all if None). Frozen parameters are never part of ``theta``."""
    named = list(named)
    pats = list(patterns or [])
    if pats:
        named = [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, pat) for pat in pats)]
        if not named:
            raise UsageError(
                f"--params {','.join(pats)} matches no parameter; names look like "
                "'0.weight' or 'layers.1.bias' (see `condlab spectrum --list-params`)"
            )
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if not trainable:
        which = f"every parameter matching --params {','.join(pats)} is" if pats else "all parameters are"
        raise UsageError(
            f"nothing to measure: {which} frozen (requires_grad=False); unfreeze the "
            "parameters to measure, or select trainable ones with --params"
        )
    return ParamSpec(tuple(n for n, _ in trainable), tuple(p.shape for _, p in trainable))
