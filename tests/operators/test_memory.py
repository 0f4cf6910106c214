"""The memory plan: right-sized bases and blocks, refusal before work, caps read from the
machine, probes that do not depend on the block size, and no raw allocator error."""

import resource

import pytest
import torch

import condlab
from condlab import memory
from condlab.errors import CondlabError, UsageError
from condlab.estimators import eigs as eigs_mod
from condlab.estimators import extreme_eigenpairs, hutchinson, hutchpp, slq_density
from condlab.operators.base import LinearOperator
from condlab.operators.curvature import HessianOperator


class Fake(LinearOperator):
    """A dense symmetric matrix whose products report a fixed graph and per-vector cost."""

    def __init__(self, M, graph=0, per_vec=None, block_size=16):
        super().__init__(M.shape[0], M.dtype, M.device)
        self.M, self.graph, self.block_size = M, graph, block_size
        self.per_vec = per_vec if per_vec is not None else 2 * M.shape[0] * M.element_size()

    def _matmat(self, V):
        return self.M @ V

    def memory_profile(self):
        return self.graph, self.per_vec, 0


def spectrum_matrix(P=120, seed=0):
    """Indefinite, with a repeated eigenvalue and a null space; float64."""
    g = torch.Generator().manual_seed(seed)
    evals = torch.cat([torch.tensor([9.0, 7.0, 7.0, -5.0]), torch.zeros(10),
                       torch.linspace(-1, 3, P - 14, dtype=torch.float64)]).double()
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    return (Q * evals) @ Q.T, evals.sort(descending=True).values


def budget(nbytes):
    return memory.Budget(int(nbytes), "fake device", {"fake device": int(nbytes)})


