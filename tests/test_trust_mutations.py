"""Tests that fail when a trust constant or comparison changes: the null band and its boundary,
the resolution rule, the multiplicity conditions, the graph-memory constants, and the warm-start
chain of a resumed sweep whose file is stale rather than missing. Each checks the documented
number or the boundary itself, never a constant against itself."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from condlab.estimators import condition_number

EPS64 = 2.0**-52


# -- the null band: value and boundaries ------------------------------------------------------
def test_the_fixed_floor_is_32_eps_of_the_norm_in_each_dtype():
    from condlab.estimators.condition import noise_rel

    assert noise_rel(torch.float64) == 32 * 2.0**-52
    assert noise_rel(torch.float32) == 32 * 2.0**-23
    c = condition_number([2.0], [1.0])
    assert c.threshold == 64 * 2.0**-52


def test_an_eigenvalue_exactly_on_the_band_is_null():
    spec = [0.25, 0.5, 1.0]
    c = condition_number([1.0], [0.25], exact_spectrum=spec, threshold_rel=0.25)
    assert c.nullity == 1 and c.definiteness == "positive semi-definite"
    assert c.lambda_min_positive == 0.5
    above = condition_number([1.0], [0.25], exact_spectrum=spec, threshold_rel=0.2499)
    assert above.nullity == 0 and above.definiteness == "positive definite"
    neg = condition_number([1.0], [-0.25], exact_spectrum=[-0.25, 0.5, 1.0], threshold_rel=0.25)
    assert neg.definiteness == "positive semi-definite"  # -t is inside the band too


def test_a_ratio_is_reported_from_ten_times_its_band():
    c = condition_number([1.0], [0.1], exact_spectrum=[0.1, 1.0], threshold_rel=0.01)
    assert c.resolved and c.value == pytest.approx(10.0)
    assert c.error == pytest.approx(0.01 / 0.1 + 0.01 / 1.0)
    c = condition_number([1.0], [0.0999], exact_spectrum=[0.0999, 1.0], threshold_rel=0.01)
    assert not c.resolved and c.value is None
    assert c.bound == pytest.approx((1.0 - 0.01) / (0.0999 + 0.01))


def test_a_ritz_values_error_widens_its_band():
    """|theta| <= t + u: a bottom value 3e-14 with error 1e-14 above a band of 2.8e-14 counts
    inside once its error is added."""
    t = 32 * EPS64  # ||A|| = 4: t = 2.8e-14
    c = condition_number([4.0], [4 * t + 1e-15], errors_top=[0.0], errors_bottom=[0.0])
    assert c.definiteness == "positive definite"
    c = condition_number([4.0], [4 * t + 1e-15], errors_top=[0.0], errors_bottom=[2e-15])
    assert c.definiteness == "positive semi-definite"


# -- multiplicity conditions -------------------------------------------------------------------
def _eig(block, bottom, *, max_basis=50, matvecs=40, restarts=1, miss=False):
    return SimpleNamespace(block_size=block, max_basis=max_basis, matvecs=matvecs,
                           restarts=restarts, eigenvalues_bottom=[0.0] * bottom,
                           may_miss_top=torch.tensor([False]),
                           may_miss_bottom=torch.tensor([miss] * bottom))


def test_a_proven_null_space_above_the_block_is_flagged_only_past_the_block():
    from condlab.measure import multiplicity

    bound = (5, "rank")
    assert multiplicity(_eig(4, 4), 100, bound)["multiplicity_resolved"]  # list == block
    past = multiplicity(_eig(4, 5), 100, bound)
    assert not past["multiplicity_resolved"] and "dimension >= 5" in past["multiplicity_note"]
    assert multiplicity(_eig(5, 6), 100, bound)["multiplicity_resolved"]  # bound == block
    assert not multiplicity(_eig(4, 4, miss=True), 100, None)["multiplicity_resolved"]


def test_a_full_depth_run_resolves_every_multiplicity():
    from condlab.measure import multiplicity

    bound = (50, "rank")
    full = _eig(1, 3, max_basis=30, matvecs=30, restarts=0, miss=True)
    assert multiplicity(full, 30, bound)["multiplicity_resolved"]
    for short in (dict(max_basis=29, matvecs=30, restarts=0), dict(max_basis=30, matvecs=29,
                  restarts=0), dict(max_basis=30, matvecs=30, restarts=1)):
        assert not multiplicity(_eig(1, 3, miss=True, **short), 30, bound)["multiplicity_resolved"]


# -- the graph-memory constants ------------------------------------------------------------------
def test_kept_graphs_may_hold_a_quarter_of_what_the_process_may_reach(monkeypatch):
    """A quarter of the machine's memory, or of what the process may reach (held + still
    allocatable under a cap) when that is less."""
    import condlab.memory as memory
    from condlab.operators.curvature import graph_budget

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for held, free in ((0, 2 * total), (10**8, 10**9)):
        monkeypatch.setattr(memory, "_held", lambda device, h=held: h)
        monkeypatch.setattr(memory, "available",
                            lambda device, limit=None, f=free: SimpleNamespace(bytes=f))
        assert graph_budget(torch.device("cpu")) == int(min(total, held + free) / 4)


def test_a_cpu_block_goes_batched_up_to_1e7_parameter_samples():
    from condlab.operators.curvature import _batched_backward

    def prob(n, size, device="cpu"):
        return SimpleNamespace(device=torch.device(device), n_params=n, sizes=[size])

    assert _batched_backward(prob(1000, 10_000), 0)
    assert not _batched_backward(prob(1000, 10_001), 0)
    assert _batched_backward(prob(10**9, 10**3, "meta"), 0)  # off the CPU: always


def _problem(n=12):
    from condlab.problem import Problem
    from tests.cases import make_case

    model, X, y, loss, kw = make_case("mlp-ce", n=n)
    return Problem(model, [(X, y)], loss, dtype=torch.float64, **kw)


def test_a_kept_graph_block_goes_batched_while_bytes_times_block_stay_within_256_mib(monkeypatch):
    from condlab.operators import curvature

    p = _problem()
    probe = curvature.HessianOperator(p, block_size=1)
    probe._linear_map(0)
    per_graph = probe.graph_bytes
    calls = []
    real = curvature._double_backward

    def spy(g, theta, v, batched=False):
        calls.append(batched)
        return real(g, theta, v, batched)

    monkeypatch.setattr(curvature, "_double_backward", spy)
    V = torch.randn(p.n_params, 2, dtype=torch.float64)
    for block, expect in ((2**28 // per_graph, True), (2**28 // per_graph + 1, False)):
        calls.clear()
        op = curvature.HessianOperator(p, block_size=block)
        op._linear_map(0)(V)
        assert calls[0] is expect, (block, per_graph)


def test_the_ggn_caches_up_to_2e8_parameter_samples_and_after_64_direct_columns():
    from condlab.operators.curvature import GGNOperator

    def fake(n, sizes):
        return SimpleNamespace(n_params=n, dtype=torch.float64, device=torch.device("cpu"),
                               uses_dropout=False, sizes=sizes)

    assert GGNOperator(fake(10**4, [10**4, 10**4])).cache  # 2e8 exactly
    assert not GGNOperator(fake(10**4, [10**4, 10**4 + 1])).cache
    p = _problem()
    op = GGNOperator(p, block_size=16)
    op @ torch.randn(p.n_params, 64, dtype=torch.float64)
    assert not op._maps  # 64 direct columns in 4 blocks, none cached yet
    op @ torch.randn(p.n_params, 1, dtype=torch.float64)
    assert op._maps


# -- the warm-start chain on resume ---------------------------------------------------------------
class _Chain:
    """A sweep stub: each checkpoint's 'Ritz vectors' record the chain of starts behind them."""

    def __init__(self, keys):
        from condlab.tracking.sweep import Checkpoint

        self.warm = True
        self.checkpoints = [Checkpoint(Path(k), i) for i, k in enumerate(keys)]
        self.calls = []

    def measure(self, ckpt, starts, on_progress=None):
        before = starts["chain"].tolist() if starts else []
        self.calls.append((ckpt.step, before))
        return [], {"chain": torch.tensor([*before, ckpt.step])}


