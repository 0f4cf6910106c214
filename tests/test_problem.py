"""condlab.Problem's checks: the loss check reuses the outputs the shape check computed."""

import pytest
import torch
from torch import nn

from condlab.errors import CondlabError
from condlab.problem import Problem


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def test_the_loss_from_the_first_batchs_outputs_is_the_loss_bit_for_bit():
    (X1, y1), (X2, y2) = _data(12, 0), _data(7, 1)
    p = Problem(_model(), [(X1, y1), (X2, y2)], "cross-entropy", dtype=torch.float64)
    with torch.no_grad():
        out = p.outputs(p.theta, p.batches[0][0], 0)
    assert torch.equal(p.loss(first_outputs=out), p.loss())


def test_the_checks_run_one_forward_pass_per_batch():
    model = _model()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    Problem(model, [_data(12, 0), _data(7, 1)], "cross-entropy", dtype=torch.float64)
    assert len(calls) == 2  # the outputs check and the loss check share batch 0's pass


def test_a_nan_loss_is_still_refused():
    model = _model()
    with torch.no_grad():
        model[0].weight.mul_(1e308)  # finite weights whose outputs overflow
        model[2].weight.mul_(1e308)
    with pytest.raises(CondlabError, match="NaN or Inf"):
        Problem(model, [_data(12, 0)], "cross-entropy", dtype=torch.float64)
