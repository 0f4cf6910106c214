"""kappa of a preconditioned operator with a shift after P (decoupled decay, damping) moves with
P's arbitrary scale: the spectrum table prints no kappa ratio for such a row and the JSON says
``kappa_scale_free: false``; coupled decay and no decay stay scale-free (issue 19, item 5)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from condlab.cli import app
from condlab.preconditioners import preconditioned_operator
from condlab.preconditioners.base import Preconditioner

runner = CliRunner()
SPEC = "linreg:n=200,d=4,kappa=30,rotate=true,seed=2"


def _kappa(op) -> float:
    ev = torch.linalg.eigvalsh(op.to_dense())
    return float(ev[-1] / ev[0])


def test_decoupled_kappa_moves_with_the_scale_of_p_coupled_does_not():
    """The premise, on a dense matrix: P and 10 P give the same coupled kappa, not the same
    decoupled one."""
    from condlab.operators.base import DenseOperator

    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    A = DenseOperator(Q @ torch.diag(torch.logspace(0, 2, 5, dtype=torch.float64)) @ Q.T)
    d = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    k = {}
    for c in (1.0, 10.0):
        pc = Preconditioner(name="p", diag=c * d, eps=0.0, formula="P", source="test")
        k[c] = {decay: _kappa(preconditioned_operator(A, pc, weight_decay=0.5, decay=decay))
                for decay in ("coupled", "decoupled")}
    assert k[1.0]["coupled"] == pytest.approx(k[10.0]["coupled"], rel=1e-10)
    assert abs(k[1.0]["decoupled"] / k[10.0]["decoupled"] - 1) > 0.1


@pytest.mark.parametrize("decay, free", [("coupled", True), ("decoupled", False)])
def test_spectrum_marks_rows_whose_kappa_depends_on_the_scale_of_p(decay, free):
    args = ["spectrum", "--model", "linear", "--data", SPEC, "--precond", "adam", "--dtype",
            "float64", "--top", "1", "--bottom", "1", "--weight-decay", "0.1", "--decay", decay]
    r = runner.invoke(app, args + ["--format", "json"])
    assert r.exit_code == 0, r.output
    base, adam = json.loads(r.stdout)["results"]
    assert base["kappa_scale_free"] is True and adam["kappa_scale_free"] is free
    r = runner.invoke(app, args + ["--explain"], env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("│ adam"))
    assert ("n/a §" in row) is not free
    assert ("depends on P's arbitrary scale" in r.stdout) is not free
