"""Data built by the user's own code: ``--data package.module:factory``.

The factory (imported like ``--model``, the working directory first on ``sys.path``) returns

- a ``torch.utils.data.Dataset`` (map-style): its samples are stacked into one tensor per entry;
- a ``torch.utils.data.DataLoader``: its batches are read once, in order, and kept as the fixed
  batches of the measurement (then ``--batch-size`` does not apply);
- tensors: a tuple ``(inputs, targets)`` or a dict of tensors with the samples first.

A sample (or batch) is a tuple ``(inputs, targets)`` (``(x1, x2, ..., targets)`` passes
``x1, x2, ...`` to the model positionally) or a dict of tensors, HF-style: the target entry is
``target_key`` (default: the first of ``labels``, ``label``, ``targets``, ``target``, ``y``
present) and the model gets the ``input_keys`` entries (default: all the others) as keyword
arguments. Tensors keep their dtypes: integer token ids stay integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.load.structure import batch_len, concat, map_tensors, signature, take, tensors

TARGET_KEYS = ("labels", "label", "targets", "target", "y")


def _as_tensor(v: Any, where: str) -> Tensor:
    if isinstance(v, Tensor):
        return v.detach().cpu()
    try:
        import numpy as np

        if isinstance(v, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, (int, float, bool)):
            return torch.tensor(v)
    except (TypeError, ValueError):
        pass
    raise UsageError(f"{where} is a {type(v).__name__}, not a tensor; return tensors (or numpy arrays)")


def split_sample(
    obj: Any, input_keys: Sequence[str] | None, target_key: str | None, where: str
) -> tuple[Any, Tensor]:
    """``(inputs, targets)`` of one sample or batch (see the module docstring)."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj]
        key = target_key
        if key is None:
            key = next((k for k in TARGET_KEYS if k in obj), None)
            if key is None:
                raise UsageError(
                    f"{where} is a dict with keys {', '.join(keys)} and none of "
                    f"{', '.join(TARGET_KEYS)}; pass --target-key with the entry that holds the targets"
                )
        elif key not in obj:
            raise UsageError(
                f"{where} has no key {key!r} (keys: {', '.join(keys)}); fix --target-key"
            )
        names = list(input_keys) if input_keys else [k for k in keys if k != key]
        missing = [k for k in names if k not in obj]
        if missing:
            raise UsageError(
                f"{where} has no key(s) {', '.join(map(repr, missing))} (keys: {', '.join(keys)}); "
                "fix --input-keys"
            )
        if not names:
            raise UsageError(f"{where} holds only the target {key!r}; it needs model inputs too")
        inputs = {k: _as_tensor(obj[k], f"{where} entry {k!r}") for k in names}
        return inputs, _as_tensor(obj[key], f"{where} entry {key!r}")
    if input_keys or target_key:
        raise UsageError(
            f"--input-keys / --target-key name entries of dict samples, but {where} is a "
            f"{type(obj).__name__}; drop them"
        )
    if isinstance(obj, (tuple, list)) and len(obj) >= 2:
        xs = [_as_tensor(v, f"{where} item {i}") for i, v in enumerate(obj[:-1])]
        return (xs[0] if len(xs) == 1 else tuple(xs)), _as_tensor(obj[-1], f"{where} targets")
    raise UsageError(
        f"{where} is a {type(obj).__name__}{f' of {len(obj)}' if isinstance(obj, (tuple, list)) else ''}; "
        "a sample must be (inputs, targets) or a dict with a target entry"
    )


def _stack(samples: list[tuple[Any, Tensor]], source: str) -> tuple[Any, Tensor]:
    # samples have no batch dimension: add it, compare the structures, then concatenate
    stacked = [map_tensors(s, lambda t: t.unsqueeze(0)) for s in samples]
    first = signature(stacked[0])
    for i, s in enumerate(stacked):
        sig = signature(s)
        if sig != first:
            raise UsageError(
                f"{source} yields a different structure on sample {i} ({_show(sig)}) than on "
                f"sample 0 ({_show(first)}); pad every sample to one length, or return a "
                "DataLoader whose collate_fn pads each batch"
            )
    return concat([s[0] for s in stacked]), concat([s[1] for s in stacked])


