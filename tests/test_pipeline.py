"""The pipeline end to end as a new user meets it: what it loads, what it prints, and the
one-call API on a model and DataLoader of the user's."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn
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
    import re

    env = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    short = runner.invoke(app, ["spectrum", "--help"], env=env)
    every = runner.invoke(app, ["spectrum", "--help-all"], env=env)
    assert short.exit_code == 0 and every.exit_code == 0

    def flags(text):
        return set(re.findall(r"│ (--[a-z][a-z0-9-]*)", text))

    assert len(flags(short.output)) <= 30 and 2 * len(flags(short.output)) < len(flags(every.output))
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
    model.save_pretrained(tmp_path / "tiny")  # a directory: config.json and model.safetensors
    r = runner.invoke(app, ["spectrum", "--model", "hf-config:tiny", "--weights", "ckpt.pt",
                            "--data", "tiedlm:data", "--precond", "optimizer", "--params",
                            "transformer.ln_f.*", "--top", "1", "--bottom", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    base, pre = json.loads(r.stdout)["results"]
    assert pre["setting"] == "optimizer" and pre["lambda_max"] != base["lambda_max"]
    # the save_pretrained folder as the weights: its safetensors leave the tied head out
    r = runner.invoke(app, ["spectrum", "--model", "hf-config:tiny", "--weights", "tiny", "--data",
                            "tiedlm:data", "--params", "transformer.ln_f.*", "--top", "1",
                            "--bottom", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["lambda_max"] == base["lambda_max"]


# -- the one-call API -------------------------------------------------------------------------
def _user_model_and_loader(batch_size=5):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(4)
    X = torch.randn(13, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (13,), generator=g)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return model, DataLoader(TensorDataset(X, y), batch_size=batch_size), X, y


def test_one_call_on_a_model_and_dataloader_matches_the_dense_hessian():
    """condlab.spectrum(model, loss, loader): the mean loss over the loader's unequal batches
    (5, 5, 3), its extreme eigenvalues against a double-backward Hessian."""
    from cases import autograd_hessian

    import condlab

    model, loader, X, y = _user_model_and_loader()
    before = [p.detach().clone() for p in model.parameters()]
    report = condlab.spectrum(model, nn.CrossEntropyLoss(), loader, top=3, bottom=2,
                              dtype="float64", exact=True)
    ev = torch.linalg.eigvalsh(autograd_hessian(model, X, y, "cross-entropy"))
    base = report["baseline"]
    torch.testing.assert_close(torch.tensor(base.eigenvalues_top, dtype=torch.float64), ev.flip(0)[:3], rtol=0,
                               atol=1e-10)
    torch.testing.assert_close(torch.tensor(base.eigenvalues_bottom, dtype=torch.float64), ev[:2], rtol=0, atol=1e-10)
    assert base.n_samples == 13
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # not modified
    frame = report.to_frame()
    assert list(frame.index) == ["baseline"] and frame.loc["baseline", "n_params"] == 31
    d = report.to_dict()
    assert d["results"][0]["eigenvalues_top"] == base.eigenvalues_top
    assert d["config"]["top"] == 3


def test_one_call_with_an_optimizer_measures_its_preconditioner():
    """precond=["optimizer"] with the user's Adam: P^-1/2 H P^-1/2 from its exp_avg_sq."""
    from cases import autograd_hessian

    import condlab

    model, loader, X, y = _user_model_and_loader(batch_size=13)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    report = condlab.spectrum(model, "cross-entropy", loader, top=2, bottom=2, dtype="float64",
                              exact=True, precond=["optimizer"], optimizer=opt)
    H = autograd_hessian(model, X, y, "cross-entropy")
    st = opt.state_dict()["state"]
    P = torch.cat([(st[i]["exp_avg_sq"] / (1 - 0.999 ** float(st[i]["step"]))).sqrt().reshape(-1)
                   + 1e-8 for i in sorted(st)])
    D = P.rsqrt()
    ev = torch.linalg.eigvalsh(D[:, None] * H * D[None, :])
    torch.testing.assert_close(torch.tensor(report["optimizer"].eigenvalues_top, dtype=torch.float64), ev.flip(0)[:2],
                               rtol=1e-9, atol=0)
    assert report["optimizer"].stability["lr"] == 1e-2  # from the optimizer's param_groups


