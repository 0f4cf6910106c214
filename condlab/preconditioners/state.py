"""P from a torch optimizer's ``state_dict`` (Adam/AdamW, RMSProp, AdaGrad)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.operators.diagonal import (
    check_diagonal,
)
from condlab.params import ParamSpec

if TYPE_CHECKING:
    pass

from condlab.preconditioners.base import (
    Preconditioner,
)

# -- from a torch optimizer's state_dict ----------------------------------------------------------
OPTIMIZER_KINDS = ("adam", "adamw", "rmsprop", "adagrad")
# kind -> (state keys it needs, state keys it may have, a param-group key that identifies it)
_STATE_KEYS = {
    "adam": ({"exp_avg_sq"}, {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, "amsgrad"),
    "rmsprop": ({"square_avg"}, {"step", "square_avg", "momentum_buffer", "grad_avg"}, "alpha"),
    "adagrad": ({"sum"}, {"step", "sum"}, "lr_decay"),
}


def _infer_kind(keys: set[str], group: dict) -> str:
    for kind, (needs, allowed, marker) in _STATE_KEYS.items():
        if needs <= keys <= allowed and marker in group:
            return kind
    raise UsageError(
        f"an optimizer state with keys {', '.join(sorted(keys))} is not one condlab knows; "
        f"known: {', '.join(OPTIMIZER_KINDS)} (exp_avg_sq, square_avg or sum); if it is one of "
        "these, name it explicitly"
    )


def _param_table(
    state_dict: dict, model_spec: ParamSpec, frozen: frozenset[str] = frozenset()
) -> tuple[dict[str, tuple[int, dict]], str]:
    """``name -> (optimizer index, param group)`` and how they were matched ("name"/"order").

    By order, the optimizer's parameters are either all of ``model_spec`` or its trainable ones
    (an optimizer built on ``p for p in model.parameters() if p.requires_grad``)."""
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list) or "state" not in state_dict:
        raise UsageError(
            "not a torch optimizer state_dict (it needs 'state' and 'param_groups'); save "
            "optimizer.state_dict() from the training loop"
        )
    entries = [(i, g) for g in groups for i in g["params"]]
    names = [n for g in groups for n in g.get("param_names", [])]
    if len(names) == len(entries) and set(names) <= set(model_spec.names):
        return {n: e for n, e in zip(names, entries, strict=True)}, "name"
    trainable = [n for n in model_spec.names if n not in frozen]
    for order in (model_spec.names, trainable):
        if len(entries) == len(order):
            return {n: e for n, e in zip(order, entries, strict=True)}, "order"
    counts = f"{len(model_spec.names)}" + (f" ({len(trainable)} trainable)" if frozen else "")
    raise UsageError(
        f"the optimizer state covers {len(entries)} parameters but the model has {counts}; it "
        "must come from an optimizer built on this model's parameters, in model.parameters() order"
    )


def _denominator(kind: str, st: dict, group: dict, eps: float) -> tuple[Tensor, str]:
    """torch.optim's denominator for one parameter (the ``P`` of its update), and the formula."""
    if kind == "adam":
        t = float(st["step"])
        beta2 = float(group["betas"][1])
        amsgrad = bool(group.get("amsgrad")) and "max_exp_avg_sq" in st
        v = st["max_exp_avg_sq"] if amsgrad else st["exp_avg_sq"]
        name = "max_exp_avg_sq" if amsgrad else "exp_avg_sq"
        # torch: (v.sqrt() / (1 - beta2^t) ** 0.5).add_(eps), in the state's dtype
        return v.sqrt() / (1 - beta2**t) ** 0.5 + eps, (
            f"P = sqrt(v_hat) + eps, v_hat = {name} / (1 - beta2^t)"
        )
    if kind == "rmsprop":
        if group.get("centered") and "grad_avg" in st:
            return (st["square_avg"] - st["grad_avg"].square()).sqrt() + eps, (
                "P = sqrt(square_avg - grad_avg^2) + eps (centered)"
            )
        return st["square_avg"].sqrt() + eps, "P = sqrt(square_avg) + eps"
    return st["sum"].sqrt() + eps, "P = sqrt(sum) + eps"


def _widened(st: dict, dtype: torch.dtype | None) -> dict:
    """The state's float tensors in the wider of their dtype and the run's ``dtype``: under
    ``--dtype float64`` P is computed in float64 (sqrt, bias correction, + eps), not in the
    float32 of a float32 state (torch's own step divides in the state's dtype)."""
    if dtype is None:
        return st
    out = {}
    for k, v in st.items():
        if isinstance(v, Tensor) and v.is_floating_point() and v.element_size() < torch.finfo(
                dtype).bits // 8:
            v = v.to(dtype)
        out[k] = v
    return out