def _resume(tmp_path, held, done=("a", "b", "c"), keys=("a", "b", "c", "d"), torn=False,
            rewritten=False):
    from condlab.load.checkpoint import save_checkpoint
    from condlab.tracking.sweep import SweepSummary, _resume_starts, fingerprint

    sweep = _Chain(keys)
    path = tmp_path / "run.warm"
    rows = [{"checkpoint": str(Path(k)), "setting": "baseline", "status": "ok",
             "lambda_max": float(i), "lambda_min": None, "hvps": 3} for i, k in enumerate(done)]
    if held is not None:
        chain = list(range(keys.index(held) + 1)) if held in keys else [7, 7]
        held_rows = [r for r in rows if r["checkpoint"] == str(Path(held))]
        if rewritten:  # the CSV's rows of that checkpoint changed after the file was written
            held_rows = [{**r, "lambda_max": -1.0} for r in held_rows]
        save_checkpoint(path, {"checkpoint": str(Path(held)), "rows": fingerprint(held_rows),
                               "vectors": {"chain": torch.tensor(chain)}})
    if torn:
        path.write_bytes(b"torn")
    summary = SweepSummary()
    starts = _resume_starts(sweep, [str(Path(k)) for k in done], rows, path, summary, None)
    return starts["chain"].tolist(), sweep.calls, summary.replayed


