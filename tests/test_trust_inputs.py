"""The loss the user means and messages that name the fix, against
dense float64 truths by plain autograd."""

import pytest
import torch
import torch.nn.functional as F

from condlab.config import SpectrumConfig
from condlab.errors import UsageError
from condlab.spectrum import run_spectrum
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
