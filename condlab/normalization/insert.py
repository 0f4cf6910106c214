"""BatchNorm / LayerNorm inserted after each Linear or Conv that feeds a nonlinearity.

Targets are found in every ``nn.Sequential`` of the model (nested ones included): a Linear or
Conv at position i followed, possibly after Dropout/Identity, by an activation from
``ACTIVATIONS``. The norm goes right after the layer; in a Sequential with numeric keys the keys
are renumbered (``mlp`` with ``norm: batch`` then has the same parameter names as a model built
with BatchNorm), otherwise it is named ``<key>_norm``. Unrecognized containers are left alone.

``batch``: BatchNorm{1,2,3}d with ``running_mean = mean(z)``, ``running_var = var(z)`` (population,
over the dataset; per channel over samples and space for a Conv) and affine ``gamma = sqrt(var +
eps)``, ``beta = mean``, so that in eval mode ``BN(z) = z`` up to rounding. In train mode it
normalizes with each batch's statistics and keeps the function only where those equal the
dataset's.

``layer``: LayerNorm(F) after a Linear (over its last axis), GroupNorm(1, C) after a Conv
(normalizes over [C, *space] per sample, affine per channel, as ``cnn`` with ``norm: layer``).
It normalizes across units per sample and cannot keep the function in general. Its affine is the
per-unit least-squares fit of the original pre-activation on the normalized one over the data,
``gamma_j = cov(u_j, z_j) / var(u_j)``, ``beta_j = mean(z_j) - gamma_j mean(u_j)``, fitted layer by
layer in forward order against the original network's ``z`` (so later layers correct for earlier
ones). It is exact when every sample has the same mean and spread across units.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from condlab.errors import UsageError
from condlab.normalization.stats import Moments, capture, chunks, features_last

ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
)
PASSTHROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def find_targets(model: nn.Module) -> list[tuple[str, str]]:
    """``[(sequential name, key)]`` of each Linear/Conv whose output feeds an activation."""
    found = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq._modules.items())
        for i, (key, m) in enumerate(items):
            if not isinstance(m, LAYERS):
                continue
            j = i + 1
            while j < len(items) and isinstance(items[j][1], PASSTHROUGH):
                j += 1
            if j < len(items) and isinstance(items[j][1], ACTIVATIONS):
                found.append((seq_name, key))
    return found


def _insert(model: nn.Module, targets: list[tuple[str, str]], make: Callable) -> list[tuple]:
    """Insert ``make(layer)`` after each target; ``[(layer, norm, norm name)]`` in model order."""
    by_seq: dict[str, set[str]] = {}
    for seq_name, key in targets:
        by_seq.setdefault(seq_name, set()).add(key)
    inserted = []
    for seq_name, seq in list(model.named_modules()):
        if seq_name not in by_seq or not isinstance(seq, nn.Sequential):
            continue
        items = list(seq._modules.items())
        numeric = all(k.isdigit() for k, _ in items)
        new: OrderedDict[str, nn.Module] = OrderedDict()
        pending = []
        for key, m in items:
            new[str(len(new)) if numeric else key] = m
            if key in by_seq[seq_name]:
                norm = make(m)
                nkey = str(len(new)) if numeric else key + "_norm"
                while nkey in new or (not numeric and nkey in seq._modules):
                    nkey += "_"
                new[nkey] = norm
                pending.append((m, norm, _join(seq_name, nkey)))
        seq._modules.clear()
        seq._modules.update(new)
        inserted += pending
    return inserted


def _per_chunk(
    model: nn.Module, modules: Sequence[nn.Module], X: Tensor, inputs: bool = False
) -> Iterator[list[Tensor]]:
    """For each chunk of ``X``: what each module received (``inputs``) or returned."""
    # no_grad only around the forward, never across the yield: two of these generators run
    # interleaved (zip), and contexts held across yields restore grad mode out of order
    with capture(modules, inputs=inputs) as store:
        for Xc in chunks(X):
            with torch.no_grad():
                model(Xc)
            if any(len(s) != 1 for s in store):
                raise UsageError(
                    "a layer to normalize runs more or less than once per forward (shared "
                    "weights?); normalize a model whose layers run once"
                )
            yield [s[0] for s in store]
            for s in store:
                s.clear()


def _width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


_NONE_FOUND = (
    "found no Linear or Conv followed by an activation inside an nn.Sequential; insertion "
    "works on Sequential models (the built-in mlp and cnn)"
)


def batchnorm(old: nn.Module, new: nn.Module, X: Tensor, eps: float) -> tuple[list[str], list[str]]:
    """Insert BatchNorm after each target of ``new`` (a copy of ``old``): ``(names, notes)``."""
    targets = find_targets(new)
    if not targets:
        raise UsageError(_NONE_FOUND)
    old_modules = dict(old.named_modules())
    old_layers = [old_modules[_join(s, k)] for s, k in targets]
    stats = {id(new.get_submodule(_join(s, k))): Moments() for s, k in targets}
    for zs in _per_chunk(old, old_layers, X):
        for z, layer, st in zip(zs, old_layers, stats.values(), strict=True):
            if isinstance(layer, nn.Linear) and z.ndim != 2:
                raise UsageError(
                    f"BatchNorm after a Linear needs outputs [N, features], got {list(z.shape)}; "
                    "use --norm layer for sequence models"
                )
            st.update(features_last(z, 1))

    def make(layer):
        cls = nn.BatchNorm1d
        for base, bn in _BN.items():
            if isinstance(layer, base):
                cls = bn
        return cls(_width(layer), eps=eps, device=layer.weight.device, dtype=layer.weight.dtype)

    inserted = _insert(new, targets, make)
    notes = []
    for layer, bn, name in inserted:
        mean, var = stats[id(layer)].mean_a, stats[id(layer)].var_a
        dead = torch.nonzero(var == 0).flatten().tolist()
        if dead:
            notes.append(f"units {dead} before {name!r} are constant on the data")
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_((var + eps).sqrt())
            bn.bias.copy_(mean)
    names = [name for _, _, name in inserted]
    notes.insert(
        0, f"inserted BatchNorm (eps={eps:g}) at {', '.join(names)}, set to the data's statistics"
    )
    return names, notes


def _normalized(norm: nn.Module, z: Tensor) -> Tensor:
    """The norm's output before its affine, in float64."""
    z = z.double()
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(z, norm.normalized_shape, eps=norm.eps)
    return F.group_norm(z, norm.num_groups, eps=norm.eps)


