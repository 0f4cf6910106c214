"""The one entry point, ``build_preconditioner``, and the preconditioned operator."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.operators.base import LinearOperator
from condlab.operators.curvature import HessianOperator
from condlab.operators.diagonal import (
    BasisOperator,
    DiagonalEstimate,
    PreconditionedOperator,
    check_diagonal,
)
from condlab.preconditioners.base import (
    BASES,
    CURVATURE_RULES,
    DATA_RULES,
    DECAYS,
    DEFAULT_EPS,
    MAX_EIGEN_PARAMS,
    PRECONDITIONERS,
    Preconditioner,
)
from condlab.preconditioners.curvature import (
    _dense,
    ggn_eigenbasis,
    gn_diagonal,
    hessian_diagonal,
)
from condlab.preconditioners.data import (
    gradient_second_moment,
)
from condlab.preconditioners.state import (
    from_optimizer_state,
)

if TYPE_CHECKING:
    from condlab.problem import Problem

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
        from condlab.params import ParamSpec

        named = list(problem.model.named_parameters())
        return from_optimizer_state(
            optimizer_state,
            problem.spec,
            model_spec=ParamSpec(tuple(n for n, _ in named), tuple(p.shape for _, p in named)),
            frozen=frozenset(n for n, p in named if not p.requires_grad),
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
        meta.update(_arbitrary_rotation(evals, name))

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
        if meta.get("estimator") != "hutchinson":  # a sampled diagonal's zeros are noise
            _refuse_structural_zeros(diag, name, problem, U is not None)
    hint = None
    if meta.get("estimator") == "hutchinson":
        hint = "Hutchinson estimates of small diagonals can be <= 0: more --probes also helps"
    check_diagonal(diag, f"the {name} preconditioner ({formula}, eps={eps:g})", hint)
    return Preconditioner(
        name=name, diag=diag, formula=formula, eps=eps, source=source, basis=U, meta=meta
    )


def _refuse_structural_zeros(diag: Tensor, name: str, problem, eigen: bool) -> None:
    """A curvature diagonal at rounding-noise level is a structural zero, not a scale.

    ``|P_i| <= NOISE_FACTOR eps(dtype) max_j |P_j|`` cannot be told from 0 in the arithmetic
    (``max_j |P_j| <= ||A||``: the operator's scale); dividing by it would report eigenvalues of
    ``1 / noise`` (e.g. 3e17 for conv biases before a train-mode BatchNorm). Refused, naming the
    parameter tensors, with the fix.
    """
    from condlab.estimators.condition import noise_rel

    scale = float(diag.abs().max()) if diag.numel() else 0.0
    tiny = diag.abs() <= noise_rel(diag.dtype) * scale
    n = int(tiny.sum())
    if not n:
        return
    where = ""
    spec = getattr(problem, "spec", None)
    if spec is not None and not eigen:
        hit = [f"{nm} ({int(tiny[spec.slice(nm)].sum())})" for nm in spec.names
               if bool(tiny[spec.slice(nm)].any())]
        where = f" in {', '.join(hit[:6])}{', ...' if len(hit) > 6 else ''}"
    coords = "eigen-directions of G" if eigen else "coordinates"
    raise UsageError(
        f"the {name} preconditioner's diagonal is a structural zero (rounding noise, <= "
        f"{noise_rel(diag.dtype):.1e} x its largest entry {scale:.3g}) on {n} of {diag.numel()} "
        f"{coords}{where}: they have no curvature; pass --eps above {noise_rel(diag.dtype) * scale:.1e}"
        + ("" if eigen else ", or leave them out with --params")
    )


def _arbitrary_rotation(evals: Tensor, name: str) -> dict:
    """Flag a rule that depends on the arbitrary basis ``eigh`` picks inside G's null space.

    The eigenvectors of a repeated eigenvalue are determined only up to a rotation of their
    space. gn / gn-sqrt give every null direction the same ``P = eps`` and are invariant; jacobi
    (``|diag(U^T H U)|``) and the data rules (``E[(U^T g)^2]``) are not: when H is not null
    where G is, another rotation gives another P and another spectrum (e.g. a GGN null
    space of 45 against the Hessian's 17).
    """
    from condlab.estimators.condition import noise_rel

    if name in ("gn", "gn-sqrt") or not evals.numel():
        return {}
    n0 = int((evals.abs() <= noise_rel(evals.dtype) * float(evals.abs().max())).sum())
    if n0 < 2:
        return {}
    return {"basis_arbitrary": n0, "basis_note": (
        f"--basis eigen --precond {name} depends on an arbitrary rotation inside G's null space "
        f"of dimension {n0} (eigh's choice of eigenvectors for a repeated eigenvalue): P and the "
        "spectrum there are not determined by the model; gn and gn-sqrt are invariant")}


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


# -- what a congruence proves (trust) ------------------------------------------------------------
def congruence_proof(baseline, *, damping: float = 0.0, weight_decay: float = 0.0,
                     decay: str = "none") -> dict:
    """``measure`` keywords that carry the baseline's exact inertia to a preconditioned row.

    ``P^-1/2 A P^-1/2`` (``P^-1/2 U^T A U P^-1/2`` in an eigenbasis; ``A + lam I`` inside it
    under coupled decay, as in the baseline) is ``S^T A S`` with ``S`` invertible, so by
    Sylvester's law of inertia it has exactly the baseline's numbers of negative, zero and
    positive eigenvalues. Not a congruence: ``--damping`` or decoupled decay added after ``P``.
    Only an exact baseline spectrum (``--exact``) gives the counts; ``{}`` otherwise.
    """
    if damping or (weight_decay and decay == "decoupled") or baseline is None:
        return {}
    d = baseline.details or {}
    if not str(d.get("negative_method", "")).startswith("exact") or baseline.nullity is None:
        return {}
    neg, zero = int(d["negative_count"]), int(baseline.nullity)
    pos = int(baseline.n_params) - neg - zero
    why = (f"Sylvester's law of inertia: congruent to the baseline, whose exact spectrum has "
           f"{neg} negative, {zero} null, {pos} positive eigenvalues")
    out: dict = {"sylvester": (neg, zero, pos, why)}
    if zero:
        out["nullity_bound"] = (zero, why)
    return out


def ostrowski_check(result, baseline):
    """``result`` (a preconditioned row) checked against Ostrowski's theorem.

    ``lambda_k(S^T A S) = t_k lambda_k(A)`` with ``t_k`` in ``[1 / max P, 1 / min P]``, so the
    condition number of the same part of the spectrum obeys
    ``kappa(P^-1/2 A P^-1/2) <= kappa(A) max P / min P``. A reported value above that cap (beyond
    both error bounds) is contradicted by the baseline and withheld; the cap is recorded in
    ``details['ostrowski']`` either way.
    """
    import dataclasses

    d = result.details or {}
    summary = d.get("diag_summary") or {}
    if (baseline is None or baseline.condition_number is None or not summary.get("min")
            or result.definiteness != baseline.definiteness):
        return result
    spread = summary["max"] / summary["min"]
    cap = baseline.condition_number * (1 + (baseline.condition_error or 0.0)) * spread
    rec = {"kappa_cap": cap, "p_spread": spread, "baseline_kappa": baseline.condition_number}
    value = result.condition_number
    if value is None or value <= cap * (1 + (result.condition_error or 0.0)):
        return dataclasses.replace(result, details={**d, "ostrowski": {**rec, "holds": True}})
    note = (f"kappa {value:.3g} withheld: Ostrowski's theorem caps it at {cap:.3g} (the "
            f"baseline's {baseline.condition_number:.3g} x max P / min P = {spread:.3g}); "
            "eigenvalues near 0 were rescaled across the null band")
    notes = [*d.get("trust_notes", []), note]
    return dataclasses.replace(
        result, condition_number=None, condition_error=None, condition_resolved=True,
        condition_bound=None, condition_definition=f"{note} ({result.condition_definition})",
        details={**d, "ostrowski": {**rec, "holds": False}, "trust_notes": notes},
    )
