"""The options of every command, for the command line, YAML files and ``--help``.

The options of ``condlab spectrum`` are declared by the pipeline's stages, each as a frozen
dataclass beside its code (see :mod:`condlab.optionfield`): :class:`condlab.inputs.LoadOptions`,
:class:`condlab.problem.ProblemOptions`, :class:`condlab.measure.EstimatorSettings` and
:class:`condlab.settings.SettingsOptions`; :class:`condlab.config.SpectrumConfig` joins them.
:mod:`condlab.cli_options` lists them with the command's own flags (:data:`SPECTRUM_FLAGS`:
where to write, what to read). The keys of the YAML-only files (``train``, ``compare``, ``check``
baselines, the ``Tracker``) are declared here as :class:`Option` tables.

Nothing here imports a stage: the compute code reads its own dataclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from condlab.errors import UsageError
from condlab.optionfield import (  # noqa: F401  (re-exported: the option machinery)
    BELOW_ONE,
    DEVICE,
    INTS,
    ITEMS,
    LIST,
    MAPPING,
    NONNEGATIVE,
    PATH,
    POSITIVE,
    SPEC,
    TYPE_NAMES,
    UNIT_INTERVAL,
    Check,
    Option,
    as_integer,
    as_number,
    by_name,
    default_tol,
    fields_of,
    options_of,
)

# -- the groups of `condlab spectrum --help`, and its own flags ----------------------------------
LOAD = "What to load"
OPERATOR = "Operator"
ESTIMATORS = "Estimators"
SETTINGS = "Preconditioners and normalization"
OUTPUT = "Output"

CURVATURES = "condlab.operators.curvature:CURVATURES"  # choices, owned by the operators
PRECONDITIONERS = "condlab.preconditioners.base:PRECONDITIONERS"
from condlab.problem_options import DTYPES  # noqa: E402  (the floating types of a problem)

FORMATS = ("table", "csv", "json")

# every command that computes takes it (a decision of the machine, not of the measurement)
THREADS = Option("threads", int, None, "CPU threads for torch; pin it where machines differ in cores, "
                 "and keep it when resuming.", OPERATOR, check=POSITIVE, field=False, advanced=True,
                 default_text="1 for small problems (P x N < 5e7), else torch's default")

# spectrum's flags that are no field of SpectrumConfig: what to read, where to write
SPECTRUM_FLAGS: tuple[Option, ...] = (
    Option("config", PATH, None, "A YAML file of these options (keys as option names); options given "
           "here override it.", LOAD, field=False),
    Option("model_config", PATH, None, "YAML of the model's arguments (e.g. widths: [32], norm: batch).",
           LOAD, field=False, advanced=True),
    Option("list_params", bool, False, "List the model's parameter names, shapes and whether "
           "--params selects them, then stop (nothing is measured).", OPERATOR,
           flags=("--list-params",), field=False, advanced=True),
    THREADS,
    Option("explain", bool, False, "Print the full legend, every eigenvalue and the definitions "
           "under the table.", OUTPUT, flags=("--explain",), field=False),
    Option("format", str, "table", "table, csv or json.", OUTPUT, choices=FORMATS,
           flags=("--format", "-f"), field=False),
    Option("output", PATH, None, "Write here instead of stdout (CSV: eigenvalues go to "
           "NAME_eigenvalues.csv); needs --format csv or json.", OUTPUT, flags=("--output", "-o"),
           field=False, default_text="stdout"),
    Option("density_output", PATH, "density.csv", "Where the density grid goes.", OUTPUT, field=False,
           advanced=True),
    Option("plot", PATH, None, "Plot the density to this PNG (needs matplotlib: pip install "
           "'condlab[plot]').", OUTPUT, field=False, advanced=True),
    Option("force", bool, False, "Replace files that exist at --output, --density-output or "
           "--plot.", OUTPUT, flags=("--force",), field=False),
    Option("verbose", bool, False, "Print the memory plan (what the run needs against what the "
           "process may use) on stderr before the work.", OUTPUT, flags=("--verbose",),
           field=False),
    Option("help_all", bool, False, "Show every option: this help and the advanced ones.",
           OUTPUT, flags=("--help-all",), field=False),
)


# -- the keys of a `condlab train` config (YAML only) ----------------------------------------------
TRAIN_OPTIMIZER = "a name or a mapping {name, **hyperparameters}"
TRAIN: tuple[Option, ...] = (
    Option("model", SPEC, None, "The model: a built-in name or a mapping {name, **arguments}.",
           "train", default_text="required", flags=()),
    Option("data", SPEC, None, "The dataset spec, as for `condlab spectrum --data`.", "train",
           default_text="required", flags=()),
    Option("loss", str, None, "The loss: cross-entropy, sequence-cross-entropy, mse, bce, or "
           "'package.module:fn'.", "train", default_text="from the task and targets", flags=()),
    Option("ignore_index", int, -100, "Targets with this value are left out of the "
           "cross-entropies (padding).", "train", flags=()),
    Option("label_smoothing", float, 0.0, "Label smoothing of the cross-entropies.", "train",
           check=BELOW_ONE, flags=()),
    Option("optimizer", SPEC, "adam", f"The optimizer: {TRAIN_OPTIMIZER}.", "train", flags=()),
    Option("steps", int, 300, "Optimizer steps.", "train", check=POSITIVE, flags=()),
    Option("batch_size", int, None, "Samples per step.", "train", check=POSITIVE,
           default_text="full batch", flags=()),
    Option("seed", int, 0, "Seeds initialization, batches and synthetic data.", "train", flags=()),
    Option("max_samples", int, None, "Use the first N samples.", "train", check=POSITIVE,
           default_text="all", flags=()),
    Option("dtype", str, "float32", "Floating-point type of the model and data.", "train",
           choices=DTYPES, flags=()),
)


# -- the keys of a `condlab compare` config (YAML only) --------------------------------------------
CRITERIA = ("steps_to_target", "final_loss", "test_loss")
FINDINGS = ("paper-a-decay", "paper-a-norm", "paper-b", "paper-c")
ABOVE_ONE: Check = (lambda v: v > 1, "> 1")
COMPARE = "compare"
COMPARE_KEYS: tuple[Option, ...] = (
    Option("name", str, "compare", "A title.", COMPARE, flags=()),
    Option("model", SPEC, None, "The model: a built-in name or a mapping {name, **arguments}.",
           COMPARE, default_text="required", flags=()),
    Option("data", SPEC, None, "The dataset spec, e.g. {name: linreg, n: 1024, d: 16}.", COMPARE,
           default_text="required", flags=()),
    Option("loss", str, None, "The loss.", COMPARE, default_text="from the task", flags=()),
    Option("test_fraction", float, 0.2, "Held-out share of the samples (0: no test set).", COMPARE,
           check=BELOW_ONE, flags=()),
    Option("split_seed", int, 0, "Seeds the train/test split.", COMPARE, check=NONNEGATIVE, flags=()),
    Option("standardize", bool, False, "Inputs (x - mean) / std with the training statistics.",
           COMPARE, flags=()),
    Option("params", LIST, (), "Globs of the trained parameters.", COMPARE, default_text="all",
           flags=()),
    Option("bn_mode", str, "batch", "BatchNorm on batch statistics (batch) or running ones (eval).",
           COMPARE, choices="condlab.problem_options:BN_MODES", flags=()),
    Option("dtype", str, "float64", "Floating-point type of the model and data.", COMPARE,
           choices=DTYPES, flags=()),
    Option("init_scale", float, 1.0, "Multiplies the trained parameters at initialization.", COMPARE,
           check=POSITIVE, flags=()),
    Option("steps", int, 200, "Optimizer steps of every run.", COMPARE, check=POSITIVE, flags=()),
    Option("batch_size", int, None, "Samples per step, a fresh permutation per epoch.", COMPARE,
           check=POSITIVE, default_text="full batch", flags=()),
    Option("seeds", INTS, (0,), "Seeds of initialization, batch order and probes: one set of runs "
           "each.", COMPARE, check=NONNEGATIVE, flags=()),
    Option("log_every", int, 1, "A CSV row every k steps (and the last).", COMPARE, check=POSITIVE,
           flags=()),
    Option("target_loss", float, None, "The loss that 'steps to target' counts the steps to.",
           COMPARE, default_text="none (needed by criterion steps_to_target with an lr grid)",
           flags=()),
    Option("criterion", str, "steps_to_target", "How a tuned lr is chosen from its grid.", COMPARE,
           choices=CRITERIA, flags=()),
    Option("divergence", float, 1e6, "A run stops when its loss grows from its start by more "
           "than (this - 1) x max(|initial loss|, its drop so far), or is not finite.", COMPARE, check=ABOVE_ONE, flags=()),
    Option("track", MAPPING, {}, "How conditioning is measured: the track keys below.", COMPARE,
           flags=()),
    Option("variants", ITEMS, None, "Problem overrides, one set of runs each: [{label: ..., "
           "<problem keys>}].", COMPARE, default_text="one variant, 'default'", flags=()),
    Option("optimizers", ITEMS, None, "The optimizers: [{name, lr: number or {grid: [...]}, basis, "
           "label, sweep, **hyperparameters}].", COMPARE, default_text="required", flags=()),
    Option("findings", str, None, "The claims checked after the table.", COMPARE, choices=FINDINGS,
           default_text="none", flags=()),
    Option("quick", MAPPING, {}, "Overrides deep-merged over the config by --quick.", COMPARE,
           flags=()),
)

# the `track:` block of a compare config
TRACK_KEYS: tuple[Option, ...] = (
    Option("every", int, 0, "Measure every k steps (0: only at the first and the last step).",
           "track", check=NONNEGATIVE, flags=()),
    Option("curvature", str, "hessian", "hessian or ggn.", "track", choices=CURVATURES, flags=()),
    Option("exact", bool, False, "Dense eigendecomposition (small models) instead of Lanczos.",
           "track", flags=()),
    Option("tol", float, 1e-3, "Lanczos convergence tolerance (relative residual).", "track",
           check=UNIT_INTERVAL, flags=()),
    Option("max_hvps", int, 80, "Curvature products per measurement.", "track", check=POSITIVE,
           flags=()),
    Option("bottom", int, 1, "Smallest eigenvalues asked of Lanczos (>= 2 to see past a null "
           "space).", "track", check=POSITIVE, flags=()),
    Option("null_threshold", float, None, "Eigenvalues with |lambda| <= this * ||A|| count as zero.",
           "track", check=BELOW_ONE, default_text="32 eps(dtype), the arithmetic noise", flags=()),
    Option("samples", int, None, "Measure on the first N training samples.", "track",
           check=POSITIVE, default_text="all", flags=()),
    Option("block", LIST, (), "Also measure this diagonal block: parameter globs, or [last] (the last "
           "layer).", "track", default_text="none", flags=()),
    Option("scale_invariant", LIST, (), "Globs of a scale-invariant group: its norm, effective lr "
           "and angle are logged.", "track", default_text="none", flags=()),
    Option("adam_alignment", bool, False, "Log how far Adam's P is from GN^-1/2 (dense).", "track",
           flags=()),
    Option("fixed_points", bool, False, "Log the distances to the L2 and P-weighted fixed points "
           "(quadratic losses, dense).", "track", flags=()),
)


# -- the keys of a `condlab check` baseline (YAML only) --------------------------------------------
METRICS = ("lambda_max", "lambda_min", "condition_number", "trace", "lambda_min_positive", "nullity")
DIRECTIONS = ("increase", "decrease", "both")
BETTER = ("lower", "higher")
BASELINE = "baseline"
BASELINE_KEYS: tuple[Option, ...] = (
    Option("checks", ITEMS, None, "The checks: a list of mappings with the keys below.", BASELINE,
           default_text="required", flags=()),
)
CHECK_KEYS: tuple[Option, ...] = (
    Option("name", str, None, "Unique; names the check in tables, JSON and JUnit.", BASELINE,
           default_text="required", flags=()),
    Option("spectrum", MAPPING, {}, "condlab spectrum options, as in a --config file (relative paths "
           "start at the baseline's folder).", BASELINE, flags=()),
    Option("metrics", ITEMS, None, "The guards: a list of mappings with the keys below.", BASELINE,
           default_text="required", flags=()),
)
GUARD_KEYS: tuple[Option, ...] = (
    Option("metric", str, None, "The guarded number; ratio: numerator / denominator.", BASELINE,
           choices=(*METRICS, "ratio"), default_text="required", flags=()),
    Option("setting", str, "baseline", "The setting it is measured on (baseline, a --precond or "
           "--norm name, layer:NAME).", BASELINE, flags=()),
    Option("numerator", MAPPING, None, "ratio: {setting, metric} of the numerator.", BASELINE,
           flags=()),
    Option("denominator", MAPPING, None, "ratio: {setting, metric} of the denominator.", BASELINE,
           flags=()),
    Option("value", float, None, "The stored value (written by --update).", BASELINE, flags=()),
    Option("tolerance", MAPPING, None, "The band around value: {rel or abs, direction}.", BASELINE,
           flags=()),
    Option("min", float, None, "A fixed lower bound.", BASELINE, flags=()),
    Option("max", float, None, "A fixed upper bound.", BASELINE, flags=()),
    Option("better", str, None, "Which way is an improvement (lower or higher).", BASELINE,
           choices=BETTER, default_text="lower for condition_number, higher for ratio, else none",
           flags=()),
)
TOLERANCE_KEYS: tuple[Option, ...] = (
    Option("rel", float, None, "A relative band: 0.2 = 20% of the stored value.", BASELINE,
           check=NONNEGATIVE, default_text="one of rel or abs", flags=()),
    Option("abs", float, None, "An absolute band.", BASELINE, check=NONNEGATIVE,
           default_text="one of rel or abs", flags=()),
    Option("direction", str, "both", "The way out of the band that is a regression.", BASELINE,
           choices=DIRECTIONS, flags=()),
)
REF_KEYS: tuple[Option, ...] = (
    Option("setting", str, "baseline", "The setting of a ratio's side.", BASELINE, flags=()),
    Option("metric", str, "condition_number", "The metric of a ratio's side.", BASELINE,
           choices=METRICS, flags=()),
)


# -- the flags of the other commands ---------------------------------------------------------------
OPTIONS = "Options"


def _flag(name: str, type_: Any, default: Any, help_: str, **kw: Any) -> Option:
    """A flag of a command only (``field=False``): where to write, what to read, how to run."""
    return Option(name, type_, default, help_, kw.pop("group", OPTIONS), field=False, in_file=False,
                  **kw)


def _switch(name: str, help_: str, **kw: Any) -> Option:
    """An on/off flag, off by default: ``--name`` alone turns it on."""
    return _flag(name, bool, False, help_, flags=("--" + name.replace("_", "-"),), **kw)


# before the command: condlab --debug spectrum ...
ROOT: tuple[Option, ...] = (
    _switch("debug", "Show tracebacks instead of one-line errors."),
)

TRAIN_FLAGS: tuple[Option, ...] = (
    _flag("out", PATH, None, "Where to write the condlab checkpoint.", default_text="required"),
    _switch("force", "Replace an existing checkpoint at --out."),
)

DEMO: tuple[Option, ...] = (
    _flag("format", str, "table", "table, csv or json.", choices=FORMATS, flags=("--format", "-f")),
    _switch("explain", "Print the full legend, every eigenvalue and the definitions under the "
            "table."),
    _flag("steps", int, 300, "AdamW steps of the demo training.", check=POSITIVE),
)

COMPARE_FLAGS: tuple[Option, ...] = (
    _flag("output", PATH, None, "CSV of every logged step of every run, written row by row (the "
          "resolved config goes to NAME.config.json).", flags=("--output", "-o"),
          default_text="no CSV"),
    _switch("resume", "Continue the comparison in --output: finished runs are kept, an "
            "interrupted one is redone and only its missing rows appended."),
    _switch("force", "Replace an existing --output or --plot."),
    _switch("quick", "The config's quick: size (seconds; what the tests run)."),
    _flag("plot", PATH, None, "Draw loss and condition-number curves to this PNG (needs "
          "matplotlib: pip install 'condlab[plot]').", default_text="no plot"),
    dataclasses.replace(THREADS, group=OPTIONS, advanced=False),
    _flag("stop_after_rows", int, None, "Debug: stop as Ctrl-C would after N new rows.",
          check=POSITIVE, hidden=True),
)

CHECK_FORMATS = ("table", "json")
CHECK_FLAGS: tuple[Option, ...] = (
    _switch("update", "Re-measure and write the new values into BASELINE, keeping its comments "
            "and tolerances."),
    _flag("only", LIST, (), "Run only the check with this name (repeatable).",
          default_text="every check"),
    _flag("format", str, "table", "table (rich, to the terminal) or json (to stdout).",
          choices=CHECK_FORMATS, flags=("--format", "-f")),
    _flag("junit", PATH, None, "Also write a JUnit XML report here, one testcase per guarded "
          "metric.", default_text="no report"),
    _switch("force", "Replace an existing --junit file."),
    _switch("trust_checkpoint", "Allow the checks' pickled full-module checkpoints (runs code from "
            "them). Only this flag grants it; the baseline file cannot."),
    dataclasses.replace(THREADS, group=OPTIONS, advanced=False),
)

SWEEP = "Sweep"
# spectrum's options about one file: its weights, its optimizer state, where its report goes
NOT_FOR_TRACK = ("checkpoint", "weights", "optimizer_state", "format", "output", "density",
                 "density_output", "plot", "list_params", "explain")
TRACK_FLAGS: tuple[Option, ...] = (
    _flag("output", PATH, "track.csv", "The CSV the rows are appended to, one per checkpoint and "
          "setting.", flags=("--output", "-o"), group=SWEEP),
    _switch("resume", "Continue an interrupted sweep into --output: checkpoints already there are "
            "not measured again.", group=SWEEP),
    _flag("on_error", str, "stop", "A checkpoint that cannot be read or measured: stop (exit 1, "
          "rows so far kept) or skip it with a warning row.", choices=("stop", "skip"), group=SWEEP),
    _flag("warm_start", bool, True, "Start Lanczos from the previous checkpoint's Ritz vectors "
          "(--cold-start: from random vectors).", flags=("--warm-start/--cold-start",),
          group=SWEEP),
    _flag("plot", PATH, None, "Plot lambda_max (with the stability threshold), kappa, the "
          "stability ratio and the trace against the step to this PNG (needs matplotlib).",
          group=SWEEP, default_text="no plot"),
)
# the keywords of condlab.Tracker (the training-loop hook) besides spectrum's options
HOOK = "Tracker"
TRACKER: tuple[Option, ...] = (
    Option("every", int, 100, "Measure after steps every, 2 every, ...", HOOK, check=POSITIVE,
           flags=()),
    Option("csv", PATH, None, "A CSV to append the rows to.", HOOK, flags=()),
    Option("resume", bool, False, "Continue an existing csv written with the same options.", HOOK,
           flags=()),
    Option("tensorboard", SPEC, None, "A log folder or a SummaryWriter for scalars.", HOOK,
           flags=()),
    Option("precond", LIST, None, "Settings beside the baseline, as --precond.", HOOK,
           choices=PRECONDITIONERS, default_text="optimizer when the optimizer holds a diagonal "
           "preconditioner (Adam, RMSprop, AdaGrad), else none", flags=()),
    Option("warm", bool, True, "Start Lanczos from the previous measurement's Ritz vectors.", HOOK,
           flags=()),
    Option("kappa", bool, False, "Also lambda_min and kappa (bottom=1 unless given).", HOOK, flags=()),
    Option("samples", int, None, "Measure on the first N samples of the batches.", HOOK,
           check=POSITIVE, default_text="the first batch", flags=()),
)


# the keys of the mappings inside a command's YAML, each set with the path --help shows before it
NESTED_KEYS: dict[str, tuple[tuple[str, tuple[Option, ...]], ...]] = {
    "compare": (("track.", TRACK_KEYS),),
    "check": (("checks[].", CHECK_KEYS), ("checks[].metrics[].", GUARD_KEYS),
              ("checks[].metrics[].tolerance.", TOLERANCE_KEYS),
              ("checks[].metrics[].numerator|denominator.", REF_KEYS)),
}


def parse_mapping(options: Sequence[Option], raw: Any, where: str,
                  required: Sequence[str] = ()) -> dict[str, Any]:
    """A YAML mapping ``raw`` parsed by ``options``: unknown keys rejected by name, each value
    parsed to its type and checked, defaults filled in, ``required`` keys demanded."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping of settings, not a {type(raw).__name__}")
    known = by_name(options)
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys "
                         f"are {', '.join(known)}")
    missing = [k for k in required if raw.get(k) is None]
    if missing:
        raise UsageError(f"{where} needs a {missing[0]!r} entry")
    return {k: o.parse(raw[k], where) if k in raw else o.default for k, o in known.items()}
