"""``condlab track`` over a plain-PyTorch run's checkpoints and the ``Tracker`` hook in its loop:
the same rows, a resumable CSV, an undisturbed training run, and one-line errors."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from cases import interrupt_sweep, train_and_checkpoint
from torch import nn
from typer.testing import CliRunner

from condlab import Tracker
from condlab.cli import app
from condlab.compare.csvlog import CsvLog, read_rows
from condlab.errors import UsageError
from condlab.estimators import extreme_eigenpairs
from condlab.losses import mse
from condlab.tracking.hook import HOOK_COLUMNS
from condlab.tracking.rows import COLUMNS

runner = CliRunner()
STEPS, EVERY = 200, 50
PLOT = importlib.util.find_spec("matplotlib") is not None
EST = ["--top", "1", "--bottom", "2", "--tol", "1e-8", "--dtype", "float64"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def make_data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(48, 5, generator=g).double()  # float32 values: data files load as float32
    y = torch.randint(0, 3, (48,), generator=g)
    return X, y


def train(tmp, optimizer: str, *, tracker_kw=None):
    """A plain PyTorch loop: checkpoints every EVERY steps, and the hook at the same steps."""
    X, y = make_data()
    model = make_model()
    opt = (torch.optim.Adam(model.parameters(), lr=0.02) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.5))
    tracker = Tracker(model, "mse", [(X, y)], every=EVERY, top=1, bottom=2, tol=1e-8,
                      **(tracker_kw or {}))
    train_and_checkpoint(tmp, model, opt, mse, X, y, tracker, steps=STEPS, every=EVERY)
    return tracker


def load_opts(tmp, curvature="ggn"):
    return ["--model", "mlp", "--model-config", tmp / "model.yaml", "--data", tmp / "data.npz",
            "--loss", "mse", "--curvature", curvature, *EST]


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adam")
    # the GGN of MSE (no softmax shift) with more outputs than parameters: kappa is resolved
    return tmp, train(tmp, "adam", tracker_kw={"curvature": "ggn"})


def test_warm_start_reaches_the_same_eigenvalues_in_fewer_products():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=torch.float64))
    evals = torch.cat([torch.tensor([50.0, 20.0, 10.0]), torch.linspace(0.1, 5, 297)]).double()
    A = Q @ torch.diag(evals) @ Q.T
    cold = extreme_eigenpairs(A, top=1, bottom=1, tol=1e-8, return_vectors=True)
    warm = extreme_eigenpairs(A, top=1, bottom=1, tol=1e-8,
                              start=torch.cat([cold.vectors_top, cold.vectors_bottom], 1))
    assert warm.converged and cold.converged
    assert abs(warm.lambda_max - 50) < 1e-9 and abs(float(warm.eigenvalues_bottom[0]) - 0.1) < 1e-6
    assert warm.matvecs < cold.matvecs
    with pytest.raises(UsageError, match="start must have shape"):
        extreme_eigenpairs(A, top=1, bottom=1, start=torch.ones(7))


def test_track_reproduces_the_hook_at_the_same_steps(adam_run, tmp_path):
    tmp, tracker = adam_run
    hook = {(r["step"], r["setting"]): r for r in tracker.rows}
    assert sorted({s for s, _ in hook}) == [50, 100, 150, 200]
    assert {s for _, s in hook} == {"baseline", "optimizer"}  # Adam: its preconditioner by default
    out, png = tmp_path / "track.csv", tmp_path / "track.png"
    r = invoke("track", tmp, "--precond", "optimizer", "-o", out, *load_opts(tmp),
               *(["--plot", png] if PLOT else []))
    assert r.exit_code == 0, r.output
    assert not PLOT or png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_rows(out, columns=COLUMNS, what="track")
    assert len(rows) == len(hook)
    for row in rows:
        h = hook[(row["step"], row["setting"])]
        assert row["converged"] and h["converged"]
        for key in ("lambda_max", "kappa", "threshold", "stability_ratio", "lr", "beta1"):
            if h[key] is None:  # kappa of an indefinite Hessian
                assert row[key] is None
            else:
                assert row[key] == pytest.approx(h[key], rel=1e-10, abs=0), (row["step"], row["setting"], key)
    assert sum(r["kappa"] is not None for r in rows) >= 4
    pre = [r for r in rows if r["setting"] == "optimizer"]
    assert all(r["threshold"] == pytest.approx((2 + 2 * 0.9) / ((1 - 0.9) * 0.02)) for r in pre)


def test_sgd_rows_compare_lambda_max_with_2_over_lr(tmp_path):
    tracker = train(tmp_path, "sgd", tracker_kw={"csv": tmp_path / "hook.csv"})
    tracker.close()
    rows = read_rows(tmp_path / "hook.csv", columns=HOOK_COLUMNS, what="track")
    assert [r["setting"] for r in rows] == ["baseline"] * 4  # SGD holds no preconditioner
    for r in rows:
        assert r["threshold"] == pytest.approx(2 / 0.5)
        assert r["stability_ratio"] == pytest.approx(r["lambda_max"] / 4.0)
    # the hook's CSV holds what it returned, bit for bit
    assert [r["lambda_max"] for r in rows] == [r["lambda_max"] for r in tracker.rows]


def test_an_interrupted_sweep_resumes_to_the_same_bytes(adam_run, tmp_path, monkeypatch):
    tmp, _ = adam_run
    args = ["track", tmp, "--precond", "optimizer", *load_opts(tmp)]
    full = tmp_path / "full.csv"
    assert invoke(*args, "-o", full).exit_code == 0
    import condlab.tracking.sweep as sweep

    part = tmp_path / "part.csv"
    restore = interrupt_sweep(monkeypatch)
    r = invoke(*args, "-o", part)
    assert r.exit_code != 0 and len(read_rows(part, columns=COLUMNS, what="track")) == 4
    restore()
    # as if killed between the rows and the warm-start file: the chain is rebuilt by replaying
    # (with the file in place, see the --on-error test below)
    sweep.warm_path(part).unlink()
    assert invoke(*args, "-o", part).exit_code == 2  # exists: --resume or --force
    r = invoke(*args, "-o", part, "--resume")
    assert r.exit_code == 0, r.output
    assert part.read_bytes() == full.read_bytes()


def test_a_csv_inside_the_checkpoint_folder_is_not_taken_for_a_checkpoint(adam_run, tmp_path):
    tmp, _ = adam_run
    for name in ("ckpt_0050.pt", "ckpt_0100.pt"):
        (tmp_path / name).write_bytes((tmp / name).read_bytes())
    args = ["track", tmp_path, "-o", tmp_path / "track.csv", *load_opts(tmp)]
    assert invoke(*args).exit_code == 0
    r = invoke(*args, "--resume")
    assert r.exit_code == 0 and "measured 0 checkpoint(s), 2 already there" in r.output, r.output


def test_warm_starts_match_cold_starts_and_save_products(adam_run, tmp_path):
    tmp, _ = adam_run
    cold, warm = tmp_path / "cold.csv", tmp_path / "warm.csv"
    assert invoke("track", tmp, "--cold-start", "-o", cold, *load_opts(tmp)).exit_code == 0
    assert invoke("track", tmp, "-o", warm, *load_opts(tmp)).exit_code == 0
    rc, rw = (read_rows(p, columns=COLUMNS, what="track") for p in (cold, warm))
    for a, b in zip(rc, rw, strict=True):
        assert a["lambda_max"] == pytest.approx(b["lambda_max"], rel=1e-10)
    assert rc[0]["hvps"] == rw[0]["hvps"]  # the first checkpoint has nothing to start from


def test_tracker_leaves_model_rng_grads_and_optimizer_alone():
    X, y = make_data()
    model = make_model()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    nn.functional.cross_entropy(model(X), y).backward()  # leave gradients in .grad
    before = copy.deepcopy((model.state_dict(), [p.grad for p in model.parameters()], opt.state_dict()))
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    scalars = []

    class Writer:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

    tracker = Tracker(model, "cross-entropy", [(X[:24], y[:24]), (X[24:], y[24:])], every=1,
                      tensorboard=Writer(), trace=True, probes=12)
    rows = tracker.step(opt)
    assert {r["setting"] for r in rows} == {"baseline", "optimizer"}
    after = (model.state_dict(), [p.grad for p in model.parameters()], opt.state_dict())
    assert model.training
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k])
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1], strict=True))
    assert before[2]["param_groups"] == after[2]["param_groups"]
    for i, st in before[2]["state"].items():
        assert all(torch.equal(v, after[2]["state"][i][k]) for k, v in st.items())
    assert torch.equal(rng, torch.get_rng_state())
    if cuda_rng is not None:
        assert all(torch.equal(a, b) for a, b in zip(cuda_rng, torch.cuda.get_rng_state_all(), strict=True))
    assert ("condlab/baseline/lambda_max", rows[0]["lambda_max"], 1) in scalars
    assert any(tag == "condlab/optimizer/trace" for tag, _, _ in scalars)


def test_bad_input_is_one_line_with_exit_codes(adam_run, tmp_path):
    tmp, _ = adam_run
    opts = load_opts(tmp)

    def lines(r):
        return [ln for ln in r.output.splitlines() if ln.strip()]

    r = invoke("track", tmp_path / "nothing_*.pt", *opts)
    assert r.exit_code == 2 and "no checkpoint file matches" in r.output and len(lines(r)) == 1
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("ckpt_0050.pt", "ckpt_0100.pt"):
        (mixed / name).write_bytes((tmp / name).read_bytes())
    torch.save({"model": nn.Linear(5, 3).double().state_dict(), "step": 150}, mixed / "ckpt_0150.pt")
    r = invoke("track", mixed, *opts)
    assert r.exit_code == 2 and "different architectures" in r.output and len(lines(r)) == 1
    nostep = tmp_path / "nostep"
    nostep.mkdir()
    torch.save({"model": make_model().state_dict()}, nostep / "final.pt")
    r = invoke("track", nostep, *opts)
    assert r.exit_code == 2 and "holds no step" in r.output
    # a corrupt file mid-sweep: stop keeps the rows before it, skip writes a warning row
    (mixed / "ckpt_0150.pt").write_bytes(b"not a torch file")
    (mixed / "ckpt_0200.pt").write_bytes((tmp / "ckpt_0200.pt").read_bytes())
    out = tmp_path / "stop.csv"
    r = invoke("track", mixed, "-o", out, *opts)
    assert r.exit_code == 1 and "ckpt_0150.pt" in r.output and len(lines(r)) == 1
    assert [row["step"] for row in read_rows(out, columns=COLUMNS, what="track")] == [50, 100]
    r = invoke("track", mixed, "-o", out, "--resume", "--on-error", "skip", *opts)
    assert r.exit_code == 0 and "warning: skipped" in r.output
    skip = tmp_path / "skip.csv"
    r = invoke("track", mixed, "-o", skip, "--on-error", "skip", *opts)
    assert r.exit_code == 0 and "warning: skipped" in r.output
    rows = read_rows(skip, columns=COLUMNS, what="track")
    assert [row["step"] for row in rows] == [50, 100, 150, 200]
    assert rows[2]["status"].startswith("skipped: ") and rows[2]["lambda_max"] is None
    assert out.read_bytes() == skip.read_bytes()  # stopped, then resumed with skip


def test_track_needs_a_model_for_plain_checkpoints(adam_run):
    tmp, _ = adam_run
    r = invoke("track", tmp, "--data", tmp / "data.npz")
    assert r.exit_code == 2 and "pass --model" in r.output


def test_csvlog_columns_round_trip(tmp_path):
    with CsvLog(tmp_path / "x.csv", append=False, columns=COLUMNS) as log:
        log.write({"step": 3, "checkpoint": "a,b.pt", "setting": "baseline", "status": "ok",
                   "lambda_max": 0.1 + 0.2, "converged": True, "hvps": 12})
    (row,) = read_rows(tmp_path / "x.csv", columns=COLUMNS, what="track")
    assert row["lambda_max"] == 0.1 + 0.2 and row["checkpoint"] == "a,b.pt" and row["hvps"] == 12
