"""The linear-operator protocol every curvature operator follows.

An operator is square ``[P, P]``, knows its ``dtype`` and ``device``, and multiplies a block of
vectors ``V [P, K] -> A V [P, K]``. ``A @ v`` also takes a single vector ``[P]``. A dense
``torch.Tensor`` satisfies the same protocol, so every estimator runs on either.

``matvecs`` counts columns multiplied so far: one Hessian-vector product is one matvec.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LinearOperator:
    """Base class: subclasses implement ``_matmat(V [P, K]) -> [P, K]``."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device):
        self.shape = (size, size)
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0

    def _matmat(self, V: Tensor) -> Tensor:
        raise NotImplementedError

    def matmat(self, V: Tensor) -> Tensor:
        """``A V`` for ``V [P, K]``; counts ``K`` matvecs."""
        if V.ndim != 2 or V.shape[0] != self.shape[1]:
            raise ValueError(f"expected a [{self.shape[1]}, K] block, got {tuple(V.shape)}")
        self.matvecs += V.shape[1]
        return self._matmat(V)

    def __matmul__(self, V: Tensor) -> Tensor:
        if V.ndim == 1:
            return self.matmat(V[:, None])[:, 0]
        return self.matmat(V)

    def to_dense(self, block_size: int = 64) -> Tensor:
        """The dense ``[P, P]`` matrix, by multiplying identity blocks (tiny operators only)."""
        P = self.shape[0]
        cols = []
        for start in range(0, P, block_size):
            E = torch.zeros(P, min(block_size, P - start), dtype=self.dtype, device=self.device)
            E[torch.arange(start, start + E.shape[1]), torch.arange(E.shape[1])] = 1
            cols.append(self.matmat(E))
        return torch.cat(cols, dim=1)


class DenseOperator(LinearOperator):
    """A dense symmetric matrix as an operator (tests, ``--exact`` and small eigenbases)."""

    def __init__(self, matrix: Tensor):
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, V: Tensor) -> Tensor:
        return self.matrix @ V


class ShiftedOperator(LinearOperator):
    """``A + shift * I`` (damping, and decoupled weight decay after preconditioning)."""

    def __init__(self, A, shift: float):
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A, self.shift = A, float(shift)

    def _matmat(self, V: Tensor) -> Tensor:
        return self.A @ V + self.shift * V
