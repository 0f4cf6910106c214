"""The Problem: a model's mean loss as a pure function of a flat parameter vector.

    L(theta) = (1/n) sum_i loss(f(x_i; theta), y_i)
             = sum_b (n_b / n) * L_b(theta),   L_b the mean loss over batch b of count n_b.

Batches are fixed, in order, and weighted by the count their loss divides by (samples, or the
non-ignored tokens of a token-mean loss: see :mod:`condlab.losses`), so the curvature is that of
the mean loss over the whole dataset however the data are split. ``theta [P]`` holds the
selected parameters only; the others and all buffers are held fixed.

Inputs are a tensor, a dict of tensors (passed as keyword arguments) or a tuple (positional);
integer inputs (token ids) stay integers. The model may return a tensor, a dict or Hugging
Face ``ModelOutput`` (``output_key``, default ``logits``) or a tuple (its first element).

Normalization layers and dropout run in an explicit, recorded mode:

- ``bn_mode='eval'``: BatchNorm normalizes with its running statistics (a fixed affine map).
- A BatchNorm without running statistics (``track_running_stats=False``) always normalizes with
  batch statistics, as torch does in eval mode too; it couples samples under either mode.
- ``bn_mode='batch'``: BatchNorm normalizes with the statistics of each fixed batch, which couples
  the samples of a batch; the operator is still the exact curvature of the mean of the batch
  losses. Running statistics are neither used nor updated.
- ``dropout_mode='eval'``: dropout off. ``'fixed'``: dropout on, with one mask per batch drawn
  from ``seed`` and reused for every product, so that the operator is a fixed matrix.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import grad

from condlab.distributed import StreamedBatches, all_reduce_sum, raise_if_any
from condlab.errors import CondlabError, UsageError
from condlab.load.structure import batch_len, call_model, map_tensors, select_output
from condlab.losses import Loss, make_loss
from condlab.memory import release_heap, share_parameters
from condlab.params import ParamSpec, select_params
from condlab.problem_checks import check_problem
from condlab.problem_options import BN_MODES, DROPOUT_MODES, DTYPES, ProblemOptions  # noqa: F401

_BatchNorm = nn.modules.batchnorm._BatchNorm  # every BatchNorm flavour (lazy, sync included)
_CROSS_ENTROPIES = ("cross-entropy", "sequence-cross-entropy")
_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def differentiable_attention():
    """Attention kernels that every curvature product can differentiate through.

    The fused kernels of ``F.scaled_dot_product_attention`` (flash, memory-efficient, cuDNN) and
    ``nn.MultiheadAttention``'s inference fast path (``_native_multi_head_attention``) have
    neither forward-mode AD nor a double backward; the math backend is plain differentiable
    operations computing the same function. Every model call of a Problem runs under this.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (cuda when available)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return dev


def always_batch_statistics(model: nn.Module) -> bool:
    """Whether a BatchNorm has no running statistics (``track_running_stats=False``): torch then
    normalizes with the batch's statistics in eval mode too, whatever ``bn_mode`` says."""
    return any(
        isinstance(m, _BatchNorm) and m.running_mean is None and m.running_var is None
        for m in model.modules()
    )


def couples_samples(model: nn.Module, bn_mode: str, dropout_mode: str) -> bool:
    """Whether a batch's samples interact (BatchNorm on batch statistics, fixed dropout masks),
    so that the grouping into batches is part of the operator."""
    return (
        (bn_mode == "batch" and any(isinstance(m, _BatchNorm) for m in model.modules()))
        or always_batch_statistics(model)
        or (
            dropout_mode == "fixed"
            and any(isinstance(m, _DROPOUT_TYPES) and m.p > 0 for m in model.modules())
        )
    )


def make_problem(inputs, cfg, *, model: nn.Module | None = None, transform=None,
                 params: Sequence[str] | None = None, share_weights: bool = False) -> Problem:
    """The Problem of ``inputs`` (:class:`condlab.inputs.Inputs`) as ``cfg`` poses it, or of a
    replacement ``model`` on ``transform``-ed inputs (a normalized setting).

    Under torchrun it holds this rank's contiguous shard of the batches, weighted by the global
    sample count (see :mod:`condlab.distributed`).
    """
    from condlab.distributed import local_batches
    from condlab.load.data import make_batches

    model = inputs.model if model is None else model
    batches = make_batches(inputs.dataset, cfg.batch_size)
    if transform is not None:
        batches = [(transform(X), y) for X, y in batches]
    loss = inputs.loss_fn
    n_total = sum(batch_len(X) for X, _ in batches)
    count_total = sum(loss.count(y) for _, y in batches)
    coupled = couples_samples(model, cfg.bn_mode, cfg.dropout_mode)
    batches, first = local_batches(batches, coupled=coupled)
    return Problem(
        model, batches, loss, params=cfg.params if params is None else params,
        bn_mode=cfg.bn_mode, dropout_mode=cfg.dropout_mode, dtype=cfg.torch_dtype,
        device=cfg.device, seed=cfg.seed, n_total=n_total, count_total=count_total,
        batch_offset=first, output_key=cfg.output_key, share_weights=share_weights,
    )