def from_optimizer_state(
    state_dict: dict,
    spec: ParamSpec,
    *,
    model_spec: ParamSpec | None = None,
    optimizer: str | None = None,
    eps: float | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    frozen: frozenset[str] = frozenset(),
) -> Preconditioner:
    """``P`` from a torch optimizer's ``state_dict()``, exactly the denominator torch divides by.

    - Adam / AdamW: ``P = sqrt(v / (1 - beta2^t)) + eps`` with ``v = exp_avg_sq`` (or
      ``max_exp_avg_sq`` with amsgrad), ``t`` the parameter's ``step``; eps after the sqrt.
    - RMSprop: ``P = sqrt(square_avg) + eps``; centered: ``sqrt(square_avg - grad_avg^2) + eps``
      (no bias correction, as in torch).
    - Adagrad: ``P = sqrt(sum) + eps`` (``sum`` includes ``initial_accumulator_value``).

    ``betas`` / ``eps`` come from each parameter's group; ``eps`` overrides the configured one.
    Parameters are matched to the model by the ``param_names`` torch stores when the optimizer
    was built on ``named_parameters()``, else by order: the optimizer's parameters, group after
    group, are ``model_spec`` (the full model, ``named_parameters()`` order; default ``spec``)
    or its parameters not in ``frozen`` (``requires_grad=False``, never part of the operator).
    ``spec`` (possibly a subset, as in ``Problem(params=...)``) selects what is returned. The
    kind is inferred from the state keys and the group's hyperparameters unless ``optimizer``
    names it. The momentum ``exp_avg`` is not part of ``P``.
    """
    model_spec = model_spec or spec
    table, matched_by = _param_table(state_dict, model_spec, frozen)
    states = {int(k): v for k, v in state_dict["state"].items()}
    if optimizer is not None:
        named = optimizer.strip().lower()
        if named not in OPTIMIZER_KINDS:
            raise UsageError(
                f"unknown optimizer {optimizer!r} for --precond optimizer; condlab knows "
                f"{', '.join(OPTIMIZER_KINDS)}"
            )
        kind = "adam" if named == "adamw" else named
    else:
        first = next(((states[i], g) for i, g in table.values() if i in states), None)
        if first is None:
            raise UsageError("the optimizer state is empty: the optimizer never took a step")
        kind = _infer_kind(set(first[0]), first[1])
        decoupled = any(g.get("decoupled_weight_decay") for g in state_dict["param_groups"])
        named = "adamw" if kind == "adam" and decoupled else kind
    shapes = dict(zip(model_spec.names, model_spec.shapes, strict=True))
    parts, formula, steps, eps_used, state_dtypes = [], "", [], set(), set()
    for name in model_spec.names:
        if name not in table:  # matched by name: a parameter the optimizer was not given
            if name in spec.names:
                raise UsageError(
                    f"the optimizer was not given parameter {name!r}, so it has no statistics "
                    "for it; measure the others with --params"
                )
            continue
        idx, group = table[name]
        st = states.get(idx)
        if st is None or float(st.get("step", 1)) == 0:
            if name not in spec.names:
                continue
            raise UsageError(
                f"the optimizer state has no statistics for parameter {idx} ({name}): it was "
                "never stepped (frozen, or no gradient reached it); step the optimizer first"
            )
        needs = _STATE_KEYS[kind][0]
        if not needs <= set(st):
            raise UsageError(
                f"optimizer parameter {idx} has state keys {', '.join(sorted(st))}, not those of "
                f"{named} ({', '.join(sorted(needs))})"
            )
        stat = st[next(iter(needs))]
        if tuple(stat.shape) != tuple(shapes[name]):
            raise UsageError(
                f"optimizer parameter {idx} has state of shape {list(stat.shape)} but model "
                f"parameter {name!r} has shape {list(shapes[name])}; the optimizer state does not "
                f"match the model's parameters (matched by {matched_by})"
            )
        if name not in spec.names:
            continue
        e = float(group["eps"]) if eps is None else float(eps)
        d, formula = _denominator(kind, _widened(st, dtype), group, e)
        state_dtypes.add(str(st[next(iter(needs))].dtype).replace("torch.", ""))
        parts.append((name, d))
        steps.append(int(float(st.get("step", 0))))
        eps_used.add(e)
    by_name = dict(parts)
    diag = torch.cat([by_name[n].reshape(-1) for n in spec.names]).to(
        dtype=dtype or torch.get_default_dtype(), device=device or "cpu"
    )
    check_diagonal(diag, f"the {named} preconditioner from the optimizer state")
    group = state_dict["param_groups"][0]
    wd = float(group.get("weight_decay", 0.0))
    decay = "none" if wd == 0 else ("decoupled" if named == "adamw" else "coupled")
    meta = {
        "optimizer": named,
        "matched_by": matched_by,
        "steps": (min(steps), max(steps)),
        "weight_decay": wd,
        "decay": decay,
        "hparams": {k: v for k, v in group.items() if k not in ("params", "param_names")},
        "state_dtype": ",".join(sorted(state_dtypes)),
    }
    return Preconditioner(
        name=f"optimizer:{named}",
        diag=diag,
        formula=formula,
        eps=max(eps_used),
        source=f"{named} optimizer state (step {max(steps)})",
        meta=meta,
    )
