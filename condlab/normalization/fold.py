"""Input standardization folded into the first layer: the function is kept exactly.

For ``x' = (x - mu) / s`` (per feature, ``mu`` the mean and ``s`` the population std over the
dataset, as scikit-learn's StandardScaler) an affine first layer absorbs the inverse map::

    Linear:  W' = W diag(s),         b' = b + W mu
    Conv:    W'[o, c] = W[o, c] s_c,  b'_o = b_o + sum_c mu_c sum_k W[o, c, k]

"Feature" is what the first layer mixes: a column of a Linear (its last input axis, pooled over
any other axes such as tokens) and an input channel of a Conv (pooled over samples and space).
The layer may sit behind any parameter-free rearrangement of the input (Flatten, Unflatten, a
reshape): the rearrangement is traced with an index probe and the per-feature statistics are
mapped back to the raw input layout, so the caller standardizes raw ``X`` elementwise.

Exactness: exact up to rounding, except where the fold cannot reach, and then ``function_change``
says so. A zero-padded Conv would see padded zeros become ``-mu/s``; the folded layer therefore
pads channel ``c`` with the constant ``-mu_c / s_c`` (``ChannelPadConv*d``: same parameters, same
names, one buffer), which is the original zero padding expressed in standardized units.
Reflect/replicate/circular padding commutes with a per-channel affine map and needs nothing.
Constant features (``var <= N eps var + (N mu eps)^2``, scikit-learn's test) keep ``s = 1``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from condlab.errors import UsageError
from condlab.normalization.stats import Moments, chunks, features_last

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FIRST = (nn.Linear, *_CONVS)


class _Stop(Exception):
    pass


@dataclass(frozen=True, eq=False)
class Standardize:
    """``X -> (X - mu) / s`` elementwise over the raw sample shape, computed in float64 and
    returned in ``X``'s dtype (cast ``X`` to the run's dtype first)."""

    mu: Tensor  # [*sample_shape], float64
    s: Tensor  # [*sample_shape], float64, > 0

    def __call__(self, X: Tensor) -> Tensor:
        mu, s = self.mu.to(X.device), self.s.to(X.device)
        return ((X.double() - mu) / s).to(X.dtype)


class _ChannelPadMixin:
    """Pad input channel ``c`` with the constant ``pad_value[c]`` (not zero), then convolve."""

    def forward(self, x: Tensor) -> Tensor:
        pad = self.fold_padding
        border = F.pad(torch.zeros_like(x[:1, :1]), pad, value=1.0)  # [1, 1, *padded]: 1 on the rim
        value = self.pad_value.reshape(1, -1, *([1] * (x.ndim - 2)))
        return self._conv_forward(F.pad(x, pad) + border * value, self.weight, self.bias)


class ChannelPadConv1d(_ChannelPadMixin, nn.Conv1d):
    pass


class ChannelPadConv2d(_ChannelPadMixin, nn.Conv2d):
    pass


class ChannelPadConv3d(_ChannelPadMixin, nn.Conv3d):
    pass


_PAD_CLASSES = {
    nn.Conv1d: ChannelPadConv1d,
    nn.Conv2d: ChannelPadConv2d,
    nn.Conv3d: ChannelPadConv3d,
}


def _channel_padded(conv: nn.Module, value: Tensor) -> nn.Module:
    """The conv with padding 0 and an explicit per-channel constant padding of the same width."""
    base = next(b for b in type(conv).__mro__ if b in _PAD_CLASSES)
    new = _PAD_CLASSES[base](
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=0,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    new.load_state_dict(conv.state_dict())
    new.fold_padding = tuple(conv._reversed_padding_repeated_twice)
    new.register_buffer("pad_value", value.to(conv.weight))
    new.train(conv.training)
    return new


def find_first_layer(model: nn.Module, X: Tensor, name: str | None) -> str:
    """``name``, checked, or the first leaf module with parameters that runs on ``X``."""
    modules = dict(model.named_modules())
    if name is None:
        leaves = [
            (n, m)
            for n, m in modules.items()
            if not list(m.children()) and list(m.parameters(recurse=False))
        ]
        order: list[str] = []

        def stop(n):
            def hook(mod, args):
                order.append(n)
                raise _Stop

            return hook

        handles = [m.register_forward_pre_hook(stop(n)) for n, m in leaves]
        try:
            with torch.no_grad():
                model(X[:1])
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        if not order:
            raise UsageError("found no layer with parameters in the model; pass first_layer=NAME")
        name = order[0]
    if name not in modules:
        raise UsageError(
            f"the model has no module {name!r}; pass first_layer= one of its module names"
        )
    if not isinstance(modules[name], _FIRST):
        raise UsageError(
            f"input standardization folds into a first Linear or Conv layer, but {name!r} is a "
            f"{type(modules[name]).__name__}; pass first_layer= the layer that sees the input"
        )
    return name


def _layer_input(model: nn.Module, layer: nn.Module, X: Tensor) -> Tensor:
    """What ``layer`` receives when the model runs on ``X`` (the forward stops there)."""
    got: list[Tensor] = []

    def hook(mod, args):
        got.append(args[0].detach())
        raise _Stop

    h = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(X)
    except _Stop:
        pass
    finally:
        h.remove()
    if not got:
        raise UsageError(
            "the first layer never ran on the data; pass first_layer= the layer that sees the input"
        )
    return got[0]


def _index_map(model: nn.Module, name: str, X: Tensor) -> Tensor:
    """``idx [D_layer]``: the first layer's input is ``X.flatten(1)[:, idx]`` (checked on data)."""
    D = math.prod(X.shape[1:])
    probe_model = _double_copy(model)
    probe = torch.arange(D, dtype=torch.float64, device=X.device).reshape(1, *X.shape[1:])
    Z = _layer_input(probe_model, dict(probe_model.named_modules())[name], probe).reshape(-1)
    ok = torch.equal(Z, Z.round()) and bool(((Z >= 0) & (Z < D)).all())
    idx = Z.long() if ok else None
    if ok:
        sample = X[: min(len(X), 8)]
        real = _layer_input(model, dict(model.named_modules())[name], sample)
        ok = torch.equal(real.reshape(len(sample), -1), sample.reshape(len(sample), -1)[:, idx])
    if not ok:
        raise UsageError(
            f"layer {name or 'the model'!r} does not see a rearrangement of the raw input (a "
            "computation runs before it); pass first_layer= the layer that sees the input"
        )
    return idx


