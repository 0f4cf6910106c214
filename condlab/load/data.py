"""Datasets: scikit-learn's bundled ones, synthetic problems with controlled conditioning, files.

A spec is a string or a dict; ``Dataset.spec`` is a JSON-able dict that rebuilds the dataset.

- Bundled (no download): ``digits`` (pixels / 16, in [0, 1]), ``iris``, ``wine``,
  ``breast_cancer`` (classification) and ``diabetes`` (regression, the raw unscaled features).
  Features are *not* standardized: ill-scaled inputs are what conditioning tools measure.
- Synthetic: ``linreg`` (``y = x^T w + noise * eps``) and ``logreg`` (labels drawn from a
  softmax with temperature ``noise``; ``noise = 0`` takes the argmax) over Gaussian features
  ``x = mean + scale * (S^1/2 z)``, ``z ~ N(0, I)``. The covariance ``S`` has eigenvalues
  log-spaced from 1 to ``1/kappa`` (or the list ``eigs``) in a random orthogonal basis
  (``rotate=true``) or along the axes; or, with ``blocks``, is block diagonal with blocks
  ``(1 - e) 1 1^T + e I`` of the given sizes. ``scale`` multiplies feature j by ``scale[j]``,
  so the population covariance is ``C = D S D``, ``D = diag(scale)``; ``Dataset.meta`` holds
  ``covariance`` (C, float64), its ``eigenvalues`` and ``kappa``, and ``w_true``.
  ``exact=true`` whitens the draws so the empirical covariance (centered, 1/n) equals C exactly.
  ``linreg``'s ``w`` sets the true weights ``w*`` (one number per feature, or one for all;
  default: drawn ``N(0, I/d)``); the noise draws are the same either way.
  String form: ``linreg:n=512,d=10,kappa=1e3,rotate=true,mean=10,scale=[1,10,100]``.
- Files: ``.npz`` (arrays ``X``, ``y``), ``.csv`` (a header row; the target column is ``target``
  or the last one), ``.pt`` (a dict with tensors ``X``, ``y``, read with ``weights_only=True``).
  ``y`` that is integer-valued with at most 20 distinct values (fewer than the samples) is
  guessed to be a classification target; ``task`` (``--task``, or a spec dict's ``"task"``)
  overrides the guess. Numeric class labels are used as given, never renumbered: ``K`` is the
  largest label + 1, and a negative label is an error. Only string labels are coded ``0..K-1``
  in sorted order (``meta["classes"]``).
- Precision: ``X`` (and regression ``y``) stay float64 when the source is float64 (files,
  scikit-learn's data, synthetic draws) and are float32 otherwise; the run casts them to its own
  ``--dtype``, so ``--dtype float64`` never sees float32-rounded data.

``max_samples`` keeps the first ``max_samples`` rows in file / generation order (no shuffle), so
the same spec always gives the same samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.load.structure import map_tensors, take
from condlab.load.synthetic import SYNTHETIC, _synthetic
from condlab.load.userdata import load_user_data

TASKS = ("classification", "regression")
FILE_SUFFIXES = (".npz", ".csv", ".pt")
_MAX_CLASSES = 20


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples ``X [N, ...]`` (float) and targets ``y`` (long ``[N]``; or float ``[N]``/``[N, T]``)."""

    X: Tensor
    y: Tensor
    task: str
    num_classes: int | None
    name: str
    spec: dict
    feature_names: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0]) if self.y is not None else sum(len(y) for _, y in self.batches)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample (no batch dimension)."""
        if not isinstance(self.X, Tensor):
            raise UsageError(
                f"data {self.name!r} has structured inputs ({type(self.X).__name__}); "
                "this needs one input tensor"
            )
        return tuple(self.X.shape[1:])

    @property
    def batches(self) -> list:
        """The fixed batches of a user's DataLoader, else empty."""
        return self.meta.get("batches", [])

    @property
    def num_outputs(self) -> int:
        """Classes for classification, target columns for regression."""
        if self.task == "classification":
            return int(self.num_classes)
        return 1 if self.y.dim() == 1 else int(self.y.shape[1])

    def to(self, dtype: torch.dtype) -> Dataset:
        """A copy with ``X`` (and regression ``y``) cast to the floating dtype ``dtype``."""
        y = self.y.to(dtype) if self.y.is_floating_point() else self.y
        X = map_tensors(self.X, lambda t: t.to(dtype) if t.is_floating_point() else t)
        return replace(self, X=X, y=y)

    def subset(self, index: Tensor, spec: dict) -> Dataset:
        """The rows ``index``, described by ``spec``."""
        return replace(self, X=take(self.X, index), y=self.y[index], spec=spec)