# -- sizing ---------------------------------------------------------------------------------------
def test_the_basis_is_sized_to_the_memory_and_still_finds_the_eigenvalues():
    M, evals = spectrum_matrix()
    P, vec = M.shape[0], M.shape[0] * 8
    A = Fake(M)
    roomy = memory.plan(A, top=2, bottom=0, budget=budget(10**9))
    assert roomy.max_basis == min(P, memory.default_max_basis(P, 2, 2, 8))
    # room for the working vectors and 12 basis columns: the plan takes 12, not the default
    step = max(2 * (A.per_vec + 2 * vec), (4 * 2 + 2) * vec)  # a block's product or its CGS
    end = 4 * 2 * vec + 2 * (A.per_vec + vec)  # the Ritz vectors' check, beside the basis
    fixed = max(step, end)
    nbytes = (fixed + 12 * vec + vec // 2) / (1 - memory.HEADROOM)
    small = memory.plan(A, top=2, bottom=0, budget=budget(nbytes))
    assert small.max_basis == 12 and small.basis_bytes == 12 * vec
    assert small.max_basis < roomy.max_basis and small.need_bytes <= nbytes
    r = extreme_eigenpairs(A, top=2, bottom=0, tol=1e-8, max_basis=small.max_basis,
                           max_matvecs=3000)
    assert r.converged and r.max_basis == 12 and r.restarts > 0
    assert torch.allclose(r.eigenvalues_top, evals[:2], atol=1e-6)


def test_a_run_that_cannot_fit_is_refused_before_any_product():
    M, _ = spectrum_matrix()
    A = Fake(M)
    vec = 120 * 8
    # top-1 with a block of 2: the Ritz vector and its check (7 vectors) fit, the smallest
    # basis (5 columns beside those 7) does not
    with pytest.raises(memory.MemoryRefused, match="smallest Lanczos basis") as e:
        memory.plan(A, top=1, bottom=0, block_size=2,
                    budget=budget(10 * vec / (1 - memory.HEADROOM)))
    assert "lower --top/--bottom" in str(e.value) and "\n" not in str(e.value)
    assert memory.plan(A, top=1, bottom=0, block_size=2,
                       budget=budget(15.5 * vec / (1 - memory.HEADROOM))).max_basis == 5
    # at the defaults two-pass Lanczos (no basis: 6 vectors here) fits where no basis does
    lean = memory.plan(A, top=1, bottom=0, budget=budget(10 * vec / (1 - memory.HEADROOM)))
    assert lean.krylov == "two-pass" and lean.basis_bytes == 0
    with pytest.raises(memory.MemoryRefused, match="does not fit"):
        memory.plan(A, top=1, bottom=0, budget=budget(5 * vec / (1 - memory.HEADROOM)))
    with pytest.raises(memory.MemoryRefused, match="Ritz vectors"):
        memory.plan(A, top=3, bottom=2, budget=budget(10 * vec))
    with pytest.raises(memory.MemoryRefused, match="lower --max-basis to"):
        memory.plan(A, top=1, bottom=0, max_basis=100, budget=budget(8 * 120 * 40))
    # a graph larger than the memory: the product itself does not fit, the fix is the batch
    with pytest.raises(memory.MemoryRefused, match="--batch-size"):
        memory.plan(Fake(M, graph=10**9), top=1, bottom=0, budget=budget(10**8))
    assert A.matvecs == 0


def test_hutchpp_sketch_and_density_steps_are_refused_with_their_fix():
    M, _ = spectrum_matrix()
    vec = 120 * 8
    with pytest.raises(memory.MemoryRefused, match="--trace-method hutchinson"):
        memory.plan(Fake(M), trace_probes=300, trace_method="hutch++", budget=budget(60 * vec))
    p = memory.plan(Fake(M), trace_probes=300, trace_method="hutchinson", budget=budget(60 * vec))
    assert 1 <= p.probe_block <= 16
    with pytest.raises(memory.MemoryRefused, match="lower --density-steps to"):
        memory.plan(Fake(M), density_probes=4, density_steps=100, budget=budget(60 * vec))


def test_the_product_block_is_lowered_to_what_fits():
    M, _ = spectrum_matrix()
    vec = 120 * 8
    A = Fake(M, per_vec=10 * vec, block_size=16)
    p = memory.plan(A, trace_probes=10, budget=budget(40 * vec / (1 - memory.HEADROOM)))
    assert p.product_block == 40 // 12 and p.probe_block <= p.product_block


def test_measure_refuses_before_work_with_a_fake_device(monkeypatch, tiny_problem):
    H = HessianOperator(tiny_problem)
    monkeypatch.setattr(memory, "available", lambda device, limit=None: budget(2000))
    s = condlab.EstimatorSettings(top=1, bottom=0, tol=1e-6)
    with pytest.raises(UsageError, match="does not fit in memory"):
        condlab.measure(H, s)
    assert H.matvecs == 0


def test_measure_records_the_plan(tiny_problem):
    H = HessianOperator(tiny_problem)
    s = condlab.EstimatorSettings(top=2, bottom=1, tol=1e-6, trace=True, probes=12)
    r = condlab.measure(H, s).result
    plan = r.details["memory_plan"]
    assert plan["max_basis"] >= 7 and plan["probe_block"] >= 1
    # batch 0's graph is built and measured by the plan, batch 1's is still to come
    assert plan["graph_held_bytes"] > 0 and plan["graph_bytes"] > 0
    assert plan["vector_bytes"] == H.shape[0] * 8


def test_memory_limit_option_sizes_the_basis(tiny_problem):
    H = HessianOperator(tiny_problem)
    held = memory._held(torch.device("cpu"))
    s = condlab.EstimatorSettings(top=1, bottom=0, tol=1e-6, memory_limit=str(held + 10**9))
    r = condlab.measure(H, s).result
    assert r.details["memory_plan"]["limited_by"] in ("--memory-limit", "MemAvailable",
                                                      "RLIMIT_AS (ulimit -v)") or "cgroup" in \
        r.details["memory_plan"]["limited_by"]
    with pytest.raises(UsageError, match="does not fit"):
        condlab.measure(H, condlab.EstimatorSettings(top=1, bottom=0, memory_limit="1M"))


@pytest.fixture
def tiny_problem():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    X = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    return condlab.Problem(model, [(X[:25], y[:25]), (X[25:], y[25:])], "cross-entropy",
                           dtype=torch.float64)


# -- without a plan: the library default fits too --------------------------------------------------
def test_default_basis_without_a_plan_fits_the_memory(monkeypatch):
    M, evals = spectrum_matrix()
    monkeypatch.setattr(memory, "available", lambda device, limit=None: budget(8 * 120 * 20))
    r = extreme_eigenpairs(M, top=1, bottom=0, tol=1e-8, max_matvecs=3000)
    assert r.max_basis <= 20 and r.converged
    assert abs(float(r.eigenvalues_top[0]) - 9.0) < 1e-6


def test_an_allocator_error_becomes_one_line_with_the_fix(monkeypatch):
    M, _ = spectrum_matrix()
    real_empty = torch.empty

    def failing_empty(*shape, **kw):
        if len(shape) == 2 and shape[1] == 120 and shape[0] > 4:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 995518464 bytes.")
        return real_empty(*shape, **kw)

    monkeypatch.setattr(torch, "empty", failing_empty)
    with pytest.raises(CondlabError, match=r"out of memory during the Lanczos basis .* --max-basis"):
        extreme_eigenpairs(M, top=1, bottom=0, max_basis=40)


def test_guard_passes_other_errors_and_converts_allocator_errors():
    with pytest.raises(CondlabError, match="out of memory during x; fix it"):
        with memory.guard("x", "fix it"):
            raise torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(ValueError):
        with memory.guard("x", "fix it"):
            raise ValueError("not memory")
    assert memory.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_product_out_of_memory_is_one_line(tiny_problem, monkeypatch):
    H = HessianOperator(tiny_problem)

    def boom(b, V):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    monkeypatch.setattr(H, "_batch_product", boom)
    with pytest.raises(CondlabError, match="out of memory during a curvature product"):
        H @ torch.ones(H.shape[0], 3, dtype=torch.float64)


# -- restarts without multi-column temporaries ----------------------------------------------------
def test_thick_restart_in_row_blocks_equals_the_product(monkeypatch):
    g = torch.Generator().manual_seed(1)
    P, k = 1000, 9
    V = torch.randn(12, P, generator=g, dtype=torch.float32).T  # [P, 12], columns contiguous
    S = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))[0]
    ritz = eigs_mod._Ritz(torch.arange(k, dtype=torch.float64), S,
                          torch.rand(k, generator=g, dtype=torch.float64))
    keep = torch.tensor([0, 3, 8])
    want = V[:, :k] @ S[:, keep].float()
    monkeypatch.setattr(eigs_mod, "RESTART_CHUNK_BYTES", 7 * k * 4)  # 7 rows per block
    H = torch.zeros(12, 12, dtype=torch.float64)
    C = torch.randn(k, 2, generator=g, dtype=torch.float64)
    C2, n = eigs_mod._thick_restart(V, H, C, ritz, keep, lock=0.0)
    assert n == 3 and V.dtype == torch.float32
    assert torch.allclose(V[:, :3], want, atol=1e-5)
    assert torch.allclose(C2, S[:, keep].T @ C)


