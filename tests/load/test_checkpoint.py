"""Checkpoints: weights_only round trips for every optimizer, safe loading, strict weights, atomicity."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from condlab.errors import CondlabError, UsageError
from condlab.load import checkpoint as ckpt_mod
from condlab.load.checkpoint import (
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    load_weights,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from condlab.load.models import build_model
from condlab.train.optimizers import OPTIMIZERS, build_optimizer, resolve_hparams

SPEC = {"name": "mlp", "widths": [5]}


def _model():
    return build_model(SPEC, (4,), 3, seed=0).double()


def _steps(model, opt, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        X = torch.randn(8, 4, dtype=torch.float64, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_round_trip_weights_only_and_resume(tmp_path, name):
    """Save after 3 steps, reload with weights_only=True, resume: same as 5 uninterrupted steps."""
    hp = {"lr": 0.05}
    model = _model()
    opt = build_optimizer(name, model.parameters(), hp)
    _steps(model, opt, 3)
    ckpt = make_checkpoint(
        model_spec=SPEC, model=model, input_shape=(4,), num_outputs=3, loss="cross-entropy",
        data={"name": "iris"},
        optimizer={"name": name, "hparams": resolve_hparams(name, hp), "state_dict": opt.state_dict()},
        train={"steps": 3, "seed": 0, "final_loss": 1.0, "batch_size": None},
    )
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, ckpt)
    raw = torch.load(path, weights_only=True)  # the contract: no pickled code
    assert raw["format"] == "condlab-checkpoint" and raw["version"] == 1
    loaded = load_checkpoint(path)
    assert loaded["optimizer"]["hparams"] == resolve_hparams(name, hp)
    assert loaded["train"]["batch_size"] is None and loaded["data"] == {"name": "iris"}

    resumed = model_from_checkpoint(loaded)
    opt2 = build_optimizer(name, resumed.parameters(), loaded["optimizer"]["hparams"])
    opt2.load_state_dict(loaded["optimizer"]["state_dict"])
    _steps(model, opt, 2, seed=1)
    _steps(resumed, opt2, 2, seed=1)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_plain_state_dicts(tmp_path):
    model = _model()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save({"epoch": 3, "model_state_dict": model.state_dict()}, tmp_path / "wrapped.pt")
    for name in ("sd.pt", "wrapped.pt"):
        out = load_checkpoint(tmp_path / name)
        assert out["format"] == "state_dict"
        assert torch.equal(out["state_dict"]["0.weight"], model.state_dict()["0.weight"])


def test_pickled_module_needs_trust(tmp_path):
    model = _model()
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(UsageError) as info:
        load_checkpoint(tmp_path / "full.pt")
    msg = str(info.value)
    assert "pickled Python objects" in msg and "--trust-checkpoint" in msg and "\n" not in msg
    out = load_checkpoint(tmp_path / "full.pt", trust=True)
    assert out["format"] == "module" and isinstance(out["module"], nn.Module)
    assert torch.equal(out["state_dict"]["0.weight"], model.state_dict()["0.weight"])


def _bad_file(tmp_path, kind):
    path = tmp_path / "x.pt"
    if kind == "text":
        path.write_text("hello, not a checkpoint\n")
    elif kind == "truncated":
        torch.save(_model().state_dict(), path)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "directory":
        path.mkdir()
    elif kind == "newer":
        torch.save({"format": "condlab-checkpoint", "version": 99, "model": {}, "state_dict": {},
                    "loss": "mse"}, path)
    elif kind == "not_a_dict":
        torch.save([torch.zeros(2)], path)
    elif kind == "dict_without_tensors":
        torch.save({"a": 1}, path)
    return path


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("missing", "does not exist"),
        ("text", "not a readable torch file"),
        ("truncated", "not a readable torch file"),
        ("directory", "is not a file"),
        ("newer", "format version 99"),
        ("not_a_dict", "holds a list"),
        ("dict_without_tensors", "keys a but no state_dict"),
    ],
)
def test_unreadable_checkpoints(tmp_path, kind, needle):
    with pytest.raises(UsageError) as info:
        load_checkpoint(_bad_file(tmp_path, kind))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_load_weights_reports_every_mismatch():
    model = _model()
    sd = dict(model.state_dict())
    sd["fc.weight"] = sd.pop("0.weight")
    sd["2.weight"] = torch.zeros(3, 7)
    with pytest.raises(UsageError) as info:
        load_weights(model, sd, source="w.pt", model_name="mlp")
    msg = str(info.value)
    assert msg.startswith("checkpoint 'w.pt' does not fit model 'mlp'")
    assert "missing keys 0.weight" in msg and "unexpected keys fc.weight" in msg
    assert "2.weight (expected [3, 5], got [3, 7])" in msg and "\n" not in msg


def test_load_weights_rejects_nan_and_loads_good_weights():
    model, other = _model(), build_model(SPEC, (4,), 3, seed=1).double()
    sd = {k: v.clone() for k, v in other.state_dict().items()}
    sd["2.bias"][1] = float("nan")
    with pytest.raises(CondlabError) as info:
        load_weights(model, sd)
    assert not isinstance(info.value, UsageError) and "'2.bias' holds 1 NaN/Inf" in str(info.value)
    load_weights(model, other.state_dict())
    assert torch.equal(model(torch.ones(1, 4, dtype=torch.float64)), other(torch.ones(1, 4, dtype=torch.float64)))


def test_save_rejects_objects_that_need_pickle(tmp_path):
    path = tmp_path / "c.pt"
    with pytest.raises(UsageError, match=r"train\.extra holds a numpy\.ndarray"):
        save_checkpoint(path, {"format": "condlab-checkpoint", "train": {"extra": np.zeros(2)}})
    assert not path.exists()


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.ones(2)}})
    before = path.read_bytes()

    def boom(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ckpt_mod.torch, "save", boom)
    with pytest.raises(CondlabError, match="disk on fire"):
        save_checkpoint(path, {"state_dict": {"w": torch.zeros(2)}})
    assert path.read_bytes() == before and _listing(tmp_path) == ["c.pt"]


@pytest.mark.parametrize("writer, payload", [(atomic_write_bytes, b"new"), (atomic_write_text, "new \u00e9")])
def test_atomic_writes(tmp_path, monkeypatch, writer, payload):
    path = tmp_path / "sub" / "out.csv"
    writer(path, payload)  # creates the folder
    data = path.read_bytes()
    assert data == (payload if isinstance(payload, bytes) else payload.encode("utf-8"))

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(CondlabError, match="No space left on device"):
        writer(path, payload * 2)
    assert path.read_bytes() == data and _listing(path.parent) == ["out.csv"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
