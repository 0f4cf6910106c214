"""Normalization as a reparameterization: input standardization folded into the first layer,
BatchNorm / LayerNorm inserted so that the function is kept as far as it can be, and the
invariances (null directions of the curvature) that normalization layers create.
"""

from condlab.normalization.apply import KINDS, Normalized, apply_normalization
from condlab.normalization.fold import (
    ChannelPadConv1d,
    ChannelPadConv2d,
    ChannelPadConv3d,
    Standardize,
)
from condlab.normalization.insert import ACTIVATIONS, find_targets
from condlab.normalization.invariance import (
    measured_nullity,
    positive_condition_number,
    predicted_nullity,
    scale_invariant_groups,
    softmax_shift_nullity,
)

__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "ChannelPadConv1d",
    "ChannelPadConv2d",
    "ChannelPadConv3d",
    "Normalized",
    "Standardize",
    "apply_normalization",
    "find_targets",
    "measured_nullity",
    "positive_condition_number",
    "predicted_nullity",
    "softmax_shift_nullity",
    "scale_invariant_groups",
]
