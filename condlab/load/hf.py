"""Hugging Face transformers models built from a local config: nothing is downloaded.

``--model hf-config:PATH`` (a ``config.json`` or a directory holding one) or ``--model hf:TYPE``
with ``--model-config cfg.json`` (the config's fields; ``TYPE`` is its ``model_type``, e.g.
``gpt2``) builds ``AutoModelForCausalLM.from_config`` with eager attention (plain ops, so every
curvature product differentiates through it) and ``use_cache=False``. ``--weights`` loads a
directory written by ``save_pretrained`` (``model.safetensors`` or ``pytorch_model.bin``), a
``.safetensors`` file or a state_dict ``.pt``/``.bin`` (read with ``weights_only=True``).

The model is called with the dict samples of ``--data package.module:factory`` as keyword
arguments (``input_ids``, ``attention_mask``) and returns a ``ModelOutput`` whose ``logits``
``[N, T, V]`` go to the loss (``--loss sequence-cross-entropy``, targets the next tokens).
Needs the optional extra: ``pip install condlab[hf]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condlab.errors import UsageError

PREFIXES = ("hf:", "hf-config:")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_spec(name: Any) -> bool:
    """Whether ``--model`` names a Hugging Face model (``hf:TYPE`` or ``hf-config:PATH``)."""
    return isinstance(name, str) and name.startswith(PREFIXES)


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise UsageError(
            "Hugging Face models need the transformers package: pip install 'condlab[hf]'"
        ) from None
    transformers.logging.set_verbosity_error()
    return transformers


def _config_dict(name: str, model_args: dict) -> dict:
    if name.startswith("hf-config:"):
        if model_args:
            raise UsageError("--model hf-config:PATH takes its config from PATH; drop --model-config")
        path = Path(name[len("hf-config:") :])
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise UsageError(f"Hugging Face config '{path}' does not exist; give a config.json or its directory")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read Hugging Face config '{path}': {e}") from e
        if not isinstance(cfg, dict) or "model_type" not in cfg:
            raise UsageError(f"Hugging Face config '{path}' needs a 'model_type' (e.g. \"gpt2\")")
        return cfg
    model_type = name[len("hf:") :]
    if not model_args:
        raise UsageError(
            f"--model {name} builds from a local config, not a download: pass --model-config "
            "cfg.json with its fields (n_layer, n_embd, vocab_size, ...)"
        )
    if model_args.get("model_type", model_type) != model_type:
        raise UsageError(
            f"--model {name} but --model-config says model_type {model_args['model_type']!r}"
        )
    return {**model_args, "model_type": model_type}


def build_hf_model(name: str, model_args: dict | None = None) -> nn.Module:
    """A causal LM from a local config, randomly initialized (see the module docstring)."""
    tf = _transformers()
    cfg = dict(_config_dict(name, dict(model_args or {})))
    model_type = cfg.pop("model_type")
    cfg.pop("architectures", None)
    try:
        config = tf.AutoConfig.for_model(model_type, **cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"Hugging Face config for {model_type!r} is not valid: {e}") from e
    config.use_cache = False
    try:
        model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except (ValueError, TypeError) as e:
        raise UsageError(
            f"cannot build a causal LM from the {model_type!r} config: {str(e).splitlines()[0]}"
        ) from e
    return model


def hf_state_dict(path: str | Path) -> dict:
    """The tensors of a ``save_pretrained`` directory, a ``.safetensors`` file or a ``.pt``."""
    path = Path(path)
    if path.is_dir():
        found = [path / f for f in WEIGHT_FILES if (path / f).is_file()]
        if not found:
            raise UsageError(
                f"'{path}' holds none of {', '.join(WEIGHT_FILES)}; give a save_pretrained directory "
                "or a weights file"
            )
        path = found[0]
    if not path.is_file():
        raise UsageError(f"weights '{path}' do not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"cannot read weights '{path}': {type(e).__name__}: {first}") from e
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise UsageError(f"weights '{path}' hold a {type(sd).__name__}, not a state_dict")
    return sd


def load_hf_weights(model: nn.Module, path: str | Path) -> None:
    """Load weights into ``model``; a tied output head may be absent from the file."""
    from condlab.load.checkpoint import widen_to_weights

    sd = hf_state_dict(path)
    widen_to_weights(model, sd)  # float64 weights are not rounded through a float32 module
    result = model.load_state_dict(sd, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    ptrs = {n: p.data_ptr() for n, p in params.items()}
    loaded = {ptrs[k] for k in sd if k in ptrs}
    missing = [k for k in result.missing_keys if k not in ptrs or ptrs[k] not in loaded]
    missing = [k for k in missing if k in params]  # buffers (masks) are rebuilt by the model
    if missing or result.unexpected_keys:
        raise UsageError(
            f"weights '{path}' do not fit the model: missing {', '.join(missing[:5]) or 'none'}, "
            f"unexpected {', '.join(result.unexpected_keys[:5]) or 'none'}; build from the config "
            "they were saved with"
        )


__all__ = ["build_hf_model", "hf_state_dict", "is_hf_spec", "load_hf_weights"]
