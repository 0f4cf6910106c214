"""scripts/reproduce.py: which old rows a rerun keeps (only runs whose inputs are unchanged) and
its usage errors. The pages it writes are checked by running it (docs/reproductions.md says
the commit)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from condlab.compare import parse_config
from condlab.compare.runner import run_all

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cfg(**over):
    raw = {"name": "t", "model": {"name": "linear"},
           "data": {"name": "linreg", "n": 40, "d": 3, "kappa": 10, "rotate": True},
           "steps": 4, "seeds": [0], "target_loss": 0.5, "track": {"every": 1000},
           "optimizers": [{"name": "sgd", "lr": {"grid": [0.01, 0.1]}}, {"name": "adam", "lr": 0.01}]}
    raw.update(over)
    return parse_config(raw)


def test_a_rerun_keeps_only_rows_whose_inputs_are_unchanged(script):
    cfg = _cfg()
    rows = run_all(cfg)
    key = script.run_key(cfg)
    assert script._kept(rows, key, key, cfg) == rows
    # a wider grid, another target and criterion: every old row still counts
    wider = _cfg(target_loss=0.3, optimizers=[{"name": "sgd", "lr": {"grid": [0.01, 0.1, 0.3]}},
                                              {"name": "adam", "lr": 0.01}])
    assert script._kept(rows, key, script.run_key(wider), wider) == rows
    # Adam's betas changed: its rows go, SGD's stay
    other = _cfg(optimizers=[{"name": "sgd", "lr": {"grid": [0.01, 0.1]}},
                             {"name": "adam", "lr": 0.01, "betas": [0.8, 0.999]}])
    kept = script._kept(rows, key, script.run_key(other), other)
    assert kept and {r["optimizer"] for r in kept} == {"sgd"}
    # the data or the step count changed: nothing is kept
    for changed in (_cfg(data={"name": "linreg", "n": 41, "d": 3}), _cfg(steps=5)):
        assert script._kept(rows, key, script.run_key(changed), changed) == []
    assert dataclasses.asdict(cfg)  # the config itself is untouched


def test_unknown_config_or_size_is_a_usage_error(script, capsys):
    assert script.main(["--configs", "b_linreg,nope"]) == 2
    assert "unknown nope" in capsys.readouterr().err
    assert script.main(["--sizes", "huge"]) == 2


def test_claims_match_across_sizes_with_their_numbers_blanked(script):
    a = ("B: full batch: Adam needs fewer steps than GN^-1 to loss 0.011 (momentum matched, "
         "beta1 0.9; by >= 10 steps on every seed, else tie)")
    b = a.replace("0.011", "0.5625")
    assert script._key(a) == script._key(b) and script._key(a) != script._key(a.replace("GN", "X"))
    assert script._short(a) == ("full batch: Adam needs fewer steps than GN^-1 to loss 0.011 "
                                "(momentum matched, beta1 0.9)")