# -- streamed probes ------------------------------------------------------------------------------
@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_trace_probes_are_the_same_whatever_the_block_size(dist):
    M, evals = spectrum_matrix()
    est = [hutchinson(M, 30, seed=3, block_size=b, distribution=dist).value for b in (1, 4, 30)]
    assert est[0] == pytest.approx(est[1], rel=1e-12) and est[0] == pytest.approx(est[2], rel=1e-12)
    runs = [hutchpp(M, 30, seed=3, block_size=b, distribution=dist) for b in (1, 7, 30)]
    pp = [r.value for r in runs]
    assert pp[0] == pytest.approx(pp[1], rel=1e-10) and pp[0] == pytest.approx(pp[2], rel=1e-10)
    assert abs(pp[0] - float(evals.sum())) <= 4 * runs[0].stderr  # still the trace


def test_probes_are_drawn_in_the_working_dtype_and_match_across_blocks():
    from condlab.estimators._matmat import ProbeStream

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = ProbeStream(500, g1, like=torch.empty(0), distribution="rademacher")
    b = ProbeStream(500, g2, like=torch.empty(0), distribution="rademacher")
    A, B = torch.cat([a.next(2), a.next(1), a.next(4)], 1), b.next(7)
    assert A.dtype == torch.float32 and torch.equal(A, B)
    assert set(A.unique().tolist()) == {-1.0, 1.0}
    assert B.T.is_contiguous()  # columns contiguous: a block is [P, k] without a transpose copy


