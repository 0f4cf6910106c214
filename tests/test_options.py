"""The option schema is the single source: each option once, and the same in --help, YAML and the API."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
from typer.testing import CliRunner

from condlab.cli import app
from condlab.cli_options import COMMANDS, SPECTRUM
from condlab.config import SpectrumConfig, build
from condlab.errors import UsageError
from condlab.options import (
    LIST,
    MAPPING,
    NESTED_KEYS,
    PATH,
    ROOT,
    SPEC,
    TRACK_KEYS,
    Option,
)

FIELDS = [o for o in SPECTRUM if o.field]


@functools.cache
def _help(command: str = "spectrum", every: bool = False) -> str:
    flag = "--help-all" if every else "--help"
    r = CliRunner().invoke(app, [command, flag] if command else [flag],
                           env={"TERMINAL_WIDTH": "400", "COLUMNS": "400"})
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


@pytest.mark.parametrize("command", COMMANDS)
def test_each_option_is_declared_once(command):
    options = COMMANDS[command]
    for kind in (True, False):  # the flags, and the keys of the command's YAML (compare's
        # `quick:` block is what --quick selects: a key and a flag of one name)
        names = [o.name for o in options if (bool(o.cli_flags) or not o.in_file) == kind]
        assert len(names) == len(set(names))
    flags = [f for o in options for flag in o.cli_flags for f in flag.split("/")]
    assert len(flags) == len(set(flags))


def test_every_command_takes_its_options_from_the_schema():
    """Each command's flags in --help are exactly its schema's (plus --help), less the advanced
    ones, which --help-all adds."""
    for command, options in {"": ROOT, **COMMANDS}.items():
        shown = set(re.findall(r"│ (--[a-z][a-z0-9-]*)", _help(command))) - {"--help"}
        declared = {o.flag for o in options if o.cli_flags and not o.hidden and not o.advanced}
        assert shown == declared, command
        if any(o.advanced for o in options):
            every = set(re.findall(r"│ (--[a-z][a-z0-9-]*)", _help(command, True))) - {"--help"}
            assert every == {o.flag for o in options if o.cli_flags and not o.hidden}, command


FLAGGED = [(c, o) for c, options in {"": ROOT, **COMMANDS}.items() for o in options
           if o.cli_flags and not o.hidden]


@pytest.mark.parametrize(("command", "o"), FLAGGED, ids=[f"{c}:{o.name}" for c, o in FLAGGED])
def test_help_shows_each_flag_once_with_its_help_and_default(command, o):
    text = _help(command, o.advanced)
    rows = [line for line in text.splitlines() if re.search(rf"│ {re.escape(o.flag)}\b(?!-)", line)]
    assert len(rows) == 1, (o.flag, rows)
    row = " ".join(rows[0].split())
    assert " ".join(o.help.split()) in row
    assert f"[default: {o.shown_default}]" in row or f"[default: ({o.shown_default})]" in row, row
    if o.type is bool:  # a flag takes no value: no placeholder beside it
        assert "<bool>" not in row, row


@pytest.mark.parametrize("command", ["", *COMMANDS, "list"])
def test_help_shows_no_value_placeholder_beside_a_flag(command):
    assert "<bool>" not in _help(command)


# the keys of a command's YAML config (spectrum's few YAML-only keys have flags beside them:
# --model-config for model_args, the argument CHECKPOINT)
YAML_ONLY = [(c, o) for c, options in COMMANDS.items() for o in options if not o.cli_flags and o.in_file
             and o not in SPECTRUM] + [(c, dataclasses.replace(o, name=prefix + o.name))
                                       for c, nested in NESTED_KEYS.items()
                                       for prefix, options in nested for o in options]


@pytest.mark.parametrize(("command", "o"), YAML_ONLY, ids=[f"{c}:{o.name}" for c, o in YAML_ONLY])
def test_help_lists_each_config_key_with_its_help_and_default(command, o):
    text = " ".join(_help(command).replace("│", " ").split())
    entry = f"{o.name}: {' '.join(o.help.split())}"
    assert entry in text, entry
    if o.type is not MAPPING:
        assert f"{entry} [default: {o.shown_default}]" in text


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


COMPARE_RAW = {"model": "linear", "data": {"name": "linreg", "n": 32, "d": 3},
               "optimizers": [{"name": "sgd", "lr": 0.1}]}


def _compare_keys():
    from condlab.options import COMPARE_KEYS

    skip = ("model", "data", "optimizers", "variants", "track", "quick")  # parsed further: own tests
    return [o for o in COMPARE_KEYS if o.name not in skip]


@pytest.mark.parametrize("o", _compare_keys(), ids=lambda o: o.name)
def test_each_compare_key_is_typed_and_checked_by_its_declaration(o):
    from condlab.compare.config import parse_config

    value = {"seeds": [3, 4], "divergence": 10.0}.get(o.name) or _sample(o)
    raw = {**COMPARE_RAW, o.name: value}
    parsed = getattr(parse_config(raw, source="'c.yaml'"), o.name)
    assert parsed != o.default and parsed == o.parse(value, "x")
    bad = {bool: "no", LIST: [1]}.get(o.type, 3 if o.type is str else "ten")
    with pytest.raises(UsageError, match=rf"'c.yaml': {o.name} must be"):
        parse_config({**raw, o.name: bad}, source="'c.yaml'")


@pytest.mark.parametrize("o", TRACK_KEYS, ids=lambda o: o.name)
def test_each_track_key_is_typed_and_checked_by_its_declaration(o):
    from condlab.compare.config import parse_config

    value = {"every": 5, "block": ["last"], "null_threshold": 1e-6}.get(o.name) or _sample(o)
    cfg = parse_config({**COMPARE_RAW, "track": {o.name: value}}, source="'c.yaml'")
    assert getattr(cfg.track, o.name) == o.parse(value, "x") != o.default
    bad = {bool: "no", LIST: [1]}.get(o.type, "ten" if o.type in (int, float) else 3)
    with pytest.raises(UsageError, match=rf"'c.yaml': track: {o.name} must be"):
        parse_config({**COMPARE_RAW, "track": {o.name: bad}}, source="'c.yaml'")


def test_a_variant_override_is_typed_like_the_key():
    from condlab.compare.config import parse_config

    cfg = parse_config({**COMPARE_RAW, "variants": [{"label": "mini", "batch_size": "1e1"}]})
    assert cfg.variants[0].overrides == {"batch_size": 10}
    with pytest.raises(UsageError, match=r"variants\[0\]: batch_size must be"):
        parse_config({**COMPARE_RAW, "variants": [{"label": "mini", "batch_size": "ten"}]})


def test_the_tracker_hook_takes_its_keywords_from_the_schema():
    """condlab.Tracker's own keywords are TRACKER's, with the same defaults, checked as declared."""
    import inspect

    from condlab.options import TRACKER
    from condlab.tracking import Tracker

    params = {n: p.default for n, p in inspect.signature(Tracker.__init__).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert params == {o.name: o.default for o in TRACKER}
    import torch

    model = torch.nn.Linear(2, 1)
    batch = [(torch.randn(4, 2), torch.randn(4, 1))]
    for bad, match in (({"every": 0}, "every must be"), ({"precond": ["newton"]}, "precond must be")):
        with pytest.raises(UsageError, match=match):
            Tracker(model, "mse", batch, **bad)
