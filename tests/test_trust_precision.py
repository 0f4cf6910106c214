"""Float64 stays float64: weights loaded through a factory's float32 module, an
optimizer state's P, each against a float64 truth by plain autograd."""

import sys

import pytest
import torch
from torch import nn

from condlab.config import SpectrumConfig
from condlab.pipeline import run_spectrum
from tests.cases import double_backward_hessian, mean_loss

FACTORY = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
"""


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "trust_factory_mod.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("trust_factory_mod", None)


def _float64_weights(model: nn.Module, seed: int = 1) -> nn.Module:
    """Weights with digits below float32's resolution (the factory builds float32)."""
    model = model.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def test_float64_weights_through_a_float32_factory_are_not_rounded(factory):
    """Today the state dict was copied into the factory's float32 module first: lambda_max off
    by 7e-9 relative under --dtype float64 --exact (stated error ~1e-16)."""
    from condlab.inputs import read_inputs as load
    from condlab.problem import make_problem

    sys.modules.pop("trust_factory_mod", None)
    import trust_factory_mod

    model = _float64_weights(trust_factory_mod.make())
    torch.save({"model": model.state_dict()}, factory / "w64.pt")
    cfg = SpectrumConfig(model="trust_factory_mod:make", weights=str(factory / "w64.pt"),
                         data="digits", max_samples=32, dtype="float64", top=1, bottom=1,
                         exact=True)
    X, y = make_problem(load(cfg), cfg).batches[0]
    H = double_backward_hessian(lambda: mean_loss(model(X), y, "cross-entropy"),
                                list(model.parameters()))
    truth = torch.linalg.eigvalsh((H + H.T) / 2)
    r = run_spectrum(cfg, threads=1).results[0]
    assert r.lambda_max == pytest.approx(float(truth[-1]), rel=1e-13, abs=0)
    assert r.lambda_min == pytest.approx(float(truth[0]), rel=1e-10, abs=1e-14)


def test_widen_to_weights_only_widens():
    from condlab.load.checkpoint import widen_to_weights

    m = nn.Linear(2, 2)
    sd = {k: v.double() for k, v in m.state_dict().items()}
    assert widen_to_weights(m, sd) == torch.float64 and m.weight.dtype == torch.float64
    m32 = nn.Linear(2, 2).double()
    narrow = {k: v.float() for k, v in m32.state_dict().items()}
    assert widen_to_weights(m32, narrow) is None and m32.weight.dtype == torch.float64
    assert widen_to_weights(nn.Linear(2, 2), {"n": torch.tensor([1])}) is None


def test_optimizer_p_is_computed_in_float64_under_dtype_float64():
    """A float32 Adam state under --dtype float64: P = sqrt(v / (1 - beta2^t)) + eps computed
    in float64 from the state's values (today: in float32, then cast: 1e-7 relative off)."""
    from condlab.params import ParamSpec
    from condlab.preconditioners import from_optimizer_state

    g = torch.Generator().manual_seed(0)
    v = torch.rand(7, generator=g).float() * 1e-3 + 1e-6
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(7),
                           "exp_avg_sq": v}},
             "param_groups": [{"params": [0], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                               "weight_decay": 0.0, "amsgrad": False}]}
    spec = ParamSpec(("w",), (torch.Size([7]),))
    pc = from_optimizer_state(state, spec, dtype=torch.float64)
    truth = (v.double() / (1 - 0.999**3)).sqrt() + 1e-8
    assert pc.diag.dtype == torch.float64
    assert torch.allclose(pc.diag, truth, rtol=1e-15, atol=0)
    assert pc.meta["state_dtype"] == "float32"
