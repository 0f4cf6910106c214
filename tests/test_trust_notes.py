"""Rows that say what dominates or changes them, against dense float64
truths by plain autograd."""

import pytest
import torch

from condlab.config import SpectrumConfig
from condlab.pipeline import run_spectrum
from tests.cases import autograd_hessian


def _digits(n):
    from condlab.load.data import load_dataset

    ds = load_dataset("digits", max_samples=n)
    return ds.X.double(), ds.y


def test_a_batchnorm_on_batch_statistics_says_the_operator_depends_on_the_batching():
    """One batch of 48 and batches of 16 are different operators (truth: the train-mode
    Hessian of the whole batch); today nothing said so."""
    from condlab.inputs import read_inputs as load

    args = {"widths": [3], "norm": "batch"}
    rows = {}
    for bs in (None, 16):
        cfg = SpectrumConfig(model="mlp", model_args=args, data="digits", max_samples=48,
                             dtype="float64", top=1, bottom=0, exact=True, bn_mode="batch",
                             batch_size=bs)
        rows[bs] = run_spectrum(cfg, threads=1).results[0]
    X, y = _digits(48)
    H = autograd_hessian(load(cfg).model, X, y, "cross-entropy", train=True)
    assert rows[None].lambda_max == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-10)
    assert abs(rows[16].lambda_max - rows[None].lambda_max) > 1e-3 * rows[None].lambda_max
    for bs, r in rows.items():
        dep = r.details["batch_dependent"]
        assert "BatchNorm" in dep["reason"] and dep["batches"] == (1 if bs is None else 3)
        assert any("depends on the batching" in n for n in r.details["trust_notes"])
    cfg = SpectrumConfig(model="mlp", model_args=args, data="digits", max_samples=48,
                         dtype="float64", top=1, bottom=0, exact=True, bn_mode="eval")
    assert "batch_dependent" not in run_spectrum(cfg, threads=1).results[0].details


def test_eps_only_coordinates_that_dominate_lambda_max_are_named_and_left_out(tmp_path):
    """An Adam state with v = 0 on the head's bias (P = eps = 1e-8 there) makes lambda_max of
    P^-1/2 H P^-1/2 a property of 10 untrained coordinates: the row names the tensor and its
    share, and ':trained' measures the principal block on the others (truth: dense H)."""
    from condlab.inputs import read_inputs as load

    args = {"widths": [4]}
    base = SpectrumConfig(model="mlp", model_args=args, data="digits", max_samples=32,
                          dtype="float64", top=1, bottom=0, exact=True)
    import copy

    model = load(base).model  # the weights condlab measures (the step below moves a copy)
    stepped = copy.deepcopy(model).float()
    opt = torch.optim.Adam(stepped.parameters(), lr=1e-3)
    X, y = _digits(32)
    torch.nn.functional.cross_entropy(stepped(X.float()), y).backward()
    opt.step()
    g = torch.Generator().manual_seed(0)
    names = [n for n, _ in model.named_parameters()]
    for n, p in stepped.named_parameters():
        v = opt.state[p]["exp_avg_sq"]
        v.copy_(torch.rand(v.shape, generator=g) * 1e-2 + 1e-3)
        if n == names[-1]:
            v.zero_()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    cfg = SpectrumConfig(model="mlp", model_args=args, data="digits", max_samples=32,
                         dtype="float64", top=1, bottom=0, exact=True, precond=("optimizer",),
                         optimizer_state=str(tmp_path / "opt.pt"))
    results = run_spectrum(cfg, threads=1).results
    row = next(r for r in results if r.setting == "optimizer")
    z = row.details["zero_state"]
    assert z["tensors"] == {names[-1]: 10} and z["top_share"] > 0.99
    assert z["without"] == "optimizer:trained"
    assert any("from a float32 optimizer state" in n and "6e-08" in n
               for n in row.details["trust_notes"])
    trained = next(r for r in results if r.setting == "optimizer:trained")
    assert trained.n_params == sum(p.numel() for p in model.parameters()) - 10

    H = autograd_hessian(model.double(), X, y, "cross-entropy")
    v = torch.cat([opt.state[p]["exp_avg_sq"].double().reshape(-1) for p in stepped.parameters()])
    P = (v / (1 - 0.999)).sqrt() + 1e-8
    A = H / P.sqrt()[:, None] / P.sqrt()[None, :]
    keep = v > 0
    full = float(torch.linalg.eigvalsh(A)[-1])
    block = float(torch.linalg.eigvalsh(A[keep][:, keep])[-1])
    assert row.lambda_max == pytest.approx(full, rel=1e-9)
    assert trained.lambda_max == pytest.approx(block, rel=1e-9)
    assert trained.nullity_lower_bound is None and "inertia" not in trained.details["noise"]
    assert block < 1e-3 * full