class Problem:
    """A model, its loss and a dataset split into fixed batches, as functions of ``theta [P]``.

    The model is deep-copied, cast to ``dtype`` and moved to ``device``; the caller's model is
    never modified.

    ``share_weights`` (off by default): the caller's selected parameters become views of
    ``theta`` where their dtype and device are the Problem's, so the weights are held once
    instead of twice (0.5 GB at GPT-2 small). Their values do not change and condlab never
    writes ``theta``; but the parameters then share storage with the Problem, so changing them
    in place afterwards (an optimizer step) changes the Problem too, whose kept gradient graphs
    would then be stale. The CLI passes it for the models it loads itself.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[tuple[Tensor, Tensor]],
        loss: str | Loss,
        *,
        params: Sequence[str] | None = None,
        bn_mode: str = "eval",
        dropout_mode: str = "eval",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
        n_total: int | None = None,
        batch_offset: int = 0,
        count_total: int | None = None,
        output_key: str | None = None,
        share_weights: bool = False,
    ):
        if bn_mode not in BN_MODES:
            raise UsageError(f"unknown BatchNorm mode {bn_mode!r}; choose one of {', '.join(BN_MODES)}")
        if dropout_mode not in DROPOUT_MODES:
            raise UsageError(
                f"unknown dropout mode {dropout_mode!r}; choose one of {', '.join(DROPOUT_MODES)}"
            )
        if not batches and not n_total:  # a rank of a distributed run may hold no batches
            raise UsageError("the dataset is empty; pass data with at least one sample")
        self.loss_spec = loss if isinstance(loss, Loss) else make_loss(loss)
        self.loss_name = self.loss_spec.name
        self._loss = self.loss_spec.fn
        self.output_key = output_key
        self.device = resolve_device(device)
        self.dtype = dtype
        self.seed = int(seed)
        self.bn_mode, self.dropout_mode = bn_mode, dropout_mode
        self.model = self._prepare(model)
        self.spec: ParamSpec = select_params(self.model.named_parameters(), params)
        named = dict(self.model.named_parameters())
        self.theta = self.spec.flatten({n: named[n].detach() for n in self.spec.names})
        share_parameters(self.model, self.spec, self.theta)  # the copy's weights: views of theta
        if share_weights:  # and the caller's, where it asked (see the class docstring)
            share_parameters(model, self.spec, self.theta, partial=True)
        release_heap(self.theta.numel() * self.theta.element_size())  # the copy's old weights
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.spec.names}
        self.fixed.update({n: b.detach() for n, b in self.model.named_buffers()})
        try:
            host, error = [self._cast_batch(X, y) for X, y in batches], None
        except CondlabError as e:
            host, error = [], e
        raise_if_any(error)  # distributed: every rank raises, none waits in a collective
        # batches stay where they were given (the host) and move to the device one at a time
        self.batches = StreamedBatches(host, self.device)
        self.batch_offset = int(batch_offset)  # global index of batch 0 (a rank's shard)
        self.sizes = [batch_len(X) for X, _ in host]
        self.counts = [self.loss_spec.count(y) for _, y in host]
        # n_total, count_total: samples and loss counts over all ranks of a distributed run
        # (this rank holds a shard)
        self.n_samples = int(n_total) if n_total is not None else sum(self.sizes)
        if count_total is not None:
            self.n_count = int(count_total)
        elif self.loss_spec.weighting == "samples":  # a sample mean's count is the sample count
            self.n_count = self.n_samples
        else:  # a sharded token-weighted loss must be given count_total (all ranks' count)
            self.n_count = sum(self.counts)
        if self.n_count <= 0 and self.batches:
            raise UsageError(
                f"every target equals the ignore index {self.loss_spec.ignore_index}: there is "
                "nothing to measure; check --ignore-index and the targets"
            )
        self.weights = [n / self.n_count for n in self.counts]
        self.randomness = "same" if self.uses_dropout else "error"
        # a batch's samples interact: per-sample computations must go through whole batches
        self.couples_samples = couples_samples(self.model, bn_mode, dropout_mode)
        check_problem(self)  # weights finite, outputs fit the loss, labels in range

    # -- setup ---------------------------------------------------------------------------------
    def _prepare(self, model: nn.Module) -> nn.Module:
        model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        model.eval()
        self.has_batchnorm = any(isinstance(m, _BatchNorm) for m in model.modules())
        self.batch_statistics = self.bn_mode == "batch" or always_batch_statistics(model)
        self.uses_dropout = self.dropout_mode == "fixed" and any(
            isinstance(m, _DROPOUT_TYPES) and m.p > 0 for m in model.modules()
        )
        if self.bn_mode == "batch" and self.has_batchnorm:
            torch.func.replace_all_batch_norm_modules_(model)
            for m in model.modules():
                if isinstance(m, _BatchNorm):
                    m.train()
        if self.uses_dropout:
            for m in model.modules():
                if isinstance(m, _DROPOUT_TYPES):
                    m.train()
        return model  # parameters with requires_grad=False stay fixed: not part of the operator

    def _cast_batch(self, X, y: Tensor) -> tuple:
        X = map_tensors(X, lambda t: t.to(self.dtype) if t.is_floating_point() else t)
        if not isinstance(X, (Tensor, dict, tuple)):
            X = torch.as_tensor(X)
            X = X.to(self.dtype) if X.is_floating_point() else X
        y = torch.as_tensor(y)
        if self.loss_name in _CROSS_ENTROPIES:
            if y.is_floating_point():
                if not torch.equal(y, y.round()):
                    raise UsageError(
                        f"{self.loss_name} needs integer class labels but y has fractional "
                        "values; use --loss mse for regression targets"
                    )
                y = y.long()
        elif y.is_floating_point():
            y = y.to(self.dtype)  # integer class labels stay: mse one-hot encodes them
        return X, y

    # -- functions of theta --------------------------------------------------------------------
    def _rng(self, batch_index: int):
        """Dropout masks drawn from a fixed seed per batch, so every product sees the same ones."""
        if not self.uses_dropout:
            return contextlib.nullcontext()
        return _seeded(self.seed * 1_000_003 + self.batch_offset + batch_index, self.device)

    def outputs(self, theta: Tensor, X, batch_index: int = 0) -> Tensor:
        """Model outputs on ``X`` with the selected parameters set to ``theta`` (the tensor the
        loss takes: see :func:`condlab.load.structure.select_output`)."""
        with self._rng(batch_index), differentiable_attention():
            out = call_model(self.model, (self.spec.unflatten(theta), self.fixed), X)
        return select_output(out, self.output_key)

    def output_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The batch-mean loss as a function of the model outputs."""
        return self._loss(out, y)

    def batch_loss(self, theta: Tensor, batch_index: int) -> Tensor:
        """``L_b(theta)``: the mean loss over batch ``b``."""
        X, y = self.batches[batch_index]
        return self._loss(self.outputs(theta, X, batch_index), y)

    def loss(self, theta: Tensor | None = None, first_outputs: Tensor | None = None) -> Tensor:
        """``L(theta)``: the mean loss over all samples. ``first_outputs``: the model's outputs on
        batch 0 at ``theta``, where the caller has them (the checks: one forward pass less)."""
        theta = self.theta if theta is None else theta

        def batch(b: int) -> Tensor:
            if b == 0 and first_outputs is not None:
                return self._loss(first_outputs, self.batches[0][1])
            return self.batch_loss(theta, b)

        with torch.no_grad():
            local = sum(w * batch(b) for b, w in enumerate(self.weights))
            return all_reduce_sum(torch.as_tensor(local, dtype=self.dtype, device=self.device))

    def gradient(self, theta: Tensor | None = None) -> Tensor:
        """``grad L(theta) [P]``."""
        theta = self.theta if theta is None else theta
        g = torch.zeros_like(theta)
        for b, w in enumerate(self.weights):
            g += w * grad(self.batch_loss)(theta, b)
        return all_reduce_sum(g)

    # -- views -----------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return self.spec.size

    @property
    def modes(self) -> dict[str, str | None]:
        """How normalization and dropout ran: recorded with every result."""
        return {
            "batchnorm": ("batch" if self.batch_statistics else "eval") if self.has_batchnorm else None,
            "dropout": self.dropout_mode if self.uses_dropout else "eval",
        }

    def restrict(self, names: Sequence[str]) -> Problem:
        """The same problem over a subset of the parameters (a diagonal block of the curvature)."""
        sub = copy.copy(self)
        unknown = [n for n in names if n not in self.spec.names]
        if unknown:
            raise UsageError(f"unknown parameter(s) {', '.join(unknown)}")
        current = self.spec.unflatten(self.theta)
        sub.spec = ParamSpec(tuple(names), tuple(current[n].shape for n in names))
        sub.theta = sub.spec.flatten(current)
        sub.fixed = {**self.fixed, **{n: t for n, t in current.items() if n not in names}}
        return sub
