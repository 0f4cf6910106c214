"""Tiny float64 problems shared by the operator tests: cases as data, built on demand."""

from __future__ import annotations

import torch
from torch import nn


class ResidualLN(nn.Module):
    """A custom module: linear -> residual tanh block -> LayerNorm -> linear head."""

    def __init__(self, d_in=3, d=4, d_out=3):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.block = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, d_out)

    def forward(self, x):
        h = self.inp(x)
        h = h + torch.tanh(self.block(h))
        return self.head(self.norm(h))


def train_and_checkpoint(tmp, model, opt, loss, X, y, tracker, *, steps: int, every: int,
                         model_yaml: str = "widths: [8]\nactivation: tanh\n") -> None:
    """A plain PyTorch loop on the full batch ``(X, y)``: ``steps`` optimizer steps with the
    ``tracker`` hook after each, a checkpoint ``{"model", "optimizer", "step"}`` every ``every``
    steps in the folder ``tmp`` (``ckpt_0050.pt``), and the data (``data.npz``) and model config
    (``model.yaml``) that ``condlab track`` reads back."""
    import numpy as np

    for step in range(1, steps + 1):
        opt.zero_grad()
        loss(model(X), y).backward()
        opt.step()
        tracker.step(opt)
        if step % every == 0:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                       tmp / f"ckpt_{step:04d}.pt")
    np.savez(tmp / "data.npz", X=X.numpy(), y=y.numpy())
    (tmp / "model.yaml").write_text(model_yaml)


def spectral_matrix(eigenvalues, seed=0, dtype=torch.float64) -> torch.Tensor:
    """A matrix with a prescribed spectrum: ``Q diag(eigenvalues) Q^T`` with a seeded random
    orthogonal ``Q``, built in float64 and cast to ``dtype``. Repeated, zero and negative
    eigenvalues make null spaces, multiplicities and indefiniteness on demand."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=gen, dtype=torch.float64))
    return ((Q * lam) @ Q.T).to(dtype)


def _linear():
    return nn.Linear(3, 2)


def _mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))


def _cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 4, 4)),
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def _bn():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3))


# name -> (model factory, input dim, loss, number of outputs, extra Problem kwargs)
CASES = {
    "linear-mse": (_linear, 3, "mse", 2, {}),
    "mlp-ce": (_mlp, 3, "cross-entropy", 3, {}),
    "mlp-mse": (_mlp, 3, "mse", 3, {}),
    "residual-layernorm-ce": (ResidualLN, 3, "cross-entropy", 3, {}),
    "cnn-ce": (_cnn, 16, "cross-entropy", 3, {}),
    "batchnorm-eval-ce": (_bn, 3, "cross-entropy", 3, {"bn_mode": "eval"}),
    "batchnorm-batch-ce": (_bn, 3, "cross-entropy", 3, {"bn_mode": "batch"}),
}


def make_case(name: str, n: int = 9, seed: int = 0):
    """Model (float64, random weights and BN statistics), data X [n, d], targets y."""
    factory, d_in, loss, d_out, kwargs = CASES[name]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = factory().double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
    X = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    if loss == "cross-entropy":
        y = torch.randint(0, d_out, (n,), generator=g)
    else:
        y = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return model, X, y, loss, kwargs


def mean_loss(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The project's two losses written out independently: mean cross-entropy, mean squared error
    over all output elements (integer labels against [N, C] outputs one-hot encoded)."""
    if loss == "cross-entropy":
        return torch.nn.functional.cross_entropy(out, y)
    if not y.is_floating_point():
        y = torch.nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
    return ((out - y.reshape(out.shape)) ** 2).mean()


def autograd_hessian(model: nn.Module, X, y, loss: str, names=None, *, train: bool = False):
    """Dense float64 Hessian of the mean loss over the parameters ``names`` (default: those with
    ``requires_grad``), by plain autograd double backward, one backward per row.

    ``train``: run the model in train mode (BatchNorm on batch statistics) on a copy whose
    running statistics are not updated. Independent of condlab's operators and of torch.func's
    transforms (``functional_call`` only swaps the parameters in).
    """
    import copy

    from torch.func import functional_call

    model = copy.deepcopy(model).double()
    if train:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
    else:
        model.eval()
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if names is None else list(names)
    shapes = [named[n].shape for n in names]
    theta = torch.cat([named[n].detach().reshape(-1) for n in names]).requires_grad_(True)
    X = X.double() if X.is_floating_point() else X
    y = y.double() if y.is_floating_point() else y

    def f(theta):
        parts = torch.split(theta, [int(torch.Size(s).numel()) for s in shapes])
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
        return mean_loss(functional_call(model, params, (X,), strict=False), y, loss)

    g = torch.autograd.grad(f(theta), theta, create_graph=True)[0]
    rows = [torch.autograd.grad(g[i], theta, retain_graph=True)[0] for i in range(theta.numel())]
    return torch.stack(rows)


