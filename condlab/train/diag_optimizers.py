r"""Diagonal optimizers as pure-ish pairs on the flat parameter vector ``theta [P]`` (optax style).

    opt = make_optimizer("adam", {"lr": 1e-3}, basis=U)
    state = opt.init(theta)
    theta, state = opt.update(grad, state, theta)          # a new theta and a new state

Every rule is a diagonal preconditioner ``P [P]`` in a basis ``U`` (None: the coordinates;
else an orthogonal ``[P, P]``, paper B's eigenbasis of ``G``). In basis ``U`` the rule runs on
``z = U^T theta`` with gradient ``U^T g`` and ``theta = U z`` afterwards; in the identity basis
nothing is rotated and the arithmetic is ``torch.optim``'s, operation for operation. With
``g`` the gradient (``+ wd theta`` for coupled L2), ``t`` the step (from 1), ``eta`` the lr:

- ``sgd``/``momentum``: ``b <- mu b + (1 - dampening) g`` (``b_1 = g``);
  ``theta <- theta - eta b`` (nesterov: ``g + mu b``); ``P = I``. (torch.optim.SGD)
- ``adam`` (``adam-l2`` is adam with coupled L2 by default): ``m <- lerp(m, g, 1 - b1)``,
  ``v <- b2 v + (1 - b2) g^2``, ``P = sqrt(v / (1 - b2^t)) + eps``,
  ``theta <- theta - (eta / (1 - b1^t)) m / P``. (torch.optim.Adam)
- ``adamw``: adam with decoupled decay, ``theta <- theta (1 - eta wd)`` first. (torch.optim.AdamW)
- ``adam-l1`` (derived, research.md "L1 analogue"): ``u = theta - (eta / (1 - b1^t)) m / P``,
  ``theta <- sign(u) max(|u| - eta wd P^-1/2, 0)``: soft thresholding at ``eta lam sqrt(M_ii)``
  with ``M = P^-1``; its fixed point is the weighted lasso ``L + lam sum_i sqrt(P_i) |p_i|``.
- ``rmsprop``: ``s <- a s + (1 - a) g^2``, ``P = sqrt(s) + eps`` (centered:
  ``sqrt(s - gbar^2) + eps``), ``theta <- theta - eta g / P`` or with momentum
  ``b <- mu b + g / P``, ``theta <- theta - eta b``. (torch.optim.RMSprop)
- ``adagrad``: ``S <- S + g^2``, ``P = sqrt(S) + eps``, ``theta <- theta - eta_t g / P`` with
  ``eta_t = eta / (1 + (t - 1) lr_decay)``. (torch.optim.Adagrad)
- ``gn`` / ``gn-sqrt`` (GN^-1, GN^-1/2; Sophia-style): ``d = diag(U^T G U)`` from the
  ``curvature`` callable every ``refresh`` steps (optionally ``d <- ema d + (1 - ema) d_new``),
  ``P = d + eps`` or ``sqrt(d) + eps``; ``m <- lerp(m, g, 1 - beta1)`` and
  ``theta <- theta - (eta / (1 - beta1^t)) m / P`` (``beta1 = 0``: preconditioned GD).

The live preconditioner of the state (``preconditioner``) is read with
:func:`condlab.preconditioners.from_optimizer_state` from a torch-format view of the state, so
the tracked ``P^-1/2 A P^-1/2`` uses exactly the denominator of the update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.train.optimizers import check_hparam

_ADAM = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
_SGD = {"lr": 1e-2, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
_GN = {"lr": 1.0, "beta1": 0.0, "eps": 1e-8, "weight_decay": 0.0, "refresh": 10, "ema": 0.0,
       "estimator": "exact", "probes": 20, "curvature_batch": None}
DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": _SGD,
    "momentum": {**_SGD, "momentum": 0.9},
    "adam": _ADAM,
    "adam-l2": {**_ADAM, "weight_decay": 1e-2},
    "adamw": {**_ADAM, "weight_decay": 1e-2},
    "adam-l1": {**_ADAM, "weight_decay": 1e-2},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                "centered": False},
    "adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
                "initial_accumulator_value": 0.0, "eps": 1e-10},
    "gn": _GN,
    "gn-sqrt": _GN,
}
OPTIMIZER_NAMES = tuple(DEFAULTS)
ADAM_FAMILY = ("adam", "adam-l2", "adamw", "adam-l1")
# how weight decay enters: the decay kind of condlab.preconditioners.preconditioned_operator
DECAY_KIND = {"adamw": "decoupled", "adam-l1": "l1"}
Curvature = Callable[[Tensor], Tensor]  # theta [P] -> diag(U^T G U) [P] at theta


@dataclass(frozen=True)
class State:
    """``step`` (updates taken) and the optimizer's buffers, in torch's names, in basis ``U``."""

    step: int
    buffers: dict[str, Tensor] = field(default_factory=dict)


def _check(name: str, key: str, value: Any, default: Any) -> Any:
    def bad(what: str) -> UsageError:
        return UsageError(f"optimizer {name!r}: {key}={value!r} must be {what}")

    if key == "estimator":
        if value not in ("exact", "hutchinson"):
            raise bad("exact or hutchinson")
        return value
    if key == "curvature_batch":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad("a positive integer or null (the whole training set)")
        return value
    return check_hparam(
        name,
        key,
        value,
        default,
        positive=("lr", "refresh", "probes"),
        below_one=("momentum", "alpha", "beta1", "ema", "dampening"),
        integers=("refresh", "probes"),
    )


def resolve_hparams(name: str, hparams: dict | None = None) -> dict[str, Any]:
    """Defaults of ``name`` overridden by ``hparams``; unknown keys are errors naming them."""
    if name not in DEFAULTS:
        raise UsageError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(DEFAULTS[name]))
    if unknown:
        raise UsageError(
            f"optimizer {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it accepts {', '.join(DEFAULTS[name])}"
        )
    out = {k: _check(name, k, hparams.get(k, d), d) for k, d in DEFAULTS[name].items()}
    if name.startswith("sgd") or name == "momentum":
        if out["nesterov"] and (out["momentum"] == 0 or out["dampening"] != 0):
            raise UsageError(f"optimizer {name!r}: nesterov needs momentum > 0 and dampening 0")
    return out


@dataclass(frozen=True, eq=False)
class DiagOptimizer:
    """One diagonal rule with resolved hyperparameters, in the basis ``U`` (None: identity)."""

    name: str
    hparams: dict[str, Any]
    basis: Tensor | None = None

    # -- the pair -------------------------------------------------------------------------------
    def init(self, theta: Tensor) -> State:
        zeros = torch.zeros_like(theta)
        hp, n = self.hparams, self.name
        if n in ADAM_FAMILY:
            return State(0, {"exp_avg": zeros, "exp_avg_sq": zeros.clone()})
        if n == "rmsprop":
            bufs = {"square_avg": zeros}
            if hp["momentum"] > 0:
                bufs["momentum_buffer"] = zeros.clone()
            if hp["centered"]:
                bufs["grad_avg"] = zeros.clone()
            return State(0, bufs)
        if n == "adagrad":
            return State(0, {"sum": torch.full_like(theta, hp["initial_accumulator_value"])})
        if n in ("gn", "gn-sqrt"):
            return State(0, {"exp_avg": zeros})
        return State(0, {})  # sgd / momentum: the buffer starts as the first gradient

    def update(
        self, grad: Tensor, state: State, theta: Tensor, *, curvature: Curvature | None = None
    ) -> tuple[Tensor, State]:
        """``(theta_{t+1}, state_{t+1})``; ``curvature`` feeds the GN rules (see module doc)."""
        U = self.basis
        z, g = (theta, grad) if U is None else (U.T @ theta, U.T @ grad)
        bufs = dict(state.buffers)
        t = state.step + 1
        if self.name in ("gn", "gn-sqrt") and (state.step % self.hparams["refresh"] == 0
                                               or "diag" not in bufs):
            if curvature is None:
                raise UsageError(f"optimizer {self.name!r} needs the Gauss-Newton diagonal")
            d = curvature(theta).to(theta).clamp_min(0)
            ema = self.hparams["ema"]
            bufs["diag"] = d if "diag" not in bufs or ema == 0 else bufs["diag"].lerp(d, 1 - ema)
        z = _RULES[self.name](self.hparams, z, g, bufs, t)
        return (z if U is None else U @ z), State(t, bufs)

    # -- what the tracker reads ------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return float(self.hparams["lr"])

    @property
    def decay(self) -> tuple[str, float]:
        """``(kind, lam)`` for :func:`condlab.preconditioners.preconditioned_operator`."""
        lam = float(self.hparams.get("weight_decay", 0.0))
        if lam == 0:
            return "none", 0.0
        return DECAY_KIND.get(self.name, "coupled"), lam

    def stability(self, state: State) -> tuple[str, float, float]:
        """``(method, lr, beta)`` for :func:`condlab.stability.stability_threshold`."""
        hp, n = self.hparams, self.name
        if n in ADAM_FAMILY:
            return "adam", self.lr, hp["betas"][0]
        if n in ("gn", "gn-sqrt"):
            return ("gd", self.lr, 0.0) if hp["beta1"] == 0 else ("adam", self.lr, hp["beta1"])
        if n == "adagrad":
            return "gd", self.lr / (1 + max(state.step - 1, 0) * hp["lr_decay"]), 0.0
        mu = hp.get("momentum", 0.0)
        return ("gd", self.lr, 0.0) if mu == 0 else ("momentum", self.lr, mu)

    def preconditioner(self, state: State, theta: Tensor):
        """The live :class:`~condlab.preconditioners.Preconditioner` ``P`` (in basis ``U``), or
        None before the first update of an adaptive rule (no statistics yet)."""
        from condlab.params import ParamSpec
        from condlab.preconditioners import Preconditioner, from_optimizer_state

        n, hp, b = self.name, self.hparams, state.buffers
        if n in ("sgd", "momentum"):
            return Preconditioner("live:" + n, torch.ones_like(theta), "P = I", 0.0,
                                  f"{n} (no preconditioner)", basis=self.basis)
        if state.step == 0:
            return None
        if n in ("gn", "gn-sqrt"):
            d = b["diag"]
            diag = (d if n == "gn" else d.sqrt()) + hp["eps"]
            formula = "P = diag(U^T G U) + eps" if n == "gn" else "P = diag(U^T G U)^1/2 + eps"
            return Preconditioner("live:" + n, diag, formula, hp["eps"],
                                  f"{n} state (step {state.step})", basis=self.basis)
        kind = "adam" if n in ADAM_FAMILY else n
        tensor = next(iter(b.values()))
        st = dict(b)
        st["step"] = torch.tensor(float(state.step))
        group = {"params": [0], "param_names": ["theta"], "eps": hp["eps"],
                 "weight_decay": hp["weight_decay"]}
        if kind == "adam":
            group.update(betas=tuple(hp["betas"]), amsgrad=False)
        elif kind == "rmsprop":
            group.update(alpha=hp["alpha"], centered=hp["centered"])
        else:
            group.update(lr_decay=hp["lr_decay"])
        spec = ParamSpec(("theta",), (tensor.shape,))
        pre = from_optimizer_state({"state": {0: st}, "param_groups": [group]}, spec,
                                   optimizer=kind, dtype=tensor.dtype, device=tensor.device)
        return replace(pre, name="live:" + n, basis=self.basis)


def make_optimizer(name: str, hparams: dict | None = None, *, basis: Tensor | None = None) -> DiagOptimizer:
    """The rule ``name`` with validated ``hparams``, in basis ``U`` (``basis``) or the identity."""
    if basis is not None and (basis.ndim != 2 or basis.shape[0] != basis.shape[1]):
        raise UsageError(f"a basis must be a square [P, P] matrix, got {list(basis.shape)}")
    return DiagOptimizer(name, resolve_hparams(name, hparams), basis)


# -- the rules: (hparams, z, g, buffers (updated in the dict), t) -> new z -------------------------
def _coupled(hp: dict, z: Tensor, g: Tensor) -> Tensor:
    return g if hp["weight_decay"] == 0 else g.add(z, alpha=hp["weight_decay"])


def _sgd(hp, z, g, bufs, t):
    g = _coupled(hp, z, g)
    mu = hp["momentum"]
    if mu != 0:
        if "momentum_buffer" not in bufs:
            buf = g.clone()
        else:
            buf = bufs["momentum_buffer"].mul(mu).add(g, alpha=1 - hp["dampening"])
        bufs["momentum_buffer"] = buf
        g = g.add(buf, alpha=mu) if hp["nesterov"] else buf
    return z.add(g, alpha=-hp["lr"])


def _adam_direction(hp, g, bufs, t) -> tuple[Tensor, Tensor, float]:
    """``(m, P, step_size)``: Adam's moments updated in ``bufs`` and its denominator."""
    b1, b2 = hp["betas"]
    m = bufs["exp_avg"].lerp(g, 1 - b1)
    v = bufs["exp_avg_sq"].mul(b2).addcmul(g, g, value=1 - b2)
    bufs["exp_avg"], bufs["exp_avg_sq"] = m, v
    denom = (v.sqrt() / (1 - b2**t) ** 0.5).add(hp["eps"])
    return m, denom, hp["lr"] / (1 - b1**t)