# -- spec parsing ----------------------------------------------------------------------------
def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur] if cur or parts else []


def _value(text: str) -> Any:
    """``true``/``false``/``none``, int, float, ``[a,b]`` lists, else the string."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        return [_value(p) for p in _split_top(t[1:-1])]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def _names_dataset(spec: str) -> bool:
    """Whether ``spec`` is ``NAME`` or ``NAME:key=value,...`` of a bundled or synthetic dataset:
    decided from the text alone, so a long spec never reaches the file system."""
    name = spec.strip().partition(":")[0].strip()
    return name in BUNDLED or name in SYNTHETIC


def _is_file(spec: str) -> bool:
    try:
        return Path(spec).is_file()
    except OSError:  # a name too long for a file, or not a name the system accepts
        return False


def parse_spec(spec: str | dict | Path) -> dict:
    """A dataset spec as a dict: ``{"name": ...}`` or ``{"path": ...}`` plus options."""
    if isinstance(spec, dict):
        if ("name" in spec) == ("path" in spec):
            raise UsageError(
                f"a data spec needs exactly one of 'name' or 'path', got keys {sorted(spec)}"
            )
        return dict(spec)
    if isinstance(spec, Path) or (isinstance(spec, str) and not _names_dataset(spec) and (
        _is_file(spec) or (Path(spec).suffix and "=" not in spec)
    )):
        return {"path": str(spec)}
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"a data spec is a name, a file path or a mapping, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    out: dict[str, Any] = {"name": name.strip()}
    for item in _split_top(rest):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"data spec {spec!r}: {item!r} is not key=value")
        out[key.strip()] = _value(val)
    return out


# -- bundled ---------------------------------------------------------------------------------
def _digits_file() -> Path | None:
    """scikit-learn's bundled digits.csv.gz, located without importing sklearn (2.4 s of scipy)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if name == "digits" and (path := _digits_file()) is not None:
        # the same parse as sklearn.datasets.load_digits, so a CLI run starts in a second
        import gzip

        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        names = [f"pixel_{i}_{j}" for i in range(8) for j in range(8)]
        return table[:, :-1] / 16.0, table[:, -1].astype(int), names
    from sklearn import datasets as skd

    if name == "diabetes":
        b = skd.load_diabetes(scaled=False)
    else:
        b = getattr(skd, f"load_{name}")()
    X = b.data / 16.0 if name == "digits" else b.data
    names = getattr(b, "feature_names", None)
    return X, b.target, [str(f) for f in names] if names is not None else None


_IMPORT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_factory_spec(spec: Any) -> bool:
    """Whether a data spec is an import path ``package.module:factory`` (not a built-in name)."""
    if not isinstance(spec, str) or not _IMPORT.match(spec.strip()):
        return False
    return spec.split(":")[0] not in BUNDLED and spec.split(":")[0] not in SYNTHETIC


BUNDLED: dict[str, tuple[str, str]] = {
    "digits": ("classification", "8x8 handwritten digits, 1797 x 64 pixels / 16, 10 classes"),
    "iris": ("classification", "iris flowers, 150 x 4 raw measurements, 3 classes"),
    "wine": ("classification", "wine cultivars, 178 x 13 raw (ill-scaled) features, 3 classes"),
    "breast_cancer": ("classification", "breast cancer, 569 x 30 raw (ill-scaled) features, 2 classes"),
    "diabetes": ("regression", "diabetes progression, 442 x 10 raw features, 1 target"),
}


