"""Stochastic Lanczos quadrature: exact moments, probe noise, interval counts, normalization."""

import pytest
import torch

from condlab.errors import UsageError
from condlab.estimators import density_mass, slq_density
from tests.cases import spectral_matrix  # noqa: E402  (one helper for every test file)


def spectrum(P=60):
    return torch.cat(
        [torch.tensor([-0.5, -0.1]), torch.linspace(0.0, 1.0, P - 4), torch.tensor([2.0, 3.0])]
    ).double()


def test_moments_are_exact_for_a_fixed_probe_at_full_depth():
    lam = spectrum(40)
    A = spectral_matrix(lam, seed=1)
    v = torch.linspace(-1.0, 2.0, 40, dtype=torch.float64)
    dens = slq_density(A, lanczos_steps=40, probes=v[:, None])
    u = v / v.norm()
    for k in range(12):
        exact = u @ torch.linalg.matrix_power(A, k) @ u
        assert float(dens.moments(k)[0]) == pytest.approx(float(exact), rel=1e-10, abs=1e-12)


def test_identity_probes_give_exact_normalized_power_traces():
    """Gauss quadrature with m nodes is exact to degree 2m - 1; probes e_i average to tr/P."""
    lam = spectrum(30)
    A = spectral_matrix(lam, seed=2)
    dens = slq_density(A, lanczos_steps=4, probes=torch.eye(30, dtype=torch.float64))
    assert dens.nodes.shape == (30, 4) and dens.matvecs == 120
    for k in range(8):
        exact = float((lam**k).sum()) / 30
        assert float(dens.moments(k).mean()) == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_random_probe_moments_match_traces_within_probe_noise():
    lam = spectrum(200)
    A = spectral_matrix(lam, seed=3)
    dens = slq_density(A, num_probes=16, lanczos_steps=20, seed=3)
    for k in (1, 2, 3):
        m = dens.moments(k)
        noise = float(m.std()) / 16**0.5
        assert abs(float(m.mean()) - float((lam**k).mean())) < 4 * noise
        assert noise > 0


def test_density_integrates_to_one_over_a_grid_spanning_the_nodes():
    lam = spectrum(100)
    dens = slq_density(spectral_matrix(lam, seed=4), num_probes=4, lanczos_steps=30, seed=4)
    # the density is the Gaussian mixture of the nodes with the quadrature weights, which
    # integrates to 1 by itself on a grid spanning the nodes +- 5 sigma (the final division
    # by the trapezoid integral only removes the truncation error, ~1e-6)
    gauss = torch.exp(-0.5 * ((dens.grid[:, None, None] - dens.nodes) / dens.sigma) ** 2)
    mixture = (gauss * dens.weights).sum(dim=(1, 2)) / (4 * dens.sigma * (2 * torch.pi) ** 0.5)
    torch.testing.assert_close(dens.density, mixture, rtol=1e-5, atol=1e-8)
    assert dens.grid[0] < dens.nodes.min() and dens.grid[-1] > dens.nodes.max()
    assert dens.sigma == pytest.approx(0.01 * float(dens.nodes.max() - dens.nodes.min()))
    assert (dens.density >= 0).all() and dens.grid.shape == (512,)
    torch.testing.assert_close(dens.weights.sum(dim=1), torch.ones(4, dtype=torch.float64))
    # the extreme eigenvalues are resolved as nodes: the density peaks there
    peak = dens.grid[dens.density[dens.grid > 2.5].argmax() + int((dens.grid <= 2.5).sum())]
    assert abs(float(peak) - 3.0) < 2 * dens.sigma


def test_null_space_count_within_stated_error():
    """60% zeros, the rest in [1, 2]: the count in [-0.1, 0.1] is the nullity, 180 of 300."""
    lam = torch.cat([torch.zeros(180), torch.linspace(1.0, 2.0, 120)]).double()
    dens = slq_density(spectral_matrix(lam, seed=5), num_probes=10, lanczos_steps=30, seed=5)
    count = density_mass(dens, -0.1, 0.1)
    assert 0 < count.stderr < 10
    assert abs(count.value - 180) < 4 * count.stderr
    assert count.fraction == pytest.approx(count.value / 300)
    everything = density_mass(dens, -10.0, 10.0)
    assert everything.value == pytest.approx(300.0, rel=1e-12)


def test_same_seed_same_density():
    A = spectral_matrix(spectrum(80), seed=6)
    a = slq_density(A, num_probes=3, lanczos_steps=10, seed=7)
    b = slq_density(A, num_probes=3, lanczos_steps=10, seed=7)
    c = slq_density(A, num_probes=3, lanczos_steps=10, seed=8)
    assert torch.equal(a.nodes, b.nodes) and torch.equal(a.density, b.density)
    assert not torch.equal(a.nodes, c.nodes) and a.seed == 7


def test_steps_are_capped_at_the_dimension():
    dens = slq_density(spectral_matrix(spectrum(20)), num_probes=2, lanczos_steps=80)
    assert dens.nodes.shape == (2, 20) and dens.matvecs == 40


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_probes=0), dict(lanczos_steps=0), dict(sigma=0.0), dict(probes=torch.ones(5, 2))],
)
def test_bad_arguments_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        slq_density(torch.eye(10, dtype=torch.float64), **kwargs)


class _CallCounter:
    """A dense operator that records the width of every product it is asked for."""

    def __init__(self, matrix):
        self.matrix, self.shape, self.dtype, self.device = matrix, matrix.shape, matrix.dtype, matrix.device
        self.widths = []

    def __matmul__(self, V):
        self.widths.append(V.shape[1])
        return self.matrix @ V


def test_probes_advance_as_one_block_and_match_single_recurrences():
    from condlab.estimators.lanczos import batched_lanczos, lanczos

    lam = spectrum(120)
    A = spectral_matrix(lam, seed=6)
    op = _CallCounter(A)
    dens = slq_density(op, num_probes=8, lanczos_steps=20, seed=6)
    assert op.widths == [8] * 20 and dens.matvecs == 160  # one [P, 8] product per step
    V0 = torch.randn(120, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batch = batched_lanczos(A, V0, 25, torch.Generator().manual_seed(1))
    for k in range(3):
        single = lanczos(A, 25, v0=V0[:, k])
        torch.testing.assert_close(batch.alphas[k], single.alphas, rtol=0, atol=1e-13)
        torch.testing.assert_close(batch.betas[k], single.betas, rtol=0, atol=1e-13)


def test_block_slq_quadrature_is_exact_per_probe():
    """Each probe of the block keeps its own Gauss rule: sum_j tau_j theta_j^k = v^T A^k v for
    k <= 2m - 1, checked against dense matrix powers for all 8 probes of one block."""
    lam = spectrum(150)
    A = spectral_matrix(lam, seed=7)
    Z = torch.randn(150, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    dens = slq_density(A, lanczos_steps=6, probes=Z)
    U = Z / Z.norm(dim=0)
    for k in range(12):
        exact = (U * (torch.linalg.matrix_power(A, k) @ U)).sum(dim=0)
        torch.testing.assert_close(dens.moments(k), exact, rtol=1e-10, atol=1e-12)
