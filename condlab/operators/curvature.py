"""Hessian and generalized Gauss-Newton (GGN) products on the flat parameter vector.

Both are sums over the fixed batches of a Problem, weighted by ``n_b / N``::

    H v = sum_b (n_b / N) * d^2 L_b / d theta^2 v          forward-over-reverse: jvp(grad(L_b))
    G v = sum_b (n_b / N) * J_b^T (d^2 l / d f^2) J_b v    jvp through the model, loss-Hessian
                                                            product on the outputs, vjp back

and each product is ``torch.func.vmap``-ed over a block of K vectors ``V [P, K]`` (in chunks
of ``block_size`` columns to bound memory: activations are held once per column).

Cache: an operator is applied many times at one fixed ``theta`` (Lanczos, trace, density), so
by default each batch's product map is built once and reused:

- Hessian: the gradient ``g = grad L_b(theta)`` is computed once with its autograd graph kept
  (``create_graph``), and each product is one more backward pass through it,
  ``H_b v = d(g . v)/d theta`` (reverse-over-reverse, the plain double-backward HVP), for a
  block at once with ``is_grads_batched`` (vmap over the backward graph) on a GPU and for
  small problems while the graph times the block stays under ``BATCHED_BYTES``, else column
  by column (see ``_batched_backward``). Building it costs about one gradient; a product then
  costs 0.2-0.3 gradients on the digits MLP (the direct ``vmap(jvp(grad))`` call costs 2.7
  for one vector, 0.6 per vector in blocks of 8).
- GGN: the product map is linearized once with ``torch.func.linearize`` (a traced ``jvp``).
  Tracing costs about as much as 60 direct products, so 'auto' linearizes a batch only once
  ``CACHE_AFTER`` products have been taken on it.

The cache holds each batch's graph (its activations), so ``cache='auto'`` keeps the Hessian's
graphs only while the bytes they hold (counted as autograd saves them) stay within
``GRAPH_FRACTION`` of the device's memory, linearizes the GGN only for problems with at most
``CACHE_LIMIT`` parameter-sample products, and never caches with fixed dropout masks.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import grad, jvp, linearize, vjp, vmap

from condlab.distributed import all_reduce_sum
from condlab.operators.base import LinearOperator

CURVATURES = ("hessian", "ggn")  # the operators this module builds

if TYPE_CHECKING:
    from condlab.problem import Problem

CACHE_LIMIT = 2e8  # parameters x samples up to which products are linearized once and cached
CACHE_AFTER = 64  # 'auto': direct products on a batch before it is linearized


def _linearize(f, x: Tensor):
    """``v -> J_f(x) v``, traced once (``torch.func.linearize``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # const-folding chatter from torch.fx
        return linearize(f, x)[1]


class _CurvatureOperator(LinearOperator):
    auto_cache_after = CACHE_AFTER  # 'auto': direct products on a batch before it is cached
    measures_graphs = False  # 'auto' caches by the kept graphs' measured size, not CACHE_LIMIT
    batches_columns = True  # a block's columns go through one batched call (memory_profile says)
    block_map = False  # the cached map multiplies a block [P, K] itself (else vmapped)

    def __init__(self, problem: Problem, block_size: int = 16, cache: bool | str = "auto"):
        super().__init__(problem.n_params, problem.dtype, problem.device)
        self.problem = problem
        self.block_size = max(1, int(block_size))
        self.cache_after = self.auto_cache_after if cache == "auto" else 0
        self.auto = cache == "auto"  # the Hessian then also checks each kept graph's size
        if cache == "auto":
            cache = not problem.uses_dropout and (
                self.measures_graphs
                or problem.n_params * max(problem.sizes, default=0) * len(problem.sizes)
                <= CACHE_LIMIT
            )
        self.cache = bool(cache) and not problem.uses_dropout
        self.graph_bytes = 0  # bytes the kept graphs hold (measured by the Hessian)
        # bytes one batch's graph holds, when already measured on the same model and batch (a
        # training loop's Tracker): the graph is then built without the counting hooks
        self.graph_bytes_each: int | None = None
        self.budget: int | None = None  # bytes the graphs may hold (None: graph_budget, read now)
        self.memory_limit: int | None = None  # --memory-limit, set by the memory plan
        self._maps: dict[int, object] = {}
        self._direct: dict[int, int] = {}  # direct products taken per batch
        self._loop = False  # apply cached maps column by column

    def _batch_product(self, b: int, V: Tensor) -> Tensor:
        if not self.cache or (
            b not in self._maps and self._direct.get(b, 0) < self.cache_after
        ):
            self._direct[b] = self._direct.get(b, 0) + V.shape[1]
            return self._product(b, V)
        if b not in self._maps:
            try:
                self._maps[b] = self._linear_map(b)
            except RuntimeError:  # untraceable code (a user's loss with F.one_hot, .item()):
                self.cache = False  # direct products, exact and slower
                return self._product(b, V)
            budget = (self.budget if self.budget is not None
                      else graph_budget(self.device, self.memory_limit))
            if self.auto and self.measures_graphs and self.graph_bytes > budget:
                per_graph = self.graph_bytes / len(self._maps)
                self._maps.clear()  # the kept graphs would not fit: recompute every product,
                self.cache = False  # a vmapped block holding one graph per column, so no more
                # columns at once than graphs fit
                self.block_size = max(1, min(self.block_size, int(budget // max(per_graph, 1))))
                return torch.cat([self._product(b, V[:, i : i + self.block_size])
                                  for i in range(0, V.shape[1], self.block_size)], dim=1)
        linear = self._maps[b]
        if self.block_map:
            return linear(V)
        if not self._loop:
            try:
                return vmap(linear, in_dims=1, out_dims=1)(V)
            except RuntimeError:  # some traced graphs (conv backward views) do not vmap
                self._loop = True
        return torch.stack([linear(V[:, k]) for k in range(V.shape[1])], dim=1)

    def _product(self, b: int, V: Tensor) -> Tensor:
        raise NotImplementedError

    def _linear_map(self, b: int):
        raise NotImplementedError

    def _matmat(self, V: Tensor) -> Tensor:
        from condlab.memory import guard, memory_fix, release_heap

        V = V.to(self.dtype)
        K, out = V.shape[1], None
        with guard(f"a curvature product of {K} vector(s)", memory_fix()):
            for b, w in enumerate(self.problem.weights):
                step = self.block_size  # a product may lower it (kept graphs past the budget)
                for start in range(0, K, step):
                    cols = slice(start, start + step)
                    prod = self._batch_product(b, V[:, cols])
                    if out is None and prod.shape[1] == K:  # the whole block at once: no copy
                        out = prod.mul_(w) if w != 1.0 else prod
                        continue
                    if out is None:
                        out = torch.zeros_like(V)
                    out[:, cols].add_(prod, alpha=w)
                    del prod
        if out is None:  # no batches on this rank
            out = torch.zeros_like(V)
        release_heap(V.shape[0] * V.element_size())  # the backward's freed temporaries
        return all_reduce_sum(out)  # a distributed run holds a shard of the batches per rank

    def memory_profile(self) -> tuple[int, int, int]:
        """``(graph bytes still to come, temporary bytes per product column, graph bytes
        already held)`` for the memory plan.

        The graph of batch 0 is built now (it is kept for the products anyway, so what it holds
        is already in use when the plan reads the free memory) and its saved bytes measured,
        plus its gradient: the other batches' graphs come to that much each while they fit the
        graph budget, else none are kept (products recompute). A product column's temporaries:
        half a graph (the backward through it holds gradients of its saved tensors; measured
        0.56 of the graph on GPT-2 small) plus the output vector; a direct product (no cache)
        three times a forward's saved bytes plus two vectors.
        """
        vec = self.shape[0] * torch.empty(0, dtype=self.dtype).element_size()
        if not self.problem.batches:
            return 0, 2 * vec, 0
        n = len(self.problem.weights)
        if self.cache and self.measures_graphs:
            if not self._maps:
                self._maps[0] = self._linear_map(0)
            per_graph = self.graph_bytes / max(1, len(self._maps)) + vec
            held = int(per_graph * len(self._maps))
            self.batches_columns = (_batched_backward(self.problem, 0)
                                    and per_graph * self.block_size <= BATCHED_BYTES)
            if per_graph * n <= graph_budget(self.device, self.memory_limit):
                return int(per_graph * (n - len(self._maps))), int(per_graph / 2 + vec), held
            return 0, int(3 * per_graph + 2 * vec), held
        saved = _SavedBytes()
        theta = self.problem.theta.detach().requires_grad_(True)
        with torch.enable_grad(), saved:
            self.problem.batch_loss(theta, 0)
        return 0, int(3 * saved.bytes + 2 * vec), 0


class HessianOperator(_CurvatureOperator):
    """``H = d^2 L / d theta^2 [P, P]``, the exact Hessian of the mean loss."""

    name = "hessian"

    def _loss(self, b: int):
        return lambda theta: self.problem.batch_loss(theta, b)

    def _product(self, b: int, V: Tensor) -> Tensor:
        p, loss_b = self.problem, self._loss(b)

        def hvp(v: Tensor) -> Tensor:  # v [P] -> H_b v [P]
            return jvp(grad(loss_b), (p.theta,), (v,))[1]

        return vmap(hvp, in_dims=1, out_dims=1, randomness=p.randomness)(V)

    auto_cache_after = 0  # the gradient's graph costs about one gradient: keep it at once
    block_map = True
    measures_graphs = True

    def _linear_map(self, b: int):
        """``V [P, K] -> H_b V``: backward passes through the kept graph of ``grad L_b``."""
        theta = self.problem.theta.detach().requires_grad_(True)
        # the counting hooks are a Python call per tensor saved and per unpack in every product:
        # 16-23% of the build of a small model's graph, about 3% of a product (digits MLP, CNN)
        known = self.graph_bytes_each
        saved = _SavedBytes() if known is None else nullcontext()
        with torch.enable_grad(), saved:
            g = torch.autograd.grad(self.problem.batch_loss(theta, b), theta, create_graph=True)[0]
        nbytes = saved.bytes if known is None else known
        self.graph_bytes += nbytes
        if not g.requires_grad:  # the loss is linear in theta: H_b = 0
            return torch.zeros_like
        # a batched pass holds a backward's temporaries for every column at once
        batched = [_batched_backward(self.problem, b) and nbytes * self.block_size <= BATCHED_BYTES]

        def hvp(V: Tensor) -> Tensor:
            if V.shape[1] > 1 and batched[0]:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # "no batching rule, falling back"
                        return _double_backward(g, theta, V.T, batched=True).T
                except RuntimeError:  # an op without a batched backward: column by column
                    batched[0] = False
            if V.shape[1] == 1:
                return _double_backward(g, theta, V[:, 0])[:, None]
            out = torch.empty_like(V)  # column by column: one column's temporaries at a time
            for k in range(V.shape[1]):
                out[:, k] = _double_backward(g, theta, V[:, k])
            return out

        hvp.graph = (g, theta)  # read by the tracker's one-vector product (condlab.tracking.top)
        return hvp


GRAPH_FRACTION = 0.25  # 'auto' keeps gradient graphs up to this share of the device's memory


def graph_budget(device: torch.device, memory_limit: int | None = None) -> int:
    """Bytes the kept gradient graphs may hold: ``GRAPH_FRACTION`` of the memory the process
    may reach (the device's, or less under a cgroup cap, ``ulimit -v``, ``memory_limit`` (the
    run's ``--memory-limit``, which the memory plan hands the operator) or its environment twin
    ``CONDLAB_MEMORY_LIMIT``: what it holds plus what it may still allocate)."""
    from condlab.memory import _held, available, env_memory_limit

    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        import os

        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = memory_limit if memory_limit is not None else env_memory_limit()
    reach = _held(device) + available(device, limit).bytes
    return int(GRAPH_FRACTION * min(total, reach))


class _SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Counts the bytes of the tensors autograd saves for backward while it is active (each
    storage once): the size of a graph kept for reuse."""

    def __init__(self):
        self.bytes, seen = 0, set()

        def pack(t: Tensor) -> Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                self.bytes += storage.nbytes()
            return t

        super().__init__(pack, lambda t: t)


BATCHED_CPU_LIMIT = 1e7  # parameters x samples of a batch up to which a CPU block goes batched
BATCHED_BYTES = 2**28  # and kept-graph bytes x block size up to which a block goes batched


def _batched_backward(problem: Problem, b: int) -> bool:
    """Whether a block goes through the kept graph in one batched (vmapped) backward pass.

    On a GPU always. On a CPU only for small problems, where the per-call overhead of a
    backward pass dominates: measured per vector in blocks of 5-32, batched / one by one is
    0.8 on the digits MLP (1.2e6 parameter-samples) but 1.3-1.6 on a 52k-parameter CNN over
    1,024 samples and a 0.5M-parameter MLP over 512 (vmap's batched kernels lose to plain ones).
    """
    if problem.device.type != "cpu":
        return True
    return problem.n_params * problem.sizes[b] <= BATCHED_CPU_LIMIT


GRAD_OUTPUTS_FROM = 2**22  # parameters from which v goes in as autograd's output gradient


def _double_backward(g: Tensor, theta: Tensor, v: Tensor, batched: bool = False) -> Tensor:
    """``d(g . v) / d theta`` through the kept graph of ``g`` (``v [P]``, or ``[K, P]`` batched).

    One vector of a small model goes through the scalar ``g . v``; from ``GRAD_OUTPUTS_FROM``
    parameters on, and for a batched block, ``v`` is passed as the output gradient (as a plain
    double backward does): the dot and its backward are two more passes over ``P`` per product
    (GPT-2 small: about 0.2 of a 3.8 s product). Output gradients go to autograd's engine by
    ``_grad_with_outputs``, which skips the import of sympy that ``autograd.grad`` pays for them.
    """
    if batched or v.numel() >= GRAD_OUTPUTS_FROM:
        return _grad_with_outputs(g, theta, v, batched)
    return torch.autograd.grad(g @ v, theta, retain_graph=True, allow_unused=True,
                               materialize_grads=True)[0]


def _grad_with_outputs(out: Tensor, x: Tensor, grad: Tensor, batched: bool) -> Tensor:
    """``torch.autograd.grad(out, x, grad, retain_graph=True, is_grads_batched=batched,
    allow_unused=True, materialize_grads=True)[0]``, the same calls without its shape check.

    That check (``torch.autograd._make_grads``) imports ``torch.fx.experimental.symbolic_shapes``
    and with it sympy and mpmath the first time a tensor of output gradients is given: 0.3 CPU s
    of a short run's process (the whole-process benchmark). Here the shape is checked by hand
    and the engine called as ``autograd.grad`` calls it (vmapped over the block's first
    dimension when batched), so the products are bit for bit the same. Where torch lacks the
    private entry points, ``autograd.grad`` itself runs.
    """
    try:
        from torch._vmap_internals import _vmap
        from torch.autograd.graph import _engine_run_backward
    except ImportError:  # another torch: the public call, sympy and all
        return torch.autograd.grad(out, x, grad, retain_graph=True, is_grads_batched=batched,
                                   allow_unused=True, materialize_grads=True)[0]
    if tuple(grad.shape[int(batched):]) != tuple(out.shape) or grad.dtype != out.dtype:
        raise RuntimeError(f"output gradient {tuple(grad.shape)} {grad.dtype} does not match the "
                           f"output {tuple(out.shape)} {out.dtype}")

    def vjp(gO: Tensor):
        return _engine_run_backward((out,), (gO,), True, False, (x,), True, accumulate_grad=False)

    res = (_vmap(vjp, 0, 0, allow_none_pass_through=True) if batched else vjp)(grad)[0]
    if res is None:  # x does not reach out
        return torch.zeros((*grad.shape[:1], *x.shape) if batched else x.shape, dtype=x.dtype,
                           device=x.device)
    return res


class GGNOperator(_CurvatureOperator):
    """``G = sum_b (n_b/N) J_b^T H_b^out J_b``, with ``J_b = d f(X_b) / d theta``.

    ``H_b^out`` is the Hessian of the batch-mean loss in the outputs, so ``G`` is positive
    semi-definite for convex losses (cross-entropy, mse) and equals ``H`` for a linear model.
    """

    name = "ggn"

    def _parts(self, b: int):
        p = self.problem
        X, y = p.batches[b]

        def f(theta: Tensor) -> Tensor:
            return p.outputs(theta, X, b)

        out, pullback = vjp(f, p.theta)
        out_grad = grad(lambda o: p.output_loss(o, y))
        return f, out, pullback, out_grad

    def _product(self, b: int, V: Tensor) -> Tensor:
        p = self.problem
        f, out, pullback, out_grad = self._parts(b)

        def ggnvp(v: Tensor) -> Tensor:  # v [P] -> J^T H_out J v [P]
            Jv = jvp(f, (p.theta,), (v,))[1]
            HJv = jvp(out_grad, (out,), (Jv,))[1]
            return pullback(HJv)[0]

        return vmap(ggnvp, in_dims=1, out_dims=1, randomness=p.randomness)(V)

    def _linear_map(self, b: int):
        f, out, pullback, out_grad = self._parts(b)
        J = _linearize(f, self.problem.theta)  # v [P] -> J v [outputs]
        H_out = _linearize(out_grad, out.detach())  # u [outputs] -> H_out u

        def ggnvp(v: Tensor) -> Tensor:
            return pullback(H_out(J(v)))[0]

        return ggnvp


def curvature_operator(
    problem: Problem, curvature: str, block_size: int = 16, cache: bool | str = "auto"
) -> LinearOperator:
    """The ``hessian`` or ``ggn`` operator of a problem (see the module docstring for ``cache``)."""
    from condlab.errors import UsageError

    ops = {"hessian": HessianOperator, "ggn": GGNOperator}
    if curvature not in ops:
        raise UsageError(f"unknown curvature {curvature!r}; choose one of {', '.join(CURVATURES)}")
    return ops[curvature](problem, block_size=block_size, cache=cache)
