"""The option schema is the single source: each option once, and the same in --help, YAML and the API."""

from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner

from condlab.cli import app
from condlab.config import SpectrumConfig, build
from condlab.errors import UsageError
from condlab.measure import EstimatorSettings
from condlab.options import LIST, MAPPING, PATH, SPEC, SPECTRUM, Option

FIELDS = [o for o in SPECTRUM if o.field]


def _help() -> str:
    r = CliRunner().invoke(app, ["spectrum", "--help"], env={"TERMINAL_WIDTH": "400", "COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    return r.output


def _sample(o: Option):
    """A valid value other than the default, as YAML would hold it."""
    if o.name == "device":
        return "auto"
    if o.choices:
        pick = next(c for c in o.choices if c != o.default)
        return [pick] if o.type is LIST else pick
    return {int: 7, float: 0.5, bool: not o.default, str: "x", PATH: "some/file.pt",
            LIST: ["a.*"], MAPPING: {"widths": [3]}, SPEC: "digits"}[o.type]


def _base(o: Option) -> dict:
    """Other options that ``o``'s sample value needs to make a valid config."""
    base = {} if o.name in ("model", "checkpoint") else {"model": "linear"}
    return {**base, **({"decay": "coupled"} if o.name == "weight_decay" else {})}


def test_each_option_is_declared_once():
    names = [o.name for o in SPECTRUM]
    assert len(names) == len(set(names))
    flags = [f for o in SPECTRUM for flag in o.cli_flags for f in flag.split("/")]
    assert len(flags) == len(set(flags))


def test_api_fields_are_the_schema():
    cfg_fields = {f.name: f for f in dataclasses.fields(SpectrumConfig)}
    assert list(cfg_fields) == [o.name for o in FIELDS]
    est_fields = {f.name: f for f in dataclasses.fields(EstimatorSettings)}
    assert list(est_fields) == [o.name for o in SPECTRUM if o.estimator]
    def default(f):
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    for o in FIELDS:
        assert default(cfg_fields[o.name]) == o.default, o.name
        if o.estimator:
            assert default(est_fields[o.name]) == o.default, o.name


@pytest.mark.parametrize("o", [o for o in SPECTRUM if o.cli_flags], ids=lambda o: o.name)
def test_help_shows_each_flag_once_with_its_help_and_default(o):
    text = _help()
    rows = [line for line in text.splitlines() if re.search(rf"│ {re.escape(o.flag)}\b(?!-)", line)]
    assert len(rows) == 1, (o.flag, rows)
    row = " ".join(rows[0].split())
    assert " ".join(o.help.split()) in row
    assert f"[default: {o.shown_default}]" in row or f"[default: ({o.shown_default})]" in row, row


@pytest.mark.parametrize("o", FIELDS, ids=lambda o: o.name)
def test_yaml_key_and_api_field_take_the_same_value(o):
    value = _sample(o)
    base = _base(o)
    api = SpectrumConfig(**base, **{o.name: value})
    if not o.in_file:  # decided on the command line only
        with pytest.raises(UsageError, match=rf"'c.yaml' sets '{o.name}'.*{o.flag}"):
            build(SpectrumConfig, {**base, o.name: value}, source="'c.yaml'")
        return
    from_yaml = build(SpectrumConfig, {**base, o.name.replace("_", "-"): value}, source="'c.yaml'")
    assert getattr(from_yaml, o.name) == getattr(api, o.name) != o.default


@pytest.mark.parametrize("o", [o for o in FIELDS if o.type not in (SPEC,)], ids=lambda o: o.name)
def test_a_value_of_the_wrong_type_names_file_key_and_type(o):
    bad = {bool: "no", MAPPING: [1], LIST: [1]}.get(o.type, "ten" if o.type in (int, float) else 3)
    base = _base(o)
    with pytest.raises(UsageError) as e:
        build(SpectrumConfig, {**base, o.name: bad}, source="'c.yaml'")
    msg = str(e.value)
    assert "'c.yaml'" in msg and o.name in msg and "\n" not in msg
    if o.in_file:
        assert f"must be {o.expected()}" in msg


def test_yaml_numbers_and_booleans_are_typed():
    cfg = build(SpectrumConfig, {"model": "linear", "tol": "1e-8", "max_hvps": "1e3",
                                 "trace": True}, source="'c.yaml'")
    assert cfg.tol == 1e-8 and cfg.max_hvps == 1000 and cfg.trace is True
    for bad in ({"trace": "no"}, {"top": 2.5}, {"top": "five"}, {"tol": "abc"}, {"tol": 2.0}):
        with pytest.raises(UsageError, match="'c.yaml'"):
            build(SpectrumConfig, {"model": "linear", **bad}, source="'c.yaml'")


def test_every_config_reads_yaml_numbers_as_numbers():
    """PyYAML 1.1 reads 1e-2 (no dot) as a string: train, compare and track configs take it."""
    import yaml

    from condlab.compare.config import parse_config
    from condlab.options import TRAIN, parse_mapping

    train = parse_mapping(TRAIN, yaml.safe_load("model: linear\ndata: iris\nsteps: 1e2\n"), "t")
    assert train["steps"] == 100 and isinstance(train["steps"], int)
    raw = yaml.safe_load("model: {name: linear}\ndata: {name: linreg, n: 64, d: 4}\nsteps: 1e1\n"
                         "track: {every: 5, tol: 1e-3}\noptimizers: [{name: adam, lr: 1e-2}]\n")
    assert isinstance(raw["optimizers"][0]["lr"], str)  # what PyYAML gives
    cfg = parse_config(raw)
    assert cfg.steps == 10 and cfg.track.tol == 1e-3 and cfg.optimizers[0].lrs == (1e-2,)
