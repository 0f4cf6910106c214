"""``condlab train`` with every loss (sequence cross-entropy with padding, bce, label smoothing, a
user's ``package.module:fn``) and data from the user's code (dict samples, a DataLoader).

Each run is checked against the same loss written here with torch.nn.functional: the first
step's loss and the SGD update it takes, and the final full-data loss (a token mean)."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from condlab.cli import app
from condlab.load.data import load_dataset
from condlab.train.loop import dataset_loss, train_from_config

FACTORIES = textwrap.dedent(
    '''
    import torch


    def tokens():
        """12 sequences of 6 tokens (vocab 9); the last 2 targets of 5 rows are padding."""
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 9, (12, 7), generator=g)
        y = ids[:, 1:].clone()
        y[:5, -2:] = -100
        return {"input_ids": ids[:, :-1], "labels": y}


    def token_tuple():
        d = tokens()
        return d["input_ids"], d["labels"]


    def token_loader():
        d = tokens()
        ds = torch.utils.data.TensorDataset(d["input_ids"], d["labels"])
        return torch.utils.data.DataLoader(ds, batch_size=5)


    def binary():
        g = torch.Generator().manual_seed(1)
        X = torch.randn(20, 3, generator=g, dtype=torch.float64)
        return X, (X[:, 0] > 0).double()


    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(9, 4)
            self.head = torch.nn.Linear(4, 9)

        def forward(self, input_ids):
            return {"logits": self.head(torch.tanh(self.embed(input_ids)))}


    def lm():
        return LM()


    def smoothed(outputs, targets):
        return torch.nn.functional.cross_entropy(outputs, targets, label_smoothing=0.2)
    '''
)
LR = 0.5


@pytest.fixture
def user(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trainfactories.py").write_text(FACTORIES)
    return tmp_path


def _run(**cfg):
    base = {"optimizer": {"name": "sgd", "lr": LR}, "dtype": "float64", "seed": 0}
    return train_from_config({**base, **cfg})


def _initial(spec, input_shape, n_out):
    """The model as it was before training: rebuilt with the same seed."""
    from condlab.load.models import build_model

    return build_model(spec, input_shape, n_out, seed=0).double()


def _check_first_step(result, ckpt, model0, loss_of_model):
    """history[0] is the loss of model0; one SGD step from model0 gives the trained weights."""
    loss0 = loss_of_model(model0)
    assert result.history[0]["loss"] == pytest.approx(float(loss0), rel=1e-12)
    grads = torch.autograd.grad(loss0, list(model0.parameters()))
    want = {n: (p - LR * g).detach() for (n, p), g in zip(model0.named_parameters(), grads)}
    for n, w in want.items():
        assert torch.allclose(ckpt["state_dict"][n], w, rtol=0, atol=1e-12), n


def test_sequence_cross_entropy_on_dict_samples_with_padding(user):
    result, ckpt = _run(model="trainfactories:lm", data="trainfactories:tokens",
                        loss="sequence-cross-entropy", steps=1)
    d = __import__("trainfactories").tokens()
    torch.manual_seed(0)
    model0 = __import__("trainfactories").lm().double()

    def loss(m):  # token mean over the 62 targets that are not padding
        logits = m(input_ids=d["input_ids"])["logits"]
        return F.cross_entropy(logits.reshape(-1, 9), d["labels"].reshape(-1), ignore_index=-100)

    _check_first_step(result, ckpt, model0, loss)
    assert ckpt["loss"] == "sequence-cross-entropy" and ckpt["train"]["ignore_index"] == -100
    # the final loss is the token mean, also when read in batches of unequal token counts
    model1 = result.model.eval()
    with torch.no_grad():
        want = float(loss(model1))
    data = load_dataset("trainfactories:tokens")
    assert result.final_loss == pytest.approx(want, rel=1e-12)
    assert dataset_loss(model1, data, "sequence-cross-entropy", chunk=5) == pytest.approx(want, rel=1e-12)


def test_a_dataloader_trains_on_its_own_batches_in_order(user):
    result, _ = _run(model="trainfactories:lm", data="trainfactories:token_loader",
                     loss="sequence-cross-entropy", steps=4)
    d = __import__("trainfactories").tokens()
    assert len(result.history) == 4
    torch.manual_seed(0)
    model0 = __import__("trainfactories").lm().double()
    first = F.cross_entropy(model0(d["input_ids"][:5])["logits"].reshape(-1, 9),
                            d["labels"][:5].reshape(-1), ignore_index=-100)
    assert result.history[0]["loss"] == pytest.approx(float(first), rel=1e-12)


def test_bce_on_float_targets(user):
    spec = {"name": "mlp", "widths": [4]}
    result, ckpt = _run(model=spec, data="trainfactories:binary", loss="bce", steps=1)
    X, y = __import__("trainfactories").binary()
    model0 = _initial(spec, (3,), 1)
    _check_first_step(result, ckpt, model0,
                      lambda m: F.binary_cross_entropy_with_logits(m(X).squeeze(1), y))
    assert ckpt["loss"] == "bce"


def test_custom_loss_and_label_smoothing_agree(user):
    spec = {"name": "mlp", "widths": [5]}
    common = {"model": spec, "data": "iris", "steps": 1, "max_samples": 40}
    custom, ck_custom = _run(**common, loss="trainfactories:smoothed")
    smooth, ck_smooth = _run(**common, loss="cross-entropy", label_smoothing=0.2)
    data = load_dataset("iris", max_samples=40).to(torch.float64)
    model0 = _initial(spec, (4,), 3)
    _check_first_step(custom, ck_custom, model0,
                      lambda m: F.cross_entropy(m(data.X), data.y, label_smoothing=0.2))
    assert smooth.history[0]["loss"] == pytest.approx(custom.history[0]["loss"], rel=1e-12)
    for n, w in ck_custom["state_dict"].items():
        assert torch.allclose(ck_smooth["state_dict"][n], w, rtol=0, atol=1e-12)
    assert ck_custom["loss"] == "trainfactories:smoothed"


def test_cli_trains_the_token_transformer_and_spectrum_reads_it(user):
    (user / "cfg.yaml").write_text(yaml.safe_dump({
        "model": {"name": "transformer", "d_model": 8, "heads": 2, "layers": 1},
        "data": "trainfactories:token_tuple", "loss": "sequence-cross-entropy", "steps": 3,
        "dtype": "float64",
    }))
    runner = CliRunner()
    r = runner.invoke(app, ["train", "cfg.yaml", "--out", "lm.pt"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["spectrum", "lm.pt", "--top", "2", "--bottom", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "sequence-cross-entropy" in r.stdout