# -- files -----------------------------------------------------------------------------------
def _read_file(spec: dict, target: str | None) -> tuple[np.ndarray, np.ndarray, list | None]:
    path = Path(spec["path"])
    target = spec.get("target", target)
    if not path.is_file():
        raise UsageError(f"data file '{path}' does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise UsageError(f"data file '{path}' has unknown extension {suffix!r}; use .npz, .csv or .pt")
    if target is not None and suffix != ".csv":
        raise UsageError(f"target={target!r} applies to .csv files only, not '{path}'")
    try:
        if suffix == ".csv":
            return _read_csv(path, target)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        else:
            arrays = torch.load(path, weights_only=True, map_location="cpu")
    except UsageError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"cannot read data file '{path}': {type(e).__name__}: {first}") from e
    if not isinstance(arrays, dict) or "X" not in arrays or "y" not in arrays:
        keys = sorted(map(str, arrays)) if isinstance(arrays, dict) else type(arrays).__name__
        raise UsageError(f"data file '{path}' needs arrays 'X' and 'y', found {keys}")
    X, y = arrays["X"], arrays["y"]
    if suffix == ".npz":
        return X, y, None
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise UsageError(f"data file '{path}': 'X' and 'y' must be tensors")
    X, y = (t.detach().cpu() for t in (X, y))
    # float16/bfloat16 have no numpy twin: widened to float32; float32/float64 keep their precision
    return tuple(
        t.float().numpy() if t.is_floating_point() and t.element_size() < 4 else t.numpy()
        for t in (X, y)
    ) + (None,)