def test_at_most_three_notes_the_most_pressing_first():
    from condlab.report.records import SpectrumResult
    from condlab.report.tables import key_notes

    def row(name, **kw):
        return SpectrumResult(setting=name, curvature="hessian", preconditioner=kw.pop("pre", None),
                              normalization=None, n_params=3, n_samples=4, **kw)

    rows = [row("a", converged_top=[False]), row("b", condition_resolved=False),
            row("c", definiteness="indefinite"), row("d", pre="adam", damping=0.1)]
    lines = key_notes(rows)
    assert len(lines) == 3 and lines[0].startswith("not converged (a)")
    assert key_notes([row("ok", converged_top=[True], definiteness="positive definite")]) == []


def test_the_options_flow_one_way_from_the_cli_to_the_estimates():
    """Every condlab function that receives the run's options (the SpectrumConfig, or the
    estimator settings taken from it), in call order, one entry per visit of a module: each
    stage once, in pipeline order, then per setting what is proven about it and its estimate.
    The one step back is explained in condlab.settings: a normalized setting is a new Problem,
    built by condlab.problem.make_problem. The records and the report never see the options
    (they get Settings and estimates)."""
    import sys

    from condlab.config import SpectrumConfig
    from condlab.measure import EstimatorSettings

    seq = []

    def profile(frame, event, arg):
        code = frame.f_code
        mod = frame.f_globals.get("__name__", "")
        if event != "call" or not mod.startswith("condlab") or code.co_name.startswith(("<", "__")):
            return
        if code.co_varnames[:1] == ("self",) or mod == "condlab.optionfield":
            return  # the options' own methods and checks
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        if any(isinstance(frame.f_locals.get(n), EstimatorSettings) for n in names):
            if not seq or seq[-1] != mod:
                seq.append(mod)

    assert issubclass(SpectrumConfig, EstimatorSettings)
    sys.setprofile(profile)
    try:
        r = runner.invoke(app, ["spectrum", "--model", "mlp", "--data", "iris", "--precond", "adam",
                                "--norm", "input", "--top", "2", "--bottom", "1"])
    finally:
        sys.setprofile(None)
    assert r.exit_code == 0, r.output
    seq = [m.removeprefix("condlab.") for m in seq]
    loop = seq.index("consistency")  # then, per setting: what is proven, the estimate
    assert seq[:loop] == ["config", "pipeline", "inputs", "problem", "settings", "problem",
                          "settings"]
    assert set(seq[loop:]) == {"consistency", "measure"}
    assert seq[loop:] == ["consistency", "measure"] * 3  # baseline, adam, input


def test_one_call_takes_a_loss_module_with_its_options_and_refuses_another_reduction():
    import condlab

    model, loader, X, y = _user_model_and_loader(batch_size=13)
    kw = dict(top=2, bottom=1, dtype="float64", exact=True)
    module = condlab.spectrum(model, nn.CrossEntropyLoss(label_smoothing=0.2), loader, **kw)
    named = condlab.spectrum(model, "cross-entropy", loader, label_smoothing=0.2, **kw)
    plain = condlab.spectrum(model, "cross-entropy", loader, **kw)
    assert module["baseline"].eigenvalues_top == named["baseline"].eigenvalues_top
    assert module["baseline"].eigenvalues_top != plain["baseline"].eigenvalues_top
    for bad in (nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss(weight=torch.ones(3))):
        with pytest.raises(condlab.UsageError, match="not the mean loss"):
            condlab.spectrum(model, bad, loader, **kw)
