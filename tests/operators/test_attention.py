"""Curvature products through ``nn.MultiheadAttention`` and ``F.scaled_dot_product_attention``:
the fused kernels (and MHA's inference fast path) have no forward-mode AD or double backward,
so products run them on the math backend. Against a dense float64 double-backward truth."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import autograd_hessian, autograd_jacobian
from torch import nn
from typer.testing import CliRunner

from condlab.operators.curvature import curvature_operator
from condlab.problem import Problem, differentiable_attention

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class MHA(nn.Module):
    """Tokens from features, one self-attention layer, mean-pooled head."""

    def __init__(self, causal: bool = True, batch_first: bool = True):
        super().__init__()
        self.emb = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)
        self.causal, self.batch_first = causal, batch_first

    def forward(self, x):  # x [N, T * 3]
        h = self.emb(x.reshape(x.shape[0], -1, 3))
        T = h.shape[1]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1) if self.causal else None
        if not self.batch_first:
            h = h.transpose(0, 1)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        if not self.batch_first:
            a = a.transpose(0, 1)
        return self.head(a.mean(1))


class SDPA(nn.Module):
    """Causal multi-head attention written with ``F.scaled_dot_product_attention``."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(3, 12)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.qkv(x.reshape(x.shape[0], -1, 3))
        q, k, v = (t.transpose(1, 2) for t in h.reshape(*h.shape[:2], 3, 2, 2).unbind(2))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [N, heads, T, 2]
        return self.head(o.transpose(1, 2).reshape(*h.shape[:2], 4).mean(1))


MODELS = {
    "mha-causal-batch-first": lambda: MHA(causal=True, batch_first=True),
    "mha-sequence-first": lambda: MHA(causal=True, batch_first=False),
    "mha-eval-fast-path": lambda: MHA(causal=False, batch_first=True),  # self-attention, no mask
    "sdpa-causal": SDPA,
}


def _case(name: str):
    torch.manual_seed(0)
    model = MODELS[name]().double().eval()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(6, 12, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    return model, X, y


def _truth(model, X, y) -> torch.Tensor:
    """Plain double backward, with the math kernel (the fused ones have no double backward)."""
    with differentiable_attention():
        return autograd_hessian(model, X, y, "cross-entropy")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", MODELS)
def test_hessian_through_attention_matches_double_backward(name, dtype, device):
    model, X, y = _case(name)
    H = _truth(model, X, y)
    prob = Problem(model, [(X, y)], "cross-entropy", dtype=dtype, device=device)
    for cache in (False, True):  # direct products, and the traced (linearized) ones
        A = curvature_operator(prob, "hessian", cache=cache).to_dense().double().cpu()
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(A, H, rtol=0, atol=tol * float(H.abs().max()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ggn_through_attention_matches_jacobian_truth(dtype, device):
    model, X, y = _case("mha-causal-batch-first")
    with differentiable_attention():
        out, J = autograd_jacobian(model, X)
    J = J.reshape(6, 3, -1)
    p = out.softmax(1)
    H_out = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / 6
    G = torch.einsum("ncp,ncd,ndq->pq", J, H_out, J)
    prob = Problem(model, [(X, y)], "cross-entropy", dtype=dtype, device=device)
    A = curvature_operator(prob, "ggn", cache=True).to_dense().double().cpu()
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(A, G, rtol=0, atol=tol * float(G.abs().max()))


@pytest.mark.parametrize("name", MODELS)
def test_the_math_kernel_computes_the_users_function(name):
    """The measured function is the model's: the math kernel's outputs equal the default ones,
    and the fast path / fused kernels are restored afterwards."""
    model, X, _ = _case(name)
    with torch.no_grad():
        default = model(X)
        with differentiable_attention():
            math = model(X)
    torch.testing.assert_close(math, default, rtol=1e-12, atol=1e-12)
    assert torch.backends.mha.get_fastpath_enabled()


def test_attention_model_from_the_command_line_in_float32(tmp_path, monkeypatch):
    (tmp_path / "attnmodel.py").write_text(textwrap.dedent(
        """
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Linear(4, 8)
                self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
                self.head = nn.Linear(8, 10)

            def forward(self, x):
                h = self.emb(x.reshape(x.shape[0], 16, 4))
                return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))

        def make():
            return Net()
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    from condlab.cli import app

    r = CliRunner().invoke(app, ["spectrum", "--model", "attnmodel:make", "--data", "digits",
                                 "--max-samples", "64", "--top", "1", "--bottom", "0",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert res["converged_top"] == [True] and np.isfinite(res["lambda_max"])