def _show(sig: Any) -> str:
    """A signature as short text: ``input_ids: int64 [12]``."""
    if isinstance(sig, tuple) and sig and sig[0] == "tensor":
        return f"{sig[1]} {list(sig[2])}"
    if isinstance(sig, dict):
        return ", ".join(f"{k}: {_show(v)}" for k, v in sig.items())
    if isinstance(sig, tuple):
        return "(" + ", ".join(_show(v) for v in sig) + ")"
    return str(sig)


def load_user_data(
    path: str,
    *,
    input_keys: Sequence[str] | None = None,
    target_key: str | None = None,
    max_samples: int | None = None,
) -> tuple[Any, Tensor, list[tuple[Any, Tensor]] | None]:
    """``(X, y, batches)`` from the factory at ``path``: all samples as one structure, and
    the DataLoader's own fixed batches (else None)."""
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    from condlab.load.models import call_factory

    obj = call_factory(path, what="data")
    source = f"data factory {path!r}"
    batches = None
    if isinstance(obj, DataLoader):
        batches = []
        seen = 0
        for i, b in enumerate(obj):
            X, y = split_sample(b, input_keys, target_key, f"batch {i} of {source}")
            if not y.dim() or batch_len(X) != int(y.shape[0]):
                raise UsageError(f"batch {i} of {source}: inputs and targets hold different sample counts")
            if max_samples is not None and seen + batch_len(X) > max_samples:
                X, y = take(X, slice(0, max_samples - seen)), y[: max_samples - seen]
            if batch_len(X):
                batches.append((X, y))
            seen += batch_len(X)
            if max_samples is not None and seen >= max_samples:
                break
        if not batches:
            raise UsageError(f"{source} returned a DataLoader with no batches")
        try:
            X, y = concat([b[0] for b in batches]), concat([b[1] for b in batches])
        except RuntimeError:  # batches padded to different lengths: no single tensor
            X, y = None, None
        return X, y, batches
    if isinstance(obj, torch.utils.data.TensorDataset):
        obj = tuple(obj.tensors)
    if isinstance(obj, TorchDataset) and not isinstance(obj, (tuple, Mapping)):
        try:
            n = len(obj)
        except TypeError:
            raise UsageError(
                f"{source} returned an iterable-style Dataset without a length; "
                "return a map-style Dataset or a DataLoader"
            ) from None
        n = n if max_samples is None else min(n, max_samples)
        if n == 0:
            raise UsageError(f"{source} returned an empty Dataset")
        samples = [split_sample(obj[i], input_keys, target_key, f"sample {i} of {source}") for i in range(n)]
        X, y = _stack(samples, source)
        return X, y, None
    if isinstance(obj, (tuple, list, Mapping)):
        X, y = split_sample(obj, input_keys, target_key, f"what {source} returned")
        n = int(y.shape[0]) if y.dim() else 0
        for t in tensors(X):
            if t.dim() == 0 or int(t.shape[0]) != n:
                raise UsageError(
                    f"{source}: inputs of shape {list(t.shape)} and targets of shape "
                    f"{list(y.shape)} hold different numbers of samples (first dimension)"
                )
        if max_samples is not None:
            X, y = take(X, slice(0, max_samples)), y[:max_samples]
        if n == 0:
            raise UsageError(f"{source} returned no samples")
        return X, y, None
    raise UsageError(
        f"{source} returned a {type(obj).__name__}; return a torch Dataset, a DataLoader, "
        "a tuple (inputs, targets) or a dict of tensors"
    )


__all__ = ["TARGET_KEYS", "load_user_data", "split_sample"]
