"""Condition numbers: one definition per definiteness, from Lanczos ends and exact spectra."""

import math

import pytest
import torch

from condlab.errors import UsageError
from condlab.estimators import condition_number, extreme_eigenpairs
from condlab.estimators.condition import NOISE_FACTOR
from tests.cases import spectral_matrix  # noqa: E402  (one helper for every test file)


def test_positive_definite_from_lanczos_and_exact():
    lam = torch.logspace(-2, 1, 120, dtype=torch.float64)
    A = spectral_matrix(lam, seed=1)
    ends = extreme_eigenpairs(A, top=1, bottom=1, tol=1e-10, seed=1)
    c = condition_number(ends.eigenvalues_top, ends.eigenvalues_bottom)
    assert c.definiteness == "positive definite" and c.nullity == 0
    assert c.value == pytest.approx(1e3, rel=1e-8)
    assert c.definition.startswith("lambda_max / lambda_min (positive definite)")
    assert c.lambda_min_positive == pytest.approx(1e-2, rel=1e-8)
    exact = condition_number([], [], exact_spectrum=torch.linalg.eigvalsh(A))
    assert exact.value == pytest.approx(1e3, rel=1e-10) and exact.exact and exact.nullity == 0


def test_positive_semi_definite_with_a_60_percent_null_space():
    """Single-vector Lanczos collapses the null space: bottom-3 = 0, lambda_1+, lambda_2+."""
    f64 = dict(dtype=torch.float64)
    positive = torch.cat(
        [
            torch.tensor([0.02, 0.05], **f64),
            torch.linspace(0.3, 1.0, 76, **f64),
            torch.tensor([4.0, 6.0], **f64),
        ]
    )
    lam = torch.cat([torch.zeros(120, dtype=torch.float64), positive])
    A = spectral_matrix(lam, seed=2)
    ends = extreme_eigenpairs(A, top=2, bottom=3, tol=1e-9, seed=2, block_size=1)
    assert ends.converged and ends.eigenvalues_bottom[0].abs() < 1e-9
    c = condition_number(ends.eigenvalues_top, ends.eigenvalues_bottom)
    assert c.definiteness == "positive semi-definite"
    assert c.value == pytest.approx(6.0 / 0.02, rel=1e-8)
    assert c.lambda_min_positive == pytest.approx(0.02, rel=1e-8)
    assert c.threshold == pytest.approx(NOISE_FACTOR * 2.0**-52 * 6.0, rel=1e-8) and c.nullity is None
    assert "lambda_max / lambda_min+" in c.definition and "not estimated" in c.definition
    exact = condition_number([], [], exact_spectrum=torch.linalg.eigvalsh(A))
    assert exact.value == pytest.approx(6.0 / 0.02, rel=1e-10)
    assert exact.nullity == 120 and not exact.nullity_is_lower_bound
    assert "120 eigenvalues within +-threshold" in exact.definition
    slq = condition_number(ends.eigenvalues_top, ends.eigenvalues_bottom, nullity=118)
    assert slq.nullity == 118 and "118 eigenvalues" in slq.definition


def test_psd_when_every_reported_bottom_value_is_null():
    c = condition_number([2.0, 1.0], [0.0, 1e-9, 2e-9], threshold_rel=1e-6)
    assert c.definiteness == "positive semi-definite" and c.value is None
    assert "ask for more bottom eigenvalues" in c.definition


def test_tiny_negative_within_threshold_counts_as_zero():
    c = condition_number([1.0], [-1e-8, 0.0, 0.25], threshold_rel=1e-6)
    assert c.definiteness == "positive semi-definite" and c.value == pytest.approx(4.0)
    assert c.threshold == pytest.approx(1e-6)


def test_indefinite_needs_the_exact_spectrum():
    f64 = dict(dtype=torch.float64)
    lam = torch.cat([torch.tensor([-0.3, -0.1], **f64), torch.linspace(0.01, 1.0, 100, **f64)])
    A = spectral_matrix(lam, seed=3)
    ends = extreme_eigenpairs(A, top=2, bottom=3, tol=1e-9, seed=3)
    c = condition_number(ends.eigenvalues_top, ends.eigenvalues_bottom)
    assert c.definiteness == "indefinite" and c.value is None
    assert c.negative_ratio == pytest.approx(0.3, rel=1e-8)
    assert "--exact" in c.definition and "--damping" in c.definition
    assert "interior" in c.definition
    exact = condition_number([], [], exact_spectrum=torch.linalg.eigvalsh(A))
    assert exact.definiteness == "indefinite" and exact.value == pytest.approx(100.0, rel=1e-10)
    assert exact.lambda_min_positive == pytest.approx(0.01, rel=1e-10)
    assert exact.negative_ratio == pytest.approx(0.3, rel=1e-10)
    assert "2 eigenvalues below" in exact.definition


def test_negative_cases_and_zero():
    nd = condition_number([-1.0], [-5.0])
    assert nd.definiteness == "negative definite" and nd.value == pytest.approx(5.0)
    nsd = condition_number([0.0, -0.5], [-4.0, -2.0])
    assert nsd.definiteness == "negative semi-definite" and nsd.value == pytest.approx(8.0)
    zero = condition_number([0.0], [0.0])
    assert zero.definiteness == "zero" and zero.value is None


def test_ghost_slots_are_ignored_and_overrides_apply():
    c = condition_number([2.0, math.nan], [0.5, math.nan])
    assert c.value == pytest.approx(4.0)
    c = condition_number([2.0], [0.5], lambda_max=3.0, lambda_min=0.6)
    assert c.value == pytest.approx(5.0) and c.lambda_max == 3.0


@pytest.mark.parametrize(
    "args, kwargs",
    [(([1.0], []), {}), (([], [1.0]), {}), (([1.0], [0.5]), dict(threshold_rel=-1.0))],
)
def test_bad_arguments_are_usage_errors(args, kwargs):
    with pytest.raises(UsageError):
        condition_number(*args, **kwargs)
