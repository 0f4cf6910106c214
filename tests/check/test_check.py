"""`condlab check`: tolerance verdicts, the baseline schema, --update, outputs, exit codes, and
the documented example (configs/) passing on a fresh checkpoint and failing on a degraded one."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
import xml.etree.ElementTree as ET
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from condlab.check import (
    Guard,
    Ref,
    Tolerance,
    check_table,
    judge,
    judge_check,
    junit_xml,
    load_baseline,
    run_checks,
    splice_values,
    summary,
    yaml_number,
)
from condlab.check.schema import DEFAULT_BETTER
from condlab.check.verdict import change, change_text
from condlab.cli import app
from condlab.errors import CondlabError, UsageError
from condlab.pipeline import SpectrumReport
from condlab.report.records import SpectrumResult

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- verdicts on hand-made values ----------------------------------------------------------------
def g(tol=None, value=100.0, metric="condition_number", **kw):
    kw.setdefault("better", DEFAULT_BETTER.get(metric))  # as the parser fills it in
    return Guard(index=0, metric=metric, setting="baseline", value=value, tolerance=tol, **kw)


INC, DEC, BOTH = (Tolerance(rel=0.2, direction=d) for d in ("increase", "decrease", "both"))
# (guard, new value, verdict, passes)
CASES = [
    (g(INC), 100.0, "pass", True),
    (g(INC), 120.0, "pass", True),  # the band's edge is inside
    (g(INC), 121.0, "regressed", False),
    (g(INC), 50.0, "improved", True),  # one-sided: an improvement passes
    (g(DEC), 79.0, "regressed", False),
    (g(DEC), 500.0, "improved", True),
    (g(BOTH), 119.0, "pass", True),
    (g(BOTH), 130.0, "regressed", False),  # condition_number: lower is better
    (g(BOTH), 70.0, "improved", False),  # two-sided: the baseline is stale
    (g(BOTH, better="higher"), 130.0, "improved", False),
    (g(BOTH, metric="trace"), 130.0, "changed", False),  # no better way known
    (g(BOTH, metric="trace"), 70.0, "changed", False),
    (g(Tolerance(abs=0.5)), 100.5, "pass", True),
    (g(Tolerance(abs=0.5)), 100.6, "regressed", False),
    (g(Tolerance(abs=0.5, direction="decrease"), value=-3.0, metric="lambda_min"), -3.6, "regressed", False),
    (g(Tolerance(rel=0.1), value=-2.0, metric="lambda_min"), -2.15, "pass", True),  # |old| sets the band
    (g(Tolerance(rel=0.0), value=0.0, metric="nullity"), 0.0, "pass", True),
    (g(INC, value=None), 5.0, "new", True),  # under --update only
    (g(INC), None, "missing", False),
    (g(INC), math.nan, "missing", False),
    (g(value=None, min=10.0, metric="ratio"), 12.0, "pass", True),
    (g(value=None, min=10.0, metric="ratio"), 9.0, "regressed", False),
    (g(INC, max=110.0), 111.0, "regressed", False),  # bounds hold inside the tolerance too
]


@pytest.mark.parametrize(("guard", "new", "verdict", "ok"), CASES)
def test_verdicts(guard, new, verdict, ok):
    v = judge(guard, new)
    assert (v.verdict, v.ok) == (verdict, ok), v.message


def test_unconverged_fails_with_its_reason():
    v = judge(g(INC), 100.0, problem="did not converge")
    assert (v.verdict, v.ok, v.message) == ("unconverged", False, "did not converge")


def test_change_as_ratio_and_percent():
    assert change(100.0, 123.0) == pytest.approx((1.23, 23.0))
    assert change(0.0, 1.0) == (None, None)
    assert [change_text(100.0, x) for x in (123.0, 100.0, 1340.0, 40.0)] == ["+23%", "0%", "x13.4", "x0.4"]
    assert change_text(0.0, 0.5) == "+0.5" and change_text(None, 1.0) == "-"


def result(setting, **kw):
    fields = dict(curvature="ggn", preconditioner=None, normalization=None, n_params=10, n_samples=5)
    fields.update(converged_top=[True], converged_bottom=[True])
    return SpectrumResult(setting=setting, **{**fields, **kw})


def test_ratio_of_two_settings_and_unconverged_sides():
    adam = Guard(index=0, metric="ratio", numerator=Ref("baseline"), denominator=Ref("adam"), min=10.0)
    lam = Guard(index=1, metric="lambda_max", setting="adam", value=2.0, tolerance=Tolerance(rel=0.1))
    res = [result("baseline", condition_number=5000.0), result("adam", condition_number=100.0, lambda_max=2.0)]
    (r1, r2) = judge_check(_check([adam, lam]), res)
    assert (r1.new, r1.verdict.verdict, r2.verdict.verdict) == (50.0, "pass", "pass")
    res[1] = result("adam", condition_number=1000.0, converged_bottom=[False])
    r1, _ = judge_check(_check([adam, lam]), res)
    assert r1.verdict.verdict == "unconverged" and "adam" in r1.verdict.message


def _check(guards):
    from condlab.check.schema import Check
    from condlab.config import SpectrumConfig

    cfg = SpectrumConfig(model="linear", data="iris", precond=("adam",))
    return Check(index=0, name="c", spectrum=cfg, guards=tuple(guards), target="linear")


# -- the baseline schema -------------------------------------------------------------------------
GOOD = """\
checks:
  - name: tiny
    spectrum: {model: linear, data: iris, dtype: float64, top: 1, bottom: 1, trace: true}
    metrics:
      - metric: condition_number
        value: 100.0
        tolerance: {rel: 0.2, direction: increase}