def test_slq_is_the_same_whatever_the_probe_block():
    M, _ = spectrum_matrix()
    d1 = slq_density(M, num_probes=5, lanczos_steps=20, seed=2, probe_block=1)
    d5 = slq_density(M, num_probes=5, lanczos_steps=20, seed=2, probe_block=5)
    assert torch.allclose(d1.nodes, d5.nodes, atol=1e-10)
    assert torch.allclose(d1.weights, d5.weights, atol=1e-10)


# -- what the process may use ----------------------------------------------------------------------
def test_cgroup_v2_v1_and_rlimit_caps(monkeypatch):
    files = {
        "/proc/self/cgroup": "0::/job\n",
        "/sys/fs/cgroup/job/memory.max": "8000000000\n",
        "/sys/fs/cgroup/job/memory.current": "3000000000\n",
    }
    monkeypatch.setattr(memory, "_read", files.get)
    assert memory._cgroup_available() == (5 * 10**9, "cgroup v2 memory.max")
    files["/sys/fs/cgroup/job/memory.max"] = "max\n"
    assert memory._cgroup_available() is None
    files.clear()
    files.update({
        "/proc/self/cgroup": "4:memory:/docker/abc\n0::/\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "6000000000\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "1000000000\n",
    })
    assert memory._cgroup_available() == (5 * 10**9, "cgroup v1 memory.limit_in_bytes")
    files["/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"] = "9223372036854771712\n"
    assert memory._cgroup_available() is None

    monkeypatch.setattr(resource, "getrlimit", lambda r: (6 * 10**9, resource.RLIM_INFINITY))
    monkeypatch.setattr(memory, "_status_bytes", lambda key: 10**9 if key == "VmSize" else 5)
    assert memory._rlimit_available() == 5 * 10**9
    files.update({"/proc/meminfo": "MemTotal: 100 kB\nMemAvailable: 20000000 kB\n"})
    got = memory.available("cpu", memory_limit=3 * 10**9)
    assert got.source == "--memory-limit" and got.bytes == 3 * 10**9 - 5
    assert set(got.caps) == {"MemAvailable", "RLIMIT_AS (ulimit -v)", "--memory-limit"}


def test_parse_bytes():
    assert memory.parse_bytes("12G") == 12 * 10**9
    assert memory.parse_bytes("1.5GiB") == int(1.5 * 2**30)
    assert memory.parse_bytes("6e9") == 6 * 10**9
    assert memory.parse_bytes("500MB") == 5 * 10**8
    with pytest.raises(UsageError, match="not a size"):
        memory.parse_bytes("lots")
    with pytest.raises(UsageError, match="> 0"):
        memory.parse_bytes("0")


def test_the_problem_keeps_one_copy_of_the_weights():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    X, y = torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g)
    problem = condlab.Problem(model, [(X, y)], "cross-entropy", dtype=torch.float32)
    theta = problem.theta
    start, end = theta.data_ptr(), theta.data_ptr() + theta.numel() * theta.element_size()
    for p in problem.model.parameters():  # the private copy's weights are views of theta
        assert start <= p.data_ptr() < end
    for p in model.parameters():  # the user's model is left alone
        assert not start <= p.data_ptr() < end
    plain = torch.nn.functional.cross_entropy(model(X), y)
    assert float(problem.loss().detach()) == pytest.approx(float(plain.detach()), rel=1e-6)


def test_the_debug_hint_is_a_command_that_works(monkeypatch):
    from condlab.cli_common import debug_command

    monkeypatch.setattr("sys.argv", ["condlab", "spectrum", "ck pt.pt", "--top", "1", "--debug"])
    assert debug_command() == "condlab --debug spectrum 'ck pt.pt' --top 1"


