"""Every curvature operator against a dense float64 ground truth built independently.

The reference Hessian is ``torch.func`` reverse-over-reverse on ONE batch holding all the data
(written here, not condlab's code); the reference GGN is ``J^T H_out J`` with ``jacrev`` and
``hessian`` of the loss in the outputs. The operators under test use forward-over-reverse,
vmapped, summed over uneven batches.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacrev, vjp, vmap

from condlab.operators import GGNOperator, HessianOperator, curvature_operator
from condlab.problem import Problem
from tests.cases import CASES, autograd_hessian, make_case

UNEVEN = (4, 1, 3, 1)  # 9 samples in batches of different sizes


def _batches(X, y, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((X[start : start + s], y[start : start + s]))
        start += s
    return out


def _reference(model, X, y, loss, curvature, bn_mode="eval"):
    """Dense Hessian or GGN of the mean loss over all of X, one batch, written from scratch."""
    model = model.eval()
    if bn_mode == "batch":
        torch.func.replace_all_batch_norm_modules_(model)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.train()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())

    def f(th):
        parts = torch.split(th, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return functional_call(model, (params, buffers), (X,))

    def lossf(out):
        return F.cross_entropy(out, y) if loss == "cross-entropy" else F.mse_loss(out, y)

    if curvature == "hessian":
        _, pullback = vjp(grad(lambda th: lossf(f(th))), theta)
        return vmap(pullback)(torch.eye(theta.numel(), dtype=theta.dtype))[0]
    out = f(theta).detach()
    J = jacrev(f)(theta).reshape(out.numel(), -1)
    H_out = hessian(lossf)(out).reshape(out.numel(), out.numel())
    return J.T @ H_out @ J


@pytest.mark.parametrize("cache", [True, False], ids=["linearized", "direct"])
@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_dense_reference(case, curvature, cache):
    model, X, y, loss, kwargs = make_case(case)
    if kwargs.get("bn_mode") == "batch":
        # train-mode BatchNorm couples a batch: compare on one batch holding all the data
        batches = [(X, y)]
    else:
        batches = _batches(X, y, UNEVEN)
    problem = Problem(model, batches, loss, dtype=torch.float64, **kwargs)
    A = curvature_operator(problem, curvature, block_size=5, cache=cache).to_dense()
    ref = _reference(model, X, y, loss, curvature, kwargs.get("bn_mode", "eval"))
    assert A.shape == ref.shape
    torch.testing.assert_close(A, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(A, A.T, rtol=1e-10, atol=1e-12)


def test_uneven_batches_give_the_one_batch_operator():
    model, X, y, loss, _ = make_case("mlp-ce", n=9)
    one = HessianOperator(Problem(model, [(X, y)], loss, dtype=torch.float64)).to_dense()
    for sizes in [(4, 5), (8, 1), (2, 2, 2, 3), (1,) * 9]:
        p = Problem(model, _batches(X, y, sizes), loss, dtype=torch.float64)
        torch.testing.assert_close(HessianOperator(p).to_dense(), one, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            GGNOperator(p).to_dense(),
            GGNOperator(Problem(model, [(X, y)], loss, dtype=torch.float64)).to_dense(),
            rtol=1e-12,
            atol=1e-14,
        )


def test_equal_weighting_of_uneven_batches_would_be_wrong():
    """Guards the test above: averaging per-batch operators equally gives another matrix."""
    model, X, y, loss, _ = make_case("mlp-ce", n=9)
    full = HessianOperator(Problem(model, [(X, y)], loss, dtype=torch.float64)).to_dense()
    parts = [
        HessianOperator(Problem(model, [b], loss, dtype=torch.float64)).to_dense()
        for b in _batches(X, y, (8, 1))
    ]
    assert (sum(parts) / 2 - full).abs().max() > 1e-3


def test_ggn_equals_hessian_for_a_linear_model():
    model, X, y, loss, _ = make_case("linear-mse")
    p = Problem(model, _batches(X, y, UNEVEN), loss, dtype=torch.float64)
    torch.testing.assert_close(HessianOperator(p).to_dense(), GGNOperator(p).to_dense())


@pytest.mark.parametrize("limit", [0.0, float("inf")], ids=["column-by-column", "batched"])
@pytest.mark.parametrize("case", ["residual-layernorm-ce", "batchnorm-batch-ce", "cnn-ce"])
def test_kept_graph_blocks_match_the_dense_hessian_either_way(case, limit, monkeypatch):
    """A block goes through the kept gradient graph in one batched backward pass (GPU, small
    CPU problems) or one pass per column (larger CPU problems); both are the Hessian."""
    from condlab.operators import curvature

    monkeypatch.setattr(curvature, "BATCHED_CPU_LIMIT", limit)
    model, X, y, loss, kwargs = make_case(case)
    problem = Problem(model, [(X, y)], loss, dtype=torch.float64, **kwargs)
    assert curvature._batched_backward(problem, 0) is (limit > 0)
    A = HessianOperator(problem, block_size=7, cache=True).to_dense()
    ref = autograd_hessian(model, X, y, loss, train=kwargs.get("bn_mode") == "batch")
    torch.testing.assert_close(A, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["residual-layernorm-ce", "cnn-ce"])
def test_a_graph_whose_bytes_are_known_is_built_without_counting_and_is_the_same_hessian(
        case, monkeypatch):
    """``graph_bytes_each`` (a training loop's Tracker: the same model and batch, measured
    before) skips the saved-tensor hooks; the products are the dense Hessian's, bit for bit
    those of a counted graph, and the bytes and the batched-pass decision are the measured ones."""
    from condlab.operators import curvature

    model, X, y, loss, kwargs = make_case(case)
    problem = Problem(model, [(X, y)], loss, dtype=torch.float64, **kwargs)
    counted = HessianOperator(problem, block_size=7, cache=True)
    V = torch.randn(problem.n_params, 3, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    reference = counted @ V
    assert counted.graph_bytes > 0

    def refused():
        raise AssertionError("the graph's bytes were counted again")

    monkeypatch.setattr(curvature, "_SavedBytes", refused)
    quiet = HessianOperator(problem, block_size=7, cache=True)
    quiet.graph_bytes_each = counted.graph_bytes
    torch.testing.assert_close(quiet @ V, reference, rtol=0, atol=0)
    assert quiet.graph_bytes == counted.graph_bytes
    torch.testing.assert_close(quiet.to_dense(), autograd_hessian(model, X, y, loss),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(AssertionError, match="counted again"):  # the default still counts
        HessianOperator(problem, cache=True) @ V


@pytest.mark.parametrize("case", ["residual-layernorm-ce", "batchnorm-batch-ce", "cnn-ce"])
def test_output_gradients_through_the_engine_are_autograd_grad_bit_for_bit(case):
    """``_grad_with_outputs`` (the engine call ``autograd.grad`` makes, without the shape check
    that imports sympy) gives the very bits of ``autograd.grad``, batched and one vector at a
    time, and the columns are the dense Hessian's."""
    from condlab.operators import curvature

    model, X, y, loss, kwargs = make_case(case)
    problem = Problem(model, [(X, y)], loss, dtype=torch.float64, **kwargs)
    theta = problem.theta.detach().requires_grad_(True)
    g = torch.autograd.grad(problem.batch_loss(theta, 0), theta, create_graph=True)[0]
    V = torch.randn(5, theta.numel(), generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    ours = curvature._grad_with_outputs(g, theta, V, batched=True)
    theirs = torch.autograd.grad(g, theta, V, retain_graph=True, is_grads_batched=True)[0]
    assert torch.equal(ours, theirs)
    one = curvature._grad_with_outputs(g, theta, V[1], batched=False)
    assert torch.equal(one, torch.autograd.grad(g, theta, V[1], retain_graph=True)[0])
    ref = autograd_hessian(model, X, y, loss, train=kwargs.get("bn_mode") == "batch")
    torch.testing.assert_close(ours, V @ ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="does not match"):
        curvature._grad_with_outputs(g, theta, V[:, :-1], batched=True)


def test_output_gradients_fall_back_to_autograd_grad_without_the_private_engine(monkeypatch):
    """A torch without ``torch.autograd.graph._engine_run_backward`` gets ``autograd.grad``."""
    from condlab.operators import curvature

    model, X, y, loss, _ = make_case("mlp-ce")
    problem = Problem(model, [(X, y)], loss, dtype=torch.float64)
    theta = problem.theta.detach().requires_grad_(True)
    g = torch.autograd.grad(problem.batch_loss(theta, 0), theta, create_graph=True)[0]
    V = torch.randn(3, theta.numel(), generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    ours = curvature._grad_with_outputs(g, theta, V, batched=True)
    monkeypatch.delattr(torch.autograd.graph, "_engine_run_backward")
    assert torch.equal(curvature._grad_with_outputs(g, theta, V, batched=True), ours)
    torch.testing.assert_close(ours, V @ autograd_hessian(model, X, y, loss), rtol=1e-10,
                               atol=1e-12)


def test_kept_graphs_beyond_the_memory_budget_fall_back_to_direct_products(monkeypatch):
    """'auto' keeps the Hessian's gradient graphs while the bytes autograd saves for them fit
    the budget, whatever the parameter-sample count; past it, every product is recomputed."""
    from condlab.operators import curvature

    model, X, y, loss, kwargs = make_case("residual-layernorm-ce")
    problem = Problem(model, _batches(X, y, UNEVEN), loss, dtype=torch.float64, **kwargs)
    ref = autograd_hessian(model, X, y, loss)
    monkeypatch.setattr(curvature, "CACHE_LIMIT", 0)  # the GGN's rule; not the Hessian's
    kept = HessianOperator(problem)
    torch.testing.assert_close(kept.to_dense(), ref, rtol=1e-10, atol=1e-12)
    assert kept.cache and len(kept._maps) == len(UNEVEN) and kept.graph_bytes > 0
    monkeypatch.setattr(curvature, "GRAPH_FRACTION", 0.0)
    direct = HessianOperator(problem)
    torch.testing.assert_close(direct.to_dense(), ref, rtol=1e-10, atol=1e-12)
    assert not direct.cache and not direct._maps
    assert direct.block_size == 1  # not even one graph fits: recomputed one column at a time
    budget = 3.5 * kept.graph_bytes / len(UNEVEN)  # three graphs' worth
    monkeypatch.setattr(curvature, "graph_budget", lambda device, limit=None: int(budget))
    some = HessianOperator(problem, block_size=16)
    torch.testing.assert_close(some.to_dense(), ref, rtol=1e-10, atol=1e-12)
    assert not some.cache and some.block_size == 3


def test_block_size_and_single_vector_products_agree():
    model, X, y, loss, _ = make_case("residual-layernorm-ce")
    p = Problem(model, _batches(X, y, UNEVEN), loss, dtype=torch.float64)
    V = torch.randn(p.n_params, 7, dtype=torch.float64)
    a = HessianOperator(p, block_size=1) @ V
    b = HessianOperator(p, block_size=64) @ V
    c = torch.stack([HessianOperator(p) @ V[:, k] for k in range(7)], dim=1)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)


def test_products_are_deterministic_and_counted():
    model, X, y, loss, kwargs = make_case("batchnorm-batch-ce")
    p = Problem(model, [(X, y)], loss, dtype=torch.float64, **kwargs)
    op = HessianOperator(p)
    v = torch.randn(p.n_params, 3, dtype=torch.float64)
    assert torch.equal(op @ v, op @ v)
    assert op.matvecs == 6


def test_cached_and_direct_products_agree_and_cache_is_used():
    model, X, y, loss, _ = make_case("residual-layernorm-ce")
    p = Problem(model, _batches(X, y, UNEVEN), loss, dtype=torch.float64)
    V = torch.randn(p.n_params, 4, dtype=torch.float64)
    for cls in (HessianOperator, GGNOperator):
        cached, direct = cls(p, cache=True), cls(p, cache=False)
        torch.testing.assert_close(cached @ V, direct @ V, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(cached @ V, cached @ V, rtol=0, atol=0)
        assert len(cached._maps) == len(UNEVEN) and not direct._maps
    auto = GGNOperator(p)  # 'auto': direct products first, linearized after CACHE_AFTER
    assert auto.cache
    from condlab.operators.curvature import CACHE_AFTER

    auto @ torch.randn(p.n_params, CACHE_AFTER, dtype=torch.float64)
    assert not auto._maps
    reference = GGNOperator(p, cache=False) @ V
    torch.testing.assert_close(auto @ V, reference, rtol=1e-12, atol=1e-14)
    assert len(auto._maps) == len(UNEVEN)
    hessian = HessianOperator(p)  # 'auto': the gradient's graph is kept from the first product
    torch.testing.assert_close(hessian @ V[:, :1], HessianOperator(p, cache=False) @ V[:, :1])
    assert len(hessian._maps) == len(UNEVEN)


def test_fixed_dropout_masks_make_a_fixed_symmetric_operator():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(6, 2)
    ).double()
    X = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    on = Problem(model, [(X, y)], "cross-entropy", dtype=torch.float64, dropout_mode="fixed")
    off = Problem(model, [(X, y)], "cross-entropy", dtype=torch.float64)
    A, B = HessianOperator(on).to_dense(), HessianOperator(on).to_dense()
    assert not HessianOperator(on, cache=True).cache  # tracing would redraw the masks
    assert torch.equal(A, B)
    torch.testing.assert_close(A, A.T)
    assert (A - HessianOperator(off).to_dense()).abs().max() > 1e-6  # the masks do something
    assert on.modes == {"batchnorm": None, "dropout": "fixed"}


def test_restrict_gives_the_diagonal_block():
    model, X, y, loss, _ = make_case("mlp-ce")
    p = Problem(model, [(X, y)], loss, dtype=torch.float64)
    H = HessianOperator(p).to_dense()
    for name in p.spec.names:
        s = p.spec.slice(name)
        block = HessianOperator(p.restrict([name])).to_dense()
        torch.testing.assert_close(block, H[s, s])


def test_param_patterns_select_a_subset():
    model, X, y, loss, _ = make_case("mlp-ce")
    p = Problem(model, [(X, y)], loss, dtype=torch.float64, params=["2.*"])
    assert p.spec.names == ("2.weight", "2.bias")
    full = Problem(model, [(X, y)], loss, dtype=torch.float64)
    H = HessianOperator(full).to_dense()
    s = slice(full.spec.slice("2.weight").start, full.spec.slice("2.bias").stop)
    torch.testing.assert_close(HessianOperator(p).to_dense(), H[s, s])


def test_flatten_unflatten_round_trip():
    model, *_ = make_case("cnn-ce")
    from condlab.operators import select_params

    spec = select_params(model.named_parameters())
    theta = torch.randn(spec.size, dtype=torch.float64)
    assert torch.equal(spec.flatten(spec.unflatten(theta)), theta)
    assert spec.size == sum(p.numel() for p in model.parameters())
