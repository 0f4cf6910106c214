"""Two-pass Lanczos (condlab.estimators.lean) against prescribed spectra and dense Hessians:
the ends it lists, what it certifies, what it refuses to certify, and the memory plan's pick."""

import math

import pytest
import torch
from cases import autograd_hessian, make_case, spectral_matrix

import condlab
from condlab import memory
from condlab.estimators import extreme_eigenpairs, lean_extreme_eigenpairs
from condlab.operators.base import DenseOperator, LinearOperator


def indefinite(P=400, seed=0, dtype=torch.float64):
    """Indefinite, a 3-fold cluster just below lambda_max, a 3-fold lambda_min, a null space."""
    ev = torch.cat([torch.tensor([10.0, 9.99, 9.99, 9.99]), torch.zeros(20),
                    torch.linspace(-8, 8, P - 27, dtype=torch.float64),
                    torch.tensor([-9.5, -9.5, -9.5])]).double()
    return DenseOperator(spectral_matrix(ev, seed=seed).to(dtype)), ev.sort().values


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-3)])
@pytest.mark.parametrize("top,bottom", [(1, 0), (0, 1), (1, 1)])
def test_the_ends_match_the_dense_truth_and_are_certified(dtype, tol, top, bottom):
    A, ev = indefinite(dtype=dtype)
    r = lean_extreme_eigenpairs(A, top=top, bottom=bottom, tol=tol, max_matvecs=2000,
                                return_vectors=True)
    anorm = float(ev.abs().max())
    assert r.converged and r.residual_kind == "true" and r.block_size == 1
    for got, err, cert, truth, n in ((r.eigenvalues_top, r.errors_top, r.certified_top,
                                      float(ev[-1]), top),
                                     (r.eigenvalues_bottom, r.errors_bottom, r.certified_bottom,
                                      float(ev[0]), bottom)):
        if not n:
            continue
        assert cert and float(err[0]) <= tol * anorm
        assert abs(float(got[0]) - truth) <= float(err[0])  # the backed error holds
    # the returned vectors are unit Ritz vectors with the stated true residuals
    M = A.matrix.double()
    for Y, vals, res in ((r.vectors_top, r.eigenvalues_top, r.residuals_top),
                         (r.vectors_bottom, r.eigenvalues_bottom, r.residuals_bottom)):
        for j in range(Y.shape[1]):
            y = Y[:, j].double()
            true = float(torch.linalg.vector_norm(M @ y - float(vals[j]) * y))
            assert true == pytest.approx(float(res[j]), rel=0.05, abs=50 * torch.finfo(dtype).eps * anorm)


def test_same_values_as_the_basis_path_and_about_twice_its_products():
    A, ev = indefinite()
    lean = lean_extreme_eigenpairs(A, top=1, bottom=1, tol=1e-8, max_matvecs=3000)
    full = extreme_eigenpairs(A, top=1, bottom=1, tol=1e-8, max_matvecs=3000, block_size=1)
    assert float(lean.eigenvalues_top[0]) == pytest.approx(float(full.eigenvalues_top[0]), abs=1e-9)
    assert float(lean.eigenvalues_bottom[0]) == pytest.approx(
        float(full.eigenvalues_bottom[0]), abs=1e-9)
    assert lean.matvecs <= 3 * full.matvecs


def test_lost_orthogonality_is_reported_not_certified():
    """float32 at tol 2e-4 < 2 sqrt(eps): the converged end's own Ritz vector pollutes the
    Lanczos vectors past semi-orthogonality, so the certificate's premise is not backed: the
    value stands on its true residual and the end reads not certified."""
    A, ev = indefinite(dtype=torch.float32)
    r = lean_extreme_eigenpairs(A, top=1, bottom=0, tol=2e-4, max_matvecs=2000)
    assert not r.certified_top and "semi-orthogonality" in r.certificate_top
    assert "not certified" in r.certificate_top
    # still an eigenvalue within its true residual
    assert min(abs(float(r.eigenvalues_top[0]) - ev)) <= float(r.residuals_top[0]) + 1e-5


def test_a_hidden_top_eigenvalue_is_not_certified_away():
    """lambda_max's eigenvector orthogonal to the start (a warm start that misses it cannot
    happen with a random start; here the operator hides it by deflating the start's span):
    with a random start the estimator finds it; the certificate never claims a wrong end."""
    A, ev = indefinite(P=300, seed=3)
    for seed in range(4):
        r = lean_extreme_eigenpairs(A, top=1, bottom=0, tol=1e-6, max_matvecs=2000, seed=seed)
        if r.certified_top:
            assert abs(float(r.eigenvalues_top[0]) - float(ev[-1])) <= float(r.errors_top[0])


def test_budget_stop_is_flagged():
    A, _ = indefinite()
    r = lean_extreme_eigenpairs(A, top=1, bottom=0, tol=1e-10, max_matvecs=12)
    assert r.matvecs <= 12 and not r.converged and r.stop_reason.startswith("budget")


def test_a_dense_hessian_of_a_real_model():
    model, X, y, loss, _ = make_case("mlp-ce", n=12)
    problem = condlab.Problem(model, [(X, y)], loss, dtype=torch.float64)
    H = autograd_hessian(model, X, y, loss)
    ev = torch.linalg.eigvalsh(H)
    op = condlab.HessianOperator(problem)
    r = lean_extreme_eigenpairs(op, top=1, bottom=1, tol=1e-6, max_matvecs=2000)
    assert r.converged
    assert abs(float(r.eigenvalues_top[0]) - float(ev[-1])) <= float(r.errors_top[0]) + 1e-9
    assert abs(float(r.eigenvalues_bottom[0]) - float(ev[0])) <= float(r.errors_bottom[0]) + 1e-9


