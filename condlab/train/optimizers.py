"""Optimizers by name, with validated hyperparameters.

``OPTIMIZERS[name] = (torch class, defaults, description)``; the defaults are the accepted keys.

- ``sgd``:      ``theta <- theta - lr (g + wd theta)`` (``momentum`` 0 by default)
- ``momentum``: SGD with heavy-ball momentum 0.9: ``b <- mu b + g; theta <- theta - lr b``
- ``adam``:     ``m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
  theta <- theta - lr m_hat / (sqrt(v_hat) + eps)`` — a diagonal preconditioner ``sqrt(v_hat)``
- ``adamw``:    Adam with decoupled weight decay ``theta <- theta (1 - lr wd)``
- ``rmsprop``:  ``v <- a v + (1-a) g^2; theta <- theta - lr g / (sqrt(v) + eps)``
- ``adagrad``:  ``s <- s + g^2; theta <- theta - lr g / (sqrt(s) + eps)``

See ``torch.optim`` for the exact updates and defaults (``momentum`` aside).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from condlab.errors import UsageError
from condlab.optionfield import as_number

_SGD = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
_ADAM = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}

OPTIMIZERS: dict[str, tuple[type[Optimizer], dict[str, Any], str]] = {
    "sgd": (torch.optim.SGD, dict(_SGD), "plain (stochastic) gradient descent"),
    "momentum": (torch.optim.SGD, {**_SGD, "momentum": 0.9}, "SGD with heavy-ball momentum 0.9"),
    "adam": (torch.optim.Adam, dict(_ADAM), "Adam: diagonal sqrt(second moment) preconditioner"),
    "adamw": (
        torch.optim.AdamW,
        {**_ADAM, "weight_decay": 0.01},
        "Adam with decoupled weight decay",
    ),
    "rmsprop": (
        torch.optim.RMSprop,
        {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
         "centered": False},
        "RMSProp: running average of squared gradients",
    ),
    "adagrad": (
        torch.optim.Adagrad,
        {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0,
         "eps": 1e-10},
        "AdaGrad: accumulated squared gradients",
    ),
}


def check_hparam(
    name: str,
    key: str,
    value: Any,
    default: Any,
    *,
    positive: tuple[str, ...] = ("lr",),
    below_one: tuple[str, ...] = (),
    integers: tuple[str, ...] = (),
) -> Any:
    """``value`` for hyperparameter ``key`` of optimizer ``name``, typed like its ``default``
    (bool, a pair of betas in [0, 1), or a number >= 0; > 0 for ``positive``, < 1 for
    ``below_one``, an int for ``integers``), or a UsageError naming key, value and the rule."""

    def bad(what: str) -> UsageError:
        return UsageError(f"optimizer {name!r}: {key}={value!r} must be {what}")

    value = [as_number(b) for b in value] if isinstance(value, list) else as_number(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, list):  # betas
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value
        ):
            raise bad("two numbers in [0, 1)")
        return [float(b) for b in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise bad("a number >= 0")
    if key in positive and value == 0:
        raise bad("a number > 0")
    if key in below_one and value >= 1:
        raise bad("in [0, 1)")
    return int(value) if key in integers else float(value)


def resolve_hparams(name: str, hparams: dict | None = None) -> dict[str, Any]:
    """All hyperparameters of optimizer ``name``: defaults overridden by ``hparams``, validated.

    ``betas`` is a list here (JSON-able); it becomes a tuple for torch.
    """
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    _, defaults, _ = OPTIMIZERS[name]
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise UsageError(
            f"optimizer {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it accepts {', '.join(defaults)}"
        )
    return {k: check_hparam(name, k, hparams.get(k, d), d) for k, d in defaults.items()}


def build_optimizer(
    name: str, params: Iterable[torch.Tensor], hparams: dict | None = None
) -> Optimizer:
    """``torch.optim`` optimizer ``name`` over ``params`` with validated ``hparams``."""
    resolved = resolve_hparams(name, hparams)
    cls = OPTIMIZERS[name][0]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items()}
    try:
        return cls(params, **kwargs)
    except ValueError as e:  # torch's own checks (e.g. nesterov needs momentum > 0)
        raise UsageError(f"optimizer {name!r}: {e}") from None


def list_optimizers() -> dict[str, str]:
    """``{name: one-line description}``."""
    return {k: desc for k, (_, _, desc) in OPTIMIZERS.items()}


__all__ = ["OPTIMIZERS", "build_optimizer", "list_optimizers", "resolve_hparams"]