def _adam(hp, z, g, bufs, t):
    m, denom, step_size = _adam_direction(hp, _coupled(hp, z, g), bufs, t)
    return z.addcdiv(m, denom, value=-step_size)


def _adamw(hp, z, g, bufs, t):
    z = z.mul(1 - hp["lr"] * hp["weight_decay"])
    m, denom, step_size = _adam_direction(hp, g, bufs, t)
    return z.addcdiv(m, denom, value=-step_size)


def _adam_l1(hp, z, g, bufs, t):
    m, denom, step_size = _adam_direction(hp, g, bufs, t)
    u = z.addcdiv(m, denom, value=-step_size)
    shrink = hp["lr"] * hp["weight_decay"] * denom.rsqrt()  # eta lam sqrt(M_ii), M = P^-1
    return u.sign() * (u.abs() - shrink).clamp_min(0)


def _rmsprop(hp, z, g, bufs, t):
    g = _coupled(hp, z, g)
    a = hp["alpha"]
    s = bufs["square_avg"].mul(a).addcmul(g, g, value=1 - a)
    bufs["square_avg"] = s
    if hp["centered"]:
        gbar = bufs["grad_avg"].lerp(g, 1 - a)
        bufs["grad_avg"] = gbar
        avg = s.addcmul(gbar, gbar, value=-1).sqrt()
    else:
        avg = s.sqrt()
    avg = avg.add(hp["eps"])
    if hp["momentum"] > 0:
        buf = bufs["momentum_buffer"].mul(hp["momentum"]).addcdiv(g, avg)
        bufs["momentum_buffer"] = buf
        return z.add(buf, alpha=-hp["lr"])
    return z.addcdiv(g, avg, value=-hp["lr"])