"""


def write(tmp_path, text, name="base.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("checks:", "chekcs: []\nchecks:"), "unknown key 'chekcs'"),
        (("    metrics:", "    metric:"), "unknown key 'metric' in check 'tiny'"),
        (("dtype: float64", "dtyp: float64"), "unknown key 'dtyp' in check 'tiny'"),
        (("value: 100.0", "valeu: 100.0"), "unknown key 'valeu' in metric #1"),
        (("rel: 0.2,", "rel: 0.2, abs: 1,"), "exactly one of 'rel'"),
        (("rel: 0.2,", "rell: 0.2,"), "unknown key 'rell' in the tolerance"),
        (("direction: increase", "direction: up"), "direction of the tolerance"),
        (("metric: condition_number", "metric: kappa"), "unknown metric 'kappa'"),
        (("metric: condition_number", "metric: trace\n        setting: adam"), "setting 'adam' is not measured"),
        (("trace: true", "trace: false", "metric: condition_number", "metric: trace"), "add 'trace: true'"),
        (("      - metric: condition_number\n        value: 100.0\n", "      - metric: condition_number\n"), "no stored value"),
        (("        tolerance: {rel: 0.2, direction: increase}\n", ""), "guards nothing"),
        (("value: 100.0", "value: lots"), "must be a finite number"),
        (("name: tiny", "nam: tiny"), "needs a 'name'"),
        (("{model: linear,", "{checkpoint: nowhere.pt, model: linear,"), "nowhere.pt' of check 'tiny'"),
    ],
)
def test_schema_errors_name_the_key_and_the_check(tmp_path, edit, match):
    text = GOOD
    for old, new in zip(edit[::2], edit[1::2]):
        text = text.replace(old, new)
    p = write(tmp_path, text)
    with pytest.raises(UsageError, match=match):
        load_baseline(p)


def test_update_mode_accepts_guards_without_values_and_paths_resolve_from_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    text = GOOD.replace("        value: 100.0\n", "").replace("{model: linear,", "{weights: ../w.pt, model: linear,")
    base = load_baseline(write(tmp_path / "sub", text), need_values=False)
    assert base.checks[0].guards[0].value is None
    assert Path(base.checks[0].spectrum.weights) == tmp_path / "sub" / ".." / "w.pt"


def test_ratio_schema(tmp_path):
    text = GOOD.replace("top: 1,", "top: 1, precond: [adam],") + textwrap.indent(
        "- metric: ratio\n  numerator: {setting: baseline}\n  denominator: {setting: adam, metric: condition_number}\n  min: 10\n",
        "      ",
    )
    guard = load_baseline(write(tmp_path, text)).checks[0].guards[1]
    assert (guard.numerator, guard.denominator, guard.min) == (Ref(), Ref("adam"), 10.0)
    assert guard.label == "ratio condition_number[baseline] / condition_number[adam]"
    with pytest.raises(UsageError, match="needs a 'denominator'"):
        load_baseline(write(tmp_path, text.replace("        denominator: {setting: adam, metric: condition_number}\n", "")))


# -- --update edits the text ---------------------------------------------------------------------
COMMENTED = """\
# my baseline: keep this comment
checks:
  - name: a   # first
    spectrum: {model: linear, data: iris}
    metrics:
      - metric: lambda_max   # sharpness
        value: 1.5           # old number
        tolerance: {rel: 0.1, direction: increase}  # keep me
      - metric: trace
        tolerance: {abs: 2}
      - {metric: lambda_min, tolerance: {rel: 0.5}}
