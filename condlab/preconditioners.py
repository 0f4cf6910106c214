"""Diagonal preconditioners: from an optimizer's state, from mini-batch gradients, from curvature.

Convention: ``P [P]`` is the positive diagonal preconditioner itself. The update is
``theta <- theta - eta P^-1 g`` (``M = P^-1`` is the per-coordinate step of research.md), and
the operator whose conditioning sets the speed is the symmetric ``P^-1/2 A P^-1/2``, which has
the eigenvalues of ``P^-1 A`` (paper A). In an eigenbasis ``U`` (paper B) the diagonal rule is
applied to ``U^T A U``; the full preconditioner is then ``U P U^T``.

=========  ==========================================  ===============================
rule       P                                           eps default
=========  ==========================================  ===============================
optimizer  torch's own denominator from the state      the optimizer's configured eps
adam       sqrt(mean_j g_j^2) + eps                    1e-8 (torch.optim.Adam)
rmsprop    sqrt(mean_j g_j^2) + eps                    1e-8 (torch.optim.RMSprop)
adagrad    sqrt(sum_j g_j^2) + eps  (one epoch)        1e-10 (torch.optim.Adagrad)
gn         diag(G) + eps                  (GN^-1)      0 (the exact rule)
gn-sqrt    diag(G)^1/2 + eps              (GN^-1/2)    0
jacobi     |diag(H)| + eps                             0
=========  ==========================================  ===============================

``g_j`` are the gradients of the ``m = floor(N / B)`` mini-batches of one seeded pass over the
data at the checkpoint. For i.i.d. gradients at fixed weights, Adam's bias-corrected EMA
``v_hat`` is an unbiased estimate of ``E[g^2]`` and RMSProp's EMA tends to it once
``alpha^t -> 0``, so both use the mean; AdaGrad accumulates a sum, taken over one epoch
(``m E[g^2]``). A scalar factor in ``P`` leaves kappa unchanged but divides ``lambda_max`` by it,
so adagrad's ``lambda_max`` is ``sqrt(m)`` times smaller than adam's (eps aside). A curvature
rule with ``eps = 0`` fails on coordinates without curvature (dead units) with a message that
suggests ``--eps``; the positive part of the spectrum does not depend on a small eps there,
because such coordinates have zero rows in ``G``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import grad, vmap

from condlab.distributed import is_distributed
from condlab.errors import UsageError
from condlab.operators.base import LinearOperator
from condlab.operators.curvature import GGNOperator, HessianOperator
from condlab.operators.diagonal import (
    BasisOperator,
    DiagonalEstimate,
    PreconditionedOperator,
    RunningMoments,
    check_diagonal,
    exact_diagonal,
    exact_ggn_diagonal,
    hutchinson_diagonal,
)
from condlab.operators.params import ParamSpec

if TYPE_CHECKING:
    from condlab.problem import Problem

PRECONDITIONERS = ("optimizer", "adam", "rmsprop", "adagrad", "gn", "gn-sqrt", "jacobi")
DATA_RULES = ("adam", "rmsprop", "adagrad")
CURVATURE_RULES = ("gn", "gn-sqrt", "jacobi")
BASES = ("identity", "eigen")
DIAG_ESTIMATORS = ("exact", "hutchinson")
DECAYS = ("none", "coupled", "decoupled", "l1")
DEFAULT_EPS = {
    "adam": 1e-8,
    "rmsprop": 1e-8,
    "adagrad": 1e-10,
    "gn": 0.0,
    "gn-sqrt": 0.0,
    "jacobi": 0.0,
}
MAX_EIGEN_PARAMS = 5000


@dataclass(frozen=True)
class Preconditioner:
    """A diagonal preconditioner ``P`` in a basis: the matrix ``U diag(P) U^T``.

    ``diag [P]`` is strictly positive; ``basis`` is ``U [P, P]`` (eigenvectors of ``G``) or
    None for the coordinate basis. ``formula`` says how ``P`` was computed, ``source`` where the
    numbers came from; ``meta`` holds the rest (estimator, probes, steps, hyperparameters).
    """

    name: str
    diag: Tensor
    formula: str
    eps: float
    source: str
    basis: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def basis_name(self) -> str:
        return "identity" if self.basis is None else "eigen"

    def matrix(self) -> Tensor:
        """The dense ``[P, P]`` preconditioner ``U diag(P) U^T`` (tests, tiny models)."""
        if self.basis is None:
            return torch.diag(self.diag)
        return self.basis @ (self.diag[:, None] * self.basis.T)


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
    state_dict: dict, model_spec: ParamSpec
) -> tuple[dict[str, tuple[int, dict]], str]:
    """``name -> (optimizer index, param group)`` and how they were matched ("name"/"order")."""
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
    if len(entries) != len(model_spec.names):
        raise UsageError(
            f"the optimizer state covers {len(entries)} parameters but the model has "
            f"{len(model_spec.names)}; it must come from an optimizer built on this model's "
            "parameters, in model.parameters() order"
        )
    return {n: e for n, e in zip(model_spec.names, entries, strict=True)}, "order"


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


def from_optimizer_state(
    state_dict: dict,
    spec: ParamSpec,
    *,
    model_spec: ParamSpec | None = None,
    optimizer: str | None = None,
    eps: float | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
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
    group, are ``model_spec`` (the full model, ``named_parameters()`` order; default ``spec``).
    ``spec`` (possibly a subset, as in ``Problem(params=...)``) selects what is returned. The
    kind is inferred from the state keys and the group's hyperparameters unless ``optimizer``
    names it. The momentum ``exp_avg`` is not part of ``P``.
    """
    model_spec = model_spec or spec
    table, matched_by = _param_table(state_dict, model_spec)
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
    parts, formula, steps, eps_used = [], "", [], set()
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
        d, formula = _denominator(kind, st, group, e)
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
    }
    return Preconditioner(
        name=f"optimizer:{named}",
        diag=diag,
        formula=formula,
        eps=max(eps_used),
        source=f"{named} optimizer state (step {max(steps)})",
        meta=meta,
    )