@pytest.mark.parametrize("reach", [0, 10**12])
def test_products_match_the_dense_hessian_whether_graphs_are_kept_or_not(monkeypatch, reach):
    """Under a cap too small for any kept graph every product is recomputed; with room they
    are kept; either way the products and the plan's blocks give the dense Hessian's."""
    from cases import autograd_hessian, make_case

    model, X, y, loss, _ = make_case("residual-layernorm-ce", n=12)
    monkeypatch.setattr(memory, "_held", lambda device: 0)
    monkeypatch.setattr(memory, "available", lambda device, limit=None: budget(reach))
    problem = condlab.Problem(model, [(X[:5], y[:5]), (X[5:], y[5:])], loss, dtype=torch.float64)
    H = HessianOperator(problem, block_size=3)
    dense = autograd_hessian(model, X, y, loss)
    V = torch.randn(H.shape[0], 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(H @ V, dense @ V, atol=1e-10)
    assert H.cache == (reach > 0)
    assert torch.allclose(H @ V[:, :1], dense @ V[:, :1], atol=1e-10)


def test_blocks_are_not_hoarded_where_they_buy_nothing():
    M, _ = spectrum_matrix()
    A = Fake(M)
    assert memory.plan(A, trace_probes=10, budget=budget(10**9)).probe_block == 10
    A.batches_columns = False  # products go column by column: a probe block only holds memory
    assert memory.plan(A, trace_probes=10, budget=budget(10**9)).probe_block == 1
    # SLQ runs recurrences together only while their bases fit slq_density's 1 GiB
    p = memory.plan(A, density_probes=8, density_steps=100, budget=budget(10**12))
    assert p.density_block == 8
    big = Fake(torch.zeros(1, 1, dtype=torch.float64))
    big.shape = (2**24, 2**24)  # 128 MiB vectors: 100 steps = 13 GiB per recurrence
    p = memory.plan(big, density_probes=8, density_steps=100, budget=budget(10**12))
    assert p.density_block == 1


@pytest.mark.parametrize("from_params", [1, 2**40])
def test_a_column_product_with_or_without_the_dot_matches_the_dense_hessian(monkeypatch,
                                                                             from_params):
    """Large models pass v as autograd's output gradient, small ones go through g . v."""
    from cases import autograd_hessian, make_case

    from condlab.operators import curvature

    monkeypatch.setattr(curvature, "GRAD_OUTPUTS_FROM", from_params)
    model, X, y, loss, _ = make_case("residual-layernorm-ce", n=10)
    problem = condlab.Problem(model, [(X, y)], loss, dtype=torch.float64)
    H = HessianOperator(problem, block_size=1)
    V = torch.randn(H.shape[0], 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(H @ V, autograd_hessian(model, X, y, loss) @ V, atol=1e-10)


# -- the Krylov working vectors --------------------------------------------------------------------
def _old_orthonormal(V, W, anorm, eps):
    """The QR-and-SVD orthonormalization the in-place paths replace (full-rank case)."""
    Qw, Rw = torch.linalg.qr(W)
    U, sig, Zt = torch.linalg.svd(Rw.to("cpu", torch.float64))
    return Qw @ U.to(Qw.dtype), sig[:, None] * Zt


@pytest.mark.parametrize("n", [1, 3])
def test_orthonormalization_in_place_equals_qr_and_svd(n):
    g = torch.Generator().manual_seed(2)
    P, k = 300, 7
    V = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=torch.float64))[0]
    W = torch.randn(P, n, generator=g, dtype=torch.float64)
    W -= V @ (V.T @ W)
    Q0, R0 = _old_orthonormal(V, W.clone(), 1.0, 2.2e-16)
    ptr = W.data_ptr()
    Q, R, lost = eigs_mod._orthonormal(V, W.clone() if n > 1 else W, 1.0, 2.2e-16, g, n, W)
    assert lost == 0 and Q.shape == (P, n)
    if n == 1:
        assert Q.data_ptr() == ptr  # normalized in place: no new vector
    # the same factorization up to the signs of the columns
    signs = torch.sign((Q.T @ Q0).diagonal())
    assert torch.allclose(Q * signs, Q0, atol=1e-12)
    assert torch.allclose(R * signs[:, None], R0, atol=1e-12)
    assert torch.allclose(Q.T @ Q, torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_a_dropped_column_is_replaced_by_a_fresh_orthogonal_one():
    g = torch.Generator().manual_seed(3)
    P, k = 200, 5
    V = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=torch.float64))[0]
    W = torch.zeros(P, 1, dtype=torch.float64)  # an invariant Krylov space: nothing new
    Q, R, lost = eigs_mod._orthonormal(V, W, 1.0, 2.2e-16, g, 1, V)
    assert lost == 1 and Q.shape == (P, 1) and float(R.abs().sum()) == 0.0
    assert float((V.T @ Q).abs().max()) < 1e-12
    assert float(torch.linalg.vector_norm(Q)) == pytest.approx(1.0, abs=1e-12)


