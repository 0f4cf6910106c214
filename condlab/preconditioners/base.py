"""Names, defaults and the Preconditioner record shared by every rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    pass


PRECONDITIONERS = ("optimizer", "adam", "rmsprop", "adagrad", "gn", "gn-sqrt", "jacobi")
DATA_RULES = ("adam", "rmsprop", "adagrad")
CURVATURE_RULES = ("gn", "gn-sqrt", "jacobi")
BASES = ("identity", "eigen")
DIAG_ESTIMATORS = ("exact", "hutchinson")
DECAYS = ("none", "coupled", "decoupled", "l1")
DEFAULT_EPS = {
    "adam": 1e-8,
    "rmsprop": 1e-8,
    "adagrad": 1e-10,
    "gn": 0.0,
    "gn-sqrt": 0.0,
    "jacobi": 0.0,
}
MAX_EIGEN_PARAMS = 5000


@dataclass(frozen=True)
class Preconditioner:
    """A diagonal preconditioner ``P`` in a basis: the matrix ``U diag(P) U^T``.

    ``diag [P]`` is strictly positive; ``basis`` is ``U [P, P]`` (eigenvectors of ``G``) or
    None for the coordinate basis. ``formula`` says how ``P`` was computed, ``source`` where the
    numbers came from; ``meta`` holds the rest (estimator, probes, steps, hyperparameters).
    """

    name: str
    diag: Tensor
    formula: str
    eps: float
    source: str
    basis: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def basis_name(self) -> str:
        return "identity" if self.basis is None else "eigen"

    def matrix(self) -> Tensor:
        """The dense ``[P, P]`` preconditioner ``U diag(P) U^T`` (tests, tiny models)."""
        if self.basis is None:
            return torch.diag(self.diag)
        return self.basis @ (self.diag[:, None] * self.basis.T)
