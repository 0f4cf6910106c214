r"""What a comparison records about a run besides its loss: conditioning and weight norms.

At a tracked step, with ``A`` the Hessian or GGN of the training loss at the current ``theta``
(over the first ``samples`` training samples) and ``P`` the optimizer's *live* diagonal
preconditioner in its basis ``U`` (:meth:`DiagOptimizer.preconditioner`):

- ``lambda_max``, ``kappa``, ``nullity`` of ``A`` (``kappa`` as defined by
  :func:`condlab.estimators.condition_number`: positive part, threshold ``null_threshold``);
- ``pre_lambda_max``, ``pre_kappa`` of the operator the update sees,
  :func:`condlab.preconditioners.preconditioned_operator`: ``P^-1/2 U^T (A + lam I) U P^-1/2``
  for coupled L2, ``P^-1/2 U^T A U P^-1/2 + lam I`` for decoupled decay;
- ``threshold``: the stability threshold of the method (:func:`condlab.stability.stability_threshold`)
  and ``sharpness_ratio = pre_lambda_max / threshold`` (above 1: a quadratic model diverges);
- ``kappa_bound``, ``pre_kappa_bound``, ``block_kappa_bound``: when the dtype cannot resolve
  that kappa (it is then empty), the lower bound it is known to exceed;
- ``block_*``: the same for a diagonal block of ``A`` (``block: [last]`` = the last layer);
- ``v_gn_spread`` (``adam_alignment``): the spread ``q90 / q10`` over coordinates of
  ``r_i = sqrt(v_hat_i) / sqrt((U^T G U)_ii)``; 1 means Adam's ``P`` is proportional to GN^-1/2's
  (paper B, noise-dominated regime). ``v_h_spread``: the same against the row norms
  ``||(U^T H U)_i||`` (the deterministic model ``v ~ row norms of H squared``, derived); both
  over the coordinates with curvature, ``(U^T G U)_ii > 1e-8 max``; ``gn_spread``: the spread of
  ``sqrt((U^T G U)_ii)`` itself (what the ratio's spread would be if ``v`` were flat);
- ``dist_l2``, ``dist_pw`` (``fixed_points``, quadratic losses): relative distances
  ``||theta - p|| / ||p||`` to the coupled-L2 minimizer (``grad L(p) + lam p = 0``, i.e.
  ``(H + lam I)^-1 H p*``) and to the P-weighted one (``grad L(p) + lam W p = 0``,
  ``W = U diag(P) U^T``: AdamW's fixed point with its live ``M = P^-1``), by one Newton step
  (exact for a quadratic). For the L1 rule (decay ``l1``) instead ``dist_wlasso`` and
  ``dist_lasso``: to the minimizer of the quadratic model plus ``sum_i lam sqrt(P_i) |z_i|``
  (its fixed point with its live ``P``, derived) and plus ``lam sum_i |z_i|`` (the plain
  lasso), ``z = U^T p``, solved by coordinate descent (:mod:`condlab.train.lasso`); empty when
  the descent does not converge; ``dist_lasso_sq``: to the plain lasso at ``lam^2`` (the weighted
  lasso once Adam's ``v = g^2``). Both kinds also ``dist_pstar``, to the unregularized
  minimizer ``p* = theta - H^+ g`` (the control a decayed optimizer whose decay fades would reach).

Every logged step, for the scale-invariant group ``w`` (``scale_invariant`` globs):
``si_norm = ||w||``, ``si_eff_lr = lr / ||w||^2`` and ``si_angle``, the angle between ``w``
before and after the last update (paper C).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from condlab.errors import UsageError
from condlab.measure import EstimatorSettings, measure
from condlab.operators.curvature import curvature_operator
from condlab.options import TRACK_KEYS, fields_of, parse_mapping
from condlab.preconditioners import preconditioned_operator
from condlab.stability import stability_threshold

if TYPE_CHECKING:
    from condlab.problem import Problem
    from condlab.train.diag_optimizers import DiagOptimizer, State

SCALE_TOL = 1e-3  # relative change of the loss when the scale-invariant group is doubled
DENSE_LIMIT = 3000
BLOCK = 64  # columns per vmapped curvature product
NULL_DIAG = 1e-8  # adam_alignment skips coordinates with (U^T G U)_ii <= 1e-8 max_i (U^T G U)_ii


class _TrackMethods:
    def __post_init__(self) -> None:
        for o in TRACK_KEYS:  # the API gets the same types and checks as the YAML block
            object.__setattr__(self, o.name, o.parse(getattr(self, o.name), "TrackSettings"))

    @classmethod
    def from_dict(cls, raw: dict, where: str = "track") -> TrackSettings:
        return cls(**parse_mapping(TRACK_KEYS, raw, where))

    def due(self, step: int, steps: int) -> bool:
        return step == 0 or step == steps or (self.every > 0 and step % self.every == 0)


TrackSettings = dataclasses.make_dataclass(
    "TrackSettings", fields_of(TRACK_KEYS), bases=(_TrackMethods,), frozen=True,
    namespace={"__module__": __name__},
)
TrackSettings.__doc__ = """How and how often conditioning is measured (the ``track:`` block of a
compare config): one field per key of :data:`condlab.options.TRACK_KEYS`."""


def at(problem: Problem, theta: Tensor) -> Problem:
    """The same problem at another ``theta`` (a shallow copy: batches and model are shared)."""
    p = copy.copy(problem)
    p.theta = theta
    return p


def _bound(result) -> float | None:
    """A kappa the dtype cannot resolve is not reported; what is known is that it lies above
    this bound (:func:`condlab.estimators.condition_number`)."""
    return result.condition_bound if result.condition_resolved is False else None


def _spread(r: Tensor) -> float:
    q = torch.quantile(r.double().cpu(), torch.tensor([0.1, 0.9], dtype=torch.float64))
    return float(q[1] / q[0])


def _sym(M: Tensor) -> Tensor:
    return (M + M.T) / 2


class Tracker:
    """Measures one run's conditioning at ``theta`` from the optimizer's live state."""

    def __init__(self, problem: Problem, settings: TrackSettings):
        self.problem, self.s = problem, settings
        names = problem.spec.names
        self.si = self._mask(settings.scale_invariant, "scale_invariant")
        if settings.block == ("last",):
            last = names[-1].rsplit(".", 1)[0]
            self.block = tuple(n for n in names if n.rsplit(".", 1)[0] == last)
        else:
            self.block = tuple(n for n in names if any(fnmatch.fnmatchcase(n, g) for g in settings.block))
            if settings.block and not self.block:
                raise UsageError(f"track.block {list(settings.block)} matches no trained parameter "
                                 f"(names: {', '.join(names)})")
        dense = settings.exact or settings.adam_alignment or settings.fixed_points
        if dense and problem.n_params > DENSE_LIMIT:
            raise UsageError(
                f"track.exact / adam_alignment / fixed_points build dense [P, P] matrices; this "
                f"model trains {problem.n_params} parameters (limit {DENSE_LIMIT}): turn them off"
            )
        if self.si is not None:
            self._check_scale_invariance()

    def _mask(self, globs: tuple[str, ...], key: str) -> Tensor | None:
        if not globs:
            return None
        spec = self.problem.spec
        idx = [torch.arange(spec.slice(n).start, spec.slice(n).stop) for n in spec.names
               if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        if not idx:
            raise UsageError(f"track.{key} {list(globs)} matches no trained parameter "
                             f"(names: {', '.join(spec.names)})")
        return torch.cat(idx)

    def _check_scale_invariance(self) -> None:
        theta = self.problem.theta
        scaled = theta.clone()
        scaled[self.si] *= 2
        a, b = float(self.problem.loss(theta)), float(self.problem.loss(scaled))
        if abs(a - b) > SCALE_TOL * max(1.0, abs(a)):  # BatchNorm's eps: ~1e-5 / variance
            raise UsageError(
                f"track.scale_invariant {list(self.s.scale_invariant)}: the loss changes from "
                f"{a:.6g} to {b:.6g} when they are doubled, so they are not scale-invariant; "
                "put them before a BatchNorm and freeze what follows (params:)"
            )

    # -- every logged step -------------------------------------------------------------------------
    def weights(self, theta: Tensor, previous: Tensor | None, lr: float) -> dict[str, Any]:
        if self.si is None:
            return {}
        w = theta[self.si]
        n2 = float(w @ w)
        row: dict[str, Any] = {"si_norm": math.sqrt(n2), "si_eff_lr": lr / n2}
        if previous is not None:
            v = previous[self.si]
            cos = float(w @ v) / math.sqrt(n2 * float(v @ v))
            row["si_angle"] = math.acos(max(-1.0, min(1.0, cos)))
        return row

    # -- at tracked steps ------------------------------------------------------------------------
    def conditioning(self, theta: Tensor, opt: DiagOptimizer, state: State) -> dict[str, Any]:
        s = self.s
        prob = at(self.problem, theta)
        est = EstimatorSettings(top=1, bottom=s.bottom, tol=s.tol, max_hvps=s.max_hvps, exact=s.exact,
                                null_threshold=s.null_threshold, seed=0)
        # exact: P products on a tiny model, where tracing a linearization costs more than it saves
        cache = "auto" if not s.exact else False
        A = curvature_operator(prob, s.curvature, block_size=BLOCK, cache=cache)
        if s.exact or s.adam_alignment or s.fixed_points:
            A = _sym(A.to_dense())
        base = measure(A, est, setting="baseline", curvature=s.curvature).result
        row: dict[str, Any] = {"lambda_max": base.lambda_max, "kappa": base.condition_number,
                               "nullity": base.nullity, "kappa_bound": _bound(base)}
        ok = base.converged
        method, lr, beta = opt.stability(state)
        row["threshold"] = stability_threshold(method, lr, beta)
        pre = opt.preconditioner(state, theta)
        kind, lam = opt.decay
        if pre is not None:
            op = preconditioned_operator(A, pre, weight_decay=lam, decay=kind)
            pm = measure(op, est, setting=pre.name, curvature=s.curvature).result
            row.update(pre_lambda_max=pm.lambda_max, pre_kappa=pm.condition_number,
                       pre_kappa_bound=_bound(pm),
                       sharpness_ratio=pm.lambda_max / row["threshold"])
            ok = ok and pm.converged
        if self.block:
            sub = prob.restrict(list(self.block))
            bm = measure(curvature_operator(sub, s.curvature, block_size=BLOCK, cache=cache), est, setting="block",
                         curvature=s.curvature).result
            row.update(block_lambda_max=bm.lambda_max, block_kappa=bm.condition_number,
                       block_kappa_bound=_bound(bm))
            ok = ok and bm.converged
        if s.adam_alignment and pre is not None and "exp_avg_sq" in state.buffers:
            row.update(self._alignment(prob, A, opt, pre))
        if s.fixed_points and lam > 0 and pre is not None:
            points = self._lasso_points if kind == "l1" else self._fixed_points
            row.update(points(prob, A, opt, pre, lam))
        row["converged"] = ok
        return row

    def _dense(self, prob: Problem, A: Tensor, curvature: str) -> Tensor:
        if self.s.curvature == curvature:
            return A
        return _sym(curvature_operator(prob, curvature, block_size=BLOCK, cache=False).to_dense())

    def _alignment(self, prob: Problem, A: Tensor, opt: DiagOptimizer, pre) -> dict[str, float]:
        G, H = self._dense(prob, A, "ggn"), self._dense(prob, A, "hessian")
        U = opt.basis
        if U is not None:
            G, H = U.T @ G @ U, U.T @ H @ U
        sqrt_v = (pre.diag - pre.eps).clamp_min(0)
        d = torch.diagonal(G)
        live = d > NULL_DIAG * d.max()  # coordinates with curvature (softmax's null space aside)
        r_g = sqrt_v[live] / d[live].sqrt()
        r_h = sqrt_v[live] / torch.linalg.vector_norm(H, dim=1)[live]
        return {"v_gn_spread": _spread(r_g), "v_h_spread": _spread(r_h),
                "gn_spread": _spread(d[live].sqrt())}

    def _fixed_points(self, prob: Problem, A: Tensor, opt: DiagOptimizer, pre, lam: float) -> dict:
        H = self._dense(prob, A, "hessian")
        theta = prob.theta
        g = prob.gradient(theta)
        eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        W = torch.diag(pre.diag.to(H))
        if opt.basis is not None:
            W = opt.basis @ W @ opt.basis.T
        p_l2 = theta - torch.linalg.solve(H + lam * eye, g + lam * theta)
        p_w = theta - torch.linalg.solve(H + lam * W, g + lam * (W @ theta))
        p_star = theta - torch.linalg.pinv(H, hermitian=True) @ g  # the unregularized minimizer
        return {"dist_l2": _distance(theta, p_l2), "dist_pw": _distance(theta, p_w),
                "dist_pstar": _distance(theta, p_star)}

    def _lasso_points(self, prob: Problem, A: Tensor, opt: DiagOptimizer, pre, lam: float) -> dict:
        """Distances to the weighted lasso (weights ``lam sqrt(P_i)``, the live ``P``), to the
        plain lasso at ``lam`` and at ``lam^2`` (where the weighted one lands once ``v = g^2``,
        ``P_i = |g_i| = lam^2`` on the support) of the quadratic model at ``theta``, in the basis
        ``U``; and to the unregularized minimizer ``p*``."""
        import numpy as np

        from condlab.train.lasso import weighted_lasso

        H = self._dense(prob, A, "hessian").double()
        theta = prob.theta.double()
        b = H @ theta - prob.gradient(prob.theta).double()  # q(p) = 1/2 p^T H p - b^T p + const
        U = opt.basis.double() if opt.basis is not None else None
        Az, c = (U.T @ H @ U, U.T @ b) if U is not None else (H, b)
        Az, c = Az.cpu().numpy(), c.cpu().numpy()
        out = {}
        for key, w in (("dist_wlasso", lam * pre.diag.double().sqrt().cpu().numpy()),
                       ("dist_lasso", np.full(c.shape, lam)),
                       ("dist_lasso_sq", np.full(c.shape, lam * lam))):
            z, ok = weighted_lasso(Az, c, w)
            p = torch.as_tensor(z, dtype=torch.float64, device=theta.device)
            p = U @ p if U is not None else p
            out[key] = _distance(theta, p) if ok else None
        out["dist_pstar"] = _distance(theta, theta - torch.linalg.pinv(H, hermitian=True)
                                      @ prob.gradient(prob.theta).double())
        return out


def _distance(theta: Tensor, p: Tensor) -> float:
    """``||theta - p|| / ||p||`` (the absolute distance when ``p = 0``)."""
    d = float(torch.linalg.vector_norm(theta.to(p) - p))
    n = float(torch.linalg.vector_norm(p))
    return d / n if n > 0 else d
