"""The loss the user means and messages that name the fix, against
dense float64 truths by plain autograd."""

import pytest
import torch
import torch.nn.functional as F

from condlab.config import SpectrumConfig
from condlab.errors import UsageError
from condlab.pipeline import run_spectrum
from tests.cases import double_backward_hessian


def _tokens(n=6, t=5, vocab=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, t), generator=g)


def test_labels_equal_to_the_input_ids_are_shifted_to_the_next_token(tmp_path):
    """HF's labels = input_ids: today condlab measured 'predict the current token'. Now the
    run equals Hugging Face's shifted loss, the dense truth below, and says so."""
    ids = _tokens()
    torch.save({"X": ids, "y": ids.clone()}, tmp_path / "tok.pt")
    args = {"d_model": 4, "heads": 1, "layers": 1, "mlp_ratio": 1, "vocab": 7}
    cfg = SpectrumConfig(model="transformer", model_args=args, data=str(tmp_path / "tok.pt"),
                         dtype="float64", top=1, bottom=0, exact=True)
    rep = run_spectrum(cfg, threads=1)
    r = rep.results[0]
    assert "shifted to the next token" in rep.source

    from condlab.inputs import read_inputs as load
    from condlab.problem import make_problem

    model = make_problem(load(cfg), cfg).model

    def hf_loss():  # what transformers' causal LMs compute from labels = input_ids
        logits = model(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1))

    H = double_backward_hessian(hf_loss, [p for p in model.parameters() if p.requires_grad])
    truth = torch.linalg.eigvalsh((H + H.T) / 2)
    assert r.lambda_max == pytest.approx(float(truth[-1]), rel=1e-10)


def test_labels_already_shifted_are_left_alone():
    from condlab.load.data import Dataset
    from condlab.losses import shift_copied_labels

    ids = _tokens()
    y = torch.full_like(ids, -100)
    y[:, :-1] = ids[:, 1:]
    ds = Dataset(X=ids, y=y, task="classification", num_classes=7, name="t", spec={})
    same, note = shift_copied_labels(ds)
    assert same is ds and note is None
    padded = ids.clone()
    padded[0, 3:] = -100  # HF pads labels with -100 where the attention mask is 0
    ds = Dataset(X={"input_ids": ids}, y=padded, task="classification", num_classes=7,
                 name="t", spec={})
    new, note = shift_copied_labels(ds)
    assert note and new.y[0, :2].tolist() == ids[0, 1:3].tolist()
    assert new.y[0, 2:].tolist() == [-100, -100, -100] and (new.y[:, -1] == -100).all()
    assert ds.y is padded  # the input dataset is not modified


def test_integer_targets_taken_as_regression_name_task_classification(tmp_path):
    """25 integer classes are guessed to be regression; the message names --task."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y = torch.arange(60) % 25
    torch.save({"X": X, "y": y}, tmp_path / "c25.pt")
    cfg = SpectrumConfig(model="linear", data=str(tmp_path / "c25.pt"), loss="cross-entropy",
                         top=1, bottom=0)
    with pytest.raises(UsageError, match="--task classification"):
        run_spectrum(cfg, threads=1)


def test_labels_that_are_all_padding_are_not_a_copy_of_the_inputs():
    from condlab.load.data import Dataset
    from condlab.losses import shift_copied_labels

    ids = _tokens()
    ds = Dataset(X=ids, y=torch.full_like(ids, -100), task="classification", num_classes=7,
                 name="t", spec={})
    assert shift_copied_labels(ds)[1] is None


HFDATA = '''
import torch


def make():
    """HF's convention: labels = input_ids (the model shifts inside)."""
    ids = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids.clone()}
'''


@pytest.mark.slow
def test_a_hugging_face_model_with_labels_equal_to_input_ids_measures_its_own_loss(tmp_path,
                                                                                 monkeypatch):
    """The truth is the model's own loss, model(input_ids, labels=input_ids).loss, which shifts
    inside (written out in float64: HF's loss casts the logits to float32); condlab measures the
    same operator and says it shifted the labels. Today: 'predict the current token'."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from condlab.cli import app
    from tests.load.test_hf import CONFIG, PARAMS

    transformers = pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hfdata.py").write_text(HFDATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = dict(CONFIG)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(5)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.save_pretrained(tmp_path / "tiny-gpt2")
    model = model.double().eval()
    ids = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    params = [p for n, p in model.named_parameters()
              if n.startswith(("transformer.ln_f.", "transformer.h.0.ln_1."))]
    def hf_loss():  # HF's ForCausalLMLoss, written out: it casts logits to float32 itself
        logits = model(input_ids=ids).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, 100), ids[:, 1:].reshape(-1))

    own = model(input_ids=ids, labels=ids).loss
    assert float(own) == pytest.approx(float(hf_loss()), rel=1e-6)  # the same loss
    H = double_backward_hessian(hf_loss, params)
    ev = np.linalg.eigvalsh(((H + H.T) / 2).numpy())
    flags = [a for p in PARAMS for a in ("--params", p)]
    r = CliRunner().invoke(app, [
        "spectrum", "--model", "hf-config:tiny-gpt2", "--weights", "tiny-gpt2", "--data",
        "hfdata:make", *flags, "--top", "2", "--bottom", "0", "--dtype", "float64", "--exact",
        "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert "shifted to the next token" in doc["source"]
    np.testing.assert_allclose(doc["results"][0]["eigenvalues_top"], ev[::-1][:2],
                               rtol=1e-10, atol=0)
    assert doc["loss"]["count"] == 3 * 6  # the last position of each sequence has no target