def autograd_jacobian(model: nn.Module, X) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs ``f(X)`` and their Jacobian ``[N * C, P]`` in the parameters (all of them, in
    ``model.parameters()`` order), one plain backward per output element."""
    params = list(model.parameters())
    out = model(X)
    rows = [torch.autograd.grad(out.reshape(-1)[i], params, retain_graph=True)
            for i in range(out.numel())]
    return out.detach(), torch.stack([torch.cat([t.reshape(-1) for t in r]) for r in rows])


# -- dense truths by plain autograd (one backward per row), independent of condlab's operators --
def _flat_grad(value, params, create_graph=False):
    gs = torch.autograd.grad(value, params, create_graph=create_graph, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, params)])


def double_backward_hessian(loss, params):
    """``d^2 loss() / d params^2 [P, P]``: the gradient with a graph, then one backward per row."""
    g = _flat_grad(loss(), params, create_graph=True)
    return torch.stack([_flat_grad(g[i], params) if g[i].requires_grad else torch.zeros_like(g)
                        for i in range(g.numel())])


def double_backward_ggn(outputs, loss_of_outputs, params):
    """``J^T H_out J``: ``J`` of ``outputs()`` w.r.t. ``params`` row by row, ``H_out`` the
    double-backward Hessian of ``loss_of_outputs(out)`` in the outputs."""
    out = outputs()
    flat = out.reshape(-1)
    J = torch.stack([_flat_grad(flat[i], params) for i in range(flat.numel())])  # [M, P]
    o = out.detach().clone().requires_grad_(True)
    H_out = double_backward_hessian(lambda: loss_of_outputs(o), [o])  # [M, M]
    return J.T @ H_out @ J


def finite_difference_column(loss, params, j, h=1e-5):
    """Column ``j`` of the Hessian by central differences of the gradient."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def grad_at(x):
        with torch.no_grad():
            start = 0
            for p in params:
                p.copy_(x[start : start + p.numel()].reshape(p.shape))
                start += p.numel()
        return _flat_grad(loss(), params)

    e = torch.zeros_like(flat)
    e[j] = h
    col = (grad_at(flat + e) - grad_at(flat - e)) / (2 * h)
    grad_at(flat)  # restore
    return col


def own_model_section(page: str = "docs/own-models.md") -> str:
    """The recipes for a user's own model: docs/own-models.md, or the README's "Your own
    model" section (``page="README.md"``)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / page).read_text(encoding="utf-8")
    if page == "README.md":
        return re.search(r"\n## Your own model\n(.*?)\n## ", text, flags=re.S).group(1)
    return text


def own_model_files(page: str = "docs/own-models.md") -> dict[str, str]:
    """``{file name: code}`` of the recipe files (```python file=NAME blocks) of ``page``."""
    import re

    return dict(re.findall(r"```python file=(\S+)\n(.*?)```", own_model_section(page),
                           flags=re.S))


def interrupt_sweep(monkeypatch, at: int = 3):
    """Make the checkpoint sweep die (KeyboardInterrupt) at its ``at``-th checkpoint; returns a
    callable that puts the real ``Sweep.measure`` back."""
    import condlab.tracking.sweep as sweep

    real, calls = sweep.Sweep.measure, []

    def dying(self, ckpt, starts, on_progress=None):
        calls.append(ckpt.step)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(self, ckpt, starts, on_progress)

    monkeypatch.setattr(sweep.Sweep, "measure", dying)
    return lambda: monkeypatch.setattr(sweep.Sweep, "measure", real)


def script_module(name: str):
    """``scripts/<name>.py`` as a module, for the script tests' fixtures (a generator: it yields
    the module and then takes ``scripts/``, which the script may have put on ``sys.path``, off
    it again)."""
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    if str(scripts) in sys.path:
        sys.path.remove(str(scripts))
