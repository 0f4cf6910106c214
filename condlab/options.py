"""Every option of ``condlab spectrum``, declared once.

Each :class:`Option` in :data:`SPECTRUM` is the single source of

- the field of :class:`condlab.config.SpectrumConfig` (the Python API) and its default,
- the YAML key of ``--config`` files and check baselines, parsed to the declared type,
- the command-line flag, its help text and the default that ``--help`` shows,
- its validation (a range or a set of choices), run before any work,
- with ``estimator=True``, the field of :class:`condlab.measure.EstimatorSettings`.

To add an option, add one entry to :data:`SPECTRUM`; the config, the CLI, the YAML reader and
the docs follow. Checks that relate several options live in :func:`condlab.config.validate`.
This module imports nothing heavy: the CLI builds its flags from it at start-up.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from condlab.errors import UsageError

# a check: (predicate on the parsed value, what the value must be, in words)
Check = tuple[Callable[[Any], bool], str]
POSITIVE: Check = (lambda v: v > 0, "> 0")
NONNEGATIVE: Check = (lambda v: v >= 0, ">= 0")
UNIT_INTERVAL: Check = (lambda v: 0 < v < 1, "in (0, 1)")
BELOW_ONE: Check = (lambda v: 0 <= v < 1, "in [0, 1)")
DEVICE: Check = (lambda v: re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", v) is not None,
                 "cpu, cuda, cuda:N, mps or auto")

# option types besides int, float, bool and str
PATH = Path  # a file name: a str in the config
LIST = list  # a repeatable flag; a YAML string or list of strings; a tuple in the config
MAPPING = dict  # YAML only: a mapping
SPEC = object  # a str on the command line; a str or a mapping in YAML


class INTS:
    """YAML only: an integer or a list of integers; a tuple of ints in the config."""


class ITEMS:
    """YAML only: a non-empty list whose entries the command parses (optimizers, variants)."""


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
              PATH: "a file name", LIST: "a list of strings", MAPPING: "a mapping",
              SPEC: "a string or a mapping", INTS: "a list of integers", ITEMS: "a non-empty list"}


@dataclass(frozen=True)
class Option:
    """One option: the field/YAML key ``name``, its flag ``--name-with-dashes``, and the rest."""

    name: str
    type: Any  # int, float, bool, str, PATH, LIST, MAPPING or SPEC
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] = ()
    check: Check | None = None
    default_text: str | None = None  # the default in words, when it is resolved later
    flags: tuple[str, ...] | None = None  # None: --name-with-dashes; (): no flag (YAML and API)
    in_file: bool = True  # False: not a YAML key (a decision for the command line only)
    field: bool = True  # False: a flag of the command only (where to write, what to read)
    estimator: bool = False  # also a field of EstimatorSettings
    metavar: str | None = None
    hidden: bool = False  # a flag left out of --help (for tests and debugging)

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if self.flags is not None:
            return self.flags
        flag = "--" + self.name.replace("_", "-")
        return (f"{flag}/--no-{flag[2:]}",) if self.type is bool else (flag,)

    @property
    def flag(self) -> str:
        """The flag as a user types it (``--top``), or the YAML key when there is none."""
        return self.cli_flags[0].split("/")[0] if self.cli_flags else self.name

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` and the docs show it."""
        if self.default_text is not None:
            return self.default_text
        d = self.default
        if d is None or d == () or d == {}:
            return "none"
        if isinstance(d, bool):
            return "true" if d else "false"
        if isinstance(d, tuple):
            return ", ".join(map(str, d))
        return str(d)

    def annotation(self) -> Any:
        """The field's type in the config dataclass."""
        t = {PATH: str, LIST: tuple[str, ...], SPEC: Any, INTS: tuple[int, ...], ITEMS: Any}.get(
            self.type, self.type)
        return t if self.default is not None or t is Any else Optional[t]

    def dataclass_field(self) -> tuple[str, Any, Any]:
        d = self.default
        spec = dataclasses.field(default_factory=dict) if isinstance(d, dict) else dataclasses.field(default=d)
        return self.name, self.annotation(), spec

    def parse(self, value: Any, where: str, key: str | None = None) -> Any:
        """``value`` (from YAML, the command line or the API) as the declared type, checked;
        a UsageError names ``where`` (a file) and ``key`` (default: the option's name)."""
        key = key or self.name
        if value is None:
            if self.default is None or self.type in (LIST, MAPPING):
                return dict(self.default) if self.type is MAPPING else self.default
            raise UsageError(f"{where}: {key} must be {self.expected()}, got null")
        v = _convert(self.type, value)
        if v is _BAD:
            raise UsageError(f"{where}: {key} must be {self.expected()}, got {value!r}")
        items = v if isinstance(v, tuple) else (v,)
        if self.choices:
            bad = [x for x in items if x not in self.choices]
            if bad:
                raise UsageError(f"{where}: {key} must be one of {', '.join(self.choices)}; "
                                 f"got {bad[0]!r}")
        if self.check is not None:
            ok, text = self.check
            if not all(ok(x) for x in items):
                raise UsageError(f"{where}: {key} must be {text}, got {value!r}")
        return v

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return TYPE_NAMES[self.type] + (f" {self.check[1]}" if self.check else "")


