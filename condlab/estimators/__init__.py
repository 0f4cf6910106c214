"""Estimators over a symmetric operator ``A`` (dense tensor or ``LinearOperator``).

Plain functions, deterministic given a ``torch.Generator`` (or ``seed``), returning frozen
dataclasses that carry their provenance (matvecs, residuals, convergence flags, seed).
"""

from condlab.estimators.condition import Condition, condition_number
from condlab.estimators.density import EigenvalueCount, SpectralDensity, density_mass, slq_density
from condlab.estimators.eigs import ExtremeEigs, extreme_eigenpairs
from condlab.estimators.lanczos import LanczosDecomposition, lanczos
from condlab.estimators.lean import lean_extreme_eigenpairs
from condlab.estimators.trace import TraceEstimate, hutchinson, hutchpp

__all__ = [
    "Condition",
    "EigenvalueCount",
    "ExtremeEigs",
    "LanczosDecomposition",
    "SpectralDensity",
    "TraceEstimate",
    "condition_number",
    "density_mass",
    "extreme_eigenpairs",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "lean_extreme_eigenpairs",
    "slq_density",
]
