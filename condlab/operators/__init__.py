"""Curvature operators: matrix-free products with the Hessian or GGN of a Problem."""

from condlab.operators.base import DenseOperator, LinearOperator, ShiftedOperator
from condlab.operators.curvature import (
    CURVATURES,
    GGNOperator,
    HessianOperator,
    curvature_operator,
)
from condlab.operators.dense import dense_curvature, dense_ggn, dense_hessian
from condlab.params import ParamSpec, select_params

__all__ = [
    "CURVATURES",
    "DenseOperator",
    "GGNOperator",
    "HessianOperator",
    "LinearOperator",
    "ParamSpec",
    "ShiftedOperator",
    "curvature_operator",
    "dense_curvature",
    "dense_ggn",
    "dense_hessian",
    "select_params",
]
