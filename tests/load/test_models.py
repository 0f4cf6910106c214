"""Built-in models: shapes, torch.func compatibility, determinism, errors; import_factory."""

from __future__ import annotations

import sys
import uuid

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from condlab.errors import UsageError
from condlab.load.models import build_model, import_factory, list_models, resolve_model_spec

# (spec, input_shape, num_outputs): the cases every model test runs on.
CASES = [
    ({"name": "linear"}, (5,), 3),
    ({"name": "linear", "bias": False}, (2, 3), 1),
    ({"name": "mlp"}, (64,), 10),
    ({"name": "mlp", "widths": [6, 5], "activation": "relu", "norm": "batch"}, (4,), 3),
    ({"name": "mlp", "widths": [6], "activation": "gelu", "norm": "layer"}, (4,), 3),
    ({"name": "mlp", "widths": [6], "activation": "sigmoid", "dropout": 0.3}, (4,), 2),
    ({"name": "mlp", "widths": []}, (4,), 2),
    ({"name": "cnn", "channels": [3, 4]}, (64,), 10),
    ({"name": "cnn", "channels": [3], "norm": "batch"}, (2, 5, 5), 4),
    ({"name": "cnn", "channels": [3], "norm": "layer", "image_shape": [1, 3, 4]}, (12,), 2),
    ({"name": "cnn", "channels": [2]}, (4, 4), 3),
]
IDS = [f"{s['name']}-{i}" for i, (s, _, _) in enumerate(CASES)]


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    spec, shape, k = request.param
    model = build_model(spec, shape, k, seed=0).double()
    X = torch.randn(7, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(7) % k
    return spec, model, X, y, k


def test_forward_shape(case):
    _, model, X, _, k = case
    assert model(X).shape == (7, k)


def _loss(model, X, y):
    def f(params):
        return F.cross_entropy(functional_call(model, params, (X,)), y)

    return f


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_jvp_of_grad_matches_double_backward(case, mode):
    """forward-over-reverse HVP through functional_call == reverse-over-reverse autograd."""
    spec, model, X, y, _ = case
    if mode == "eval":
        model.eval()
    else:
        model.train()
        # BatchNorm updates running statistics in place; torch.func needs them removed.
        torch.func.replace_all_batch_norm_modules_(model)
        if spec.get("dropout"):
            model.eval()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    g = torch.Generator().manual_seed(2)
    v = {k: torch.randn(p.shape, dtype=p.dtype, generator=g) for k, p in params.items()}
    hvp = jvp(grad(_loss(model, X, y)), (params,), (v,))[1]

    leaves = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    value = _loss(model, X, y)(leaves)
    gs = torch.autograd.grad(value, list(leaves.values()), create_graph=True)
    dot = sum((gi * v[k]).sum() for gi, k in zip(gs, leaves, strict=True))
    ref = torch.autograd.grad(dot, list(leaves.values()), allow_unused=True)
    for (k, h), r in zip(hvp.items(), ref, strict=True):
        r = torch.zeros_like(h) if r is None else r
        torch.testing.assert_close(h, r, rtol=1e-9, atol=1e-12, msg=k)


def test_eval_forward_is_deterministic_and_seeded(case):
    spec, model, X, _, k = case
    model.eval()
    assert torch.equal(model(X), model(X))
    again = build_model(spec, tuple(X.shape[1:]), k, seed=0).double()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    other = build_model(spec, tuple(X.shape[1:]), k, seed=1).double()
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True))


def test_seed_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    build_model({"name": "mlp"}, (4,), 2, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_mlp_names_match_a_hand_written_sequential():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    model = build_model({"name": "mlp", "widths": [32]}, (64,), 10, seed=0)
    model.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(model(torch.ones(2, 64)), ref(torch.ones(2, 64)))


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_torch_sdpa(causal):
    spec = {"name": "transformer", "d_model": 8, "heads": 2, "layers": 1, "causal": causal}
    model = build_model(spec, (8,), 3, seed=0)
    attn = model.blocks[0].attn.double()
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    q, k, v = (t.reshape(3, 8, 2, 4).transpose(1, 2) for t in (q, k, v))
    att = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(attn(x), attn.proj(att.transpose(1, 2).reshape(3, 8, 8)))


@pytest.mark.parametrize("causal", [True, False])
def test_token_transformer_is_causal_or_bidirectional(causal):
    """A causal LM's logits at t < T-1 ignore token T-1; a bidirectional one's do not."""
    spec = {"name": "transformer", "d_model": 8, "layers": 2, "causal": causal}
    model = build_model(spec, (6,), 11, seed=0).double()
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(0))
    other = ids.clone()
    other[:, -1] = (ids[:, -1] + 1) % 11
    a, b = model(ids), model(other)
    assert a.shape == (4, 6, 11)
    assert torch.equal(a[:, :-1], b[:, :-1]) == causal
    assert not torch.equal(a[:, -1], b[:, -1])