def test_true_residuals_in_row_blocks_equal_the_whole_vectors(monkeypatch):
    g = torch.Generator().manual_seed(4)
    P = 1000
    Y = torch.randn(2, P, generator=g).T
    AY = torch.randn(P, 2, generator=g)
    theta = torch.tensor([2.0, -1.0])
    want = torch.linalg.vector_norm(AY - Y * theta, dim=0) / torch.linalg.vector_norm(Y, dim=0)
    monkeypatch.setattr(eigs_mod, "RESTART_CHUNK_BYTES", 7 * 2 * 4)
    got = eigs_mod._residual_norms(AY, Y, theta)
    assert torch.allclose(got, want.double(), rtol=1e-5)


def test_shared_weights_are_views_of_theta_and_leave_the_values(tiny_model_data):
    model, X, y = tiny_model_data
    before = [p.detach().clone() for p in model.parameters()]
    problem = condlab.Problem(model, [(X, y)], "cross-entropy", dtype=torch.float32,
                              share_weights=True)
    theta = problem.theta
    start, end = theta.data_ptr(), theta.data_ptr() + theta.numel() * theta.element_size()
    for p, b in zip(model.parameters(), before):  # the caller's weights: views, same values
        assert start <= p.data_ptr() < end and torch.equal(p.detach(), b)
    plain = torch.nn.functional.cross_entropy(model(X), y)
    assert float(problem.loss().detach()) == pytest.approx(float(plain.detach()), rel=1e-6)
    # a float64 Problem of a float32 model cannot share: the caller's weights stay apart
    p64 = condlab.Problem(torch.nn.Linear(4, 3), [(X, y)], "cross-entropy", dtype=torch.float64,
                          share_weights=True)
    assert p64.theta.dtype == torch.float64


@pytest.fixture
def tiny_model_data():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    X, y = torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g)
    return model, X, y


def test_the_memory_limit_option_reaches_the_graph_budget(tiny_problem, monkeypatch):
    """--memory-limit (EstimatorSettings.memory_limit) sets the kept-graph budget directly, with
    no CONDLAB_MEMORY_LIMIT in the environment."""
    from condlab.operators import curvature

    monkeypatch.delenv("CONDLAB_MEMORY_LIMIT", raising=False)
    seen = []
    real = curvature.graph_budget

    def spy(device, limit=None):
        seen.append(limit)
        return real(device, limit)

    monkeypatch.setattr(curvature, "graph_budget", spy)
    H = HessianOperator(tiny_problem)
    held = memory._held(torch.device("cpu"))
    limit = held + 10**9
    condlab.measure(H, condlab.EstimatorSettings(top=1, bottom=0, tol=1e-6,
                                                 memory_limit=str(limit)))
    assert seen and all(x == limit for x in seen)


