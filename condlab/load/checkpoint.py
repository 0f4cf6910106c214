"""Checkpoints: condlab's own format, plain state_dicts, pickled modules; atomic writes.

Besides condlab's own format, a file may hold a plain ``state_dict``; a dict with the weights
under ``model``, ``state_dict`` (Lightning) or ``model_state_dict`` and the optimizer state under
``optimizer``, ``optimizer_state_dict`` or ``optimizer_states`` (Lightning's list, first entry);
or be a ``.safetensors`` file. Lightning's ``hyper_parameters`` (an ``AttributeDict``) load as
a plain dict, still with ``weights_only=True`` (see ``_HARMLESS``). The keys used are recorded in ``ckpt["keys"]``; a module prefix
of the weights' keys is stripped by :func:`match_prefix`.

A condlab checkpoint is a dict of plain Python values and tensors, written with ``torch.save``
and read back with ``torch.load(path, weights_only=True)`` (no code runs on load)::

    {
      "format": "condlab-checkpoint", "version": 1,
      "model": {"name": "mlp", "widths": [32], ...},        # resolved spec for build_model
      "input_shape": [64], "num_outputs": 10,                # what build_model needs besides
      "state_dict": {"0.weight": Tensor, ...},
      "loss": "cross-entropy" | "mse",
      "data": {"name": "digits", "max_samples": 512},        # rebuilds the dataset
      "optimizer": {"name": "adam", "hparams": {...}, "state_dict": {...}} | None,
      "train": {"steps": 300, "seed": 0, "batch_size": None, "dtype": "float32",
                "final_loss": 0.0029, "losses": [2.34, ...]},  # losses: per step, before it
      "condlab_version": "0.1.0", "torch_version": "2.13.0",
    }

Optimizer state_dicts (``step`` tensors, ``betas`` tuples, ``None``/bool flags) are plain and
survive ``weights_only`` loading.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from condlab.errors import CondlabError, UsageError
from condlab.files import atomic_write, atomic_write_text

FORMAT, VERSION = "condlab-checkpoint", 1
# where common training scripts (and Lightning) keep the weights and the optimizer state
WEIGHT_KEYS = ("model", "state_dict", "model_state_dict")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states")
REQUIRED_KEYS = ("model", "state_dict", "loss")
_PLAIN = (str, int, float, bool, type(None))  # exact types: subclasses need their class


# -- atomic writes ---------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one."""
    atomic_write(path, lambda f: f.write(data))


# -- writing ---------------------------------------------------------------------------------
def _check_plain(obj: Any, where: str) -> None:
    """Raise if ``obj`` holds anything ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, (Tensor, torch.Size, torch.dtype, torch.device)) or type(obj) in _PLAIN:
        return
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise UsageError(f"checkpoint entry {where} has a key {k!r} of type {type(k).__name__}")
            _check_plain(v, f"{where}.{k}" if where else str(k))
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise UsageError(
        f"checkpoint entry {where} holds a {type(obj).__module__}.{type(obj).__qualname__}; "
        "only tensors and plain Python values load with weights_only=True — convert it"
    )


def _version() -> str:
    try:
        return metadata.version("condlab")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_checkpoint(
    *,
    model_spec: dict,
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_outputs: int,
    loss: str,
    data: dict,
    optimizer: dict | None = None,
    train: dict | None = None,
) -> dict:
    """A condlab checkpoint dict (tensors detached and moved to the CPU).

    ``optimizer`` is ``{"name", "hparams", "state_dict"}`` or None.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(model_spec),
        "input_shape": [int(s) for s in input_shape],
        "num_outputs": int(num_outputs),
        "state_dict": state,
        "loss": loss,
        "data": dict(data),
        "optimizer": optimizer,
        "train": dict(train or {}),
        "condlab_version": _version(),
        "torch_version": str(torch.__version__),
    }


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    """Save ``ckpt`` atomically with ``torch.save`` after checking it is ``weights_only``-safe."""
    if not isinstance(ckpt, dict):
        raise UsageError(f"a checkpoint is a dict, got {type(ckpt).__name__}")
    _check_plain(ckpt, "")
    atomic_write(path, lambda f: torch.save(ckpt, f))