def _read_csv(path: Path, target: str | None):
    import pandas as pd

    df = pd.read_csv(path)
    if df.shape[1] < 2 or all(_is_number(c) for c in df.columns):
        raise UsageError(
            f"data file '{path}' needs a header row of column names and at least two columns"
        )
    target = df.columns[-1] if target is None else target
    if target not in df.columns:
        raise UsageError(
            f"data file '{path}' has no column {target!r}; its columns are {', '.join(map(str, df.columns))}"
        )
    feats = df.drop(columns=[target])
    bad = [c for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise UsageError(
            f"data file '{path}': column(s) {', '.join(map(str, bad))} are not numeric; "
            "encode them or drop them"
        )
    y = df[target].to_numpy()
    return feats.to_numpy(dtype=float), y, [str(c) for c in feats.columns]


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _precision(a: np.ndarray) -> torch.dtype:
    """float64 for float64 (or wider, or integer) sources, float32 for float32 and narrower."""
    return torch.float32 if a.dtype.kind == "f" and a.dtype.itemsize <= 4 else torch.float64


def _listed(values, limit: int = 5) -> str:
    """``'label 3'`` / ``'labels -1, 4, 7 and 2 more'``."""
    vals = [str(int(v)) for v in values]
    more = f" and {len(vals) - limit} more" if len(vals) > limit else ""
    return ("label " if len(vals) == 1 else "labels ") + ", ".join(vals[:limit]) + more


def _finite(a: np.ndarray, what: str, source: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise UsageError(
            f"{source}: {what} holds {int(bad.sum())} NaN/Inf value(s) (first in row {row}); "
            "clean or impute them"
        )


def _targets(y: np.ndarray, task: str | None, source: str) -> tuple[Tensor, str, int | None, list]:
    """Infer or check the task. Numeric labels are kept as given (``K`` = largest + 1); string
    labels are coded ``0..K-1`` in sorted order. Regression targets keep float64 precision."""
    if y.dtype.kind in "OUS":  # string labels
        if task == "regression":
            raise UsageError(f"{source}: task regression needs numeric targets, got strings")
        classes, codes = np.unique(y.astype(str), return_inverse=True)
        return torch.as_tensor(codes.reshape(-1), dtype=torch.long), "classification", len(classes), classes.tolist()
    if y.dtype.kind in "iu" and y.ndim >= 2 and task in (None, "classification"):
        # integer targets per position (next tokens; negative = ignore_index padding)
        labels = torch.as_tensor(y.astype(np.int64))
        valid = labels[labels >= 0]
        return labels, "classification", int(valid.max()) + 1 if valid.numel() else 0, []
    precision = _precision(y)
    y = y.astype(float)
    _finite(y, "y", source)
    integral = bool(np.all(y == np.round(y)))
    if task is None:
        distinct = np.unique(y).size
        task = "classification" if y.ndim == 1 and integral and distinct <= _MAX_CLASSES and distinct < y.size else "regression"
    if task not in TASKS:
        raise UsageError(f"{source}: unknown task {task!r}; choose classification or regression")
    if task == "regression":
        return torch.as_tensor(y, dtype=precision), task, None, []
    if y.ndim != 1 or not integral:
        raise UsageError(
            f"{source}: classification needs integer labels y of shape [N]; use --task regression"
        )
    if y.size and y.min() < 0:
        bad = np.unique(y[y < 0]).astype(int)
        raise UsageError(
            f"{source}: class labels must be 0..C-1 but {_listed(bad)} are negative; "
            "shift the labels to start at 0"
        )
    labels = torch.as_tensor(y, dtype=torch.long)
    return labels, task, int(labels.max()) + 1 if labels.numel() else 0, []


# -- the entry point -------------------------------------------------------------------------
def list_datasets() -> dict[str, str]:
    """``{name: one-line description}``; file paths (.npz/.csv/.pt) are accepted too."""
    return {**{k: d for k, (_, d) in BUNDLED.items()}, **SYNTHETIC}


def load_dataset(
    spec: str | dict | Path,
    *,
    target: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    task: str | None = None,
) -> Dataset:
    """Load the dataset ``spec`` (see the module docstring); ``X`` keeps the source's precision.

    ``seed`` seeds synthetic data unless the spec has its own ``seed``; ``max_samples`` (or a
    ``max_samples`` key of the spec) keeps the first rows; ``target`` names the CSV target column;
    ``task`` (classification or regression) overrides the spec's task or the guess from ``y``.
    A spec key ``split: {test_fraction, seed, part}`` selects one part of ``train_test_split``.
    """
    if is_factory_spec(spec) or (isinstance(spec, dict) and is_factory_spec(spec.get("name"))):
        return _user_dataset(spec, max_samples)
    opts = parse_spec(spec)
    limit = opts.pop("max_samples", None)
    max_samples = limit if max_samples is None else max_samples
    split, spec_task = opts.pop("split", None), opts.pop("task", None)
    task = spec_task if task is None else task
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose classification or regression")
    if target is not None:
        opts["target"] = target
    meta: dict = {}
    known_classes = None
    if "path" in opts:
        extra = sorted(set(opts) - {"path", "target"})
        if extra:
            raise UsageError(
                f"data file spec has unknown key(s) {', '.join(extra)}; "
                "use path, target, task, max_samples, split"
            )
        source, name = f"data file '{opts['path']}'", Path(opts["path"]).stem
        X, y, names = _read_file(opts, opts.get("target"))
        out_spec = {**opts, **({"task": task} if task is not None else {})}
    else:
        name = opts.pop("name")
        source = f"dataset {name!r}"
        if name not in BUNDLED and name not in SYNTHETIC:
            raise UsageError(
                f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())} "
                "or give a .npz, .csv or .pt file"
            )
        fixed = BUNDLED[name][0] if name in BUNDLED else ("regression" if name == "linreg" else "classification")
        if spec_task is not None or "target" in opts or task not in (None, fixed):
            raise UsageError(f"dataset {name!r} has a fixed task ({fixed}) and target; drop task/target")
        task = fixed
        if name in BUNDLED:
            if opts:
                raise UsageError(f"dataset {name!r} takes no parameters, got {', '.join(opts)}")
            X, y, names = _sklearn(name)
            out_spec = {"name": name}
            known_classes = int(y.max()) + 1 if task == "classification" else None
        else:
            opts.setdefault("seed", seed)
            X, y, out_spec, meta = _synthetic(name, opts)
            names = None
            known_classes = out_spec.get("classes")
    precision = _precision(np.asarray(X))
    X = _features(X, source)
    if len(X) != len(y):
        raise UsageError(f"{source}: X has {len(X)} rows but y has {len(y)}; they must match")
    if known_classes is not None:  # labels are already 0..K-1
        y_t, num_classes, classes = torch.as_tensor(y, dtype=torch.long), known_classes, []
    else:
        y_t, task, num_classes, classes = _targets(np.asarray(y), task, source)
    if classes and "path" in out_spec:
        meta["classes"] = classes
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise UsageError(f"max_samples must be a positive integer, got {max_samples!r}")
        X, y_t = X[:max_samples], y_t[:max_samples]
        out_spec["max_samples"] = max_samples
    ds = Dataset(
        X=torch.as_tensor(X, dtype=torch.long if X.dtype.kind == "i" else precision),
        y=y_t,
        task=task, num_classes=num_classes, name=name, spec=out_spec,
        feature_names=tuple(names) if names else None, meta=meta,
    )
    if split is not None:
        if not isinstance(split, dict) or set(split) != {"test_fraction", "seed", "part"} \
                or split["part"] not in ("train", "test"):
            raise UsageError("data spec 'split' needs test_fraction, seed and part (train or test)")
        train, test = train_test_split(ds, split["test_fraction"], split["seed"])
        ds = train if split["part"] == "train" else test
    return ds


