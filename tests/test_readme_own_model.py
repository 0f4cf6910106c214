"""The own-model recipes (docs/own-models.md) run as written: files written, commands run in
order."""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
import sys

import pytest
from cases import own_model_files, own_model_section
from typer.testing import CliRunner

from condlab.cli import app

HAS_HF = importlib.util.find_spec("transformers") is not None


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", own_model_section(), flags=re.S)
    lines = [line for b in blocks for line in b.replace("\\\n", " ").splitlines() if line.strip()]
    return [" ".join(line.split()) for line in lines]


def test_the_recipes_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    files = own_model_files()
    assert {"mymod.py", "mydata.py", "train.py", "myloss.py", "make_gpt2.py", "lmdata.py"} <= set(files)
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    commands = _commands()
    assert sum(c.startswith("condlab spectrum") for c in commands) == 4
    runner = CliRunner()
    try:
        for cmd in commands:
            hf = "gpt2" in cmd
            if hf and not HAS_HF:
                continue
            words = shlex.split(cmd)
            if words[0] == "python":
                runpy.run_path(words[1], run_name="__main__")
                continue
            assert words[0] == "condlab", cmd
            r = runner.invoke(app, words[1:])
            assert r.exit_code == 0, f"{cmd}\n{r.output}"
            assert "baseline" in r.stdout, r.stdout
    finally:
        for name in ("mymod", "mydata", "myloss", "lmdata"):
            sys.modules.pop(name, None)
    if not HAS_HF:
        pytest.skip("transformers is not installed: the Hugging Face recipe was not run")