# -- reading ---------------------------------------------------------------------------------
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def _is_optimizer_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "state" in obj and "param_groups" in obj


def find_optimizer_state(obj: Any) -> tuple[dict, str] | None:
    """A torch optimizer ``state_dict`` in ``obj`` (itself, or under one of ``OPTIMIZER_KEYS``)
    and where it was found, or None."""
    if _is_optimizer_state(obj):
        return dict(obj), "the file itself"
    if not isinstance(obj, Mapping):
        return None
    for key in OPTIMIZER_KEYS:
        opt, where = obj.get(key), key
        if key == "optimizer_states" and isinstance(opt, list) and opt:  # Lightning
            opt, where = opt[0], f"{key}[0]"
        if _is_optimizer_state(opt):
            return dict(opt), where
    return None


def classify(obj: Any, path: Path) -> dict:
    """Wrap what ``torch.load`` returned (:func:`read_torch_file`) into a checkpoint dict with a
    ``format``, as :func:`load_checkpoint` returns it."""
    if isinstance(obj, nn.Module):
        return {"format": "module", "module": obj, "state_dict": obj.state_dict()}
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
            raise UsageError(
                f"checkpoint '{path}' has format version {obj.get('version')!r}; this condlab "
                f"reads version {VERSION} — upgrade condlab"
            )
        missing = [k for k in REQUIRED_KEYS if k not in obj]
        if missing:
            raise UsageError(f"checkpoint '{path}' lacks {', '.join(missing)}; it is damaged")
        return dict(obj)
    if _is_state_dict(obj):
        return {"format": "state_dict", "state_dict": dict(obj), "keys": {}}
    if isinstance(obj, Mapping):
        key = next((k for k in WEIGHT_KEYS if _is_state_dict(obj.get(k))), None)
        if key is None:
            keys = ", ".join(map(str, list(obj)[:8])) or "none"
            raise UsageError(
                f"'{path}' holds a dict with keys {keys} but no state_dict; expected a condlab "
                f"checkpoint, a state_dict, or a dict with a state_dict under "
                f"{', '.join(repr(k) for k in WEIGHT_KEYS)}"
            )
        out = {"format": "state_dict", "state_dict": dict(obj[key]), "keys": {"weights": key}}
        found = find_optimizer_state(obj)
        if found is not None:
            out["optimizer"], out["keys"]["optimizer"] = found
        return out
    raise UsageError(
        f"'{path}' holds a {type(obj).__name__}; expected a condlab checkpoint or a state_dict"
    )


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict:
    """Load a checkpoint onto the CPU; returns a dict with ``format`` set to one of
    ``condlab-checkpoint``, ``state_dict`` or (``trust=True`` only) ``module``.

    Without ``trust`` only ``weights_only=True`` loading is used, which runs no code from the file.
    """
    ckpt = classify(read_torch_file(path, trust=trust), Path(path))
    if Path(path).suffix.lower() == ".safetensors":
        ckpt["keys"] = {"weights": "safetensors"}
    return ckpt


# Classes that common checkpoints pickle beside their tensors and that hold nothing but plain
# values: read as the plain type named here, so weights_only loading accepts them without the
# package that defined them (no code from it is imported or run). Lightning saves its
# ``hyper_parameters`` as an AttributeDict, a dict with attribute access.
_HARMLESS = [
    (dict, f"{module}.AttributeDict")
    for module in (
        "lightning.fabric.utilities.data",
        "lightning_fabric.utilities.data",
        "lightning.pytorch.utilities.parsing",
        "pytorch_lightning.utilities.parsing",
    )
]


