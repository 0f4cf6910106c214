"""Built-in models from a spec dict, and user models from a ``package.module:factory`` path.

A spec is ``{"name": NAME, **kwargs}``; ``build_model(spec, input_shape, num_outputs)`` builds
it for samples of shape ``input_shape`` (no batch dimension) and ``num_outputs`` outputs.
A name containing ``:`` is an import path: ``{"name": "mypkg.nets:make", "width": 64}`` calls
``mypkg.nets.make(width=64)`` (``input_shape`` and ``num_outputs`` are then not passed).

All built-in models are stacks of standard ``nn`` modules with a deterministic forward pass
(dropout aside, which is off in eval mode), so ``torch.func`` transforms (``functional_call``,
``grad``, ``jvp``, ``vmap``) apply. Attention is written with plain tensor operations.
Parameter names follow ``nn.Sequential``: the flat ``mlp`` 64-32-10 has ``0.weight``,
``0.bias``, ``2.weight``, ``2.bias``, the names of a hand-written ``nn.Sequential`` of the
same layers, so its state_dicts load into it. Inputs with more than one dimension are
flattened by a leading ``nn.Flatten`` (``linear``, ``mlp``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from condlab.errors import UsageError
from condlab.optionfield import as_number

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}
NORMS = ("none", "batch", "layer")


# -- kwarg validation ------------------------------------------------------------------------
def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _int(lo: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise TypeError(f"an integer >= {lo}")
        return v

    return check


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi:
            raise TypeError(f"a number in [{lo}, {hi})")
        return float(v)

    return check


def _ints(v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or not v or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in v
    ):
        raise TypeError("a non-empty list of positive integers")
    return list(v)


def _ints_or_empty(v: Any) -> list[int]:
    return [] if isinstance(v, (list, tuple)) and not v else _ints(v)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise TypeError("one of " + ", ".join(options))
        return v

    return check


# -- the models ------------------------------------------------------------------------------
def _flat_in(input_shape: Sequence[int]) -> tuple[list[nn.Module], int]:
    """A leading Flatten for inputs of more than one dimension, and the flat size."""
    size = math.prod(input_shape)
    return ([nn.Flatten()] if len(input_shape) > 1 else []), size


def _linear(input_shape, num_outputs, *, bias):
    head, d = _flat_in(input_shape)
    return nn.Sequential(*head, nn.Linear(d, num_outputs, bias=bias))


def _mlp(input_shape, num_outputs, *, widths, activation, norm, norm_eps, dropout, bias):
    layers, d = _flat_in(input_shape)
    for w in widths:
        layers.append(nn.Linear(d, w, bias=bias))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(w, eps=norm_eps))
        elif norm == "layer":
            layers.append(nn.LayerNorm(w, eps=norm_eps))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = w
    layers.append(nn.Linear(d, num_outputs, bias=bias))
    return nn.Sequential(*layers)


def _image_shape(input_shape: Sequence[int], image_shape: list[int] | None) -> list[int]:
    """[C, H, W] for the CNN: given, the input's own, or a square one-channel image."""
    d = math.prod(input_shape)
    if image_shape is not None:
        if len(image_shape) != 3 or math.prod(image_shape) != d:
            raise UsageError(
                f"model 'cnn': image_shape {image_shape} does not fit inputs of shape "
                f"{list(input_shape)} ({d} values); give [C, H, W] with C*H*W = {d}"
            )
        return list(image_shape)
    if len(input_shape) == 3:
        return list(input_shape)
    if len(input_shape) == 2:
        return [1, *input_shape]
    side = math.isqrt(d)
    if side * side != d:
        raise UsageError(
            f"model 'cnn' needs image-like inputs; {d} features are not a square image — "
            "pass image_shape: [C, H, W]"
        )
    return [1, side, side]


def _cnn(input_shape, num_outputs, *, channels, activation, norm, norm_eps, image_shape, bias):
    shape = _image_shape(input_shape, image_shape)
    layers: list[nn.Module] = []
    if list(input_shape) != shape:
        layers.append(nn.Unflatten(1, shape) if len(input_shape) == 1 else _Reshape(shape))
    c = shape[0]
    for width in channels:
        layers.append(nn.Conv2d(c, width, kernel_size=3, padding=1, bias=bias))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(width, eps=norm_eps))
        elif norm == "layer":  # LayerNorm over [C, H, W] with a per-channel affine
            layers.append(nn.GroupNorm(1, width, eps=norm_eps))
        layers.append(ACTIVATIONS[activation]())
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_outputs, bias=bias)]
    return nn.Sequential(*layers)


