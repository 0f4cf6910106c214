"""A tiny Hugging Face GPT-2 built from a local config (no download), its LM loss on token data
generated here, against a dense double-backward truth on a parameter subset."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import double_backward_ggn, double_backward_hessian
from typer.testing import CliRunner

from condlab.cli import app

transformers = pytest.importorskip("transformers")
runner = CliRunner()

CONFIG = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 100,
          "n_positions": 16, "bos_token_id": 0, "eos_token_id": 0}
LMDATA = textwrap.dedent(
    '''
    import torch


    def make():
        """3 sequences of 6 tokens; the targets are the next tokens."""
        ids = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    '''
)
PARAMS = ("transformer.ln_f.*", "transformer.h.0.ln_1.*")  # the products run through all layers


@pytest.fixture
def gpt2(tmp_path, monkeypatch):
    """A config file, seeded weights saved with save_pretrained, and the data factory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lmdata.py").write_text(LMDATA)
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    cfg = dict(CONFIG)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(5)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # non-trivial LayerNorms, so their curvature is not a special case
        for n, p in model.named_parameters():
            if "ln" in n:
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "tiny-gpt2")
    ids = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    return model.double().eval(), ids[:, :-1], ids[:, 1:]


def truth(model, ids, labels, curvature):
    params = [p for n, p in model.named_parameters() if n.startswith(("transformer.ln_f.", "transformer.h.0.ln_1."))]
    assert sum(p.numel() for p in params) == 128

    def loss(logits):
        return F.cross_entropy(logits.reshape(-1, 100), labels.reshape(-1))

    def logits():
        return model(input_ids=ids).logits

    if curvature == "hessian":
        return double_backward_hessian(lambda: loss(logits()), params)
    return double_backward_ggn(logits, loss, params)


@pytest.mark.parametrize(
    "curvature, model_args",
    [
        ("hessian", ["--model", "hf-config:tiny-gpt2"]),  # save_pretrained wrote its config.json
        ("ggn", ["--model", "hf:gpt2", "--model-config", "cfg.json"]),
    ],
)
def test_tiny_gpt2_matches_dense_truth(gpt2, curvature, model_args):
    model, ids, labels = gpt2
    params = [a for p in PARAMS for a in ("--params", p)]
    r = runner.invoke(app, [
        "spectrum", *model_args, "--weights", "tiny-gpt2", "--data", "lmdata:make", *params,
        "--loss", "sequence-cross-entropy", "--top", "3", "--bottom", "2", "--dtype", "float64",
        "--curvature", curvature, "--tol", "1e-8", "--format", "json",
    ])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    res = doc["results"][0]
    ev = np.linalg.eigvalsh(truth(model, ids, labels, curvature).numpy())
    scale = np.abs(ev).max()
    assert res["n_params"] == 128
    np.testing.assert_allclose(res["eigenvalues_top"], ev[::-1][:3], atol=1e-6 * scale, rtol=0)
    np.testing.assert_allclose(res["eigenvalues_bottom"], ev[:2], atol=1e-6 * scale, rtol=0)
    assert doc["loss"]["batch_weighting"] == "tokens" and doc["loss"]["count"] == 18


def test_hf_errors_are_one_line(gpt2):
    for args, needle in [
        (["--model", "hf:gpt2"], "--model-config"),
        (["--model", "hf-config:missing.json"], "does not exist"),
        (["--model", "hf-config:cfg.json", "--weights", "lmdata.py"], "'lmdata.py'"),
    ]:
        r = runner.invoke(app, ["spectrum", *args, "--data", "lmdata:make", "--top", "1", "--bottom", "0"])
        assert r.exit_code == 2, r.output
        assert needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