"""


def test_splice_keeps_comments_order_and_tolerances():
    new = splice_values(COMMENTED, {(0, 0): 2.25, (0, 1): 1e-05, (0, 2): -3.0})
    assert new.splitlines()[:7] == COMMENTED.splitlines()[:6] + ["        value: 2.25           # old number"]
    assert "        tolerance: {abs: 2}" in new and "# keep me" in new and "# sharpness" in new
    assert "      - metric: trace\n        value: 1.0e-05\n" in new
    assert "{metric: lambda_min, value: -3.0, tolerance: {rel: 0.5}}" in new
    ms = yaml.safe_load(new)["checks"][0]["metrics"]
    assert [m["value"] for m in ms] == [2.25, 1e-05, -3.0]
    assert ms[0]["tolerance"] == {"rel": 0.1, "direction": "increase"}


@pytest.mark.parametrize("x", [1e-05, 2.5e20, 0.1, 1.0, -7.0e-300, 46926.383903768234, 3])
def test_yaml_number_reads_back_exactly(x):
    assert yaml.safe_load(f"v: {yaml_number(x)}")["v"] == x


# -- runs with a stand-in measurement: errors, outputs -------------------------------------------
def fake_measure(values: dict):
    def measure(cfg, on_progress=None, threads=None):
        if "boom" in values:
            raise values["boom"]
        return SpectrumReport(cfg.to_dict(), [result("baseline", **values)], [], "fake")

    return measure


def test_failed_measurement_is_an_error_verdict_and_usage_errors_stop(tmp_path):
    base = load_baseline(write(tmp_path, GOOD))
    run = run_checks(base, only=("tiny",), measure=fake_measure({"boom": CondlabError("NaN curvature")}))
    assert run.exit_code == 1 and run.checks[0].guards[0].verdict.verdict == "error"
    error = ET.fromstring(junit_xml(run)).find("./testsuite/testcase/error")
    assert "NaN curvature" in error.get("message")
    with pytest.raises(UsageError, match="check 'tiny': bad data"):
        run_checks(base, measure=fake_measure({"boom": UsageError("bad data")}))
    with pytest.raises(UsageError, match="no check named 'nope'"):
        run_checks(base, only=("nope",), measure=fake_measure({}))


def test_junit_table_and_summary(tmp_path):
    text = GOOD + "      - metric: trace\n        value: 2.0\n        tolerance: {rel: 0.1}\n"
    base = load_baseline(write(tmp_path, text))
    run = run_checks(base, measure=fake_measure({"condition_number": 150.0, "trace": 2.05}))
    root = ET.fromstring(junit_xml(run))
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("errors")) == ("testsuites", "2", "1", "0")
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["condition_number [baseline]", "trace [baseline]"]
    assert "+50%" in cases[0].find("failure").get("message") and cases[1].find("failure") is None
    buf = StringIO()
    Console(file=buf, width=100).print(check_table(run.checks[0]))
    assert "regressed" in buf.getvalue() and "+50%" in buf.getvalue() and "setting" not in buf.getvalue()
    assert summary(run) == "FAILED: 1 check, 2 metrics (regressed 1, pass 1)"


# -- the CLI on a tiny real checkpoint -----------------------------------------------------------
@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """A folder with an iris checkpoint from `condlab train` and an un-recorded baseline."""
    d = tmp_path_factory.mktemp("iris")
    (d / "train.yaml").write_text(
        "model: {name: mlp, widths: [6], activation: tanh}\ndata: iris\n"
        "optimizer: {name: adam, lr: 0.01}\nsteps: 50\nseed: 0\n"
    )
    assert invoke("train", d / "train.yaml", "--out", d / "iris.pt").exit_code == 0
    (d / "base.yaml").write_text(
        "checks:\n  - name: iris  # comment\n"
        "    spectrum: {checkpoint: iris.pt, dtype: float64, top: 1, bottom: 2, trace: true, probes: 20}\n"
        "    metrics:\n"
        "      - {metric: lambda_max, tolerance: {rel: 0.01}}\n"
        "      - {metric: trace, tolerance: {rel: 0.01, direction: increase}}  # trace\n"
    )
    return d


def test_cli_update_then_check_passes_then_a_tightened_guard_fails(iris, tmp_path):
    base = shutil.copy(iris / "base.yaml", tmp_path / "base.yaml")
    shutil.copy(iris / "iris.pt", tmp_path / "iris.pt")
    assert invoke("check", base).exit_code == 2  # no stored values yet
    r = invoke("check", base, "--update")
    assert r.exit_code == 0, r.output
    text = Path(base).read_text()
    assert "# comment" in text and "# trace" in text and text.count("value:") == 2
    r = invoke("check", base, "--junit", tmp_path / "out" / "report.xml")
    assert r.exit_code == 0 and "PASSED" in r.stdout, r.output
    assert ET.parse(tmp_path / "out" / "report.xml").getroot().get("failures") == "0"
    lam = yaml.safe_load(text)["checks"][0]["metrics"][0]["value"]
    Path(base).write_text(text.replace(yaml_number(lam), yaml_number(lam * 0.5)))  # stored half
    r = invoke("check", base, "--format", "json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    guards = doc["checks"][0]["guards"]
    assert [x["verdict"] for x in guards] == ["changed", "pass"] and not doc["ok"]
    assert guards[0]["change_ratio"] == pytest.approx(2.0) and guards[0]["change_percent"] == pytest.approx(100.0)
    assert doc["checks"][0]["results"][0]["setting"] == "baseline"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("checks: [\n", "not valid YAML"),
        ("checks:\n  - name: x\n    spectrum: {checkpoint: gone.pt}\n    metrics: [{metric: trace, max: 1}]\n", "gone.pt"),
        ("checks:\n  - name: x\n    spectrum: {checkpoint: iris.pt, colour: red}\n    metrics: [{metric: lambda_max, max: 1}]\n", "unknown key 'colour'"),
    ],
)
def test_cli_usage_errors_exit_2(iris, text, match):
    p = iris / "bad.yaml"
    p.write_text(text)
    r = invoke("check", p)
    assert r.exit_code == 2 and match in r.output, r.output
    assert invoke("check", iris / "nothing.yaml").exit_code == 2


# -- the documented example: configs/ on digits --------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """configs/ copied beside a fresh digits.pt (the real train config) and a degraded one
    (the same config with Adam's learning rate 1.0, which multiplies sharpness 20-fold)."""
    d = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "configs", d / "configs")
    r = invoke("train", d / "configs" / "train_digits.yaml", "--out", d / "digits.pt")
    assert r.exit_code == 0, r.output
    bad = (d / "configs" / "train_digits.yaml").read_text().replace("lr: 0.01", "lr: 1.0")
    (d / "bad.yaml").write_text(bad)
    r = invoke("train", d / "bad.yaml", "--out", d / "degraded.pt")
    assert r.exit_code == 0, r.output
    return d