def _double_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()


def fold_input(
    model: nn.Module, name: str, X: Tensor
) -> tuple[nn.Module, Standardize, list[int], list[str]]:
    """Fold the standardization of ``X`` into layer ``name`` of ``model`` (modified in place).

    Returns the model (a new root only when the root itself was a padded Conv), the raw-layout
    transform, the constant features (Linear input columns or Conv input channels) and notes.
    """
    if not X.is_floating_point():
        raise UsageError("input standardization needs floating-point features, got integer data")
    layer = dict(model.named_modules())[name]
    is_conv = isinstance(layer, _CONVS)
    idx = _index_map(model, name, X)
    layer_shape = _layer_input(model, layer, X[:1]).shape[1:]
    axis = 1 if is_conv else -1
    stats = Moments()
    for Xc in chunks(X):
        Z = Xc.reshape(len(Xc), -1)[:, idx].reshape(len(Xc), *layer_shape)
        stats.update(features_last(Z, axis))
    mu, var = stats.mean_a, stats.var_a
    eps, n = torch.finfo(torch.float64).eps, stats.n
    constant = var <= n * eps * var + (n * mu.abs() * eps) ** 2
    s = torch.where(constant, torch.ones_like(var), var.sqrt())
    constant_idx = torch.nonzero(constant).flatten().tolist()

    # per-feature stats -> raw layout: each raw element belongs to one feature (or none)
    F_ = mu.numel()
    shape = [1] * len(layer_shape)
    shape[0 if is_conv else -1] = F_  # the feature axis of one sample
    feat = torch.arange(F_, device=X.device).reshape(shape).expand(layer_shape).reshape(-1)
    D = math.prod(X.shape[1:])
    raw_feat = torch.full((D,), -1, dtype=torch.long, device=X.device)
    raw_feat[idx] = feat
    if not torch.equal(raw_feat[idx], feat):
        raise UsageError(
            f"a raw input value reaches layer {name!r} as two different features; "
            "input standardization cannot be folded into it"
        )
    used = raw_feat >= 0
    mu_raw = torch.where(
        used, mu[raw_feat.clamp(min=0)], torch.zeros(D, dtype=torch.float64, device=X.device)
    )
    s_raw = torch.where(
        used, s[raw_feat.clamp(min=0)], torch.ones(D, dtype=torch.float64, device=X.device)
    )
    transform = Standardize(mu_raw.reshape(X.shape[1:]), s_raw.reshape(X.shape[1:]))

    label = repr(name) if name else "the model"
    unit = "channel(s)" if is_conv else "feature(s)"
    notes = [
        f"standardized {F_} input {unit} of {label} ({type(layer).__name__}) and folded "
        "the inverse map into it"
    ]
    if constant_idx:
        notes.append(f"constant input {unit} {constant_idx} centred, not scaled")
    # a mean below 1e-12 of the feature's RMS (centred data, up to rounding) needs no bias
    has_shift = bool((mu.abs() > 1e-12 * (var + mu**2).sqrt()).any())
    if has_shift and layer.bias is None:
        raise UsageError(
            f"{label} has no bias, so centring its inputs cannot be folded into it; "
            "build the model with a bias"
        )
    with torch.no_grad():
        W = layer.weight.double()
        if is_conv:
            out, ipg = W.shape[0], W.shape[1]
            ch = (
                torch.arange(out, device=W.device)[:, None] // (out // layer.groups)
            ) * ipg + torch.arange(ipg, device=W.device)[None, :]  # [out, in/groups] input channel
            ones = [1] * (W.ndim - 2)
            W_new = W * s[ch].reshape(out, ipg, *ones)
            shift = (W.flatten(2).sum(2) * mu[ch]).sum(1)
        else:
            W_new, shift = W * s, W @ mu
        layer.weight.copy_(W_new.to(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_((layer.bias.double() + shift).to(layer.bias))
    if (
        is_conv
        and layer.padding_mode == "zeros"
        and any(layer._reversed_padding_repeated_twice)
        and has_shift
    ):
        model = _replace(model, name, _channel_padded(layer, -mu / s))
        notes.append(
            f"{label} zero-pads: it now pads channel c with -mu_c/s_c, so the fold stays exact"
        )
    return model, transform, constant_idx, notes


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """``model`` with submodule ``name`` replaced (the new module itself if ``name`` is the root)."""
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model