def _adagrad(hp, z, g, bufs, t):
    g = _coupled(hp, z, g)
    clr = hp["lr"] / (1 + (t - 1) * hp["lr_decay"])
    S = bufs["sum"].addcmul(g, g, value=1)
    bufs["sum"] = S
    return z.addcdiv(g, S.sqrt().add(hp["eps"]), value=-clr)


def _gn(hp, z, g, bufs, t, power: float = 1.0):
    g = _coupled(hp, z, g)
    b1 = hp["beta1"]
    m = bufs["exp_avg"].lerp(g, 1 - b1)
    bufs["exp_avg"] = m
    d = bufs["diag"]
    P = (d if power == 1.0 else d.sqrt()) + hp["eps"]  # eps = 0 and d_i = 0: the run diverges
    return z.addcdiv(m, P, value=-hp["lr"] / (1 - b1**t) if b1 else -hp["lr"])


_RULES = {
    "sgd": _sgd,
    "momentum": _sgd,
    "adam": _adam,
    "adam-l2": _adam,
    "adamw": _adamw,
    "adam-l1": _adam_l1,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "gn": _gn,
    "gn-sqrt": lambda hp, z, g, bufs, t: _gn(hp, z, g, bufs, t, power=0.5),
}


__all__ = [
    "DEFAULTS",
    "OPTIMIZER_NAMES",
    "DiagOptimizer",
    "State",
    "make_optimizer",
    "resolve_hparams",
]