_BAD = object()


def _convert(kind: Any, value: Any) -> Any:
    """Strict conversion: YAML's ``1e-8`` (a str to PyYAML) is a float; ``"no"`` is not a bool."""
    if isinstance(value, Path):
        value = str(value)
    if kind is bool:
        return value if isinstance(value, bool) else _BAD
    if kind is int:
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, int):
            return value
        x = _number(value)
        return int(x) if x is not _BAD and math.isfinite(x) and float(x).is_integer() else _BAD
    if kind is float:
        x = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _number(value)
        return float(x) if x is not _BAD and math.isfinite(x) else _BAD
    if kind in (str, PATH):
        return value if isinstance(value, str) and value else _BAD
    if kind is LIST:
        items = (value,) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(x, str) and x for x in items):
            return tuple(items)
        return _BAD
    if kind is MAPPING:
        return dict(value) if isinstance(value, dict) else _BAD
    if kind is SPEC:
        return value if isinstance(value, (str, dict)) and value else _BAD
    if kind is INTS:
        items = [value] if not isinstance(value, (list, tuple)) else value
        ints = tuple(_convert(int, x) for x in items)
        return ints if ints and _BAD not in ints else _BAD
    if kind is ITEMS:
        return list(value) if isinstance(value, (list, tuple)) and value else _BAD
    raise TypeError(f"unknown option type {kind!r}")


def as_number(value: Any) -> Any:
    """``value`` as a finite float when it is a number or YAML's number-like string (``1e-2``,
    which PyYAML 1.1 reads as a str), else ``value`` unchanged (for the caller to reject)."""
    x = _convert(float, value) if not isinstance(value, bool) else _BAD
    return value if x is _BAD else x


def as_integer(value: Any) -> Any:
    """``value`` as an int when it is one or a whole number (``1e3``, ``300.0``), else unchanged."""
    x = _convert(int, value)
    return value if x is _BAD else x


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return _BAD
    return _BAD


# -- the options of `condlab spectrum` ------------------------------------------------------------
LOAD = "What to load"
OPERATOR = "Operator"
ESTIMATORS = "Estimators"
SETTINGS = "Preconditioners and normalization"
OUTPUT = "Output"

CURVATURES = ("hessian", "ggn")
DTYPES = ("float32", "float64")
FORMATS = ("table", "csv", "json")
TRACE_METHODS = ("hutch++", "hutchinson")
PRECONDITIONERS = ("optimizer", "adam", "rmsprop", "adagrad", "gn", "gn-sqrt", "jacobi")
NORMALIZATIONS = ("input", "batch", "layer")

# every command that computes takes it (a decision of the machine, not of the measurement)
THREADS = Option("threads", int, None, "CPU threads for torch; pin it where machines differ in cores, "
                 "and keep it when resuming.", OPERATOR, check=POSITIVE, field=False,
                 default_text="1 for small problems (P x N < 5e7), else torch's default")