def layernorm(old: nn.Module, new: nn.Module, X: Tensor, eps: float) -> tuple[list[str], list[str]]:
    """Insert LayerNorm / GroupNorm(1, C) after each target of ``new``, fitted to ``old``."""
    targets = find_targets(new)
    if not targets:
        raise UsageError(_NONE_FOUND)
    old_modules = dict(old.named_modules())
    old_layers = {id(new.get_submodule(_join(s, k))): old_modules[_join(s, k)] for s, k in targets}

    def make(layer):
        kw = {"eps": eps, "device": layer.weight.device, "dtype": layer.weight.dtype}
        if isinstance(layer, nn.Linear):
            return nn.LayerNorm(layer.out_features, **kw)
        return nn.GroupNorm(1, layer.out_channels, **kw)

    inserted = _insert(new, targets, make)
    order = _call_order(new, [norm for _, norm, _ in inserted], X[:1])
    for layer, norm, _ in sorted(inserted, key=lambda t: order.index(id(t[1]))):
        axis = -1 if isinstance(norm, nn.LayerNorm) else 1
        st = Moments()
        pairs = zip(
            _per_chunk(old, [old_layers[id(layer)]], X),
            _per_chunk(new, [norm], X, True),
            strict=True,
        )
        for (z_old,), (z_new,) in pairs:
            st.update(features_last(_normalized(norm, z_new), axis), features_last(z_old, axis))
        var_u = st.var_a
        gamma = torch.where(
            var_u > 1e-20, st.cov_ab / var_u.clamp(min=1e-20), torch.ones_like(var_u)
        )
        with torch.no_grad():
            norm.weight.copy_(gamma)
            norm.bias.copy_(st.mean_b - gamma * st.mean_a)
    names = [name for _, _, name in inserted]
    note = (
        f"inserted LayerNorm/GroupNorm(1) (eps={eps:g}) at {', '.join(names)}; affine fitted "
        "by least squares to the original pre-activations (the function changes)"
    )
    return names, [note]


def _call_order(model: nn.Module, modules: Sequence[nn.Module], X: Tensor) -> list[int]:
    """``id``s of ``modules`` in the order they run on ``X``."""
    order: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, a, o: order.append(id(mod))) for m in modules]
    try:
        with torch.no_grad():
            model(X)
    finally:
        for h in hooks:
            h.remove()
    return order + [id(m) for m in modules if id(m) not in order]
