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

A training loop keeps what does not change between its measurements (:class:`Kept`): the
Problem, built once and moved in place to each step's weights (:func:`at_weights`), which skips
the model copy and checks of a fresh one; the settings' structure; the memory plan's basis.
The quantiles of ``P`` that only ``condlab spectrum``'s report shows are not computed. A cold
preconditioned row is hinted with ``P^-1/2`` times the baseline's Ritz vectors of the same step
(:func:`condlab.tracking.top.top_eigenpair`'s ``hint``).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from condlab.config import SpectrumConfig
from condlab.errors import CondlabError
from condlab.inputs import Inputs
from condlab.measure import Estimate
from condlab.problem import make_problem
from condlab.tracking.top import top_eigenpair

KEEP_BYTES = 2**24  # a training loop keeps its Lanczos workspace between measurements up to this


def fast(cfg: SpectrumConfig) -> bool:
    """Whether ``cfg`` asks only for ``lambda_max`` of the baseline and preconditioned settings."""
    return (cfg.top == 1 and cfg.bottom == 0 and not (cfg.exact or cfg.trace or cfg.density
            or cfg.per_layer or cfg.norm or cfg.damping) and cfg.block_size in (None, 1)
            and cfg.krylov_dtype is None and cfg.krylov_device is None)


def at_weights(problem, model: nn.Module):
    """``problem`` moved to ``model``'s current parameters and buffers (the model ``problem`` was
    built from, since trained), in place: its ``theta`` and ``fixed`` tensors are overwritten
    (copies: later optimizer steps do not reach them). For a training loop's own Problem
    (:class:`Kept`), whose operators of the last measurement are let go first (their graphs
    were built from the old ``theta``)."""
    named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for n, part in problem.spec.unflatten(problem.theta).items():
        part.copy_(named[n].detach())
    for n, t in problem.fixed.items():
        if n in named:
            t.copy_(named[n].detach())
    if not bool(torch.isfinite(problem.theta).all()):
        raise CondlabError("the model's weights hold NaN or Inf at this step (the run diverged?)")
    return problem


class Kept:
    """What a training loop's fast path keeps from one measurement to the next: its Problem
    (built once, a checked copy of the model, moved in place to each step's weights by
    :meth:`at`), the config and the settings built for it, and the memory plan's basis columns
    (planned at the first measurement: the same model and batch need the same basis), the
    bytes the kept graph may hold (read once) and the bytes it does hold (measured at the first
    measurement, when the graph is built under autograd's saved-tensor hooks; later graphs of
    the same model and batch are built without them: :meth:`release`). Every measurement builds
    new operators (a new graph at the new weights) and reads ``P`` from the optimizer's state as
    of that step."""

    def __init__(self, problem):
        self.problem = problem
        self.key: tuple | None = None  # the config's fields but lr and beta1, as last built
        self.cfg: SpectrumConfig | None = None  # the config that key was read from
        self.settings: list | None = None
        self.columns: int | None = None
        self.budget: int | None = None  # the bytes the kept graph may hold, read once
        self.graph_bytes: int | None = None  # the bytes it holds, measured once (release)
        self.workspace: dict = {}  # the Lanczos basis and random start, while small (release)

    def at(self, model: nn.Module):
        self.release()
        return at_weights(self.problem, model)

    def release(self) -> None:
        """Let go of the last measurement's operators (their kept graphs) between measurements,
        keeping the bytes the baseline's graph was measured to hold: a later graph of the same
        model and batch holds as many (the counting hooks cost 16-23% of the graph's build on
        the digits MLP and CNN, and a Python call per saved tensor in every product)."""
        if self.settings is not None:
            if self.graph_bytes is None:
                self.graph_bytes = _measured_graph(self.settings[0].operator)
            self.settings = [dataclasses.replace(s, operator=None) for s in self.settings]
        for key in [k for k, t in self.workspace.items()
                    if t.numel() * t.element_size() > KEEP_BYTES]:
            del self.workspace[key]  # a large model's basis is not held during training

    def settings_for(self, cfg: SpectrumConfig, inputs: Inputs) -> list:
        """The settings of this measurement: built in full when ``cfg`` changed in more than
        its lr and beta1 (which an lr schedule moves at every measurement), else new operators
        at the new weights, ``P`` from the optimizer state as of now, and the baseline's
        stability threshold for this lr."""
        from condlab.operators.curvature import curvature_operator, graph_budget
        from condlab.settings import (
            build_settings,
            preconditioned_settings,
            regularized_baseline,
            stability,
        )

        if self.budget is None:
            self.budget = graph_budget(self.problem.device, _limit(cfg))
        if cfg is not self.cfg:  # the Tracker hands the same config while lr and beta1 hold
            self.cfg, key = cfg, tuple(getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                                       if f.name not in ("lr", "beta1"))
        else:
            key = self.key
        if self.settings is None or key != self.key:
            self.key, self.columns, self.graph_bytes = key, None, None
            self.settings = build_settings(cfg, self.problem, inputs, summaries=False)
            _budgeted(self.settings[0].operator, self.budget)
            return self.settings
        A = curvature_operator(self.problem, cfg.curvature, block_size=cfg.product_block)
        A.budget, A.graph_bytes_each = self.budget, self.graph_bytes
        base = dataclasses.replace(self.settings[0], operator=regularized_baseline(cfg, A),
                                   stability=stability(cfg, "momentum" if cfg.beta1 else "gd"))
        self.settings = [base, *preconditioned_settings(cfg, self.problem, A, inputs,
                                                        summaries=False)]
        return self.settings


def _measured_graph(op) -> int | None:
    """The bytes the kept graph of a one-batch Hessian inside ``op`` was measured to hold, or
    None (another operator, several batches, no graph kept, or bytes not measured)."""
    from condlab.operators.curvature import HessianOperator

    while op is not None and type(op) is not HessianOperator:
        op = getattr(op, "A", None)
    if (op is None or op.graph_bytes_each is not None or list(op._maps) != [0]
            or len(op.problem.weights) != 1 or op.graph_bytes <= 0):
        return None
    return int(op.graph_bytes)


def _budgeted(op, budget: int) -> None:
    while op is not None and not hasattr(op, "budget"):
        op = getattr(op, "A", None)
    if op is not None:
        op.budget = budget


def prepare(cfg: SpectrumConfig, inputs: Inputs) -> Kept:
    """A training loop's :class:`Kept`, made when its Tracker is: the Problem (the model copied
    and checked) and the modules a measurement uses imported, so that the first measurement
    pays for neither."""
    import condlab.consistency  # noqa: F401
    import condlab.normalization.batching  # noqa: F401
    import condlab.preconditioners.zero_state  # noqa: F401
    import condlab.report.records  # noqa: F401
    import condlab.settings  # noqa: F401
    import condlab.stability  # noqa: F401

    return Kept(make_problem(inputs, cfg))


def _hint(setting, vectors: dict):
    """A cold start's hint for ``P^-1/2 A P^-1/2``: the baseline's top two Ritz vectors of this
    measurement, times ``P^-1/2`` (where ``A``'s top eigenvector dominates, ``P^-1/2 y_1`` is
    the top eigenvector of the preconditioned operator). None for the baseline itself: there
    the gradient, tried as a hint, cost 0-1 products less on the digits MLP and CNN but 5 more
    on a small MLP, so a cold baseline starts from a random vector."""
    base = vectors.get("baseline")
    p = getattr(setting.operator, "p_diag", None)
    if setting.preconditioner is None or base is None or p is None or p.shape[0] != base.shape[0]:
        return None
    return p.rsqrt()[:, None] * base.to(p.dtype)


def measure_fast(cfg: SpectrumConfig, inputs: Inputs, starts: dict | None = None, problem=None,
                 kept: Kept | None = None):
    """``(results, vectors)``: one :class:`SpectrumResult` per setting with ``lambda_max`` only
    (with the pipeline's trust checks, :func:`condlab.consistency.checked`, and the extra row
    they may ask for), and setting -> its top two Ritz vectors ``[P, 2]`` (the next warm start).
    ``kept``: a training loop's :class:`Kept` (its Problem, already at the step's weights)."""
    from condlab.consistency import checked
    from condlab.report.records import record
    from condlab.settings import build_settings
    from condlab.tracking.top import basis_columns

    if kept is not None:
        problem, todo = kept.problem, list(kept.settings_for(cfg, inputs))
    else:
        problem = problem if problem is not None else make_problem(inputs, cfg)
        todo = list(build_settings(cfg, problem, inputs, summaries=False))
    results, vectors = [], {}
    workspace = kept.workspace if kept is not None else {}  # the rows share one basis
    while todo:
        s = todo.pop(0)
        t0 = time.perf_counter()
        op = s.operator
        start = (starts or {}).get(s.name)
        if start is not None and start.shape[0] != op.shape[0]:
            start = None  # another operator's vectors: start cold
        if kept is not None and kept.columns is not None and not s.name.endswith(":trained"):
            columns = kept.columns
        else:  # the memory plan (it also builds batch 0's graph, which the products keep)
            columns = basis_columns(op, cfg.max_hvps, cfg.max_basis, _limit(cfg))
            if kept is not None and s.name == "baseline":
                kept.columns = columns
        eig = top_eigenpair(op, tol=cfg.resolved_tol, max_products=cfg.max_hvps, start=start,
                            hint=None if start is not None else _hint(s, vectors),
                            seed=cfg.seed, columns=columns, workspace=workspace)
        vectors[s.name] = eig.vectors
        fields = {"eigenvalues_top": [eig.value], "residuals_top": [eig.residual],
                  "converged_top": [eig.converged], "lambda_max": eig.value, "block_size": 1}
        details = {"lanczos": "single vector, " + ("warm" if eig.warm else "cold"),
                   "stopped_by": eig.stop, "error_estimate": eig.error, "gap_estimate": eig.gap,
                   "estimate_met": eig.estimate_met, "certificate_top": eig.certificate,
                   "restarts": eig.restarts, "max_basis": eig.max_basis}
        e = Estimate(fields=fields, details=details, n_params=op.shape[0], hvp_count=eig.products,
                     seconds=time.perf_counter() - t0, dtype=str(op.dtype).replace("torch.", ""),
                     device=str(op.device), seed=cfg.seed, damping=0.0, vectors=eig.vectors)
        result, extra = checked(s, record(s, e, cfg.curvature), results[0] if results else None,
                                eig.vectors)
        results.append(result)
        todo[:0] = [extra] if extra is not None else []
    if kept is not None:
        kept.release()
    return results, vectors


def _limit(cfg) -> int | None:
    from condlab.memory import env_memory_limit, parse_bytes

    limit = getattr(cfg, "memory_limit", None)
    return parse_bytes(limit) if limit is not None else env_memory_limit()


def measure_step(cfg: SpectrumConfig, inputs: Inputs, starts: dict | None = None, *, problem=None,
                 kept: Kept | None = None, threads: int | None = None, on_progress=None):
    """``(results, vectors)`` of one tracked step: the fast path when :func:`fast`, else
    ``run_spectrum`` (``problem`` and ``kept`` are used by the fast path only)."""
    from condlab.inputs import set_threads

    if fast(cfg):
        if threads != torch.get_num_threads():  # a training loop passes its own: left alone
            set_threads(threads, inputs)
        return measure_fast(cfg, inputs, starts, problem, kept)
    from condlab.pipeline import run_spectrum

    report = run_spectrum(cfg, inputs=inputs, threads=threads, on_progress=on_progress,
                          starts=starts)
    return report.results, report.vectors