def _user_dataset(spec: str | dict, max_samples: int | None) -> Dataset:
    """A dataset from the user's factory; spec ``{"name": "mod:fn", "input_keys": [...],
    "target_key": ..., "max_samples": ...}`` or the import path alone."""
    opts = dict(spec) if isinstance(spec, dict) else {"name": spec.strip()}
    path = opts.pop("name")
    keys, target_key = opts.pop("input_keys", None), opts.pop("target_key", None)
    max_samples = opts.pop("max_samples", None) if max_samples is None else max_samples
    opts.pop("max_samples", None)
    if opts:
        raise UsageError(
            f"data factory spec has unknown key(s) {', '.join(sorted(opts))}; "
            "use name, input_keys, target_key, max_samples"
        )
    X, y, batches = load_user_data(path, input_keys=keys, target_key=target_key, max_samples=max_samples)
    labels = [y] if y is not None else [b[1] for b in batches]
    integer = not labels[0].is_floating_point()
    num_classes = None
    if integer:
        ids = torch.cat([t.reshape(-1) for t in labels])
        ids = ids[ids >= 0]  # negative ids are ignore_index padding
        num_classes = int(ids.max()) + 1 if ids.numel() else 1
    out_spec = {"name": path, **({"input_keys": list(keys)} if keys else {}),
                **({"target_key": target_key} if target_key else {}),
                **({"max_samples": max_samples} if max_samples is not None else {})}
    meta = {"batches": batches} if batches is not None and (y is None or len(batches) > 1) else {}
    if y is None:  # a DataLoader of differently padded batches: no single tensor of samples
        X = None
    return Dataset(
        X=X, y=y, task="classification" if integer else "regression",
        num_classes=num_classes, name=path, spec=out_spec, meta=meta,
    )


def _features(X: Any, source: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf" or X.ndim < 2:
        raise UsageError(
            f"{source}: X must be a numeric array [N, features...], got dtype {X.dtype} "
            f"and shape {list(X.shape)}"
        )
    if len(X) == 0:
        raise UsageError(f"{source} holds no samples")
    if X.dtype.kind in "iu":  # token ids, category codes: they stay integers
        return X.astype(np.int64)
    X = X.astype(float)
    _finite(X, "X", source)
    return X


def make_batches(dataset: Dataset, batch_size: int | None) -> list[tuple[Tensor, Tensor]]:
    """Fixed batches ``(X[i:i+B], y[i:i+B])`` in order; the last may be smaller.

    ``None`` or ``batch_size >= N`` gives one batch of all samples.
    """
    if dataset.batches:
        if batch_size is not None:
            raise UsageError(
                f"data {dataset.name!r} is a DataLoader with its own batches; drop --batch-size "
                "(or set the DataLoader's batch_size)"
            )
        return list(dataset.batches)
    n = len(dataset)
    if batch_size is None or (isinstance(batch_size, int) and batch_size >= n):
        return [(dataset.X, dataset.y)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch size must be a positive integer or none, got {batch_size!r}")
    return [
        (take(dataset.X, slice(i, i + batch_size)), dataset.y[i : i + batch_size])
        for i in range(0, n, batch_size)
    ]


def train_test_split(dataset: Dataset, test_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A seeded random split: ``round(test_fraction * N)`` test rows (at least 1, at most N-1).

    Rows keep their original order within each part. Each part's ``spec`` rebuilds it.
    """
    n = len(dataset)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction < 1:
        raise UsageError(f"test fraction must be in (0, 1), got {test_fraction!r}")
    if n < 2:
        raise UsageError(f"cannot split {n} sample(s) into train and test")
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    base = {k: v for k, v in dataset.spec.items() if k != "split"}

    def part(name: str) -> dict:
        return {**base, "split": {"test_fraction": test_fraction, "seed": int(seed), "part": name}}

    return dataset.subset(train_idx, part("train")), dataset.subset(test_idx, part("test"))


__all__ = [
    "BUNDLED",
    "SYNTHETIC",
    "Dataset",
    "list_datasets",
    "load_dataset",
    "make_batches",
    "parse_spec",
    "train_test_split",
]