SPECTRUM: tuple[Option, ...] = (
    # what to load
    Option("checkpoint", PATH, None, "A condlab checkpoint (from `condlab train`) or a state_dict file.",
           LOAD, flags=()),  # the command's argument CHECKPOINT
    Option("config", PATH, None, "A YAML file of these options (keys as option names); options given "
           "here override it.", LOAD, field=False),
    Option("model", str, None, "A built-in model (linear, mlp, cnn, transformer), "
           "'package.module:factory', or a Hugging Face config: 'hf-config:PATH'.", LOAD),
    Option("model_args", MAPPING, {}, "The model's arguments (e.g. widths: [32], norm: batch).", LOAD,
           flags=()),
    Option("model_config", PATH, None, "YAML of the model's arguments (e.g. widths: [32], norm: batch).",
           LOAD, field=False),
    Option("weights", PATH, None, "Weights for --model: a state_dict, a dict holding one (model / "
           "state_dict / model_state_dict, beside optimizer / optimizer_state_dict), a Lightning "
           "checkpoint, or .safetensors.", LOAD),
    Option("strip_prefix", str, None, "Strip this prefix from the weights' keys (Lightning: "
           "'model.'); keys without it are ignored.", LOAD,
           default_text="detected when exactly one prefix fits"),
    Option("trust_checkpoint", bool, False, "Allow loading a pickled full-module file (runs code from "
           "it). Only this flag grants it; a file cannot.", LOAD, flags=("--trust-checkpoint",),
           in_file=False),
    Option("data", SPEC, None, "digits, iris, wine, breast_cancer, diabetes, a synthetic spec "
           "(linreg:d=10,kappa=1e3), a .npz/.csv/.pt file, or 'package.module:factory'.", LOAD,
           default_text="the checkpoint's"),
    Option("target", str, None, "The target column of a .csv file.", LOAD, default_text="the last"),
    Option("task", str, None, "classification or regression: overrides the guess from the "
           "targets (integers with at most 20 values are class labels).", LOAD,
           choices=("classification", "regression"), default_text="guessed"),
    Option("loss", str, None, "cross-entropy, sequence-cross-entropy, mse, bce, or "
           "'package.module:fn'.", LOAD,
           default_text="the checkpoint's, else from the task and targets"),
    Option("ignore_index", int, -100, "Targets with this value are left out of the "
           "cross-entropies (padding).", LOAD),
    Option("label_smoothing", float, 0.0, "Label smoothing of the cross-entropies.", LOAD,
           check=BELOW_ONE),
    Option("input_keys", LIST, (), "Dict samples: an entry passed to the model as a keyword "
           "argument (repeatable, or comma-separated).", LOAD, default_text="all but the target"),
    Option("target_key", str, None, "Dict samples: the entry holding the targets.", LOAD,
           default_text="labels, label, targets, target or y"),
    Option("output_key", str, None, "The entry of a dict / Hugging Face ModelOutput (or the "
           "index in a tuple) that the loss takes.", LOAD, default_text="logits; a tuple's first"),
    Option("batch_size", int, None, "Samples per batch; products are summed over batches weighted by "
           "size (exact mean loss).", LOAD, check=POSITIVE, default_text="all samples in one batch"),
    Option("max_samples", int, None, "Use the first N samples.", LOAD, check=POSITIVE,
           default_text="all"),
    # the operator
    Option("curvature", str, "hessian", "hessian, or ggn (generalized Gauss-Newton J^T H_loss J).",
           OPERATOR, choices=CURVATURES),
    Option("params", LIST, (), "Only parameters whose names match this glob (repeatable), e.g. '2.*'.",
           OPERATOR, default_text="all"),
    Option("list_params", bool, False, "List the model's parameter names, shapes and whether "
           "--params selects them, then stop (nothing is measured).", OPERATOR,
           flags=("--list-params",), field=False),
    Option("bn_mode", str, "eval", "BatchNorm with running statistics (eval) or per-batch statistics "
           "(batch).", OPERATOR, choices=("eval", "batch")),
    Option("dropout_mode", str, "eval", "Dropout off (eval) or on with one fixed mask per batch (fixed).",
           OPERATOR, choices=("eval", "fixed")),
    Option("dtype", str, "float32", "Floating-point type of the model, data and products.", OPERATOR,
           choices=DTYPES),
    Option("device", str, "cpu", "cpu, cuda, cuda:N, mps or auto (cuda when available).",
           OPERATOR, check=DEVICE),
    Option("seed", int, 0, "Seeds Lanczos, probes and model initialization.", OPERATOR, estimator=True),
    Option("damping", float, 0.0, "Measure A + damping * I.", OPERATOR, check=NONNEGATIVE,
           estimator=True),
    Option("product_block", int, 16, "Vectors per vmapped curvature product call (activations are "
           "held once per vector).", OPERATOR, check=POSITIVE),
    THREADS,
    # estimators
    Option("top", int, 5, "Largest eigenvalues to report.", ESTIMATORS, check=NONNEGATIVE,
           estimator=True),
    Option("bottom", int, 3, "Smallest eigenvalues to report.", ESTIMATORS, check=NONNEGATIVE,
           estimator=True),
    Option("tol", float, None, "Convergence: a pair is flagged converged when its true residual "
           "||Av - lambda v|| <= tol * ||A||; a tol below the dtype's noise is refused.",
           ESTIMATORS, check=UNIT_INTERVAL, default_text="1e-6 in float64, 1e-4 in float32",
           estimator=True),
    Option("max_hvps", int, 1000, "Budget of curvature products for the eigenvalues.", ESTIMATORS,
           check=POSITIVE, estimator=True),
    Option("max_basis", int, None, "Lanczos vectors kept before a thick restart.", ESTIMATORS,
           check=POSITIVE, default_text="no restart", estimator=True),
    Option("block_size", int, None, "Block Lanczos block size b: eigenvalues repeated up to b times "
           "are found with their multiplicity; 1 is single-vector Lanczos.", ESTIMATORS, check=POSITIVE,
           default_text="8 on CPU, 16 on GPU, at most P/8", estimator=True),
    Option("krylov_dtype", str, None, "Store the Krylov basis [P, max-basis] in this dtype (float32 "
           "halves a float64 run's memory).", ESTIMATORS, choices=DTYPES, default_text="the operator's",
           estimator=True),
    Option("krylov_device", str, None, "Keep the Krylov basis on this device, e.g. cpu for a large "
           "model on a GPU.", ESTIMATORS, default_text="the operator's", estimator=True),
    Option("memory_limit", str, None, "Bytes the process may use in all, e.g. 12G or 6e9: the "
           "memory plan sizes the Lanczos basis and the product and probe blocks to it and refuses "
           "a run that cannot fit, before any work.", ESTIMATORS, estimator=True,
           default_text="what the machine, its cgroup and ulimit -v allow"),
    Option("null_threshold", float, None, "Eigenvalues with |lambda| <= this * ||A|| count as "
           "zero.", ESTIMATORS, check=BELOW_ONE, default_text="32 eps(dtype), the arithmetic noise",
           estimator=True),
    Option("trace", bool, False, "Estimate the trace with a standard error.", ESTIMATORS,
           estimator=True),
    Option("trace_method", str, "hutch++", "The trace estimator.", ESTIMATORS, choices=TRACE_METHODS,
           estimator=True),
    Option("probes", int, 100, "Products spent on the trace (and on a Hutchinson diagonal).",
           ESTIMATORS, check=POSITIVE, estimator=True),
    Option("density", bool, False, "Spectral density by stochastic Lanczos quadrature, written as a "
           "CSV grid.", ESTIMATORS, estimator=True),
    Option("density_probes", int, 8, "Random starts of the spectral density.", ESTIMATORS,
           check=POSITIVE, estimator=True),
    Option("density_steps", int, 80, "Lanczos steps per start of the spectral density.", ESTIMATORS,
           check=POSITIVE, estimator=True),
    Option("per_layer", bool, False, "Also measure each parameter tensor's diagonal block.",
           ESTIMATORS),
    Option("exact", bool, False, "Dense eigendecomposition (small models): exact nullity and "
           "positive-part kappa.", ESTIMATORS, estimator=True),
    # settings beside the baseline
    Option("precond", LIST, (), "Also measure P^-1/2 A P^-1/2 for this diagonal preconditioner "
           "(repeatable).", SETTINGS, choices=PRECONDITIONERS),
    Option("optimizer_state", PATH, None, "A torch optimizer state_dict for --precond optimizer.",
           SETTINGS, default_text="the checkpoint's"),
    Option("precond_batch_size", int, None, "Mini-batch size of the gradients behind --precond "
           "adam/rmsprop/adagrad.", SETTINGS, check=POSITIVE,
           default_text="--batch-size, else full batch"),
    Option("diag_estimator", str, "exact", "Exact diagonal, or Hutchinson with --probes samples.",
           SETTINGS, choices=("exact", "hutchinson")),
    Option("eps", float, None, "Added to the diagonal preconditioner.", SETTINGS, check=NONNEGATIVE,
           default_text="the rule's: the optimizer's own, 1e-8 adam/rmsprop, 1e-10 adagrad, 0 gn/gn-sqrt/jacobi"),
    Option("basis", str, "identity", "Apply the diagonal rule in the identity basis or the eigenbasis "
           "of G.", SETTINGS, choices=("identity", "eigen")),
    Option("weight_decay", float, 0.0, "Weight decay lambda.", SETTINGS, check=NONNEGATIVE),
    Option("decay", str, "none", "coupled (Adam + L2), decoupled (AdamW) or l1.", SETTINGS,
           choices=("none", "coupled", "decoupled", "l1")),
    Option("lr", float, None, "Learning rate: compare the preconditioned sharpness with the stability "
           "threshold.", SETTINGS, check=POSITIVE, default_text="no stability check"),
    Option("beta1", float, None, "Momentum of the method for the stability threshold.", SETTINGS,
           check=BELOW_ONE, default_text="0.9 for adam, else 0"),
    Option("norm", LIST, (), "Also measure after this function-preserving normalization: the same "
           "function reparameterized (repeatable; to compare architectures with and without "
           "normalization use `condlab compare`, findings: paper-a-norm).", SETTINGS,
           choices=NORMALIZATIONS),
    Option("norm_eps", float, 1e-5, "The epsilon of the BatchNorm / LayerNorm layers that --norm "
           "inserts.", SETTINGS, check=POSITIVE),
    # output
    Option("format", str, "table", "table, csv or json.", OUTPUT, choices=FORMATS,
           flags=("--format", "-f"), field=False),
    Option("output", PATH, None, "Write here instead of stdout (CSV: eigenvalues go to "
           "NAME_eigenvalues.csv); needs --format csv or json.", OUTPUT, flags=("--output", "-o"),
           field=False, default_text="stdout"),
    Option("density_output", PATH, "density.csv", "Where the density grid goes.", OUTPUT, field=False),
    Option("plot", PATH, None, "Plot the density to this PNG (needs matplotlib: pip install "
           "'condlab[plot]').", OUTPUT, field=False),
    Option("force", bool, False, "Replace files that exist at --output, --density-output or "
           "--plot.", OUTPUT, flags=("--force",), field=False),
    Option("verbose", bool, False, "Print the memory plan (what the run needs against what the "
           "process may use) on stderr before the work.", OUTPUT, flags=("--verbose",),
           field=False),
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
           COMPARE, choices=("batch", "eval"), flags=()),
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
    Option("divergence", float, 1e6, "A run stops when its loss exceeds this times the initial loss "
           "(or is NaN).", COMPARE, check=ABOVE_ONE, flags=()),
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
    dataclasses.replace(THREADS, group=OPTIONS),
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
    dataclasses.replace(THREADS, group=OPTIONS),
)

