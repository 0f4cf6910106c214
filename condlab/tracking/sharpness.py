"""What a tracked step measures: ``lambda_max`` of every setting, warm-started (the fast path),
or the whole of ``condlab spectrum`` when more is asked.

The fast path serves ``top = 1, bottom = 0`` (what edge-of-stability studies plot: the sharpness
``lambda_max(H)`` and, for an adaptive optimizer, ``lambda_max(P^-1 H) = lambda_max(P^-1/2 H
P^-1/2)``) without trace, density, normalized or per-layer settings, damping or a block above
1: the same operators as :func:`condlab.pipeline.run_spectrum` builds (baseline with its
weight decay, one per ``--precond``), each solved by :func:`condlab.tracking.top.top_eigenpair`
from the previous step's two Ritz vectors, stopping on the eigenvalue's accuracy. There is no
true-residual product and no multiplicity check: ``lambda_max``'s value does not depend on its
multiplicity. Everything else goes through ``run_spectrum`` with its block Lanczos (warm-started
from the same vectors).

A :class:`Problem` built once can be moved to a training run's current weights
(:func:`at_weights`), which skips the model copy and checks of a fresh one per measurement.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from condlab.config import SpectrumConfig
from condlab.errors import CondlabError
from condlab.inputs import Inputs
from condlab.measure import Estimate
from condlab.problem import make_problem
from condlab.tracking.top import top_eigenpair


def fast(cfg: SpectrumConfig) -> bool:
    """Whether ``cfg`` asks only for ``lambda_max`` of the baseline and preconditioned settings."""
    return (cfg.top == 1 and cfg.bottom == 0 and not (cfg.exact or cfg.trace or cfg.density
            or cfg.per_layer or cfg.norm or cfg.damping) and cfg.block_size in (None, 1)
            and cfg.krylov_dtype is None and cfg.krylov_device is None)


def at_weights(problem, model: nn.Module):
    """A shallow copy of ``problem`` at ``model``'s current parameters and buffers (the model
    ``problem`` was built from, since trained): its selected parameters become ``theta``, the
    others and the buffers ``fixed``, copied, so later optimizer steps do not reach them."""
    named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    out = copy.copy(problem)
    dtype, device = problem.dtype, problem.device
    out.theta = problem.spec.flatten(
        {n: named[n].detach().to(dtype=dtype, device=device) for n in problem.spec.names})
    out.fixed = dict(problem.fixed)
    for n in problem.fixed:
        if n in named:
            t = named[n].detach()
            t = t.to(device, dtype) if t.is_floating_point() else t.to(device)
            out.fixed[n] = t.clone()
    if not bool(torch.isfinite(out.theta).all()):
        raise CondlabError("the model's weights hold NaN or Inf at this step (the run diverged?)")
    return out


def measure_fast(cfg: SpectrumConfig, inputs: Inputs, starts: dict | None = None, problem=None):
    """``(results, vectors)``: one :class:`SpectrumResult` per setting with ``lambda_max`` only
    (with the pipeline's trust checks, :func:`condlab.consistency.checked`, and the extra row
    they may ask for), and setting -> its top two Ritz vectors ``[P, 2]`` (the next warm start)."""
    from condlab.consistency import checked
    from condlab.report.records import record
    from condlab.settings import build_settings

    problem = problem if problem is not None else make_problem(inputs, cfg)
    results, vectors = [], {}
    todo = list(build_settings(cfg, problem, inputs))
    while todo:
        s = todo.pop(0)
        t0 = time.perf_counter()
        op = s.operator
        start = (starts or {}).get(s.name)
        if start is not None and start.shape[0] != op.shape[0]:
            start = None  # another operator's vectors: start cold
        eig = top_eigenpair(op, tol=cfg.resolved_tol, max_products=cfg.max_hvps, start=start,
                            seed=cfg.seed, max_basis=cfg.max_basis)
        vectors[s.name] = eig.vectors
        fields = {"eigenvalues_top": [eig.value], "residuals_top": [eig.residual],
                  "converged_top": [eig.converged], "lambda_max": eig.value, "block_size": 1}
        details = {"lanczos": "single vector, " + ("warm" if eig.warm else "cold"),
                   "stopped_by": eig.stop, "error_estimate": eig.error, "gap_estimate": eig.gap,
                   "restarts": eig.restarts}
        e = Estimate(fields=fields, details=details, n_params=op.shape[0], hvp_count=eig.products,
                     seconds=time.perf_counter() - t0, dtype=str(op.dtype).replace("torch.", ""),
                     device=str(op.device), seed=cfg.seed, damping=0.0, vectors=eig.vectors)
        result, extra = checked(s, record(s, e, cfg.curvature), results[0] if results else None,
                                eig.vectors)
        results.append(result)
        todo[:0] = [extra] if extra is not None else []
    return results, vectors


def measure_step(cfg: SpectrumConfig, inputs: Inputs, starts: dict | None = None, *, problem=None,
                 threads: int | None = None, on_progress=None):
    """``(results, vectors)`` of one tracked step: the fast path when :func:`fast`, else
    ``run_spectrum`` (``problem`` is used by the fast path only)."""
    from condlab.inputs import set_threads
    from condlab.pipeline import run_spectrum

    if fast(cfg):
        if threads != torch.get_num_threads():  # a training loop passes its own: left alone
            set_threads(threads, inputs)
        return measure_fast(cfg, inputs, starts, problem)
    report = run_spectrum(cfg, inputs=inputs, threads=threads, on_progress=on_progress,
                          starts=starts)
    return report.results, report.vectors