def test_example_baseline_passes_on_a_fresh_checkpoint_and_fails_on_a_degraded_one(digits, tmp_path):
    r = invoke("check", digits / "configs" / "check_baseline.yaml", "--junit", tmp_path / "r.xml")
    assert r.exit_code == 0, r.output
    shutil.copy(digits / "degraded.pt", tmp_path / "digits.pt")
    (tmp_path / "configs").mkdir()
    shutil.copy(digits / "configs" / "check_baseline.yaml", tmp_path / "configs")
    r = invoke("check", tmp_path / "configs" / "check_baseline.yaml", "--junit", tmp_path / "r.xml")
    assert r.exit_code == 2 and "--force" in r.output  # the first report is not replaced unasked
    r = invoke("check", tmp_path / "configs" / "check_baseline.yaml", "--junit", tmp_path / "r.xml",
               "--force")
    assert r.exit_code == 1, r.output
    assert "regressed" in r.stdout and "FAILED" in r.stdout
    assert int(ET.parse(tmp_path / "r.xml").getroot().get("failures")) >= 3


def test_same_seed_same_numbers_bitwise(digits):
    base = load_baseline(digits / "configs" / "check_baseline.yaml")
    first, second = (run_checks(base) for _ in range(2))
    news = [[g.new for c in run.checks for g in c.guards] for run in (first, second)]
    assert news[0] == news[1] and all(x is not None for x in news[0])


@pytest.mark.parametrize(
    "spectrum, metric, why",
    [
        ("top: 1, bottom: 0", "condition_number", "top-only run: kappa is not measured"),
        ("top: 1, bottom: 2, tol: 1.0e-12, max_hvps: 3", "lambda_max", "unconverged"),
    ],
)
def test_update_never_stores_an_untrustworthy_value(iris, tmp_path, spectrum, metric, why):
    base = tmp_path / "base.yaml"
    shutil.copy(iris / "iris.pt", tmp_path / "iris.pt")
    text = (
        "checks:\n  - name: iris\n"
        f"    spectrum: {{checkpoint: iris.pt, dtype: float64, {spectrum}}}\n"
        f"    metrics:\n      - {{metric: {metric}, tolerance: {{rel: 0.01}}}}\n"
    )
    base.write_text(text)
    r = invoke("check", base, "--update")
    assert r.exit_code == 1, (why, r.output)
    assert base.read_text() == text and "not updated" in r.output