def read_torch_file(path: str | Path, *, trust: bool = False, mmap: bool = False) -> Any:
    """What ``torch.load`` returns (onto the CPU, ``weights_only`` unless ``trust``), with a
    one-line UsageError for a missing, unreadable, corrupt or code-carrying file.

    ``mmap``: map the tensors' bytes instead of reading them (torch's zip format; other files are
    read whole), for a caller that needs only the structure, shapes and small entries."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint '{path}' does not exist")
    if not path.is_file():
        raise UsageError(f"checkpoint '{path}' is not a file")
    if path.suffix.lower() == ".safetensors":
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals(_HARMLESS):
            try:
                obj = torch.load(path, map_location="cpu", weights_only=not trust, mmap=mmap)
            except RuntimeError as e:
                if not mmap or "mmap" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=not trust)  # legacy format
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            found = re.search(r"GLOBAL (\S+)", str(e))
            what = f"{found.group(1)}; " if found else ""
            raise UsageError(
                f"'{path}' holds pickled Python objects ({what}a full model?); loading it runs code from "
                "the file — pass --trust-checkpoint if you trust it, or save model.state_dict() "
                "instead"
            ) from None
        raise UsageError(f"'{path}' is not a readable torch file ({_first_line(e)})") from None
    except OSError as e:
        raise UsageError(f"cannot read checkpoint '{path}': {e.strerror or e}") from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        raise UsageError(
            f"'{path}' is not a readable torch file (corrupt or another format: "
            f"{type(e).__name__}: {_first_line(e)})"
        ) from None
    return obj


def _load_safetensors(path: Path) -> dict:
    """A safetensors file: tensors only, so nothing in it can run code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"'{path}' is not a readable safetensors file ({_first_line(e)})") from None
    if not state:
        raise UsageError(f"safetensors file '{path}' holds no tensors")
    return state


def match_prefix(
    state_dict: Mapping[str, Any], model: nn.Module, strip_prefix: str | None = None
) -> tuple[dict, str | None]:
    """``state_dict`` with the module prefix of its keys removed, and a note saying what was done.

    ``strip_prefix`` (e.g. Lightning's ``model.``) keeps the keys that start with it, stripped,
    and drops the others. Without it, keys that already fit the model are kept as they are; else
    a prefix under which every key of the model is found (``model.``, ``module.``,
    ``_orig_mod.``) is detected and stripped when exactly one fits. Several fitting prefixes are
    an error asking for ``--strip-prefix``.
    """
    state_dict = dict(state_dict)
    if strip_prefix is None:
        expected = list(model.state_dict())
        if not expected or all(k in state_dict for k in expected):
            return state_dict, None
        k0 = expected[0]
        found = sorted(
            {k[: -len(k0)] for k in state_dict if k.endswith("." + k0)},
            key=len,
        )
        fits = [p for p in found if all(p + k in state_dict for k in expected)]
        if len(fits) > 1:
            raise UsageError(
                f"the weights fit the model under several key prefixes ({', '.join(map(repr, fits))}); "
                "choose one with --strip-prefix"
            )
        if not fits:
            return state_dict, None  # load_weights names the keys that do not fit
        strip_prefix, how = fits[0], "detected and stripped"
    else:
        how = "stripped"
    kept = {k[len(strip_prefix):]: v for k, v in state_dict.items() if k.startswith(strip_prefix)}
    if not kept:
        raise UsageError(
            f"--strip-prefix {strip_prefix!r} matches no key of the weights; their keys look like "
            f"{_listing(list(state_dict), 3)}"
        )
    dropped = len(state_dict) - len(kept)
    note = f"key prefix {strip_prefix!r} {how}" + (
        f", {dropped} other key(s) ignored" if dropped else ""
    )
    return kept, note


