"""The options of every command as its ``--help`` lists them: for ``spectrum`` (and ``track``)
the pipeline stages' own options (:class:`condlab.config.SpectrumConfig`) with the command's
flags (:data:`condlab.options.SPECTRUM_FLAGS`), for the others their tables in
:mod:`condlab.options`. Only the command line imports this module."""

from __future__ import annotations

from condlab.config import SpectrumConfig
from condlab.optionfield import Option, options_of
from condlab.options import (
    BASELINE_KEYS,
    CHECK_FLAGS,
    COMPARE_FLAGS,
    COMPARE_KEYS,
    DEMO,
    ESTIMATORS,
    LOAD,
    NOT_FOR_TRACK,
    OPERATOR,
    OUTPUT,
    SETTINGS,
    SPECTRUM_FLAGS,
    TRACK_FLAGS,
    TRAIN,
    TRAIN_FLAGS,
)

_PANELS = [LOAD, OPERATOR, ESTIMATORS, SETTINGS, OUTPUT]  # the panels of --help, in order

SPECTRUM: tuple[Option, ...] = tuple(
    sorted(SPECTRUM_FLAGS + options_of(SpectrumConfig), key=lambda o: _PANELS.index(o.group)))
# track: the sweep's flags, then spectrum's less those about one file
TRACK: tuple[Option, ...] = TRACK_FLAGS + tuple(o for o in SPECTRUM if o.name not in NOT_FOR_TRACK)
COMMANDS: dict[str, tuple[Option, ...]] = {
    "spectrum": SPECTRUM, "train": TRAIN_FLAGS + TRAIN, "demo": DEMO,
    "compare": COMPARE_FLAGS + COMPARE_KEYS, "check": CHECK_FLAGS + BASELINE_KEYS, "track": TRACK,
}
