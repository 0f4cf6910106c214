"""The README stays true: its Python example runs, and CI runs its test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# pages written by the other work in flight (benchmarks, accuracy, reproductions' summary)
OTHERS_WRITE = {"docs/benchmarks.md", "docs/accuracy.md", "docs/reproductions_summary.md"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_run(capsys):
    """The one-call API on a model and DataLoader built in the example, and the stages."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S)]
    assert len(blocks) == 2 and "condlab.spectrum(" in blocks[0]
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
        assert capsys.readouterr().out.strip()


def test_own_model_example_runs_as_written(tmp_path, monkeypatch):
    """The README's own-model example: its file written, its commands run in order."""
    import runpy
    import shlex
    import sys

    from cases import own_model_files, own_model_section
    from typer.testing import CliRunner

    from condlab.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, code in own_model_files("README.md").items():
        (tmp_path / name).write_text(code)
    (block,) = re.findall(r"```bash\n(.*?)```", own_model_section("README.md"), flags=re.S)
    lines = [" ".join(x.split()) for x in block.replace("\\\n", " ").splitlines() if x.strip()]
    try:
        for cmd in lines:
            words = shlex.split(cmd)
            if words[0] == "python":
                runpy.run_path(words[1], run_name="__main__")
                continue
            r = CliRunner().invoke(app, words[1:])
            assert r.exit_code == 0, f"{cmd}\n{r.output}"
            assert "baseline" in r.stdout and "with weights w.pt" in r.stdout
    finally:
        sys.modules.pop("mymodels", None)


def test_readme_is_short_and_its_doc_links_exist():
    assert len(README.splitlines()) <= 300
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).exists() or link in OTHERS_WRITE, link


def test_the_cli_reference_is_generated_from_the_options():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ci_runs_the_readme_test_command():
    quick = _blocks("bash")[:2]
    assert "condlab demo" in quick[0]
    test_cmd = quick[1].strip()
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd in ci.splitlines()
