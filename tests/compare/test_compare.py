"""condlab compare: config schema, tracking against dense matrices, the CSV, resume, the CLI."""

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from condlab.cli import app
from condlab.compare import compare, load_config, parse_config, report_from_rows
from condlab.compare.csvlog import COLUMNS, format_row, normalize, read_rows
from condlab.compare.render import findings_markdown, findings_table, grid_table, summary_table
from condlab.compare.runner import plan
from condlab.errors import UsageError

D64 = torch.float64


def tiny(**over) -> dict:
    cfg = {
        "name": "tiny",
        "model": {"name": "linear"},
        "data": {"name": "linreg", "n": 80, "d": 4, "kappa": 20, "rotate": True, "noise": 0.1},
        "steps": 20,
        "log_every": 2,
        "seeds": [0, 1],
        "target_loss": 0.05,
        "track": {"every": 10, "curvature": "ggn", "exact": True, "adam_alignment": True},
        "variants": [{"label": "full"}, {"label": "mini", "batch_size": 16}],
        "optimizers": [
            {"name": "adam", "lr": 0.05},
            {"name": "sgd", "lr": {"grid": [0.01, 0.1, 30.0]}},
            {"name": "gn", "lr": 0.5, "refresh": 5, "curvature_batch": 32,
             "estimator": "hutchinson", "probes": 8},
            {"name": "adamw", "basis": "eigen", "lr": 0.05},
        ],
    }
    cfg.update(over)
    return cfg


# -- config ------------------------------------------------------------------------------------
def test_config_schema_grids_sweeps_variants_and_quick():
    raw = tiny(optimizers=[
        {"name": "sgd", "sweep": {"lr": [0.1, 0.2], "weight_decay": [0.01, 0.02]}},
        {"name": "adam", "lr": {"grid": [1e-3, 1e-2]}, "basis": "eigen"},
    ], variants=[{"label": "a"}, {"label": "b", "model": {"bias": False}, "batch_size": 8}],
        quick={"steps": 4, "data": {"n": 40}})
    cfg = parse_config(raw)
    labels = [e.label for e in cfg.optimizers]
    assert labels == ["sgd lr=0.1 wd=0.01", "sgd lr=0.1 wd=0.02", "sgd lr=0.2 wd=0.01",
                      "sgd lr=0.2 wd=0.02", "adam/eigen"]
    assert cfg.optimizers[-1].tuned and cfg.optimizers[-1].lrs == (1e-3, 1e-2)
    assert cfg.problem(cfg.variants[1])["model"] == {"name": "linear", "bias": False}
    assert cfg.problem(cfg.variants[1])["batch_size"] == 8
    assert len(plan(cfg)) == 2 * (4 + 2) * 2
    quick = parse_config(raw, quick=True)
    assert quick.steps == 4 and quick.data["n"] == 40 and quick.data["d"] == 4


@pytest.mark.parametrize(
    "over,match",
    [
        ({"stepz": 3}, "unknown key.*'stepz'"),
        ({"optimizers": []}, "'optimizers' list"),
        ({"optimizers": [{"name": "adam"}]}, "needs an lr"),
        ({"optimizers": [{"name": "adam", "lr": 1, "basis": "svd"}]}, "basis 'svd'"),
        ({"optimizers": [{"name": "adam", "lr": {"grid": []}}]}, "grid"),
        ({"optimizers": [{"name": "adam", "lr": 1, "label": "x"}, {"name": "sgd", "lr": 1, "label": "x"}]},
         "unique"),
        ({"optimizers": [{"name": "adam", "lr": 1, "momentum": 0.9}]}, "no hyperparameter 'momentum'"),
        ({"track": {"evry": 3}}, "track: unknown key"),
        ({"variants": [{"label": "a", "steps": 3}]}, "a variant may override"),
        ({"target_loss": None}, "needs a target_loss"),
        ({"findings": "paper-z"}, "findings must be one of"),
        ({"seeds": []}, "seeds"),
    ],
)
def test_config_errors_name_the_key(over, match):
    with pytest.raises(UsageError, match=match):
        parse_config(tiny(**over))