def test_the_heap_is_released_only_for_large_vectors(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_libc", [lambda pad: calls.append(pad)])
    memory.release_heap(memory.RELEASE_FROM - 1)  # a small model: no trim per product
    assert calls == []
    memory.release_heap(memory.RELEASE_FROM)
    assert calls == [0]


@pytest.mark.parametrize("P", [2, 6, 12])
def test_a_small_operator_keeps_its_basis_not_two_pass(P):
    """A basis of at most 8 columns because the operator is small (not because memory is
    short) is the full-depth run, which certifies its ends exactly; two-pass Lanczos, whose
    vectors lose orthogonality, certified nothing on the one-feature regression (P = 2)."""
    g = torch.Generator().manual_seed(0)
    M = torch.randn(P, P, generator=g, dtype=torch.float64)
    p = memory.plan(Fake(M + M.T), top=1, bottom=1, budget=budget(10**10))
    assert p.krylov != "two-pass"


def test_a_non_finite_product_is_found_in_any_slice():
    from condlab.measure import _all_finite

    out = torch.ones(1000, 2)
    assert _all_finite(out, chunk=7)
    out[999, 1] = float("nan")
    assert not _all_finite(out, chunk=7)
    out[999, 1], out[3, 0] = 1.0, float("inf")
    assert not _all_finite(out, chunk=7)


def test_the_plan_charges_the_products_kept_beside_a_small_basis(monkeypatch):
    """extreme_eigenpairs keeps A V beside V where it is at most PRODUCTS_KEPT_BYTES: the plan
    counts those bytes in its peak, and not where they would not be kept."""
    M, _ = spectrum_matrix()
    p = memory.plan(Fake(M), top=2, bottom=1, budget=budget(10**10))
    assert p.krylov == "basis" and p.products_kept_bytes == p.basis_bytes > 0
    monkeypatch.setattr(memory, "PRODUCTS_KEPT_BYTES", 0)
    q = memory.plan(Fake(M), top=2, bottom=1, budget=budget(10**10))
    assert q.products_kept_bytes == 0 and p.need_bytes - q.need_bytes == p.basis_bytes
    vbytes = p.basis_bytes // p.max_basis  # a cap between: the basis' first columns are kept
    monkeypatch.setattr(memory, "PRODUCTS_KEPT_BYTES", 7 * vbytes + vbytes // 2)
    assert p.max_basis > 7 and memory.PRODUCTS_KEPT_MIN_COLUMNS > 7  # too few to keep
    assert memory.plan(Fake(M), top=2, bottom=1, budget=budget(10**10)).products_kept_bytes == 0
    monkeypatch.setattr(memory, "PRODUCTS_KEPT_MIN_COLUMNS", 4)
    r = memory.plan(Fake(M), top=2, bottom=1, budget=budget(10**10))
    assert r.products_kept_bytes == 7 * vbytes < r.basis_bytes
    assert r.need_bytes - q.need_bytes == 7 * vbytes
    monkeypatch.setattr(memory, "PRODUCTS_KEPT_MIN_COLUMNS", 1)
    monkeypatch.setattr(memory, "PRODUCTS_KEPT_BYTES", 3 * vbytes)  # no more than the list
    assert memory.plan(Fake(M), top=2, bottom=1, budget=budget(10**10)).products_kept_bytes == 0


def test_the_plan_says_when_a_top_list_is_verified_and_the_run_agrees():
    """The plan names the verified single-vector list exactly where extreme_eigenpairs runs it
    (one rule, memory.verified_list): a top list on a CPU, not with a bottom list or a block
    size given."""
    M, _ = spectrum_matrix()
    A = Fake(M)
    for kw in (dict(top=3, bottom=0), dict(top=3, bottom=2), dict(top=3, bottom=0, block_size=3),
               dict(top=1, bottom=0, max_basis=40)):
        p = memory.plan(A, budget=budget(10**9), **kw)
        says = any("verified on the deflated operator" in n for n in p.notes)
        r = extreme_eigenpairs(A, tol=1e-8, max_matvecs=3000, **{"max_basis": p.max_basis, **kw})
        assert says == (r.strategy in ("verify", "fallback")), (kw, p.notes, r.strategy)
        assert says == (kw == dict(top=3, bottom=0))
