"""condlab.measure's own arithmetic: the per-product finiteness check."""

import math

import pytest
import torch

from condlab.errors import CondlabError
from condlab.measure import EstimatorSettings, _all_finite, measure


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_is_the_mask_on_every_kind_of_entry(dtype):
    big = torch.finfo(dtype).max
    cases = {
        "finite": torch.randn(50, 3, dtype=dtype),
        "overflowing sum of finite entries": torch.full((10, 2), big / 2, dtype=dtype),
        "inf": torch.tensor([[1.0], [math.inf]], dtype=dtype),
        "inf and -inf": torch.tensor([[math.inf], [-math.inf]], dtype=dtype),
        "nan": torch.tensor([[0.0, math.nan]], dtype=dtype),
        "empty": torch.zeros(0, 3, dtype=dtype),
    }
    for name, x in cases.items():
        assert _all_finite(x) == bool(torch.isfinite(x).all()), name
        assert _all_finite(x, chunk=7) == bool(torch.isfinite(x).all()), name
    assert _all_finite(cases["overflowing sum of finite entries"])  # no false alarm


def test_a_product_that_returns_nan_stops_the_run_in_one_line():
    A = torch.diag(torch.linspace(1.0, 2.0, 30, dtype=torch.float64))
    A[3, 3] = math.nan
    with pytest.raises(CondlabError, match="NaN or Inf"):
        measure(A, EstimatorSettings(top=2, bottom=0, tol=1e-6))
