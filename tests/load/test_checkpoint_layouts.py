"""The checkpoint layouts of common training scripts, Lightning and safetensors, end to end:
the measured spectrum (and the optimizer preconditioner) equals the dense float64 truth of the
model with those weights."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from cases import autograd_hessian
from torch import nn
from typer.testing import CliRunner

from condlab.cli import app
from condlab.errors import UsageError
from condlab.load.checkpoint import load_checkpoint, match_prefix

MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        torch.manual_seed(123)  # weights differ from the trained ones: loading must matter
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    """
)


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A model module on sys.path, data, and the trained model with its Adam state."""
    (tmp_path / "ckmodel.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    np.savez(tmp_path / "d.npz", X=X.numpy(), y=y.numpy())
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, opt.state_dict(), X, y


def _run(path, *extra):
    r = CliRunner().invoke(app, ["spectrum", "--model", "ckmodel:make", "--weights", str(path),
                                 "--data", "d.npz", "--dtype", "float64", "--exact", "--top", "3",
                                 "--bottom", "2", "--format", "json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _check(doc, model, X, y, state=None):
    H = autograd_hessian(model, X, y, "cross-entropy")
    truth = torch.linalg.eigvalsh(H).flip(0)
    res = doc["results"]
    np.testing.assert_allclose(res[0]["eigenvalues_top"], truth[:3].numpy(), rtol=0, atol=1e-10 * float(truth[0]))
    if state is not None:  # --precond optimizer: P = sqrt(v / (1 - beta2^t)) + eps, in order
        st = state["state"]
        P = torch.cat([(st[i]["exp_avg_sq"] / (1 - 0.999 ** float(st[i]["step"]))).sqrt().reshape(-1) + 1e-8
                       for i in sorted(st)])
        D = P.rsqrt()
        pre = torch.linalg.eigvalsh(D[:, None] * H * D[None, :]).flip(0)
        np.testing.assert_allclose(res[1]["eigenvalues_top"], pre[:3].numpy(), rtol=0, atol=1e-10 * float(pre[0]))


@pytest.mark.parametrize(
    "wkey,okey", [("model", "optimizer"), ("model_state_dict", "optimizer_state_dict"),
                  ("state_dict", "optimizer")],
)
def test_training_script_layouts_with_their_optimizer_state(trained, tmp_path, wkey, okey):
    model, state, X, y = trained
    torch.save({wkey: model.state_dict(), okey: state, "epoch": 4}, tmp_path / "ckpt.pt")
    doc = _run(tmp_path / "ckpt.pt", "--precond", "optimizer")
    assert f"weights from '{wkey}'" in doc["source"] and f"optimizer state from '{okey}'" in doc["source"]
    _check(doc, model, X, y, state)


def test_lightning_checkpoint_prefix_detected_or_given(trained, tmp_path):
    model, state, X, y = trained
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd["loss_fn.pos_weight"] = torch.ones(3)  # another module of the LightningModule
    torch.save({"state_dict": sd, "optimizer_states": [state], "epoch": 4, "global_step": 4},
               tmp_path / "lightning.ckpt")
    auto = _run(tmp_path / "lightning.ckpt", "--precond", "optimizer")
    assert "key prefix 'model.' detected and stripped, 1 other key(s) ignored" in auto["source"]
    assert "optimizer state from 'optimizer_states[0]'" in auto["source"]
    _check(auto, model, X, y, state)
    given = _run(tmp_path / "lightning.ckpt", "--strip-prefix", "model.")
    assert "key prefix 'model.' stripped" in given["source"]
    _check(given, model, X, y)


def test_safetensors_weights(trained, tmp_path):
    from safetensors.torch import save_file

    model, _, X, y = trained
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    doc = _run(tmp_path / "w.safetensors")
    assert "weights from 'safetensors'" in doc["source"]
    _check(doc, model, X, y)


def test_ambiguous_prefixes_and_bad_prefix_are_one_line_errors(trained, tmp_path):
    model, *_ = trained
    sd = {f"{p}.{k}": v for p in ("model", "ema") for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match="several key prefixes.*--strip-prefix"):
        match_prefix(sd, model)
    kept, note = match_prefix(sd, model, "ema.")
    assert set(kept) == set(model.state_dict()) and "ignored" in note
    with pytest.raises(UsageError, match="matches no key"):
        match_prefix(sd, model, "net.")
    torch.save({"state_dict": sd}, tmp_path / "two.pt")
    r = CliRunner().invoke(app, ["spectrum", "--model", "ckmodel:make", "--weights",
                                 str(tmp_path / "two.pt"), "--data", "d.npz"])
    assert r.exit_code == 2 and "several key prefixes" in r.output and "Traceback" not in r.output


def test_layout_files_load_weights_only(trained, tmp_path, monkeypatch):
    model, state, *_ = trained
    torch.save({"model": model.state_dict(), "optimizer": state}, tmp_path / "ckpt.pt")
    calls = []
    real = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert calls == [True] and ckpt["keys"] == {"weights": "model", "optimizer": "optimizer"}