class _Reshape(nn.Module):
    """``[B, *in] -> [B, *shape]``."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class SelfAttention(nn.Module):
    """Multi-head self-attention in plain ops, ``softmax(Q K^T / sqrt(d_h) + mask) V``: every
    curvature product (forward-over-reverse AD, double backward) runs through it."""

    def __init__(self, d_model: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x [B, T, D]
        q, k, v = (t.reshape(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)  # [B, H, T, T]
        if self.causal:  # position t attends to positions <= t
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
        return self.proj(out)


class Block(nn.Module):
    """A pre-LN block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int, activation: str, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            ACTIVATIONS[activation](),
            nn.Linear(mlp_ratio * d_model, d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TokenTransformer(nn.Module):
    """Token ids ``[B, T]`` -> token + learned position embeddings -> pre-LN blocks (causal or
    bidirectional attention) -> LayerNorm -> head.

    ``pool='none'``: logits per position ``[B, T, num_outputs]`` (a language model with
    ``sequence-cross-entropy``); ``'mean'``: the mean over positions, ``[B, num_outputs]`` (a
    sequence classifier). ``tied``: the head is the transpose of the token embedding (needs
    ``num_outputs == vocab``).
    """

    def __init__(self, vocab, num_outputs, *, max_len, d_model, heads, layers, mlp_ratio,
                 activation, causal, tied, pool):
        super().__init__()
        self.pool, self.tied = pool, tied
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.Sequential(
            *(Block(d_model, heads, mlp_ratio, activation, causal) for _ in range(layers))
        )
        self.ln = nn.LayerNorm(d_model)
        self.head = None if tied else nn.Linear(d_model, num_outputs)

    def forward(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            raise TypeError(
                "model 'transformer' takes integer token ids [N, T], got float inputs; "
                "give integer data (a .npz/.pt of int arrays, or --data package.module:factory)"
            )
        T = ids.shape[1]
        h = self.embed(ids) + self.pos(torch.arange(T, device=ids.device))  # [B, T, D]
        h = self.ln(self.blocks(h))
        if self.pool == "mean":
            h = h.mean(dim=1)  # [B, D]
        return h @ self.embed.weight.T if self.tied else self.head(h)


def _transformer(input_shape, num_outputs, *, vocab, max_len, d_model, heads, layers, mlp_ratio,
                 activation, causal, tied, pool):
    if len(input_shape) != 1:
        raise UsageError(
            f"model 'transformer' takes token ids of shape [N, T], got samples of shape "
            f"{list(input_shape)}"
        )
    if d_model % heads:
        raise UsageError(f"model 'transformer': d_model={d_model} is not divisible by heads={heads}")
    vocab = num_outputs if vocab is None else vocab
    if tied and (pool != "none" or num_outputs != vocab):
        raise UsageError(
            f"model 'transformer': a tied head predicts tokens ({vocab}) per position; with "
            f"pool={pool} and {num_outputs} outputs set tied: false"
        )
    max_len = input_shape[0] if max_len is None else max_len
    if max_len < input_shape[0]:
        raise UsageError(f"model 'transformer': max_len={max_len} is shorter than the {input_shape[0]} positions")
    return TokenTransformer(
        vocab, num_outputs, max_len=max_len, d_model=d_model, heads=heads, layers=layers,
        mlp_ratio=mlp_ratio, activation=activation, causal=causal, tied=tied, pool=pool,
    )


_ACT, _NORM = _choice(*ACTIVATIONS), _choice(*NORMS)


def _positive(v: Any) -> float:
    v = as_number(v)  # YAML 1.1 reads 1e-3 as a string
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise TypeError("a number > 0")
    return float(v)


# every built-in model: ``init: zeros`` starts every parameter outside the normalization layers
# at 0 (those keep weight 1, bias 0), e.g. to measure a linear model's curvature at W = 0
COMMON: dict[str, tuple[Any, Callable]] = {"init": ("random", _choice("random", "zeros"))}
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


@torch.no_grad()
def _zero_init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if not isinstance(m, _NORM_LAYERS):
            for p in m.parameters(recurse=False):
                p.zero_()
    return model

# name -> (builder, description, {kwarg: (default, validator)})
MODELS: dict[str, tuple[Callable[..., nn.Module], str, dict[str, tuple[Any, Callable]]]] = {
    "linear": (_linear, "one affine map W x + b (flattens its input)", {"bias": (True, _bool)}),
    "mlp": (
        _mlp,
        "fully connected net: [Linear -> norm -> activation -> dropout] per width, then a Linear head",
        {
            "widths": ([32], _ints_or_empty),
            "activation": ("tanh", _ACT),
            "norm": ("none", _NORM),
            "norm_eps": (1e-5, _positive),
            "dropout": (0.0, _float(0.0, 1.0)),
            "bias": (True, _bool),
        },
    ),
    "cnn": (
        _cnn,
        "small CNN: [3x3 conv -> norm -> activation] per channel count, global average pool, "
        "Linear head",
        {
            "channels": ([8, 16], _ints),
            "activation": ("relu", _ACT),
            "norm": ("none", _NORM),
            "norm_eps": (1e-5, _positive),
            "image_shape": (None, _optional(_ints)),
            "bias": (True, _bool),
        },
    ),
    "transformer": (
        _transformer,
        "token transformer: embedding + positions, pre-LN causal (or bidirectional) attention "
        "blocks, LayerNorm, tied or untied head; logits per position or mean-pooled",
        {
            "vocab": (None, _optional(_int(1))),
            "max_len": (None, _optional(_int(1))),
            "d_model": (16, _int(1)),
            "heads": (2, _int(1)),
            "layers": (2, _int(1)),
            "mlp_ratio": (2, _int(1)),
            "activation": ("gelu", _ACT),
            "causal": (True, _bool),
            "tied": (True, _bool),
            "pool": ("none", _choice("none", "mean")),
        },
    ),
}


def list_models() -> dict[str, str]:
    """``{name: one-line description}`` of the built-in models."""
    return {name: desc for name, (_, desc, _) in MODELS.items()}


def model_arguments() -> dict[str, str]:
    """``{name: "arg=default, ..."}``: the arguments each built-in model takes (``--model-config``)."""
    return {name: ", ".join(f"{k}={d!r}" for k, (d, _) in {**schema, **COMMON}.items())
            for name, (_, _, schema) in MODELS.items()}


def resolve_model_spec(spec: dict | str) -> dict:
    """The spec with defaults filled in and kwargs validated (a factory spec is returned as is).

    Raises UsageError for an unknown name, an unknown kwarg or an ill-typed value.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UsageError(
            f"a model spec is a mapping with a 'name' (one of {', '.join(MODELS)} or "
            f"'package.module:factory'), got {spec!r}"
        )
    name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    if ":" in name:
        return {"name": name, **kwargs}
    if name not in MODELS:
        raise UsageError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)} "
            "or give an import path 'package.module:factory'"
        )
    schema = {**MODELS[name][2], **COMMON}
    unknown = sorted(set(kwargs) - set(schema))
    if unknown:
        raise UsageError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(schema) or 'none'}"
        )
    out: dict[str, Any] = {"name": name}
    for key, (default, check) in schema.items():
        value = kwargs.get(key, default)
        try:
            out[key] = check(value)
        except TypeError as e:
            raise UsageError(f"model {name!r}: option {key}={value!r} must be {e}") from None
    return out


def build_model(
    spec: dict | str, input_shape: Sequence[int], num_outputs: int, *, seed: int | None = None
) -> nn.Module:
    """Build the model ``spec`` for samples of shape ``input_shape`` and ``num_outputs`` outputs.

    ``seed`` (optional) fixes the initialization without touching the global RNG state;
    without it the global torch RNG is used.
    """
    spec = resolve_model_spec(spec)
    name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        if ":" in name:
            return import_factory(name, kwargs)
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or any(s < 1 for s in input_shape) or num_outputs < 1:
            raise UsageError(
                f"model {name!r} cannot be built for inputs of shape {list(input_shape)} "
                f"and {num_outputs} outputs"
            )
        init = kwargs.pop("init")
        model = MODELS[name][0](input_shape, int(num_outputs), **kwargs)
        return _zero_init(model) if init == "zeros" else model


@contextlib.contextmanager
def _cwd_on_path():
    """Put the working directory first on ``sys.path`` for the duration of an import."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(cwd)


def import_object(path: str, *, what: str = "model") -> Any:
    """The object at ``package.module:attr`` (cwd first on ``sys.path``; ``attr`` may be dotted)."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        name = "factory" if what in ("model", "data") else "fn"
        raise UsageError(f"{what} import path {path!r} must look like 'package.module:{name}'")
    mod_name, attr_path = path.split(":")
    with _cwd_on_path():
        try:
            obj: Any = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise UsageError(
                f"cannot import {mod_name!r} for {what} {path!r} ({e}); run from the directory "
                "that holds it or install the package"
            ) from None
        except Exception as e:
            raise UsageError(
                f"importing {mod_name!r} for {what} {path!r} failed: {type(e).__name__}: {e}"
            ) from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {mod_name!r} has no attribute {attr_path!r} ({what} {path!r})")
        obj = getattr(obj, part)
    return obj


def call_factory(path: str, kwargs: dict | None = None, *, what: str = "model") -> Any:
    """``factory(**kwargs)`` for the factory at ``path``, with one-line errors."""
    obj = import_object(path, what=what)
    attr_path = path.split(":")[1]
    if not callable(obj):
        raise UsageError(f"{what} factory {path!r} is a {type(obj).__name__}, not a callable")
    try:
        return obj(**(kwargs or {}))
    except TypeError as e:
        hint = ""
        with contextlib.suppress(TypeError, ValueError):
            hint = f"; its signature is {attr_path}{inspect.signature(obj)}"
        raise UsageError(f"{what} factory {path!r} rejected its arguments: {e}{hint}") from e
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{what} factory {path!r} raised {type(e).__name__}: {e}") from e


def import_factory(path: str, kwargs: dict | None = None) -> nn.Module:
    """Import ``package.module:factory`` (cwd first on ``sys.path``) and return ``factory(**kwargs)``.

    ``factory`` may be a dotted attribute path (``mod:Net.small``) or a ``nn.Module`` subclass.
    """
    model = call_factory(path, kwargs, what="model")
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"model factory {path!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "NORMS",
    "TokenTransformer",
    "build_model",
    "call_factory",
    "import_factory",
    "import_object",
    "list_models",
    "resolve_model_spec",
]
