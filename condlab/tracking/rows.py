"""The rows a tracked run records: one per (step, setting), the same from a checkpoint sweep and
from the training-loop hook, written to a CSV with ``repr`` floats (read back bit for bit).

Columns: ``step``; ``checkpoint`` (the file, empty in a training loop); ``setting`` (baseline,
a preconditioner, a normalization); ``status`` (``ok``, or why the checkpoint was skipped);
``lambda_max``, ``lambda_min``, ``kappa`` (:func:`condlab.estimators.condition_number`'s
definition, as in ``condlab spectrum``), ``nullity``, ``trace``, ``trace_stderr``; ``lr`` and
``beta1`` of the optimizer state at that step; ``threshold`` (the setting's stability threshold,
:func:`condlab.stability.stability_threshold`: ``2/lr`` for plain GD, ``(2 + 2 beta1)/lr`` for
heavy ball, ``(2 + 2 beta1)/((1 - beta1) lr)`` for Adam's preconditioned sharpness) and
``stability_ratio = lambda_max / threshold``; ``converged`` (every requested pair met ``tol``);
``hvps`` (curvature products spent). Wall-clock times are left out so that a resumed sweep
writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("step", "checkpoint", "setting", "status", "lambda_max", "lambda_min", "kappa",
           "nullity", "trace", "trace_stderr", "lr", "beta1", "threshold", "stability_ratio",
           "converged", "hvps")


def optimizer_hparams(state_dict: dict | None) -> tuple[float | None, float | None]:
    """``(lr, beta1)`` of a torch optimizer ``state_dict`` (first param group): ``beta1`` is
    Adam's ``betas[0]`` or SGD's ``momentum``; ``(None, None)`` without one."""
    if not isinstance(state_dict, dict):
        return None, None
    if "state_dict" in state_dict and "param_groups" not in state_dict:  # condlab's layout
        state_dict = state_dict["state_dict"]
    groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
    if not groups or not isinstance(groups[0], dict) or "lr" not in groups[0]:
        return None, None
    g = groups[0]
    beta1 = g["betas"][0] if "betas" in g else g.get("momentum", 0.0)
    return _plain(g["lr"]), _plain(beta1)


def _plain(x: Any) -> float:
    return float(x.item() if hasattr(x, "item") else x)


ADAPTIVE_STATE = ("exp_avg_sq", "square_avg", "sum")  # the state of a diagonal preconditioner


def is_adaptive(state_dict: dict | None) -> bool:
    """Whether an optimizer ``state_dict`` holds a diagonal preconditioner (Adam, RMSprop, ..)."""
    if isinstance(state_dict, dict) and "state_dict" in state_dict and "state" not in state_dict:
        state_dict = state_dict["state_dict"]  # condlab's layout
    state = (state_dict or {}).get("state") if isinstance(state_dict, dict) else None
    return any(k in st for st in (state or {}).values() if isinstance(st, dict) for k in ADAPTIVE_STATE)


def result_rows(step: int, checkpoint: str, results, lr: float | None, beta1: float | None,
                adaptive: bool = False) -> list[dict]:
    """One row per :class:`SpectrumResult` of a step. ``kappa`` only when bottom eigenvalues
    were asked for (else it would rest on an unconverged lambda_min); no GD/heavy-ball
    threshold on the baseline of an ``adaptive`` optimizer, whose update sees P^-1 H."""
    rows = []
    for r in results:
        stab = r.stability or {}
        if adaptive and r.setting == "baseline":
            stab = {}
        rows.append({
            "step": step, "checkpoint": checkpoint, "setting": r.setting, "status": "ok",
            "lambda_max": r.lambda_max, "lambda_min": r.lambda_min,
            "kappa": r.condition_number if r.eigenvalues_bottom else None,
            "nullity": r.nullity, "trace": r.trace, "trace_stderr": r.trace_stderr,
            "lr": lr, "beta1": beta1 if lr is not None else None,
            "threshold": stab.get("threshold"), "stability_ratio": stab.get("ratio"),
            "converged": r.converged, "hvps": r.hvp_count,
        })
    return rows


def error_row(step: int | None, checkpoint: str, message: str) -> dict:
    """The warning row of a skipped checkpoint."""
    return {"step": step, "checkpoint": checkpoint, "setting": "", "status": f"skipped: {message}"}