def test_bad_requests_are_refused():
    A, _ = indefinite(P=50)
    with pytest.raises(condlab.UsageError, match="top <= 1"):
        lean_extreme_eigenpairs(A, top=2, bottom=0)


# -- the memory plan's pick -----------------------------------------------------------------------
class Fake(LinearOperator):
    def __init__(self, M, graph=0, per_vec=None):
        super().__init__(M.shape[0], M.dtype, M.device)
        self.M, self.graph, self.block_size = M, graph, 16
        self.per_vec = per_vec if per_vec is not None else 2 * M.shape[0] * M.element_size()

    def _matmat(self, V):
        return self.M @ V

    def memory_profile(self):
        return self.graph, self.per_vec, 0


def budget(nbytes):
    return memory.Budget(int(nbytes), "fake device", {"fake device": int(nbytes)})


def test_the_plan_picks_two_pass_only_where_the_basis_would_be_tiny():
    A, _ = indefinite()
    M = A.matrix
    vec = M.shape[0] * 8
    op = Fake(M)
    roomy = memory.plan(op, top=1, bottom=0, budget=budget(10**9))
    assert roomy.krylov == "basis" and roomy.max_basis > memory.LEAN_BASIS
    # room for the working vectors and 6 columns: a basis that small goes two-pass
    step = max(op.per_vec + 2 * vec, 6 * vec)
    end = 4 * vec + op.per_vec + vec
    tight = memory.plan(op, top=1, bottom=0,
                        budget=budget((max(step, end) + 6.5 * vec) / (1 - memory.HEADROOM)))
    assert tight.krylov == "two-pass" and tight.basis_bytes == 0 and tight.block_size == 1
    assert tight.max_basis <= memory.LEAN_BASIS and "two-pass" in tight.describe()
    # not where the user sized the run, nor for more than one value per end
    small = budget((max(step, end) + 6.5 * vec) / (1 - memory.HEADROOM))
    assert memory.plan(op, top=1, bottom=0, max_basis=6, budget=small).krylov == "basis"
    assert memory.plan(op, top=2, bottom=0, budget=budget(10**7)).krylov == "basis"
    assert memory.plan(op, top=1, bottom=0, block_size=2, budget=budget(10**5)).krylov == "basis"
    # and where not even the smallest basis fits, two-pass still does: no refusal
    bare = memory.plan(op, top=1, bottom=0, budget=budget(
        (op.per_vec + 4 * vec + 1) / (1 - memory.HEADROOM)))
    assert bare.krylov == "two-pass"
    with pytest.raises(memory.MemoryRefused, match="does not fit"):
        memory.plan(op, top=1, bottom=0, max_basis=None, block_size=2, budget=budget(
            (op.per_vec + 4 * vec + 1) / (1 - memory.HEADROOM)))


def test_measure_runs_two_pass_when_the_plan_picks_it_before_any_product(monkeypatch):
    A, ev = indefinite()
    op = Fake(A.matrix, per_vec=A.matrix.shape[0] * 8)
    seen = {}
    real = memory.plan

    def small_plan(A_, **kw):
        p = real(A_, **kw, budget=budget(12 * A.matrix.shape[0] * 8 / (1 - memory.HEADROOM)))
        seen["plan"], seen["products_at_plan"] = p.krylov, calls[0]
        return p

    calls = [0]
    inner = op._matmat

    def counted(V):
        calls[0] += V.shape[1]
        return inner(V)

    op._matmat = counted
    monkeypatch.setattr(memory, "plan", small_plan)
    r = condlab.measure(op, condlab.EstimatorSettings(top=1, bottom=1, tol=1e-6)).result
    assert seen == {"plan": "two-pass", "products_at_plan": 0}
    assert r.details["memory_plan"]["krylov"] == "two-pass"
    assert r.eigenvalues_top[0] == pytest.approx(float(ev[-1]), abs=1e-5)
    assert r.eigenvalues_bottom[0] == pytest.approx(float(ev[0]), abs=1e-5)
    assert r.converged_top[0] and r.converged_bottom[0]
    assert math.isfinite(r.details["errors_top"][0])


def test_an_out_of_reach_certificate_is_not_waited_for():
    """The residual meets tol early; the end certificate would need more products than the
    budget leaves at its rate so far: the run stops there (end not certified, said why) rather
    than spending the budget; with room it waits and certifies."""
    A, ev = indefinite()
    short = lean_extreme_eigenpairs(A, top=1, bottom=0, tol=1e-6, max_matvecs=90)
    assert short.matvecs < 90 and not short.certified_top
    assert "not waited for" in short.stop_reason
    assert float(short.residuals_top[0]) <= short.threshold  # the value itself is backed
    roomy = lean_extreme_eigenpairs(A, top=1, bottom=0, tol=1e-6, max_matvecs=300)
    assert roomy.certified_top and "not waited" not in roomy.stop_reason
    assert abs(float(roomy.eigenvalues_top[0]) - float(ev[-1])) <= float(roomy.errors_top[0])
