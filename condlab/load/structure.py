"""Model inputs as nested structures: a tensor, a dict of tensors (HF-style ``input_ids``,
``attention_mask``) or a tuple of tensors (positional arguments), all with the samples first.

The model is called as ``model(X)`` for a tensor, ``model(**X)`` for a dict and ``model(*X)``
for a tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from condlab.errors import CondlabError, UsageError

Inputs = Union[Tensor, dict, tuple]


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it (dicts and tuples/lists rebuilt)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return tuple(map_tensors(v, fn) for v in obj)
    return obj


def tensors(obj: Any) -> list[Tensor]:
    """Every tensor in ``obj``, in order."""
    out: list[Tensor] = []
    map_tensors(obj, lambda t: out.append(t) or t)
    return out


def batch_len(obj: Any) -> int:
    """The number of samples: the first dimension of the first tensor."""
    ts = tensors(obj)
    return int(ts[0].shape[0]) if ts and ts[0].dim() else 0


def take(obj: Any, index: slice | Tensor) -> Any:
    """The samples ``index`` of every tensor."""
    return map_tensors(obj, lambda t: t[index])


def concat(parts: Sequence[Any]) -> Any:
    """Batches of one structure concatenated along the samples."""
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(list(parts))
    if isinstance(first, Mapping):
        return {k: concat([p[k] for p in parts]) for k in first}
    return tuple(concat([p[i] for p in parts]) for i in range(len(first)))


def signature(obj: Any) -> Any:
    """The structure of ``obj``: keys, nesting, dtypes and per-sample shapes (for comparisons)."""
    if isinstance(obj, Tensor):
        return ("tensor", str(obj.dtype).replace("torch.", ""), tuple(obj.shape[1:]))
    if isinstance(obj, Mapping):
        return {k: signature(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return tuple(signature(v) for v in obj)
    return type(obj).__name__


def call_model(model, params_and_buffers, X: Inputs):
    """``model(X)``, ``model(**X)`` or ``model(*X)`` through ``functional_call``."""
    from torch.func import functional_call

    if isinstance(X, Mapping):
        return functional_call(model, params_and_buffers, (), dict(X))
    if isinstance(X, tuple):
        return functional_call(model, params_and_buffers, X)
    return functional_call(model, params_and_buffers, (X,))


def select_output(out: Any, key: str | None) -> Tensor:
    """The tensor the loss takes from a model's return value.

    A tensor is used as is; a dict or Hugging Face ``ModelOutput`` gives its ``key`` entry
    (default ``logits``); a tuple or list gives its first element (or element ``int(key)``).
    """
    if isinstance(out, Tensor) and key is None:
        return out
    if isinstance(out, Mapping):
        k = key or "logits"
        if k not in out:
            keys = ", ".join(map(str, out.keys()))
            raise UsageError(
                f"the model returned a mapping without {k!r} (keys: {keys}); pass --output-key "
                "with the entry that holds the outputs"
            )
        return select_output(out[k], None)
    if isinstance(out, (tuple, list)) and out:
        i = 0 if key is None else int(key) if str(key).isdigit() else None
        if i is None or i >= len(out):
            raise UsageError(
                f"the model returned a {type(out).__name__} of {len(out)}; --output-key "
                f"must be an index 0..{len(out) - 1}"
            )
        return select_output(out[i], None)
    if isinstance(out, Tensor):
        raise UsageError(f"--output-key {key!r} was given but the model returned a plain tensor; drop it")
    raise CondlabError(f"the model returned a {type(out).__name__}, not a tensor, dict or tuple")


__all__ = [
    "Inputs",
    "batch_len",
    "call_model",
    "concat",
    "map_tensors",
    "select_output",
    "signature",
    "take",
    "tensors",
]