# -- tracking against dense matrices -------------------------------------------------------------
def test_tracked_conditioning_matches_dense_matrices():
    cfg = parse_config(tiny(variants=[{"label": "full"}], seeds=[0], steps=10, track={
        "every": 10, "curvature": "hessian", "exact": True, "fixed_points": True}),
        )
    from condlab.compare.setup import Setup, load_data
    from condlab.operators import dense_hessian
    from condlab.train.diag_optimizers import make_optimizer
    from condlab.train.track import at

    keys = cfg.problem(cfg.variants[0])
    setup = Setup(keys, load_data(keys, D64), 0, D64, cfg.track)
    opt = make_optimizer("adamw", {"lr": 0.05, "weight_decay": 0.1})
    theta = setup.theta0.clone()
    state = opt.init(theta)
    for X, y in [next(setup.batches()) for _ in range(3)]:
        theta, state = opt.update(setup.gradient(theta, X, y), state, theta)
    row = setup.tracker.conditioning(theta, opt, state)
    H = dense_hessian(at(setup.problem, theta))
    ev = torch.linalg.eigvalsh(H)
    assert row["lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-10)
    assert row["kappa"] == pytest.approx(float(ev[-1] / ev[0]), rel=1e-8)
    P = opt.preconditioner(state, theta).diag
    S = torch.diag(P.rsqrt())
    pev = torch.linalg.eigvalsh(S @ H @ S + 0.1 * torch.eye(5, dtype=D64))  # decoupled: + lam I
    assert row["pre_lambda_max"] == pytest.approx(float(pev[-1]), rel=1e-10)
    assert row["pre_kappa"] == pytest.approx(float(pev[-1] / pev[0]), rel=1e-8)
    thr = (2 + 2 * 0.9) / ((1 - 0.9) * 0.05)
    assert row["threshold"] == pytest.approx(thr) and row["sharpness_ratio"] == pytest.approx(pev[-1] / thr)
    # fixed points by one Newton step on the quadratic
    g = setup.problem.gradient(theta)
    p_l2 = theta - torch.linalg.solve(H + 0.1 * torch.eye(5, dtype=D64), g + 0.1 * theta)
    assert row["dist_l2"] == pytest.approx(float((theta - p_l2).norm() / p_l2.norm()), rel=1e-8)


def test_kappa_of_one_feature_with_mean_10_and_a_bias_is_10402():
    """research.md: T = 1 + mu^2 + s^2, kappa = (T + sqrt(T^2 - 4 s^2)) / (T - sqrt(T^2 - 4 s^2))."""
    T = 1 + 100 + 1
    want = (T + math.sqrt(T * T - 4)) / (T - math.sqrt(T * T - 4))
    data = {"name": "linreg", "n": 200, "d": 1, "mean": 10.0, "exact": True}
    for standardize, expect in ((False, want), (True, 1.0)):
        cfg = parse_config(tiny(data=data, test_fraction=0, standardize=standardize, steps=1,
                                seeds=[0], variants=None, track={"exact": True},
                                optimizers=[{"name": "sgd", "lr": 1e-3}]))
        rows = compare(cfg).rows
        assert rows[0]["kappa"] == pytest.approx(expect, rel=1e-6)  # data are stored in float32
    assert want == pytest.approx(10402, abs=0.5)


def test_scale_invariant_group_is_checked_and_recorded():
    model = {"name": "mlp", "widths": [6], "norm": "batch", "bias": False}
    base = tiny(model=model, data={"name": "logreg", "n": 60, "d": 4, "classes": 3}, seeds=[0],
                variants=None, steps=6, log_every=1, optimizers=[{"name": "sgd", "lr": 0.5,
                                                                  "weight_decay": 0.1}],
                track={"scale_invariant": ["3.weight"]}, target_loss=None)
    with pytest.raises(UsageError, match="not scale-invariant"):  # the head is not
        compare(parse_config(base))
    rows = compare(parse_config({**base, "params": ["0.weight"],
                                 "track": {"scale_invariant": ["0.weight"]}})).rows
    assert all(r["si_norm"] > 0 for r in rows)
    assert rows[1]["si_eff_lr"] == pytest.approx(0.5 / rows[1]["si_norm"] ** 2)
    assert rows[0]["si_angle"] is None and rows[1]["si_angle"] > 0


# -- the run, the summary, the CSV -----------------------------------------------------------------
def test_runs_rows_divergence_and_lr_choice():
    cfg = parse_config(tiny())
    report = compare(cfg)
    runs = {(r.variant, r.optimizer, r.lr, r.seed): r for r in report.runs}
    assert len(runs) == len(plan(cfg))
    blown = runs[("full", "sgd", 30.0, 0)]
    assert blown.diverged and blown.steps < cfg.steps
    sgd = next(c for c in report.choices if c.variant == "full" and c.optimizer == "sgd")
    assert sgd.tuned and sgd.lr == 0.1
    ok = [r for r in report.rows if r["status"] == "ok"]
    assert {r["step"] for r in ok if r["optimizer"] == "adam"} == set(range(0, 21, 2))
    tracked = [r for r in ok if r["kappa"] is not None and r["optimizer"] == "adam"]
    assert {r["step"] for r in tracked} == {0, 10, 20}
    assert tracked[0]["pre_kappa"] is None and tracked[-1]["pre_kappa"] > 0  # no state at step 0
    # linear least squares: G = Z^T Z / n does not depend on theta, so its diagonal's spread is
    # one number at every tracked step of every run on the full data, and > 1 (rotated kappa 20)
    spreads = [r["gn_spread"] for r in tracked if r["variant"] == "full" and r["step"] > 0]
    assert len(spreads) >= 3 and max(spreads) == pytest.approx(min(spreads), rel=1e-6)
    assert spreads[0] > 1.01 and math.isfinite(tracked[-1]["v_gn_spread"])
    gn = [r for r in ok if r["optimizer"] == "gn" and r["pre_kappa"] is not None]
    assert gn and all(r["threshold"] == pytest.approx(2 / 0.5) for r in gn)


@pytest.mark.parametrize("offset", [0.0, "start", 10.0])
def test_divergence_is_judged_by_the_runs_own_loss_history(monkeypatch, offset):
    """A loss minus a constant (ending at or below 0) trains the same runs: the healthy ones
    finish, the blown-up one still stops (the old guard, loss > 1e6 max(loss0, 1e-300), stopped
    a healthy mini-batch run whose loss started at 0 the first time it rose above 0)."""
    from condlab.compare import setup as setup_mod
    from condlab.compare.runner import diverged

    evaluate = setup_mod.Setup.evaluate
    starts: dict = {}

    def shifted(self, theta):
        row = evaluate(self, theta)
        c = offset
        if offset == "start":  # the initial loss: every run starts at exactly 0
            c = starts.setdefault(id(self), row["train_loss"])
        row["train_loss"] -= c
        return row

    monkeypatch.setattr(setup_mod.Setup, "evaluate", shifted)
    cfg = parse_config(tiny(track={"every": 1000}, variants=[{"label": "mini", "batch_size": 16}],
                            optimizers=[{"name": "sgd", "lr": {"grid": [0.1, 30.0]}}]))
    runs = {(r.lr, r.seed): r for r in compare(cfg).runs}
    assert not runs[(0.1, 0)].diverged and runs[(0.1, 0)].steps == cfg.steps
    assert not runs[(0.1, 1)].diverged and runs[(0.1, 1)].steps == cfg.steps
    if offset != "start":  # from exactly 0 with no drop, only a non-finite loss stops a run
        assert runs[(30.0, 0)].diverged and runs[(30.0, 0)].steps < cfg.steps
    # the rule itself: a positive loss as before; a negative start judged by its own size
    assert diverged(2e6 + 1, 2.0, 1.0, 1e6) and not diverged(2e6 - 1, 2.0, 1.0, 1e6)
    assert not diverged(-4.0, -5.0, -5.0, 1e6) and not diverged(0.1, 0.0, -0.2, 1e6)
    assert diverged(0.2 * 1e6, 0.0, -0.2, 1e6) and diverged(math.nan, 1.0, 1.0, 1e6)
    assert not diverged(1.0, 0.0, 0.0, 1e6)  # at 0 with no drop yet: only non-finite counts


def test_an_end_value_the_last_tracked_step_lacks_is_not_filled_from_an_earlier_step():
    """A kappa float64 cannot resolve is None at the last tracked step: the run's end value is
    None (the table shows "-"), not the start value repeated as if measured at the end."""
    from condlab.compare.summary import summarize_run

    cfg = parse_config(tiny(target_loss=None, optimizers=[{"name": "sgd", "lr": 0.1}]))
    base = dict.fromkeys(COLUMNS)
    base.update(variant="full", optimizer="sgd", method="sgd", basis="identity", lr=0.1,
                weight_decay=0.0, seed=0, status="ok", train_loss=1.0)
    rows = [{**base, "step": 0, "kappa": 50.0, "block_kappa": 5.0, "converged": True},
            {**base, "step": 5},  # logged, not tracked
            {**base, "step": 10, "kappa": None, "block_kappa": 4.0, "converged": True}]
    run = summarize_run(rows, cfg)
    assert run.kappa == (50.0, None) and run.block_kappa == (5.0, 4.0)
    # with the bound the tracker keeps for an unresolved kappa, the table says what is known
    from condlab.compare.render import _kappas
    from condlab.compare.summary import Choice

    rows[-1]["kappa_bound"] = 3.0e13
    run = summarize_run(rows, cfg)
    choice = Choice("full", "sgd", 0.1, (run,), ((0.1, (1.0, 0.0)),))
    assert run.kappa_bound == 3.0e13
    assert _kappas(choice, "kappa", True).replace(" ", "") == "50->>3.0e+13"
    assert _kappas(choice, "block_kappa", True).replace(" ", "") == "5->4"


def test_row_format_roundtrips_exactly():
    row = {"variant": "a,b", "optimizer": "adam", "method": "adam", "basis": "identity",
           "batch_size": None, "lr": 0.1, "weight_decay": 1e-17, "tuned": True, "seed": 3,
           "step": 7, "status": "ok", "train_loss": 1 / 3, "kappa": math.inf, "test_loss": math.nan,
           "nullity": 2, "converged": False}
    back = normalize(row)
    assert set(back) == set(COLUMNS)
    assert back["train_loss"] == 1 / 3 and back["kappa"] == math.inf and math.isnan(back["test_loss"])
    assert back["variant"] == "a,b" and back["batch_size"] is None and back["tuned"] is True
    assert format_row(back) == format_row(row)


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("stop", [1, 11, 23, 50])  # 11 rows per run: 11 ends run 1
def test_interrupted_then_resumed_csv_is_identical(tmp_path, stop):
    cfg = parse_config(tiny(seeds=[0], variants=[{"label": "mini", "batch_size": 16}]))
    full = tmp_path / "full.csv"
    whole = compare(cfg, output=full)
    cut = tmp_path / "cut.csv"
    with pytest.raises(KeyboardInterrupt):
        compare(cfg, output=cut, stop_after_rows=stop)
    assert len(read_rows(cut)) == stop
    resumed = compare(cfg, output=cut, resume=True)
    assert _bytes(cut) == _bytes(full)
    assert resumed.resumed_rows == stop
    assert [f.measured for f in resumed.findings] == [f.measured for f in whole.findings]
    assert [(c.optimizer, c.lr) for c in resumed.choices] == [(c.optimizer, c.lr) for c in whole.choices]


def test_resume_repairs_a_torn_line_and_refuses_another_config(tmp_path):
    cfg = parse_config(tiny(seeds=[0], variants=None, optimizers=[{"name": "adam", "lr": 0.05}]))
    full, cut = tmp_path / "full.csv", tmp_path / "cut.csv"
    compare(cfg, output=full)
    text = _bytes(full)
    lines = text.splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:4]) + lines[4][:9])  # killed in the middle of a row
    (tmp_path / "cut.config.json").write_bytes((tmp_path / "full.config.json").read_bytes())
    compare(cfg, output=cut, resume=True)
    assert _bytes(cut) == text
    other = parse_config(tiny(seeds=[0], variants=None, optimizers=[{"name": "adam", "lr": 0.06}]))
    with pytest.raises(UsageError, match="different config"):
        compare(other, output=cut, resume=True)
    with pytest.raises(UsageError, match="--resume to continue it or --force"):
        compare(cfg, output=cut)
    doc = json.loads((tmp_path / "full.config.json").read_text())
    assert doc["config"]["optimizers"][0]["name"] == "adam"
    with pytest.raises(UsageError, match="--threads"):  # other threads change the numbers
        compare(cfg, output=cut, resume=True, threads=2)
    (tmp_path / "cut.config.json").unlink()
    with pytest.raises(UsageError, match="no cut.config.json"):  # which run wrote it is unknown
        compare(cfg, output=cut, resume=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    (tmp_path / "bad.config.json").write_bytes((tmp_path / "full.config.json").read_bytes())
    with pytest.raises(UsageError, match="not a condlab compare CSV"):
        compare(cfg, output=bad, resume=True)


# -- rendering and the CLI --------------------------------------------------------------------------
def test_tables_render_as_text():
    cfg = parse_config(tiny(seeds=[0], findings="paper-b"))
    report = compare(cfg)
    console = Console(file=io.StringIO(), width=200)
    for table in (summary_table(report), grid_table(report), findings_table(report)):
        console.print(table)
    text = console.file.getvalue()
    assert "condlab compare: tiny" in text and "0.1*" in text and "diverged" in text
    assert "findings (paper-b)" in text and "full batch, identity basis" in text
    assert findings_markdown(report).startswith(
        "| claim | source | control (wins if the claim is false) | measured | verdict |")
    again = report_from_rows(cfg, report.rows)
    assert [f.measured for f in again.findings] == [f.measured for f in report.findings]


def _write_config(tmp_path: Path, **over) -> Path:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny(seeds=[0], variants=None, **over)))
    return path


