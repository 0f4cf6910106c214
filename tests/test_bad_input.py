"""Bad input, as a new user gives it: one `error:` line, exit 2 (usage) or 1, before any work.

Each row runs in an empty folder holding only the row's files; a curvature product or a
training step raises, so a check that comes after the work fails the row; nothing may be
written. docs/errors.md lists the same rows (kept true by a test below);
``python tests/test_bad_input.py`` prints that table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from condlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
S = ("spectrum", "--model", "linear", "--data", "iris")  # a valid problem: nothing to load
CFG = ("spectrum", "--model", "linear", "--data", "iris", "--config", "c.yaml")
BASELINE = "checks:\n  - name: a\n    spectrum: {model: linear, data: iris}\n    metrics: [{metric: lambda_max, min: 0}]\n"
TRAIN = "model: linear\ndata: iris\nsteps: 2\n"
COMPARE = ("model: {name: linear}\ndata: {name: linreg, n: 64, d: 4}\nsteps: 1e1\n"
           "optimizers: [{name: adam, lr: 1e-2}]\n")

# (what is wrong, arguments, files in the folder, exit code, words the line must hold)
BAD = [
    ("a word for an integer", (*S, "--top", "abc"), {}, 2, "--top"),
    ("an unsupported dtype", (*S, "--dtype", "float16"), {}, 2, "--dtype"),
    ("an unknown device", (*S, "--device", "tpu"), {}, 2, "--device"),
    ("an unknown curvature", (*S, "--curvature", "fisher"), {}, 2, "--curvature"),
    ("an unknown flag", (*S, "--topp", "3"), {}, 2, "--topp"),
    ("a flag given a value", (*S, "--trace", "true"), {}, 2, "true"),
    ("a negative count", (*S, "--top", "-1"), {}, 2, "--top"),
    ("tol of zero", (*S, "--tol", "0"), {}, 2, "--tol"),
    ("tol above one", (*S, "--tol", "2"), {}, 2, "--tol"),
    ("no product budget", (*S, "--max-hvps", "0"), {}, 2, "--max-hvps"),
    ("no probes", (*S, "--probes", "0"), {}, 2, "--probes"),
    ("an empty batch", (*S, "--batch-size", "0"), {}, 2, "--batch-size"),
    ("a negative sample count", (*S, "--max-samples", "-3"), {}, 2, "--max-samples"),
    ("negative damping", (*S, "--damping", "-1"), {}, 2, "--damping"),
    ("a zero block size", (*S, "--block-size", "0"), {}, 2, "--block-size"),
    ("zero threads", (*S, "--threads", "0"), {}, 2, "--threads"),
    ("a null threshold of 1.5", (*S, "--null-threshold", "1.5"), {}, 2, "--null-threshold"),
    ("weight decay without a kind", (*S, "--weight-decay", "0.1"), {}, 2, "--decay"),
    ("a zero learning rate", (*S, "--lr", "0"), {}, 2, "--lr"),
    ("momentum of 1.5", (*S, "--beta1", "1.5"), {}, 2, "--beta1"),
    ("a negative eps", (*S, "--precond", "gn", "--eps", "-1"), {}, 2, "--eps"),
    ("an unknown preconditioner", (*S, "--precond", "newton"), {}, 2, "--precond"),
    ("an optimizer preconditioner without its state", (*S, "--precond", "optimizer"), {}, 2,
     "optimizer state"),
    ("an unknown normalization", (*S, "--norm", "group"), {}, 2, "--norm"),
    ("nothing to measure", (*S, "--top", "0", "--bottom", "0"), {}, 2, "nothing to measure"),
    ("no model and no checkpoint", ("spectrum", "--data", "iris"), {}, 2, "--model"),
    ("a missing checkpoint", ("spectrum", "nope.pt"), {}, 2, "does not exist"),
    ("a table into a file", (*S, "--output", "x.json"), {}, 2, "--format"),
    ("a plot without a density", (*S, "--plot", "x.png"), {}, 2, "--density"),
    ("an output that exists", (*S, "-f", "json", "-o", "r.json"), {"r.json": "mine"}, 2, "--force"),
    ("an output that is a folder", (*S, "-f", "json", "-o", "d"), {"d/keep": ""}, 2, "folder"),
    ("an output under a file", (*S, "-f", "json", "-o", "f/r.json"), {"f": ""}, 2, "is a file"),
    ("a CSV whose second file exists", (*S, "-f", "csv", "-o", "r.csv"),
     {"r_eigenvalues.csv": "mine"}, 2, "--force"),
    ("a density grid that exists", (*S, "--density"), {"density.csv": "mine"}, 2, "--force"),
    ("a plot under a file", (*S, "--density", "--density-output", "g.csv", "--plot", "f/x.png"),
     {"f": ""}, 2, "is a file"),
    ("a missing --config", (*CFG,), {}, 2, "does not exist"),
    ("a missing --model-config", (*S, "--model-config", "m.yaml"), {}, 2, "does not exist"),
    ("YAML: tol as a word", CFG, {"c.yaml": "tol: abc\n"}, 2, "'c.yaml': tol"),
    ("YAML: trace as the string no", CFG, {"c.yaml": 'trace: "no"\n'}, 2, "'c.yaml': trace"),
    ("YAML: a fractional count", CFG, {"c.yaml": "top: 2.5\n"}, 2, "'c.yaml': top"),
    ("YAML: a count as a word", CFG, {"c.yaml": "top: five\n"}, 2, "'c.yaml': top"),
    ("YAML: an unknown preconditioner", CFG, {"c.yaml": "precond: [newton]\n"}, 2, "precond"),
    ("YAML: an unknown key", CFG, {"c.yaml": "steps: ten\n"}, 2, "'steps'"),
    ("YAML: trust from a file", CFG, {"c.yaml": "trust_checkpoint: true\n"}, 2,
     "--trust-checkpoint"),
    ("YAML: not YAML", CFG, {"c.yaml": "top: [1,\n"}, 2, "not valid YAML"),
    ("YAML: a list, not a mapping", CFG, {"c.yaml": "- top\n"}, 2, "mapping"),
    ("train: a missing config", ("train", "t.yaml", "--out", "m.pt"), {}, 2, "does not exist"),
    ("train: steps as a word", ("train", "t.yaml", "--out", "m.pt"),
     {"t.yaml": TRAIN.replace("steps: 2", "steps: ten")}, 2, "steps"),
    ("train: an unknown key", ("train", "t.yaml", "--out", "m.pt"),
     {"t.yaml": TRAIN + "epochs: 3\n"}, 2, "'epochs'"),
    ("train: a string lr", ("train", "t.yaml", "--out", "m.pt"),
     {"t.yaml": TRAIN + "optimizer: {name: adam, lr: fast}\n"}, 2, "lr"),
    ("train: --out is a folder", ("train", "t.yaml", "--out", "d", "--force"),
     {"t.yaml": TRAIN, "d/keep": ""}, 2, "folder"),
    ("train: --out exists", ("train", "t.yaml", "--out", "m.pt"), {"t.yaml": TRAIN, "m.pt": "x"},
     2, "--force"),
    ("check: a missing baseline", ("check", "b.yaml"), {}, 2, "does not exist"),
    ("check: --junit is a folder", ("check", "b.yaml", "--junit", "d"),
     {"b.yaml": BASELINE, "d/keep": ""}, 2, "folder"),
    ("check: --junit exists", ("check", "b.yaml", "--junit", "r.xml"),
     {"b.yaml": BASELINE, "r.xml": "mine"}, 2, "--force"),
    ("check: trust from the baseline", ("check", "b.yaml"),
     {"b.yaml": BASELINE.replace("data: iris", "data: iris, trust_checkpoint: true")}, 2,
     "--trust-checkpoint"),
    ("check: a string tolerance", ("check", "b.yaml"),
     {"b.yaml": BASELINE.replace("top: 0", "").replace("data: iris}", "data: iris, tol: x}")},
     2, "tol"),
    ("compare: a missing config", ("compare", "c.yaml"), {}, 2, "does not exist"),
    ("compare: steps as a word", ("compare", "c.yaml"), {"c.yaml": COMPARE.replace("steps: 1e1",
                                                                                "steps: ten")},
     2, "steps"),
    ("compare: lr as a word", ("compare", "c.yaml"), {"c.yaml": COMPARE.replace("lr: 1e-2",
                                                                             "lr: fast")},
     2, "lr"),
    ("compare: --resume without --output", ("compare", "configs/compare_b_linreg.yaml",
                                             "--resume"), {}, 2, "--output"),
    ("compare: --resume with --force", ("compare", "configs/compare_b_linreg.yaml", "--resume",
                                        "--force", "-o", "x.csv"), {}, 2, "--force"),
    ("compare: --output exists", ("compare", "configs/compare_b_linreg.yaml", "-o", "x.csv"),
     {"x.csv": "mine"}, 2, "--force"),
    ("compare: resume without its record", ("compare", "configs/compare_b_linreg.yaml", "-o",
                                            "x.csv", "--resume"), {"x.csv": "step\n"}, 2,
     "x.config.json"),
    ("compare: a track key as a word", ("compare", "c.yaml"),
     {"c.yaml": COMPARE + "track: {tol: abc}\n"}, 2, "track: tol"),
    ("compare: a variant's override as a word", ("compare", "c.yaml"),
     {"c.yaml": COMPARE + "variants: [{label: a, batch_size: ten}]\n"}, 2, "variants[0]: batch_size"),
    ("compare: a negative seed", ("compare", "c.yaml"), {"c.yaml": COMPARE + "seeds: [0, -1]\n"}, 2,
     "seeds"),
    ("compare: zero threads", ("compare", "c.yaml", "--threads", "0"), {"c.yaml": COMPARE}, 2,
     "--threads"),
    ("compare: a flag given a value", ("compare", "c.yaml", "--force", "true"), {"c.yaml": COMPARE},
     2, "true"),
    ("check: an unknown --format", ("check", "b.yaml", "-f", "csv"), {"b.yaml": BASELINE}, 2,
     "--format"),
    ("check: --update with --junit", ("check", "b.yaml", "--update", "--junit", "r.xml"),
     {"b.yaml": BASELINE}, 2, "--junit"),
    ("check: --only an unknown check", ("check", "b.yaml", "--only", "nosuch"), {"b.yaml": BASELINE},
     2, "nosuch"),
    ("train: no --out", ("train", "t.yaml"), {"t.yaml": TRAIN}, 2, "--out"),
    ("demo: zero steps", ("demo", "--steps", "0"), {}, 2, "--steps"),
    ("track: no checkpoint matches", ("track", "run/ckpt_*.pt", *S[1:]), {}, 2, "run/ckpt_*.pt"),
    ("track: a plot that is not a PNG", ("track", "run", *S[1:], "--plot", "x.txt"), {}, 2, "--plot"),
    ("track: --resume with --force", ("track", "run", *S[1:], "--resume", "--force"), {}, 2,
     "--force"),
    ("track: an unknown --on-error", ("track", "run", *S[1:], "--on-error", "retry"), {}, 2,
     "--on-error"),
    ("an unknown command", ("spectra",), {}, 2, "spectra"),
    ("an unknown listing", ("list", "things"), {}, 2, "things"),
]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """Any curvature product or training step fails the row: checks must come first."""
    from condlab.operators.base import LinearOperator

    def product(self, V):
        raise AssertionError("a curvature product was computed before the error")

    monkeypatch.setattr(LinearOperator, "matmat", product)
    import condlab.train.loop as loop

    def step(*a, **k):
        raise AssertionError("training started before the error")

    monkeypatch.setattr(loop, "train", step)


@pytest.mark.parametrize("what,args,files,code,words", BAD, ids=[row[0] for row in BAD])
def test_bad_input_is_one_line_before_any_work(what, args, files, code, words, tmp_path,
                                               monkeypatch, no_work):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    if any(a.startswith("configs/") for a in args):
        (tmp_path / "configs").mkdir(exist_ok=True)
        for a in args:
            if a.startswith("configs/"):
                (tmp_path / a).write_text((ROOT / a).read_text())
    before = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, list(args))
    text = r.output.strip()
    assert r.exit_code == code, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error: ") and words in text, text
    assert _files(tmp_path) == before  # nothing written, nothing replaced


@pytest.mark.parametrize("rule", ["gn", "gn-sqrt", "jacobi"])
def test_a_zero_diagonal_is_refused_before_any_eigenvalue(rule, monkeypatch):
    """Digits has constant pixels: with eps 0 these rules' P has zeros (building P takes
    products; measuring any setting must not start)."""
    import condlab.pipeline

    def measure(*a, **k):
        raise AssertionError("a setting was measured before the error")

    monkeypatch.setattr(condlab.pipeline, "estimate", measure)
    r = CliRunner().invoke(app, ["spectrum", "--model", "linear", "--data", "digits", "--top", "2",
                                 "--bottom", "0", "--precond", rule, "--eps", "0"])
    assert r.exit_code == 2 and r.output.strip().startswith("error: ") and "--eps" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def table() -> str:
    """The rows as docs/errors.md's markdown table."""
    lines = ["| bad input | command | exit | the error names |", "|---|---|---|---|"]
    for what, args, files, code, words in BAD:
        given = "; ".join(f"{k}: `{v.strip()}`" if v.strip() else f"{k} exists"
                          for k, v in files.items() if not k.startswith("configs/"))
        cmd = "condlab " + " ".join(args)
        lines.append(f"| {what}{f' ({given})' if given else ''} | `{cmd}` | {code} | "
                     f"`{words}` |".replace("\n", " "))
    return "\n".join(lines) + "\n"


def test_the_errors_page_lists_every_row():
    page = (ROOT / "docs" / "errors.md").read_text()
    missing = [row[0] for row in BAD if f"| {row[0]}" not in page]
    assert not missing, f"docs/errors.md's bad-input table lacks {missing}: paste `python {__file__}`"
    assert re.sub(r"\s+", " ", table()) in re.sub(r"\s+", " ", page)


if __name__ == "__main__":
    print(table(), end="")