def test_token_transformer_heads():
    tied = build_model({"name": "transformer", "vocab": 9}, (5,), 9, seed=0)
    assert tied.head is None and tied(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 9)
    n_tied = sum(p.numel() for p in tied.parameters())
    untied = build_model({"name": "transformer", "vocab": 9, "tied": False}, (5,), 9, seed=0)
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 16 * 9 + 9
    pooled = build_model({"name": "transformer", "vocab": 9, "pool": "mean", "tied": False}, (5,), 3)
    assert pooled(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 3)
    with pytest.raises(TypeError, match="integer token ids"):
        tied(torch.zeros(2, 5))


def test_list_models_names_and_descriptions():
    models = list_models()
    assert set(models) == {"linear", "mlp", "cnn", "transformer"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in models.values())


def test_resolve_fills_defaults():
    assert resolve_model_spec("mlp") == {
        "name": "mlp", "widths": [32], "activation": "tanh", "norm": "none", "norm_eps": 1e-5,
        "dropout": 0.0, "bias": True, "init": "random",
    }


@pytest.mark.parametrize(
    "spec, shape, needle",
    [
        ({"name": "resnet"}, (4,), "linear, mlp, cnn, transformer"),
        ({"name": "mlp", "depth": 3}, (4,), "'depth'"),
        ({"name": "mlp", "widths": "32"}, (4,), "widths"),
        ({"name": "mlp", "widths": [0]}, (4,), "widths"),
        ({"name": "mlp", "activation": "swish"}, (4,), "tanh, relu, gelu, sigmoid"),
        ({"name": "mlp", "norm": "group"}, (4,), "none, batch, layer"),
        ({"name": "mlp", "dropout": 1.5}, (4,), "dropout"),
        ({"name": "linear", "bias": "yes"}, (4,), "bias"),
        ({"name": "transformer", "layers": 1.5}, (4,), "layers"),
        ({"name": "cnn"}, (10,), "image_shape"),
        ({"name": "cnn", "image_shape": [1, 3, 3]}, (10,), "image_shape"),
        ({"name": "transformer", "d_model": 10, "heads": 3}, (64,), "heads=3"),
        ({"name": "transformer"}, (8, 8), "token ids of shape [N, T]"),
        ({"name": "transformer", "vocab": 5, "pool": "mean"}, (8,), "tied: false"),
        ({"name": "transformer", "max_len": 4}, (8,), "max_len=4"),
        ({"widths": [3]}, (4,), "'name'"),
    ],
)
def test_bad_specs_raise_usage_errors(spec, shape, needle):
    with pytest.raises(UsageError) as info:
        build_model(spec, shape, 2)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


# -- import_factory --------------------------------------------------------------------------
FACTORY = """
import torch.nn as nn

def make(width=3, out=2):
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, out))

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(x)

def not_a_module():
    return 42

def broken():
    raise ValueError("no weights here")
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"condlab_fac_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_import_factory_builds_with_kwargs_and_restores_sys_path(factory_module):
    before = list(sys.path)
    model = import_factory(f"{factory_module}:make", {"width": 5})
    assert model[0].out_features == 5
    assert sys.path == before
    assert isinstance(import_factory(f"{factory_module}:Net"), nn.Module)


def test_build_model_accepts_import_paths(factory_module):
    model = build_model({"name": f"{factory_module}:make", "out": 7}, (4,), 2, seed=0)
    assert model(torch.zeros(1, 4)).shape == (1, 7)


@pytest.mark.parametrize(
    "path, kwargs, needle",
    [
        ("no_colon_here", None, "package.module:factory"),
        ("a:b:c", None, "package.module:factory"),
        (":make", None, "package.module:factory"),
        ("condlab_missing_module_xyz:make", None, "cannot import 'condlab_missing_module_xyz'"),
        ("{mod}:nothing", None, "has no attribute 'nothing'"),
        ("{mod}:not_a_module", None, "returned a int, not a torch.nn.Module"),
        ("{mod}:make", {"depth": 2}, "rejected its arguments"),
        ("{mod}:broken", None, "raised ValueError: no weights here"),
    ],
)
def test_import_factory_errors(factory_module, path, kwargs, needle):
    with pytest.raises(UsageError) as info:
        import_factory(path.format(mod=factory_module), kwargs)
    assert needle in str(info.value)


def test_import_factory_reports_broken_modules(tmp_path, monkeypatch):
    name = f"condlab_bad_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="SyntaxError"):
        import_factory(f"{name}:f")
    assert str(tmp_path) not in sys.path


def test_model_sizes_are_small():
    """The default digits models stay tiny enough for dense float64 references."""
    sizes = {
        name: sum(p.numel() for p in build_model({"name": name}, (64,), 10).parameters())
        for name in list_models()
    }
    assert sizes["mlp"] == 64 * 32 + 32 + 32 * 10 + 10
    assert max(sizes.values()) < 10_000