SWEEP = "Sweep"
# spectrum's options about one file: its weights, its optimizer state, where its report goes
NOT_FOR_TRACK = ("checkpoint", "weights", "optimizer_state", "format", "output", "density",
                 "density_output", "plot", "list_params")
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
TRACK: tuple[Option, ...] = TRACK_FLAGS + tuple(o for o in SPECTRUM if o.name not in NOT_FOR_TRACK)
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
)


# the options of each command, as its --help lists them (YAML-only keys: flags=())
COMMANDS: dict[str, tuple[Option, ...]] = {
    "spectrum": SPECTRUM, "train": TRAIN_FLAGS + TRAIN, "demo": DEMO, "compare": COMPARE_FLAGS
    + COMPARE_KEYS,
    "check": CHECK_FLAGS + BASELINE_KEYS, "track": TRACK,
}
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


def default_tol(dtype: Any) -> float:
    """``tol`` when none is given: the relative residual float64 or float32 products can reach."""
    return 1e-6 if str(dtype).replace("torch.", "") == "float64" else 1e-4


def fields_of(options: Sequence[Option], *, estimator: bool = False) -> list[tuple]:
    """``make_dataclass`` fields: the config's (``field``), or EstimatorSettings' (``estimator``)."""
    return [o.dataclass_field() for o in options if (o.estimator if estimator else o.field)]


def by_name(options: Sequence[Option] = SPECTRUM) -> dict[str, Option]:
    return {o.name: o for o in options}