# -- from data: the second moment of mini-batch gradients ----------------------------------------
def gradient_second_moment(
    problem: Problem,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    basis: Tensor | None = None,
    chunk_samples: int = 4096,
) -> DiagonalEstimate:
    """``v = (1/m) sum_j (U^T g_j)^2 [P]``: the second moment of mini-batch gradients at theta.

    The problem's samples are pooled, permuted with ``seed`` and cut into ``m = floor(N / B)``
    mini-batches of ``B = batch_size`` (a remainder of ``N mod B`` samples is left out, so every
    gradient has the same noise level); ``g_j`` is the gradient of mini-batch ``j``'s mean
    loss. ``batch_size=None`` (or N) gives the squared full-batch gradient ``problem.gradient()``
    (over the problem's own batches), the full-batch regime. ``basis`` ``U`` gives the moment
    in that basis (paper B: ``E[(U^T g)^2]``). ``stderr`` is the standard error of the mean
    over the ``m`` mini-batches (None if m = 1). Cost: ``m`` gradients, vmapped over chunks of
    ``chunk_samples`` samples.
    """
    N = problem.n_samples
    B = N if batch_size is None else int(batch_size)
    if not 1 <= B <= N:
        raise UsageError(f"--precond-batch-size must be between 1 and the {N} samples, got {B}")
    m = N // B
    if m == 1:
        g = problem.gradient()
        g = g if basis is None else basis.to(g).T @ g
        return DiagonalEstimate(g.square(), "full-batch-gradient", samples=1, seed=int(seed))
    if is_distributed():
        raise UsageError(
            "--precond-batch-size below the dataset size needs all samples in one process; "
            "run it without torchrun (or use the full batch)"
        )
    X = torch.cat([Xb for Xb, _ in problem.batches])
    Y = torch.cat([yb for _, yb in problem.batches])
    order = torch.randperm(N, generator=torch.Generator().manual_seed(int(seed)))[: m * B]
    order = order.to(X.device).reshape(m, B)

    def batch_grad(theta: Tensor, Xb: Tensor, yb: Tensor, j: int = 0) -> Tensor:
        return grad(lambda th: problem.output_loss(problem.outputs(th, Xb, j), yb))(theta)

    stats = RunningMoments()
    c = max(1, chunk_samples // B)
    for start in range(0, m, c):
        idx = order[start : start + c]  # [c, B]
        if problem.uses_dropout:  # masks drawn per mini-batch: no vmap over random draws
            Gs = torch.stack(
                [batch_grad(problem.theta, X[i], Y[i], start + k) for k, i in enumerate(idx)]
            )
        else:
            Gs = vmap(batch_grad, in_dims=(None, 0, 0))(problem.theta, X[idx], Y[idx])  # [c, P]
        if basis is not None:
            Gs = Gs @ basis.to(Gs)  # rows (U^T g_j)^T
        stats.add(Gs.square())
    return DiagonalEstimate(
        stats.mean,
        "minibatch-gradients",
        stderr=(stats.variance / m).sqrt(),
        samples=m,
        seed=int(seed),
    )


# -- from curvature ---------------------------------------------------------------------------
def _check_estimator(estimator: str) -> None:
    if estimator not in DIAG_ESTIMATORS:
        raise UsageError(
            f"unknown --diag-estimator {estimator!r}; choose one of {', '.join(DIAG_ESTIMATORS)}"
        )


def gn_diagonal(
    problem: Problem | None = None,
    *,
    estimator: str = "exact",
    probes: int = 100,
    seed: int = 0,
    ggn: LinearOperator | Tensor | None = None,
) -> DiagonalEstimate:
    """``diag(G) [P]`` of the Gauss-Newton matrix.

    ``exact``: from per-sample Jacobians (``exact_ggn_diagonal``: ``C`` vector-Jacobian
    products per sample), or ``torch.diagonal`` / unit-vector products of a given ``ggn``.
    ``hutchinson``: ``E[z * (G z)]`` over ``probes`` Rademacher vectors (Sophia-style), ``probes``
    GGN products; ``stderr`` says how far off it may be.
    """
    _check_estimator(estimator)
    if estimator == "hutchinson":
        return hutchinson_diagonal(
            ggn if ggn is not None else GGNOperator(problem), probes, seed=seed
        )
    values = exact_diagonal(ggn) if ggn is not None else exact_ggn_diagonal(problem)
    return DiagonalEstimate(values, "exact")


def hessian_diagonal(
    problem: Problem | None = None,
    *,
    estimator: str = "exact",
    probes: int = 100,
    seed: int = 0,
    hessian: LinearOperator | Tensor | None = None,
) -> DiagonalEstimate:
    """``diag(H) [P]``: exact from ``P`` Hessian-vector products on unit blocks (``P / 64``
    vmapped passes over the data), or Hutchinson's ``E[z * (H z)]`` from ``probes`` HVPs."""
    _check_estimator(estimator)
    H = hessian if hessian is not None else HessianOperator(problem)
    if estimator == "hutchinson":
        return hutchinson_diagonal(H, probes, seed=seed)
    return DiagonalEstimate(exact_diagonal(H), "exact")


def _dense(A: LinearOperator | Tensor) -> Tensor:
    M = A if isinstance(A, Tensor) else A.to_dense()
    return (M + M.T) / 2


def ggn_eigenbasis(
    problem: Problem | None = None,
    *,
    ggn: LinearOperator | Tensor | None = None,
    max_params: int = MAX_EIGEN_PARAMS,
) -> tuple[Tensor, Tensor]:
    """``(eigenvalues [P], U [P, P])`` of the dense GGN, ascending (paper B's eigenbasis)."""
    P = ggn.shape[0] if ggn is not None else problem.n_params
    if P > max_params:
        raise UsageError(
            f"--basis eigen decomposes the dense [P, P] Gauss-Newton matrix; this model has "
            f"{P} parameters, above the limit of {max_params}; use --basis identity or "
            "select fewer parameters with --params"
        )
    return torch.linalg.eigh(_dense(ggn if ggn is not None else GGNOperator(problem)))


# -- one entry point ----------------------------------------------------------------------------
_FORMULAS = {
    ("gn", "identity"): "P = diag(G) + eps",
    ("gn-sqrt", "identity"): "P = diag(G)^1/2 + eps",
    ("jacobi", "identity"): "P = |diag(H)| + eps",
    ("gn", "eigen"): "P = diag(U^T G U) + eps (the eigenvalues of G: Newton on G)",
    ("gn-sqrt", "eigen"): "P = diag(U^T G U)^1/2 + eps",
    ("jacobi", "eigen"): "P = |diag(U^T H U)| + eps",
}


def _rel_stderr(est: DiagonalEstimate) -> dict[str, float]:
    if est.stderr is None:
        return {}
    rel = est.stderr / est.values.abs().clamp_min(torch.finfo(est.values.dtype).tiny)
    return {"rel_stderr_median": float(rel.median()), "rel_stderr_max": float(rel.max())}


def build_preconditioner(
    name: str,
    problem: Problem | None = None,
    *,
    optimizer_state: dict | None = None,
    optimizer: str | None = None,
    eps: float | None = None,
    batch_size: int | None = None,
    diag_estimator: str = "exact",
    probes: int = 100,
    basis: str = "identity",
    seed: int = 0,
    ggn: LinearOperator | Tensor | None = None,
    hessian: LinearOperator | Tensor | None = None,
    max_eigen_params: int = MAX_EIGEN_PARAMS,
) -> Preconditioner:
    """The preconditioner ``name`` (one of ``PRECONDITIONERS``) at the problem's weights.

    ``eps=None`` takes the rule's default (``DEFAULT_EPS``; the configured eps for
    ``optimizer``). ``optimizer_state`` is a torch optimizer ``state_dict()`` or a condlab
    checkpoint's ``{"name", "hparams", "state_dict"}`` entry. ``batch_size`` is the mini-batch
    size of the data rules (None: full batch). ``diag_estimator``/``probes`` pick exact or
    Hutchinson diagonals for the curvature rules in the identity basis. ``basis='eigen'`` uses
    the eigenvectors ``U`` of the dense GGN (paper B; at most ``max_eigen_params``
    parameters, always exact): gn / gn-sqrt read ``diag(U^T G U)``, jacobi ``|diag(U^T H U)|``,
    the data rules ``E[(U^T g)^2]``; ``optimizer`` is refused (its state lives in the
    coordinate basis). ``ggn`` / ``hessian`` (operators or dense ``[P, P]`` tensors) replace
    the ones built from ``problem``, to reuse a dense matrix or to test on a given matrix.
    """
    if name not in PRECONDITIONERS:
        raise UsageError(f"unknown --precond {name!r}; choose from {', '.join(PRECONDITIONERS)}")
    if basis not in BASES:
        raise UsageError(f"unknown --basis {basis!r}; choose one of {', '.join(BASES)}")
    if problem is None and (
        name not in CURVATURE_RULES
        or (ggn is None and (name != "jacobi" or basis == "eigen"))
        or (hessian is None and name == "jacobi")
    ):
        raise UsageError(f"--precond {name} needs a model and data")
    if name == "optimizer":
        if basis != "identity":
            raise UsageError(
                "--precond optimizer needs --basis identity: the optimizer's state is per "
                "coordinate, it has no eigenbasis version"
            )
        if optimizer_state is None:
            raise UsageError(
                "--precond optimizer needs an optimizer state: a condlab checkpoint trained "
                "with one, or --optimizer-state PATH"
            )
        if "state_dict" in optimizer_state and "state" not in optimizer_state:
            optimizer = optimizer or optimizer_state.get("name")
            optimizer_state = optimizer_state["state_dict"]
        from condlab.operators.params import select_params

        return from_optimizer_state(
            optimizer_state,
            problem.spec,
            model_spec=select_params(problem.model.named_parameters()),
            optimizer=optimizer,
            eps=eps,
            dtype=problem.dtype,
            device=problem.device,
        )
    eps = DEFAULT_EPS[name] if eps is None else float(eps)
    if eps < 0:
        raise UsageError(f"--eps must be >= 0, got {eps}")
    U, meta = None, {"basis": basis}
    if basis == "eigen":
        evals, U = ggn_eigenbasis(problem, ggn=ggn, max_params=max_eigen_params)
        meta["basis_source"] = "eigenvectors of the dense G"

    if name in DATA_RULES:
        est = gradient_second_moment(problem, batch_size=batch_size, seed=seed, basis=U)
        m = est.samples
        v = est.values * m if name == "adagrad" else est.values
        diag = v.sqrt() + eps
        B = problem.n_samples // m
        g = "U^T g_j" if U is not None else "g_j"
        formula = (
            f"P = sqrt(sum_j ({g})^2) + eps"
            if name == "adagrad"
            else f"P = sqrt(mean_j ({g})^2) + eps"
        )
        source = f"{m} mini-batch gradient(s) of {B} samples at the checkpoint (seed {seed})"
        meta.update(batch_size=B, minibatches=m, seed=int(seed), **_rel_stderr(est))
    else:
        if U is not None:
            if name == "jacobi":
                H = _dense(hessian if hessian is not None else HessianOperator(problem))
                d = torch.diagonal(U.T @ H @ U)
            else:
                d = evals  # diag(U^T G U) for U the eigenvectors of G
            source = "dense eigendecomposition of G"
            meta["estimator"] = "exact (dense)"  # --diag-estimator does not apply here
        else:
            if name == "jacobi":
                est = hessian_diagonal(
                    problem, estimator=diag_estimator, probes=probes, seed=seed, hessian=hessian
                )
            else:
                est = gn_diagonal(
                    problem, estimator=diag_estimator, probes=probes, seed=seed, ggn=ggn
                )
            d = est.values
            source = f"{est.estimator} diagonal" + (
                f" ({est.samples} probes, seed {est.seed})" if est.estimator == "hutchinson" else ""
            )
            meta.update(estimator=est.estimator, **_rel_stderr(est))
            if est.estimator == "hutchinson":
                meta.update(probes=est.samples, seed=est.seed)
        if name == "jacobi":
            diag = d.abs() + eps
        else:  # G is PSD: negatives are round-off or Hutchinson noise
            d = d.clamp_min(0)
            diag = (d if name == "gn" else d.sqrt()) + eps
        formula = _FORMULAS[(name, basis)]
    hint = None
    if meta.get("estimator") == "hutchinson":
        hint = "Hutchinson estimates of small diagonals can be <= 0: more --probes also helps"
    check_diagonal(diag, f"the {name} preconditioner ({formula}, eps={eps:g})", hint)
    return Preconditioner(
        name=name, diag=diag, formula=formula, eps=eps, source=source, basis=U, meta=meta
    )


# -- the preconditioned operator and regularization ----------------------------------------------
def preconditioned_operator(
    A: LinearOperator | Tensor,
    precond: Preconditioner | None,
    *,
    weight_decay: float = 0.0,
    decay: str = "none",
) -> LinearOperator:
    """The symmetric operator whose spectrum is reported, ``lam = weight_decay``:

    - ``none``:      ``P^-1/2 A P^-1/2``
    - ``coupled``:   ``P^-1/2 (A + lam I) P^-1/2``   (Adam + L2: the penalty is in the gradient)
    - ``decoupled``: ``P^-1/2 A P^-1/2 + lam I``     (AdamW: ``theta -= eta (P^-1 g + lam theta)``)
    - ``l1``:        ``P^-1/2 A P^-1/2``             (the L1 term is not smooth and has no
      curvature; its effect is the weighted-lasso weights of ``lasso_weights``)

    with ``A`` replaced by ``U^T A U`` in an eigenbasis. ``precond=None`` means ``P = I`` (the
    baseline with the same weight decay). research.md, paper A.
    """
    if decay not in DECAYS:
        raise UsageError(f"unknown --decay {decay!r}; choose one of {', '.join(DECAYS)}")
    lam = float(weight_decay)
    if lam < 0 or not math.isfinite(lam):
        raise UsageError(f"--weight-decay must be a finite number >= 0, got {weight_decay}")
    if lam and decay == "none":
        raise UsageError("--weight-decay needs --decay coupled, decoupled or l1")
    inner = lam if decay == "coupled" else 0.0
    outer = lam if decay == "decoupled" else 0.0
    if precond is None:
        ones = torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
        return PreconditionedOperator(A, ones, inner_shift=inner, outer_shift=outer)
    if precond.diag.shape[0] != A.shape[0]:
        raise UsageError(
            f"the {precond.name} preconditioner has {precond.diag.shape[0]} coordinates but the "
            f"operator has {A.shape[0]}; build both on the same parameters"
        )
    B = A if precond.basis is None else BasisOperator(A, precond.basis)
    return PreconditionedOperator(B, precond.diag, inner_shift=inner, outer_shift=outer)


def lasso_weights(precond: Preconditioner, lam: float) -> Tensor:
    """The weights ``lam / sqrt(M_ii) = lam sqrt(P_i) [P]`` of the L1 analogue (derived).

    With ``M = P^-1`` the per-coordinate step, the update
    ``p <- soft_threshold(p - eta M g, eta lam sqrt(M_ii))`` is at a fixed point iff
    ``0 in M_ii g_i + lam sqrt(M_ii) d|p_i|``, i.e. ``0 in g_i + (lam / sqrt(M_ii)) d|p_i|``:
    the optimality condition of ``L(p) + sum_i (lam / sqrt(M_ii)) |p_i|``, a weighted lasso
    (research.md, "L1 analogue", derived). In an eigenbasis the weights act on ``U^T p``.
    """
    return float(lam) * precond.diag.sqrt()


def summarize(values: Tensor) -> dict[str, float]:
    """min / 10% / median / 90% / max of a vector (e.g. the lasso weights or ``P``)."""
    v = values.detach().double().flatten().cpu()
    q = torch.quantile(v, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=v.dtype))
    return dict(zip(("min", "q10", "median", "q90", "max"), map(float, q), strict=True))