def test_cli_compare_writes_csv_plot_and_resumes(tmp_path):
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    config = _write_config(tmp_path, findings="paper-b")
    out, plot = tmp_path / "r.csv", tmp_path / "r.png"
    r = runner.invoke(app, ["compare", str(config), "-o", str(out), "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert "findings (paper-b)" in r.output and plot.stat().st_size > 1000
    reference = _bytes(out)
    out.unlink()
    r = runner.invoke(app, ["compare", str(config), "-o", str(out), "--stop-after-rows", "17"])
    assert r.exit_code == 130 and "--resume" in r.output
    r = runner.invoke(app, ["compare", str(config), "-o", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert _bytes(out) == reference
    r = runner.invoke(app, ["compare", str(config), "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["compare", str(config), "--resume"])
    assert r.exit_code == 2 and "add --output" in r.output
    r = runner.invoke(app, ["compare", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_every_shipped_config_parses_in_both_sizes():
    root = Path(__file__).resolve().parents[2] / "configs"
    paths = sorted(root.glob("compare_*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        for quick in (False, True):
            cfg = load_config(path, quick=quick)
            assert cfg.findings and cfg.optimizers


def test_compare_refuses_torchrun(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from condlab.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    r = CliRunner().invoke(app, ["compare", "configs/compare_c.yaml", "--quick"])
    assert r.exit_code == 2 and "torchrun" in r.output and "Traceback" not in r.output


def test_plot_draws_no_unconverged_kappa_and_converged_runs_have_no_hollow_markers():
    """Measurements with too few products (converged false) have no certified ends, so no kappa
    is drawn for them; converged runs have no hollow markers and no legend entry for them."""
    pytest.importorskip("matplotlib")
    from condlab.compare.plots import UNCONVERGED, UNRESOLVED, draw_report

    def hollow_points(fig, title):
        ax = next(a for a in fig.axes if a.get_title() == title)
        return sorted((float(x), float(y)) for line in ax.get_lines() if line.get_markerfacecolor() == "none"
                      for x, y in zip(line.get_xdata(), line.get_ydata()))

    def legend_texts(fig):
        return [t.get_text() for leg in fig.legends for t in leg.get_texts()]

    raw = tiny(variants=None, seeds=[0], steps=6, target_loss=None, criterion="final_loss",
               data={"name": "linreg", "n": 64, "d": 8, "kappa": 100, "rotate": True},
               optimizers=[{"name": "sgd", "lr": 0.01}],
               track={"every": 2, "curvature": "ggn", "max_hvps": 3, "tol": 1e-10})
    report = compare(parse_config(raw))
    # three products cannot resolve an 8-dimensional spectrum to 1e-10: every measurement is
    # unconverged, and since its ends are not certified it carries no kappa at all (backed
    # bounds: an unconverged kappa is withheld, never drawn as if it were a value)
    assert report.rows and all(r["converged"] is False for r in report.rows)
    assert all(r.get("kappa") is None for r in report.rows)
    fig = draw_report(report)
    assert hollow_points(fig, "kappa(ggn)") == []

    converged = compare(parse_config({**raw, "track": {"every": 2, "curvature": "ggn", "exact": True}}))
    assert all(r["converged"] is not False for r in converged.rows)
    fig = draw_report(converged)
    assert hollow_points(fig, "kappa(ggn)") == [] and UNCONVERGED not in legend_texts(fig)
    assert UNRESOLVED not in legend_texts(fig)


def test_plot_marks_a_kappa_the_dtype_cannot_resolve_by_its_bound():
    """Feature scales 1 and 3000 give kappa ~ 1e7, beyond what float32 resolves: the row holds no
    kappa but its lower bound, and the plot draws that bound as a hollow triangle, explained."""
    pytest.importorskip("matplotlib")
    from condlab.compare.plots import UNRESOLVED, draw_report

    raw = tiny(variants=None, seeds=[0], steps=1, target_loss=None, criterion="final_loss",
               model={"name": "linear", "bias": False}, dtype="float32",
               data={"name": "linreg", "n": 64, "d": 2, "scale": [1, 3000], "exact": True},
               optimizers=[{"name": "sgd", "lr": 1e-9}],
               track={"every": 1, "curvature": "ggn", "exact": True})
    report = compare(parse_config(raw))
    bounds = sorted((float(r["step"]), r["kappa_bound"]) for r in report.rows if r.get("kappa_bound"))
    assert bounds and all(r["kappa"] is None for r in report.rows if r.get("kappa_bound"))
    fig = draw_report(report)
    ax = next(a for a in fig.axes if a.get_title() == "kappa(ggn)")
    drawn = sorted((float(x), float(y)) for line in ax.get_lines() if line.get_marker() == "^"
                   and line.get_markerfacecolor() == "none"
                   for x, y in zip(line.get_xdata(), line.get_ydata()))
    assert drawn == bounds
    assert UNRESOLVED in [t.get_text() for leg in fig.legends for t in leg.get_texts()]
