"""Hutchinson and Hutch++: exact cases, honest standard errors, blocked products."""

import pytest
import torch

from condlab.errors import UsageError
from condlab.estimators import hutchinson, hutchpp
from condlab.operators.base import DenseOperator
from tests.cases import spectral_matrix  # noqa: E402  (one helper for every test file)


def decaying_psd(P=60, seed=0):
    return spectral_matrix(1.0 / torch.arange(1, P + 1, dtype=torch.float64) ** 1.5, seed)


class BlockRecorder(DenseOperator):
    """Records the number of columns of every product."""

    def __init__(self, matrix):
        super().__init__(matrix)
        self.blocks = []

    def _matmat(self, V):
        self.blocks.append(V.shape[1])
        return super()._matmat(V)


def test_hutchinson_is_exact_on_a_diagonal_matrix_with_rademacher_probes():
    D = torch.diag(torch.linspace(-1.0, 3.0, 40, dtype=torch.float64))
    est = hutchinson(D, 10, seed=1)
    assert est.value == pytest.approx(float(D.trace()), abs=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)
    assert est.method == "hutchinson" and est.matvecs == 10 and est.seed == 1


@pytest.mark.parametrize("estimator", [hutchinson, hutchpp])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_stated_error_is_honest_across_seeds(estimator, distribution):
    A = decaying_psd(60, seed=2)
    truth = float(A.trace())
    runs = [estimator(A, 150, seed=s, distribution=distribution) for s in range(200)]
    z = torch.tensor([(r.value - truth) / r.stderr for r in runs])
    assert z.abs().max() < 4.0
    assert 0.8 < float(z.std()) < 1.25
    assert abs(float(z.mean())) < 0.25  # unbiased: mean z within ~3.5 / sqrt(200)


def test_hutchpp_is_exact_for_rank_below_the_sketch():
    lam = torch.cat([torch.tensor([5.0, 3.0, -2.0, 1.0, 0.5]), torch.zeros(75)])
    A = spectral_matrix(lam, seed=3)
    est = hutchpp(A, 30, seed=3)  # sketch of 10 columns > rank 5
    assert est.value == pytest.approx(7.5, abs=1e-10)
    assert est.stderr < 1e-10
    assert est.method == "hutch++" and est.matvecs == 30


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    A = decaying_psd(200, seed=4)
    truth = float(A.trace())
    err = {
        f.__name__: sum(abs(f(A, 60, seed=s).value - truth) for s in range(30))
        for f in (hutchinson, hutchpp)
    }
    assert err["hutchpp"] < 0.5 * err["hutchinson"]


@pytest.mark.parametrize("estimator", [hutchinson, hutchpp])
def test_products_come_in_blocks_and_are_counted(estimator):
    A = decaying_psd(50, seed=5)
    op = BlockRecorder(A)
    est = estimator(op, 45, seed=6, block_size=8)
    assert op.matvecs == est.matvecs == 45
    assert max(op.blocks) <= 8
    same = estimator(A, 45, seed=6, block_size=45)
    assert est.value == pytest.approx(same.value, rel=1e-12)


def test_same_seed_same_value_and_generator_equals_seed():
    A = decaying_psd(50, seed=7)
    a, b = hutchpp(A, 30, seed=8), hutchpp(A, 30, seed=8)
    c = hutchpp(A, 30, generator=torch.Generator().manual_seed(8))
    assert a.value == b.value == c.value and c.seed is None
    assert hutchpp(A, 30, seed=9).value != a.value


@pytest.mark.parametrize(
    "call",
    [
        lambda A: hutchinson(A, 1),
        lambda A: hutchpp(A, 5),
        lambda A: hutchinson(A, 10, distribution="uniform"),
        lambda A: hutchinson(A, 10, block_size=0),
    ],
)
def test_bad_arguments_are_usage_errors(call):
    with pytest.raises(UsageError):
        call(torch.eye(10, dtype=torch.float64))
