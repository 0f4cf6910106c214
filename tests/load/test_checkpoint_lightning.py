"""A Lightning ``.ckpt`` as Lightning writes it: ``hyper_parameters`` pickled as Lightning's
``AttributeDict`` beside callbacks, loops and schedulers. It loads with ``weights_only=True``
(the AttributeDict read as a plain dict, nothing imported or run from the file), and its
weights, under the LightningModule's ``model.`` prefix, measure the dense truth.

Lightning is not installed for this: a stand-in class with Lightning's module path and name is
registered only while the file is written, so the pickle names the same global as Lightning's."""

from __future__ import annotations

import sys
import types

import pytest
import test_checkpoint_layouts as layouts
import torch
from typer.testing import CliRunner

from condlab.cli import app
from condlab.load.checkpoint import load_checkpoint

MODULE = "lightning.fabric.utilities.data"
trained = layouts.trained  # the fixture: a model module, data, trained weights and Adam state
_run, _check = layouts._run, layouts._check


class AttributeDict(dict):
    """Lightning's: a dict whose entries are also attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e

    def __setattr__(self, key, value):
        self[key] = value


class Opaque:
    """A user's own object in the hyper-parameters: needs its class (code) to load."""

    def __setstate__(self, state):
        raise AssertionError("code from the checkpoint ran")


def _save_like_lightning(path, monkeypatch, state_dict, optimizer_state, extra_hparams=None):
    """Write ``path`` with AttributeDict pickled under Lightning's module path."""
    with monkeypatch.context() as m:
        parts = MODULE.split(".")
        for i in range(1, len(parts) + 1):
            m.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        m.setattr(AttributeDict, "__module__", MODULE)
        m.setattr(sys.modules[MODULE], "AttributeDict", AttributeDict, raising=False)
        hp = AttributeDict(lr=0.05, widths=[4], name="mlp", nested=AttributeDict(seed=1))
        hp.update(extra_hparams or {})
        torch.save({
            "epoch": 3, "global_step": 4, "pytorch-lightning_version": "2.4.0",
            "state_dict": state_dict,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(0.25),
                "best_model_path": "/runs/epoch=3.ckpt", "dirpath": "/runs"}},
            "optimizer_states": [optimizer_state],
            "lr_schedulers": [{"last_epoch": 4, "_last_lr": [0.05], "base_lrs": [0.05]}],
            "hparams_name": "kwargs",
            "hyper_parameters": hp,
        }, path)
    assert MODULE not in sys.modules  # loading cannot reach the stand-in


def test_lightning_ckpt_with_hyper_parameters_loads_weights_only(trained, tmp_path, monkeypatch):
    model, state, X, y = trained
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "epoch=3.ckpt"
    _save_like_lightning(path, monkeypatch, sd, state)
    with pytest.raises(Exception, match="AttributeDict"):  # what torch alone says
        torch.load(path, weights_only=True)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw.get("weights_only")) or real(*a, **kw))
    ckpt = load_checkpoint(path)
    assert calls == [True]
    assert ckpt["keys"] == {"weights": "state_dict", "optimizer": "optimizer_states[0]"}
    monkeypatch.setattr(torch, "load", real)
    doc = _run(path, "--strip-prefix", "model.", "--precond", "optimizer")
    assert "key prefix 'model.' stripped" in doc["source"]
    _check(doc, model, X, y, state)


def test_other_objects_in_a_lightning_ckpt_are_refused_without_running_them(trained, tmp_path, monkeypatch):
    model, state, *_ = trained
    path = tmp_path / "odd.ckpt"
    _save_like_lightning(path, monkeypatch, {f"model.{k}": v for k, v in model.state_dict().items()},
                         state, {"thing": Opaque()})
    r = CliRunner().invoke(app, ["spectrum", "--model", "ckmodel:make", "--weights", str(path),
                                 "--strip-prefix", "model.", "--data", "d.npz"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Opaque" in r.output and "--trust-checkpoint" in r.output