def test_a_current_warm_file_is_used_as_it_is(tmp_path):
    chain, calls, replayed = _resume(tmp_path, "c")
    assert chain == [0, 1, 2] and calls == [] and replayed == 0


def test_a_stale_warm_file_replays_only_the_checkpoints_after_it(tmp_path):
    """Killed between writing checkpoint c's rows and its warm file: the file holds b."""
    chain, calls, replayed = _resume(tmp_path, "b")
    assert calls == [(2, [0, 1])] and chain == [0, 1, 2] and replayed == 1
    chain, calls, replayed = _resume(tmp_path, "a")
    assert calls == [(1, [0]), (2, [0, 1])] and chain == [0, 1, 2] and replayed == 2


def test_a_foreign_or_torn_warm_file_replays_the_whole_chain(tmp_path):
    for kwargs in (dict(held="zzz"), dict(held=None), dict(held="a", torn=True)):
        chain, calls, replayed = _resume(tmp_path, **kwargs)
        assert calls == [(0, []), (1, [0]), (2, [0, 1])] and chain == [0, 1, 2], kwargs
        assert replayed == 3
        (tmp_path / "run.warm").unlink(missing_ok=True)


# -- survivors of the first mutation round ---------------------------------------------------------
def test_a_bottom_value_within_its_error_of_the_band_is_not_lambda_min_plus():
    """PSD: bottom values 0 and 2t; with an error of 1.5t on the second it may be null, so
    lambda_min+ is the third value."""
    t = 32 * EPS64
    c = condition_number([1.0], [0.0, 2 * t, 0.5], errors_top=[0.0],
                         errors_bottom=[0.0, 1.5 * t, 0.0])
    assert c.lambda_min_positive == 0.5 and c.value == pytest.approx(2.0)
    c = condition_number([1.0], [0.0, 2 * t, 0.5], errors_top=[0.0],
                         errors_bottom=[0.0, 0.5 * t, 0.0])
    assert c.lambda_min_positive == 2 * t


def test_dense_noise_is_the_norm_of_the_antisymmetric_part():
    from condlab.estimators.noise import dense_noise

    K = torch.tensor([[0.0, 3.0, 0.0], [-3.0, 0.0, 4.0], [0.0, -4.0, 0.0]], dtype=torch.float64)
    S = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert dense_noise(S + K) == pytest.approx(5.0, rel=1e-12)  # eigenvalues of K: +-5i, 0
    assert dense_noise(S) == 0.0 and dense_noise(torch.ones(1, 1)) == 0.0


def test_eps_only_means_a_statistic_of_at_most_eps():
    """P = sqrt(v_hat) + eps <= 2 eps: 1.5 eps is eps-only, 2.5 eps is not."""
    from condlab.preconditioners.zero_state import zero_state
    from condlab.report.records import SpectrumResult

    eps = 1e-3
    from condlab.operators.diagonal import PreconditionedOperator

    P = torch.tensor([1.0, 1.5 * eps, 2.5 * eps, 2.0], dtype=torch.float64)
    op = PreconditionedOperator(torch.eye(4, dtype=torch.float64), P)
    y = torch.tensor([[0.1], [0.9], [0.4], [0.1]], dtype=torch.float64)
    r = SpectrumResult(setting="optimizer", curvature="hessian", preconditioner="optimizer",
                       normalization=None, n_params=4, n_samples=1, eigenvalues_top=[1.0],
                       details={"eps": eps})
    spec = SimpleNamespace(names=("w",), slice=lambda n: slice(0, 4))
    from condlab.settings import Setting

    setting = Setting("optimizer", op, SimpleNamespace(spec=spec), "P^-½HP^-½", None,
                      preconditioner="optimizer", details={"eps": eps})
    out, extra = zero_state(r, setting, y)
    z = out.details["zero_state"]
    assert z["coordinates"] == 1 and z["tensors"] == {"w": 1}
    assert z["top_share"] == pytest.approx(0.81 / 0.99) and extra.name == "optimizer:trained"
    assert extra.operator.shape == (3, 3) and extra.details["left_out"] == {"w": 1}
    gn = Setting("gn", op, SimpleNamespace(spec=spec), "P^-½HP^-½", None, preconditioner="gn",
                 details={"eps": eps})
    out, extra = zero_state(r, gn, y)
    assert extra is None and "zero_state" not in out.details  # curvature rules: not a statistic


def test_a_warm_file_whose_rows_were_rewritten_replays_the_whole_chain(tmp_path):
    """The file names a checkpoint in the CSV, but not the rows written with it: stale."""
    chain, calls, replayed = _resume(tmp_path, "b", rewritten=True)
    assert calls == [(0, []), (1, [0]), (2, [0, 1])] and chain == [0, 1, 2] and replayed == 3
