"""What reaches the operator is what the user gave: labels as given, frozen parameters left out,
the file's precision, every option honoured by every setting. Each against a dense float64 truth
by plain autograd double backward (``tests/cases.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cases import autograd_hessian, autograd_jacobian
from torch import nn
from typer.testing import CliRunner

from condlab.config import SpectrumConfig
from condlab.errors import CondlabError, UsageError
from condlab.inputs import Inputs, read_inputs, read_optimizer_state
from condlab.load.data import load_dataset
from condlab.operators.curvature import curvature_operator
from condlab.pipeline import run_spectrum
from condlab.problem import Problem, couples_samples


def _eigs(H: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh((H + H.T) / 2).flip(0)  # descending


def _assert_spectrum(result, H: torch.Tensor, rtol: float = 1e-9) -> None:
    """The reported top and bottom eigenvalues are those of the dense truth ``H``."""
    ev = _eigs(H)
    scale = float(ev.abs().max())
    top, bottom = result.eigenvalues_top, result.eigenvalues_bottom
    np.testing.assert_allclose(top, ev[: len(top)].numpy(), rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(bottom, ev.flip(0)[: len(bottom)].numpy(), rtol=0, atol=rtol * scale)


def _spectrum(model, dataset, loss, **kw):
    cfg = SpectrumConfig(model="test", dtype="float64", exact=True, top=3, bottom=3, **kw)
    state = read_optimizer_state(cfg.optimizer_state) if cfg.optimizer_state else None
    return run_spectrum(cfg, inputs=Inputs(model, dataset, loss, state, "test model")).results


def _mlp(d_in=3, d_out=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 5), nn.Tanh(), nn.Linear(5, d_out)).double()


# -- labels are used as given ------------------------------------------------------------------
def test_one_based_labels_are_not_renumbered(tmp_path):
    g = np.random.default_rng(0)
    X, y = g.normal(size=(16, 3)), np.array([1, 2, 3, 1] * 4)  # class 0 absent
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.y.tolist() == y.tolist() and ds.num_classes == 4
    model = _mlp(d_out=4)
    (res,) = _spectrum(model, ds, "cross-entropy")
    _assert_spectrum(res, autograd_hessian(model, torch.as_tensor(X), torch.as_tensor(y), "cross-entropy"))


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_labels_outside_the_models_classes_are_an_error(tmp_path, loss):
    np.savez(tmp_path / "d.npz", X=np.zeros((6, 3)), y=np.array([1, 2, 3, 3, 5, 1]))
    ds = load_dataset(tmp_path / "d.npz")
    with pytest.raises(CondlabError) as info:
        _spectrum(_mlp(d_out=3), ds, loss)
    msg = str(info.value)
    assert "3, 5" in msg and "3 classes" in msg and "0..2" in msg and "\n" not in msg


def test_negative_labels_are_named(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((5, 2)), y=np.array([0, -1, 2, -3, 1]))
    with pytest.raises(UsageError, match=r"labels -3, -1 are negative"):
        load_dataset(tmp_path / "d.npz", task="classification")


# -- frozen parameters are not part of the operator --------------------------------------------
def _frozen_first_layer():
    model = _mlp(d_out=3)
    for p in model[0].parameters():
        p.requires_grad_(False)
    return model


def _adam_state(model, X, y, trainable_only: bool) -> dict:
    params = [p for p in model.parameters() if p.requires_grad or not trainable_only]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return opt.state_dict()


@pytest.mark.parametrize("trainable_only", [True, False])
def test_frozen_parameters_are_left_out_and_optimizer_state_loads(tmp_path, trainable_only):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(12, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    model = _frozen_first_layer()
    state = _adam_state(model, X, y, trainable_only)
    torch.save(state, tmp_path / "opt.pt")
    np.savez(tmp_path / "d.npz", X=X.numpy(), y=y.numpy())
    ds = load_dataset(tmp_path / "d.npz")
    base, pre = _spectrum(model, ds, "cross-entropy", precond=("optimizer",),
                          optimizer_state=str(tmp_path / "opt.pt"))
    H = autograd_hessian(model, X, y, "cross-entropy")  # the head only: 5 * 3 + 3
    assert H.shape == (18, 18) and base.n_params == 18 and pre.n_params == 18
    _assert_spectrum(base, H)
    # P = sqrt(v / (1 - beta2^t)) + eps for the head's parameters, in order
    st = state["state"]
    head = [st[k] for k in sorted(st) if st[k]["exp_avg_sq"].shape in ((3, 5), (3,))]
    P = torch.cat([(s["exp_avg_sq"] / (1 - 0.999 ** float(s["step"]))).sqrt().reshape(-1) + 1e-8
                   for s in head])
    D = P.rsqrt()
    _assert_spectrum(pre, D[:, None] * H * D[None, :])


def test_all_frozen_is_a_usage_error():
    model = _mlp()
    model.requires_grad_(False)
    with pytest.raises(UsageError, match="frozen"):
        Problem(model, [(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1]))],
                "cross-entropy", dtype=torch.float64)


# -- the file's precision ----------------------------------------------------------------------
def test_float64_run_sees_the_files_float64_values(tmp_path):
    g = np.random.default_rng(2)
    X = 1e4 + 1e-3 * g.normal(size=(20, 2))  # float32 rounds the deviations away (ulp ~ 1e-3)
    y = 1e4 + 1e-3 * g.normal(size=20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.X.dtype == torch.float64 and np.array_equal(ds.X.numpy(), X)
    assert ds.y.dtype == torch.float64 and np.array_equal(ds.y.numpy(), y)
    torch.manual_seed(0)
    model = nn.Linear(2, 1).double()
    (res,) = _spectrum(model, ds, "mse")
    _assert_spectrum(res, autograd_hessian(model, torch.as_tensor(X), torch.as_tensor(y), "mse"), 1e-7)
    # the smallest eigenvalue is the spread of the deviations (~1e-6), not float32 noise
    truth = _eigs(autograd_hessian(model, torch.as_tensor(X), torch.as_tensor(y), "mse"))
    assert res.eigenvalues_bottom[0] == pytest.approx(float(truth[-1]), rel=1e-4)


# -- every setting honours every option --------------------------------------------------------
def test_per_layer_rows_include_weight_decay(tmp_path):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(10, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 4, (10,), generator=g)
    np.savez(tmp_path / "d.npz", X=X.numpy(), y=y.numpy())
    model = _mlp()
    results = _spectrum(model, load_dataset(tmp_path / "d.npz"), "cross-entropy",
                        per_layer=True, weight_decay=0.25, decay="coupled")
    rows = {r.setting: r for r in results}
    _assert_spectrum(rows["baseline"], autograd_hessian(model, X, y, "cross-entropy") + 0.25 * torch.eye(44))
    for name, n in [("0.weight", 15), ("2.bias", 4)]:
        H = autograd_hessian(model, X, y, "cross-entropy", [name]) + 0.25 * torch.eye(n)
        _assert_spectrum(rows[f"layer:{name}"], H)


@pytest.mark.parametrize("kind", ["batch", "layer"])
def test_params_selection_carries_into_normalized_settings(tmp_path, kind):
    from condlab.normalization import apply_normalization

    g = torch.Generator().manual_seed(4)
    X = torch.randn(24, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 4, (24,), generator=g)
    np.savez(tmp_path / "d.npz", X=X.numpy(), y=y.numpy())
    model = _mlp()
    base, norm = _spectrum(model, load_dataset(tmp_path / "d.npz"), "cross-entropy",
                           params=("2.*",), norm=(kind,))
    assert base.n_params == norm.n_params == 24  # the head: 5 * 4 + 4, in both settings
    new = apply_normalization(model, X, kind, dtype=torch.float64).model  # head is now '3.*'
    _assert_spectrum(norm, autograd_hessian(new, X, y, "cross-entropy", ["3.weight", "3.bias"]))


def test_batchnorm_without_running_statistics_couples_samples(tmp_path):
    from condlab.operators.diagonal import exact_ggn_diagonal

    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                          nn.Tanh(), nn.Linear(4, 3)).double()
    g = torch.Generator().manual_seed(5)
    X = torch.randn(8, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    assert couples_samples(model, "eval", "eval")
    prob = Problem(model, [(X, y)], "cross-entropy", dtype=torch.float64)
    assert prob.modes["batchnorm"] == "batch"
    # GGN diagonal: J^T H_out J with J of the whole batch (the samples interact through BN)
    model.eval()
    out, J = autograd_jacobian(model, X)
    J = J.reshape(8, 3, -1)
    p = out.softmax(1)
    H_out = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / 8
    truth = torch.einsum("ncp,ncd,ndp->p", J, H_out, J)
    torch.testing.assert_close(exact_ggn_diagonal(prob), truth, rtol=1e-9, atol=1e-14)


# -- GGN with mse on class labels --------------------------------------------------------------
def test_ggn_mse_on_class_labels_through_the_traced_products():
    g = torch.Generator().manual_seed(6)
    X = torch.randn(10, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 4, (10,), generator=g)
    model = _mlp()
    prob = Problem(model, [(X, y)], "mse", dtype=torch.float64)
    G = curvature_operator(prob, "ggn", cache=True).to_dense()  # linearized (traced) products
    out, J = autograd_jacobian(model, X)
    torch.testing.assert_close(G, J.T @ J * (2 / out.numel()), rtol=1e-9, atol=1e-13)


# -- --task ------------------------------------------------------------------------------------
def test_task_override_makes_many_integer_labels_classes(tmp_path):
    g = np.random.default_rng(7)
    X, y = g.normal(size=(60, 3)), np.arange(60) % 30  # 30 classes: guessed regression
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert load_dataset(tmp_path / "d.npz").task == "regression"
    cfg = SpectrumConfig(model="linear", data=str(tmp_path / "d.npz"), task="classification",
                         dtype="float64", exact=True, top=3, bottom=3)
    loaded = read_inputs(cfg)
    assert loaded.dataset.num_classes == 30 and loaded.loss == "cross-entropy"
    (res,) = run_spectrum(cfg, inputs=loaded).results
    H = autograd_hessian(loaded.model, torch.as_tensor(X), torch.as_tensor(y), "cross-entropy")
    _assert_spectrum(res, H)
    # and from the command line
    from condlab.cli import app

    r = CliRunner().invoke(app, ["spectrum", "--model", "linear", "--data", str(tmp_path / "d.npz"),
                                 "--task", "classification", "--top", "1", "--bottom", "0",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["results"][0]["n_params"] == 3 * 30 + 30 and doc["config"]["task"] == "classification"
    bad = CliRunner().invoke(app, ["spectrum", "--model", "linear", "--data", "iris", "--task", "regression"])
    assert bad.exit_code == 2 and "fixed task" in bad.output


def test_the_dense_truth_agrees_with_finite_differences():
    """``autograd_hessian`` against central differences of the autograd gradient."""
    g = torch.Generator().manual_seed(8)
    X = torch.randn(9, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 4, (9,), generator=g)
    model = _mlp()
    H = autograd_hessian(model, X, y, "cross-entropy")
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()

    def grad_at(t):
        torch.nn.utils.vector_to_parameters(t, model.parameters())
        model.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    h = 1e-5
    fd = torch.stack([(grad_at(theta + h * e) - grad_at(theta - h * e)) / (2 * h)
                      for e in torch.eye(len(theta), dtype=torch.float64)])
    torch.testing.assert_close(H, fd, rtol=1e-6, atol=1e-8)


def test_targets_all_ignored_is_a_usage_error_but_an_empty_rank_is_not():
    """A loss whose every target is the ignore index has nothing to measure; a rank of a
    distributed run that holds no batches is not that case (its count is the other ranks')."""
    model = nn.Linear(3, 4).double()
    X = torch.randn(5, 3, dtype=torch.float64)
    ignored = torch.full((5,), -100)
    with pytest.raises(UsageError, match="every target equals the ignore index -100"):
        Problem(model, [(X, ignored)], "cross-entropy", dtype=torch.float64)
    p = Problem(model, [], "cross-entropy", dtype=torch.float64, n_total=5, count_total=5)
    assert p.n_count == 5 and p.weights == []
    p = Problem(model, [], "mse", dtype=torch.float64, n_total=5)  # a sample mean: count = n
    assert p.n_count == 5 and p.weights == []
