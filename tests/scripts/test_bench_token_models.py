"""scripts/bench_token_models.py keeps running against condlab's API and hessian-eigenthings'
Hugging Face path, and both tools measure the same loss. No timing is asserted."""

import pytest
import torch

from tests.cases import script_module

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bench():
    yield from script_module("bench_token_models")


def test_condlab_and_the_models_own_loss_are_the_same_function(bench):
    import condlab

    model, ids = bench.build("gpt2-tiny", 6)
    hf = bench.hf_batches(ids, 4)
    own = sum(float(model(**b).loss) * len(b["input_ids"]) for b in hf) / 6
    problem = condlab.Problem(model, bench.condlab_batches(ids, 4), "sequence-cross-entropy",
                              dtype=torch.float64)
    assert float(problem.loss().detach()) == pytest.approx(own, rel=1e-6)


def test_top1_cells_agree(bench):
    pytest.importorskip("hessian_eigenthings")
    ours = bench.cell("gpt2-tiny:condlab:top1", sequences=4, batch=4, steps=0)
    assert ours["converged"] and ours["hvps"] >= 2 and ours["peak_mib"] >= 0
    assert ours["grad_cpu_s"] > 0 and ours["hvp_per_grad"] > 0
    theirs = bench.cell("gpt2-tiny:eigenthings:top1", sequences=4, batch=4, steps=ours["hvps"])
    assert theirs["hvps"] == ours["hvps"]
    assert theirs["value"] == pytest.approx(ours["value"], rel=bench.TOL)