def describe_keys(ckpt: dict, note: str | None) -> str:
    """Which entries of a checkpoint file were used, for the run's source line."""
    keys = ckpt.get("keys") or {}
    parts = [f"weights from '{keys['weights']}'" if "weights" in keys else ""]
    parts += [note or "", f"optimizer state from '{keys['optimizer']}'" if "optimizer" in keys else ""]
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _listing(items: list[str], limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    source: str | None = None,
    model_name: str | None = None,
) -> nn.Module:
    """Load ``state_dict`` strictly into ``model`` (in place; returns it).

    A mismatch raises one UsageError listing missing keys, unexpected keys and shape mismatches
    ``name (expected [..], got [..])``. A NaN/Inf weight raises CondlabError naming the tensor.
    """
    what = f"checkpoint '{source}'" if source else "the weights"
    target = f"model {model_name!r}" if model_name else "the model"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} (expected {list(v.shape)}, got {list(state_dict[k].shape)})"
        for k, v in expected.items()
        if k in state_dict and isinstance(state_dict[k], Tensor) and state_dict[k].shape != v.shape
    ]
    problems = [
        f"missing keys {_listing(missing)}" if missing else "",
        f"unexpected keys {_listing(unexpected)}" if unexpected else "",
        f"shape mismatch {_listing(shapes, 3)}" if shapes else "",
    ]
    if any(problems):
        raise UsageError(
            f"{what} does not fit {target}: {'; '.join(p for p in problems if p)} — pass the "
            "model spec or factory the weights were saved from"
        )
    for k, v in state_dict.items():
        if isinstance(v, Tensor) and v.is_floating_point() and not torch.isfinite(v).all():
            n_bad = int((~torch.isfinite(v)).sum())
            raise CondlabError(
                f"{what}: tensor {k!r} holds {n_bad} NaN/Inf value(s); the run that wrote it "
                "diverged — use an earlier checkpoint or retrain with a smaller learning rate"
            )
    widen_to_weights(model, state_dict)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise UsageError(f"{what} does not fit {target}: {_first_line(e)}") from None
    return model


def widen_to_weights(model: nn.Module, state_dict: Mapping[str, Any]) -> torch.dtype | None:
    """Cast ``model`` to the widest float dtype of ``state_dict`` when its own is narrower.

    ``load_state_dict`` copies into the module's existing tensors, so float64 weights loaded
    into a factory's float32 module would be rounded to float32 before ``--dtype float64``
    casts them back (e.g. lambda_max off by 8e-9, kappa by 1.3e-6). Widening first keeps
    the file's precision; the run then casts to ``--dtype`` (a narrower one rounds, as asked).
    Returns the dtype widened to, or None.
    """
    floats = [v.dtype for v in state_dict.values() if isinstance(v, Tensor) and v.is_floating_point()]
    if not floats:
        return None
    widest = max(floats, key=lambda d: torch.finfo(d).bits)
    own = [t.dtype for t in model.state_dict().values() if t.is_floating_point()]
    if not any(torch.finfo(d).bits < torch.finfo(widest).bits for d in own):
        return None
    model.to(widest)
    return widest


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Build the model a condlab checkpoint describes, in the dtype of its weights, and load them."""
    from condlab.load.models import build_model

    if ckpt.get("format") == "module":
        return ckpt["module"]
    if ckpt.get("format") != FORMAT:
        raise UsageError(
            "a plain state_dict does not say which model it belongs to; pass --model "
            "(a built-in spec or 'package.module:factory')"
        )
    model = build_model(ckpt["model"], tuple(ckpt["input_shape"]), ckpt["num_outputs"])
    dtypes = {v.dtype for v in ckpt["state_dict"].values() if v.is_floating_point()}
    if len(dtypes) == 1:  # keep the precision the weights were saved in
        model = model.to(dtypes.pop())
    return load_weights(model, ckpt["state_dict"], model_name=ckpt["model"].get("name"))


__all__ = [
    "FORMAT",
    "VERSION",
    "atomic_write_bytes",
    "atomic_write_text",
    "find_optimizer_state",
    "load_checkpoint",
    "load_weights",
    "make_checkpoint",
    "widen_to_weights",
    "match_prefix",
    "model_from_checkpoint",
    "read_torch_file",
    "save_checkpoint",
]
