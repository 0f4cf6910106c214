"""The pipeline end to end as a new user meets it: what it loads, what it prints, and the
one-call API on a model and DataLoader of the user's."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from condlab.cli import app

runner = CliRunner()

TIED = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class TinyLM(nn.Module):
        """Token embedding and an output head sharing one weight, as GPT-2's lm_head does."""

        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(11, 4)
            self.lm_head = nn.Linear(4, 11, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, input_ids):
            return self.lm_head(torch.tanh(self.wte(input_ids)))


    def make():
        return TinyLM().double()


    def data():
        ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    '''
)


@pytest.fixture
def tied(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tiedlm.py").write_text(TIED)
    import importlib
    import sys

    sys.modules.pop("tiedlm", None)
    mod = importlib.import_module("tiedlm")
    yield mod
    sys.modules.pop("tiedlm", None)


def test_tied_weights_saved_once_load_through_a_factory(tied, tmp_path):
    """save_pretrained and safetensors keep one name per shared tensor: lm_head.weight is
    absent from the file and filled from the embedding it is tied to."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = tied.make()
    state = {k: v.float() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))
    r = runner.invoke(app, ["spectrum", "--model", "tiedlm:make", "--weights", "model.safetensors",
                            "--data", "tiedlm:data", "--top", "1", "--bottom", "0",
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["n_params"] == 44  # the shared weight once


def test_a_data_directory_is_named_as_one(tmp_path):
    (tmp_path / "adir").mkdir()
    r = runner.invoke(app, ["spectrum", "--model", "linear", "--data", str(tmp_path / "adir")])
    assert r.exit_code == 2 and "is a directory" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_root_help_does_not_call_train_built_in_only():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "Train a built-in model" not in r.output
    assert "Train a model" in r.output


def test_spectrum_help_is_short_and_help_all_lists_every_option():
    short = runner.invoke(app, ["spectrum", "--help"], env={"COLUMNS": "80"})
    every = runner.invoke(app, ["spectrum", "--help-all"], env={"COLUMNS": "80"})
    assert short.exit_code == 0 and every.exit_code == 0
    assert len(short.output.splitlines()) < 170 < len(every.output.splitlines())
    assert "--krylov-dtype" not in short.output and "--krylov-dtype" in every.output


@pytest.fixture(scope="module")
def adam_ckpt(tmp_path_factory):
    """An iris MLP trained with Adam by `condlab train`: a checkpoint with optimizer state."""
    d = tmp_path_factory.mktemp("adam")
    (d / "t.yaml").write_text("model: {name: mlp, widths: [6], activation: tanh}\ndata: iris\n"
                              "optimizer: {name: adam, lr: 0.01}\nsteps: 30\n")
    r = runner.invoke(app, ["train", str(d / "t.yaml"), "--out", str(d / "c.pt")])
    assert r.exit_code == 0, r.output
    return d / "c.pt"


def _table(*args, columns=80):
    r = runner.invoke(app, ["spectrum", *map(str, args)], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    return r.stdout


def test_default_table_fits_80_columns_and_says_what_matters(adam_ckpt):
    out = _table(adam_ckpt, "--dtype", "float64", "--top", "2", "--bottom", "2", "--precond",
                 "optimizer", "--precond", "gn", "--norm", "input")
    lines = out.strip().splitlines()
    rows = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert "…" not in out and max(len(line) for line in rows) <= 80
    header = next(line for line in lines if "setting" in line)
    for column in ("κ", "stab.", "λ_max", "λ_min", "ok"):
        assert column in header
    table_end = next(i for i, line in enumerate(lines) if line.startswith("└"))
    assert len(lines) - table_end - 1 <= 3  # at most three notes
    assert "Sylvester" not in out and "columns:" not in out


def test_sylvester_note_only_with_a_preconditioner(adam_ckpt):
    """The note on inertia under a diagonal P is about preconditioned rows: without --precond
    an indefinite Hessian gets no such paragraph, even with --explain."""
    plain = _table(adam_ckpt, "--dtype", "float64", "--top", "2", "--bottom", "2", "--explain",
                   columns=200)
    assert "indefinite" in plain and "Sylvester" not in plain
    pre = _table(adam_ckpt, "--dtype", "float64", "--top", "2", "--bottom", "2", "--explain",
                 "--precond", "gn", columns=200)
    assert "Sylvester" in pre


def test_explain_prints_legend_and_definitions(adam_ckpt):
    out = _table(adam_ckpt, "--dtype", "float64", "--top", "2", "--bottom", "2", "--explain",
                 columns=80)
    assert "columns: κ = condition number" in out and "kappa, baseline:" in out
    assert "…" not in out  # wider than the terminal: it wraps, never truncates


def test_demo_prints_at_most_15_lines():
    r = runner.invoke(app, ["demo", "--steps", "30"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) <= 15, r.stdout


def test_ggn_undefined_kappa_says_the_band_includes_the_residual_error():
    """Every bottom Ritz value within the null band: the message names the band as the noise
    threshold plus the estimate's residual error, not the threshold alone."""
    from condlab.estimators.condition import condition_number

    c = condition_number([1.0], [1e-9, 2e-9], dtype=torch.float64, errors_top=[0.0],
                         errors_bottom=[1e-8, 1e-8], lambda_max=1.0, lambda_min=1e-9)
    assert c.value is None and "undefined" in c.definition
    assert "residual error" in c.definition and "1e-08" in c.definition


@pytest.mark.slow
def test_hf_config_with_weights_finds_the_optimizer_entry(tmp_path, monkeypatch):
    """--model hf-config:CFG --weights ckpt.pt --precond optimizer reads the 'optimizer' entry
    of the weights file, as `track` does with the same file."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"n_layer": 1, "n_embd": 8, "n_head": 2, "vocab_size": 11, "n_positions": 8,
           "bos_token_id": 0, "eos_token_id": 0}
    (tmp_path / "cfg.json").write_text(json.dumps({"model_type": "gpt2", **cfg}))
    (tmp_path / "tiedlm.py").write_text(TIED)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model("gpt2", **cfg), attn_implementation="eager")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.pt")
    r = runner.invoke(app, ["spectrum", "--model", "hf-config:cfg.json", "--weights", "ckpt.pt",
                            "--data", "tiedlm:data", "--precond", "optimizer", "--params",
                            "transformer.ln_f.*", "--top", "1", "--bottom", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    base, pre = json.loads(r.stdout)["results"]
    assert pre["setting"] == "optimizer" and pre["lambda_max"] != base["lambda_max"]
