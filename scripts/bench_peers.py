"""Benchmark condlab's API against its peers, in one process, on three problems.

Problems (trained once with full-batch Adam, seed 0, cached under ``--cache-dir``):

- ``digits-mlp``: digits (512 samples, features / 16), MLP 64-32-10 tanh, 2,410 parameters,
  300 steps (lr 1e-2) -- condlab's ``train_from_config``, also measured through the CLI;
- ``cnn``: digits as 1x8x8 images (1,024 samples), 3x3 conv 8, 3x3 conv 16, 2x2 average
  pool, linear 256-190-10, tanh, 51,988 parameters, 150 steps (lr 3e-3);
- ``mlp-543k``: digits (512 samples), MLP 64-700-700-10 tanh, 543,210 parameters, 150 steps
  (lr 1e-3).

Tools: condlab (``condlab.measure`` on a ``HessianOperator``, Problem and operator built inside
the timed call), curvlinops (``HessianLinearOperator`` + scipy ``eigsh``, ``hutchpp_trace``,
``lanczos_approximate_spectrum``), hessian-eigenthings (``lanczos`` with ``max_iter`` tuned
against the reference -- it has no stopping rule of its own, so it gets an advantage no user
has --, ``hutch_plus_plus``, ``spectral_density``) and PyHessian (power iteration with the
typed tolerance, Hutchinson, SLQ; its ``density`` calls ``torch.eig``, removed from torch 2.x,
so the benchmark supplies an ``eigh``-based stand-in). Peers that are not installed are
skipped (``pip install -e .[bench]``).

Tasks: top-5 (tol 1e-6 float64, 1e-4 float32), bottom-3 (most negative, same tol), trace
(~100 products), density (10 probes x 80 Lanczos steps). Per run: Hessian-vector products,
CPU seconds and wall seconds (min over interleaved repeats; one thread and all threads) and the
error against a reference -- a dense float64 eigendecomposition for the digits MLP; for the
larger problems condlab's float64 Lanczos at tol 1e-8 with residuals re-checked by an
independent double-backward product, and the exact trace from BackPACK's Hessian diagonal.
Error: eigenvalues ``max |lambda - lambda_ref| / lambda_max_ref`` (condlab's stated contract
is ``<= tol``); trace ``|t - t_ref| / |t_ref|``; density: the same for the trace implied by
the density's mean (``P * int x rho(x) dx``).

Plus the start-up figures: ``condlab --help`` and a whole-process ``condlab spectrum`` top-5
on the digits MLP beside the same in-process API call.

    python scripts/bench_peers.py                         # everything (about 20 min on 2 cores)
    python scripts/bench_peers.py --quick                 # digits MLP, float64, 1 thread, 1 repeat
    python scripts/bench_peers.py --tools condlab --quick --no-cli
    python scripts/bench_peers.py --device cuda --threads all

Writes ``OUT/bench_peers.csv`` (one row per run cell), ``OUT/bench_peers.md`` (the table) and
``OUT/bench_peers.json`` (rows, references, start-up, versions).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

import condlab
from condlab.load.checkpoint import model_from_checkpoint
from condlab.train.loop import train, train_from_config

TOOLS = ("condlab", "condlab-b1", "curvlinops", "eigenthings", "pyhessian")
PEER_MODULES = {"curvlinops": "curvlinops", "eigenthings": "hessian_eigenthings", "pyhessian": "pyhessian"}
TASKS = ("top5", "bottom3", "trace", "density")
PROBLEMS = ("digits-mlp", "cnn", "mlp-543k")
TOL = {"float64": 1e-6, "float32": 1e-4}
TRACE_PRODUCTS = 99  # Hutch++ splits into thirds
BACKPACK_LIMIT = 100_000  # parameters; above, no exact trace (DiagHessian backpropagates
# [N, d, d] factors through tanh layers: minutes for the 0.5M MLP)
DENSITY_PROBES, DENSITY_STEPS = 10, 80
DTYPES = {"float32": torch.float32, "float64": torch.float64}

ROOT = Path(__file__).resolve().parents[1]
P1_TRAIN = ROOT / "configs" / "train_digits.yaml"  # the README's digits MLP (scripts/bench_spectrum.py)


class Budget(Exception):
    """A peer ran past ``--max-hvps`` products."""


# -- problems ----------------------------------------------------------------------------------
@dataclass
class Bench:
    name: str
    model: nn.Module  # float32, trained
    X: torch.Tensor  # float32 [N, 64]
    y: torch.Tensor  # long [N]
    ckpt: dict | None = None  # condlab checkpoint (digits MLP: for the CLI figures)
    n_params: int = 0


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 190),
        nn.Tanh(),
        nn.Linear(190, 10),
    )


def _mlp_543k() -> nn.Module:
    return condlab.build_model(
        {"name": "mlp", "widths": [700, 700], "activation": "tanh"}, (64,), 10, seed=0
    )


def build_bench(name: str, cache: Path) -> Bench:
    path = cache / f"{name}.pt"
    if name == "digits-mlp":
        if path.exists():
            ckpt = torch.load(path, weights_only=True)
        else:
            ckpt = train_from_config(yaml.safe_load(P1_TRAIN.read_text()))[1]
            torch.save(ckpt, path)
        data = condlab.load_dataset(ckpt["data"])
        model = model_from_checkpoint(ckpt).float().eval()
        return Bench(name, model, data.X, data.y, ckpt, sum(p.numel() for p in model.parameters()))
    n, factory, steps, lr = {
        "cnn": (1024, _cnn, 150, 3e-3),
        "mlp-543k": (512, _mlp_543k, 150, 1e-3),
    }[name]
    data = condlab.load_dataset("digits", max_samples=n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = factory().float()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train(model, data, loss="cross-entropy", optimizer="adam", hparams={"lr": lr},
              steps=steps, batch_size=None, seed=0)
        torch.save(model.state_dict(), path)
    model.eval()
    return Bench(name, model, data.X, data.y, None, sum(p.numel() for p in model.parameters()))


# -- references --------------------------------------------------------------------------------
def _double_backward_hvp(model: nn.Module, X, y, V: torch.Tensor) -> torch.Tensor:
    """``H V`` by plain autograd double backward, column by column (independent of condlab)."""
    params = [p for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(X), y)
    g = torch.autograd.grad(loss, params, create_graph=True)
    cols = []
    for k in range(V.shape[1]):
        parts, off = [], 0
        for p in params:
            parts.append(V[off : off + p.numel(), k].view_as(p))
            off += p.numel()
        hv = torch.autograd.grad(g, params, grad_outputs=parts, retain_graph=True)
        cols.append(torch.cat([h.reshape(-1) for h in hv]))
    return torch.stack(cols, dim=1)


def _backpack_trace(model: nn.Module, X, y) -> float:
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    with _default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = extend(copy.deepcopy(model).double())
        lf = extend(nn.CrossEntropyLoss())
        total = 0.0
        for Xc, yc in zip(X.split(128), y.split(128)):  # the mean loss's Hessian is the chunks'
            with backpack(DiagHessian()):  # mean: memory for 128 samples, not all of them
                lf(m(Xc), yc).backward()
            total += len(yc) / len(y) * float(sum(p.diag_h.sum() for p in m.parameters()))
            m.zero_grad()
        return total


def _lanczos_reference(b: Bench, problem, device, top: int, bottom: int) -> dict:
    """condlab's float64 Lanczos at tol 1e-8, residuals re-checked by autograd double backward."""
    H = condlab.HessianOperator(problem)
    eig = condlab.extreme_eigenpairs(H, top=top, bottom=bottom, tol=1e-8, max_matvecs=4000,
                                     return_vectors=True)
    m64 = copy.deepcopy(b.model).to(device, torch.float64)
    X64, y = b.X.to(device, torch.float64), b.y.to(device)
    end = "top" if top else "bottom"
    vals = eig.eigenvalues_top if top else eig.eigenvalues_bottom
    vecs = (eig.vectors_top if top else eig.vectors_bottom).to(device, torch.float64)
    theta = torch.as_tensor(vals, dtype=torch.float64, device=device)
    HV = _double_backward_hvp(m64, X64, y, vecs)
    lam = abs(float(eig.lambda_max))
    residual = torch.linalg.vector_norm(HV - vecs * theta, dim=0).cpu() / lam
    return {end: [float(v) for v in vals], f"residual_{end}_rel": residual.tolist(),
            f"hvps_{end}": int(H.matvecs)}


def reference(b: Bench, cache: Path, device: torch.device, tasks: list[str], log) -> dict:
    """What the tasks need, computed once per problem and cached (part by part)."""
    path = cache / f"{b.name}.reference.json"
    ref = json.loads(path.read_text()) if path.exists() else {}
    need = {"top"} | ({"bottom"} if "bottom3" in tasks else set())
    need |= {"trace"} if {"trace", "density"} & set(tasks) else set()
    if need <= set(ref) or (need - set(ref) == {"trace"} and "trace_method" in ref):
        return ref
    log(f"reference for {b.name} (once; cached in {path})")
    t0 = time.perf_counter()
    problem = condlab.Problem(b.model, [(b.X, b.y)], "cross-entropy", dtype=torch.float64,
                              device=device)
    if b.n_params <= 6000:
        ev = torch.linalg.eigvalsh(condlab.dense_hessian(problem)).cpu()
        ref = {
            "method": "dense float64 Hessian, eigvalsh",
            "top": ev.flip(0)[:5].tolist(),
            "bottom": ev[:3].tolist(),
            "trace": float(ev.sum()),
            "trace_method": "exact (dense)",
        }
    else:
        ref["method"] = ("condlab float64 Lanczos at tol 1e-8, residuals re-checked by autograd "
                         "double backward")
        for end in sorted(need - set(ref)):
            if end == "trace" and b.n_params > BACKPACK_LIMIT:
                ref["trace_method"] = "none (BackPACK's Hessian diagonal is too slow here)"
                need.discard("trace")
            elif end == "trace":
                ref["trace"] = _backpack_trace(b.model.cpu(), b.X.double(), b.y)
                ref["trace_method"] = "exact (BackPACK DiagHessian, float64)"
            else:
                ref.update(_lanczos_reference(b, problem, device, 5 if end == "top" else 0,
                                              3 if end == "bottom" else 0))
            path.write_text(json.dumps(ref, indent=1))
    ref.setdefault("trace_method", "-")
    ref["seconds"] = round(time.perf_counter() - t0, 1)
    path.write_text(json.dumps(ref, indent=1))
    return ref


# -- helpers -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@dataclass
class Outcome:
    hvps: int
    values: list[float] = field(default_factory=list)  # eigenvalues, or [trace]
    converged: bool | None = None
    note: str = ""


def _implied_trace(grid, density, P: int) -> float:
    grid = np.asarray(grid, dtype=np.float64)
    density = np.asarray(density, dtype=np.float64)
    mass = np.trapezoid(density, grid)
    return float(P * np.trapezoid(grid * density, grid) / mass)


# -- the tools ---------------------------------------------------------------------------------
class Runner:
    """One tool on one problem and dtype: ``run(task) -> Outcome``."""

    def __init__(self, b: Bench, dtype: torch.dtype, device: torch.device, max_hvps: int):
        self.b, self.dtype, self.device, self.max_hvps = b, dtype, device, max_hvps
        self.model = copy.deepcopy(b.model).to(device, dtype).eval()
        self.X, self.y = b.X.to(device, dtype), b.y.to(device)
        self.tol = TOL[str(dtype).removeprefix("torch.")]
        self.P = b.n_params

    def setup(self) -> None:
        """Untimed per-run preparation (copies a tool mutates)."""


class CondlabRunner(Runner):
    name = "condlab"
    block_size = None  # the default: as many vectors as values asked for

    def run(self, task: str) -> Outcome:
        problem = condlab.Problem(self.model, [(self.X, self.y)], "cross-entropy",
                                  dtype=self.dtype, device=self.device)
        H = condlab.HessianOperator(problem)
        kw = {"top": 0, "bottom": 0, "tol": self.tol, "max_hvps": self.max_hvps,
              "block_size": self.block_size}
        if task == "top5":
            kw["top"] = 5
        elif task == "bottom3":
            kw["bottom"] = 3
        elif task == "trace":
            kw.update(trace=True, probes=TRACE_PRODUCTS, trace_method="hutch++")
        else:
            kw.update(density=True, density_probes=DENSITY_PROBES, density_steps=DENSITY_STEPS)
        m = condlab.measure(H, condlab.EstimatorSettings(**kw))
        r = m.result
        if task == "top5":
            return Outcome(r.hvp_count, list(r.eigenvalues_top), all(r.converged_top))
        if task == "bottom3":
            return Outcome(r.hvp_count, list(r.eigenvalues_bottom), all(r.converged_bottom))
        if task == "trace":
            return Outcome(r.hvp_count, [r.trace])
        return Outcome(r.hvp_count, [_implied_trace(m.density.grid, m.density.density, self.P)])


class CondlabSingleVectorRunner(CondlabRunner):
    """``--block-size 1``: single-vector Lanczos, for the ends only (the fast setting that may
    list a repeated eigenvalue once; the default block holds as many vectors as values)."""

    name = "condlab-b1"
    block_size = 1

    def run(self, task: str) -> Outcome:
        if task not in ("top5", "bottom3"):
            return Outcome(0, [], None, "not offered")
        return super().run(task)


class CurvlinopsRunner(Runner):
    name = "curvlinops"

    def _operator(self):
        from curvlinops import HessianLinearOperator

        H = HessianLinearOperator(self.model, nn.CrossEntropyLoss(),
                                  list(self.model.parameters()), [(self.X, self.y)])
        count = [0]
        inner = H._matmat

        def counted(M):
            count[0] += M[0].shape[-1]
            if count[0] > self.max_hvps:
                raise Budget
            return inner(M)

        H._matmat = counted
        return H, count

    def run(self, task: str) -> Outcome:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        H, count = self._operator()
        if task in ("top5", "bottom3"):
            k, which = (5, "LA") if task == "top5" else (3, "SA")
            np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
            v0 = np.random.default_rng(0).standard_normal(self.P).astype(np_dtype)
            try:
                vals = eigsh(H.to_scipy(dtype=np_dtype), k=k, which=which, tol=self.tol, v0=v0,
                             return_eigenvectors=False)
            except (Budget, ArpackNoConvergence):
                return Outcome(count[0], [], False, "stopped at --max-hvps")
            vals = sorted(vals.tolist(), reverse=task == "top5")
            return Outcome(count[0], vals, True)
        if task == "trace":
            from curvlinops import hutchpp_trace

            value = float(hutchpp_trace(H, TRACE_PRODUCTS))
            return Outcome(count[0], [value])
        from curvlinops import lanczos_approximate_spectrum

        grid, dens = lanczos_approximate_spectrum(H, DENSITY_STEPS, num_repeats=DENSITY_PROBES)
        return Outcome(count[0], [_implied_trace(grid.cpu(), dens.cpu(), self.P)],
                       note="+ eigsh for the spectrum's ends")


def count_matvecs(op) -> list[int]:
    """Count a hessian-eigenthings operator's products: ``[n]``, updated as ``op.matvec`` runs."""
    count = [0]
    inner = op.matvec

    def counted(v):
        count[0] += 1
        return inner(v)

    op.matvec = counted
    return count


class EigenthingsRunner(Runner):
    name = "eigenthings"
    max_iter: dict[str, int] = {}

    def _operator(self):
        import hessian_eigenthings as he

        op = he.HessianOperator(self.model, [(self.X, self.y)],
                                he.supervised_loss(nn.CrossEntropyLoss()))
        return op, count_matvecs(op)

    def eig(self, task: str, max_iter: int) -> Outcome:
        import hessian_eigenthings as he

        op, count = self._operator()
        k, which = (5, "LA") if task == "top5" else (3, "SA")
        r = he.lanczos(op, k=k, max_iter=min(max_iter, self.P - 1), tol=self.tol, which=which,
                       reorthogonalize=True, seed=0)
        return Outcome(count[0], r.eigenvalues.tolist(), bool(r.converged.all()),
                       f"max_iter={max_iter}")

    def run(self, task: str) -> Outcome:
        import hessian_eigenthings as he

        if task in ("top5", "bottom3"):
            return self.eig(task, self.max_iter[task])
        op, count = self._operator()
        if task == "trace":
            r = he.hutch_plus_plus(op, num_matvecs=TRACE_PRODUCTS, seed=0)
            return Outcome(count[0], [r.estimate])
        r = he.spectral_density(op, num_runs=DENSITY_PROBES, lanczos_steps=DENSITY_STEPS,
                                num_grid_points=1024, seed=0)
        return Outcome(count[0], [_implied_trace(r.grid.cpu(), r.density.cpu(), self.P)])


def _torch_eig_standin(T, eigenvectors=False):
    """``torch.eig`` (removed in torch 2) for PyHessian's symmetric tridiagonal: (w [n, 2], V)."""
    w, V = torch.linalg.eigh(T)
    return torch.stack([w, torch.zeros_like(w)], dim=1), V


class PyHessianRunner(Runner):
    name = "pyhessian"

    def setup(self) -> None:
        self.fresh = copy.deepcopy(self.model)  # PyHessian leaves a graph in .grad

    def run(self, task: str) -> Outcome:
        import pyhessian  # noqa: F401  (the package exports a class named like its module)

        ph = sys.modules["pyhessian.hessian"]

        if task == "bottom3":
            return Outcome(0, [], None, "not offered")
        count = [0]
        inner = ph.hessian_vector_product

        def counted(gradsH, params, v):
            count[0] += 1
            return inner(gradsH, params, v)

        ph.hessian_vector_product = counted
        removed_eig = getattr(torch, "eig", None)  # torch 2: a stub that raises
        torch.eig = _torch_eig_standin
        try:
            with _default_dtype(self.dtype):
                hc = ph.hessian(self.fresh, nn.CrossEntropyLoss(), data=(self.X, self.y),
                                cuda=self.device.type == "cuda")
                if task == "top5":
                    vals, _ = hc.eigenvalues(maxIter=1000, tol=self.tol, top_n=5)
                    return Outcome(count[0], sorted(vals, reverse=True), None,
                                   "power iteration, tol as typed, maxIter 1000")
                if task == "trace":
                    value = float(np.mean(hc.trace(maxIter=100, tol=0.0)))
                    return Outcome(count[0], [value], note="Hutchinson")
                nodes, weights = hc.density(iter=DENSITY_STEPS, n_v=DENSITY_PROBES)
                mean = np.mean([np.dot(n, w) for n, w in zip(nodes, weights)])
                return Outcome(count[0], [float(mean * self.P)], note="torch.eig stand-in")
        finally:
            ph.hessian_vector_product = inner
            if removed_eig is None:
                del torch.eig
            else:
                torch.eig = removed_eig


RUNNERS = {r.name: r for r in (CondlabRunner, CondlabSingleVectorRunner, CurvlinopsRunner,
                                EigenthingsRunner, PyHessianRunner)}


# -- measurement -------------------------------------------------------------------------------
def error(task: str, out: Outcome, ref: dict) -> float | None:
    if not out.values or "top" not in ref:
        return None
    lam = ref["top"][0]
    if task in ("top5", "bottom3"):
        want = ref["top"] if task == "top5" else ref["bottom"]
        if len(out.values) != len(want) or any(not math.isfinite(v) for v in out.values):
            return float("inf")
        return max(abs(a - b) for a, b in zip(out.values, want)) / abs(lam)
    return abs(out.values[0] - ref["trace"]) / abs(ref["trace"]) if "trace" in ref else None


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.process_time() - c0, time.perf_counter() - w0


def tune_eigenthings(r: EigenthingsRunner, task: str, ref: dict, cache: Path, key: str, log) -> int:
    """The smallest ``max_iter`` whose answer is within tol * lambda_max of the reference.

    Its Lanczos is deterministic given the seed, so the first m steps of a longer run are those
    of a run with ``max_iter=m``: one run (doubled until long enough) tries every m.
    """
    from hessian_eigenthings.algorithms.lanczos import lanczos_tridiagonal
    from scipy.linalg import eigvalsh_tridiagonal

    path = cache / "eigenthings_max_iter.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if key in known:
        return known[key]
    want = np.asarray(ref["top"] if task == "top5" else ref["bottom"])
    k, limit, M, best = len(want), min(r.P - 1, r.max_hvps), 64, None
    while best is None:
        M = min(M, limit)
        op, _ = r._operator()
        gen = torch.Generator(device="cpu").manual_seed(0)  # as lanczos(seed=0) draws v0
        v0 = torch.randn(op.size, dtype=op.dtype, generator=gen).to(op.device)
        td = lanczos_tridiagonal(op, v0, M, reorthogonalize=True)
        d, e = td.alphas.double().cpu().numpy(), td.betas.double().cpu().numpy()
        for m in range(k, td.alphas.numel() + 1):
            sel = (m - k, m - 1) if task == "top5" else (0, k - 1)
            theta = eigvalsh_tridiagonal(d[:m], e[: m - 1], select="i", select_range=sel)
            theta = theta[::-1] if task == "top5" else theta
            if np.abs(theta - want).max() <= r.tol * abs(ref["top"][0]):
                best = m
                break
        if best is None and M >= limit:
            best = limit  # never met it: time the longest (its error is reported)
        M *= 2
    log(f"  eigenthings {key}: max_iter {best}")
    known[key] = best
    path.write_text(json.dumps(known, indent=1))
    return best


@dataclass
class Row:
    problem: str
    n_params: int
    n_samples: int
    dtype: str
    threads: str
    task: str
    tool: str
    hvps: int | None
    cpu_s: float | None
    wall_s: float | None
    runs: int
    error: float | None
    tol: float
    converged: bool | None
    note: str
    clock: str = "cpu"  # which time counts: CPU on a CPU, wall (synchronized) on a GPU

    @property
    def s(self) -> float | None:
        return self.cpu_s if self.clock == "cpu" else self.wall_s


def warm_up(args, tools: list[str], log) -> None:
    """The first torch.func / autograd calls of a process cost up to a second: pay them untimed
    on the digits MLP (top-5 and a trace, which also traces condlab's linearized product)."""
    b = build_bench("digits-mlp", args.cache_dir)
    torch.set_num_threads(1)
    for dname in args.dtypes:
        for tool in tools:
            runner = RUNNERS[tool](b, DTYPES[dname], torch.device(args.device), args.max_hvps)
            runner.max_iter = {"top5": 20, "bottom3": 20}
            for task in ("top5", "trace"):
                runner.setup()
                with contextlib.suppress(Exception):
                    runner.run(task)
    log("warmed up")


def bench_problem(b: Bench, args, ref: dict, tools: list[str], log, flush) -> list[Row]:
    rows: list[Row] = []
    device = torch.device(args.device)
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        runners = {t: RUNNERS[t](b, dtype, device, args.max_hvps) for t in tools}
        if "eigenthings" in runners and "top" not in ref:  # no reference: its defaults (2k)
            runners["eigenthings"].max_iter = {"top5": 10, "bottom3": 6}
        elif "eigenthings" in runners:
            r = runners["eigenthings"]
            r.max_iter = {task: tune_eigenthings(r, task, ref, args.cache_dir,
                                                 f"{b.name}/{dname}/{task}", log)
                          for task in args.tasks if task in ("top5", "bottom3")}
        for threads in args.threads:
            n = os.cpu_count() if threads == "all" else int(threads)
            torch.set_num_threads(n)
            label = f"all ({n})" if threads == "all" else str(n)
            best: dict[tuple[str, str], Row] = {}
            slow: set[tuple[str, str]] = set()
            for _ in range(args.repeats):  # interleaved: every tool once per task per round
                for task in args.tasks:
                    for tool, runner in runners.items():
                        key = (task, tool)
                        if key in slow:
                            continue
                        runner.setup()
                        try:
                            out, cpu, wall = timed(partial(runner.run, task), device)
                        except Exception as e:  # a peer crashing is a result, not an abort
                            note = f"failed: {type(e).__name__}: {e}"[:120]
                            out, cpu, wall = Outcome(0, [], False, note), None, None
                        if out.note == "not offered":
                            cpu = wall = None
                        err = error(task, out, ref)
                        old = best.get(key)
                        runs = (old.runs if old else 0) + 1
                        row = Row(b.name, b.n_params, len(b.X), dname, label, task, tool,
                                  out.hvps or None, cpu, wall, runs, err, TOL[dname],
                                  out.converged, out.note, "wall" if device.type == "cuda" else "cpu")
                        if old is None or (row.s is not None and (old.s is None or row.s < old.s)):
                            best[key] = row
                        else:
                            old.runs = runs
                        if (cpu or 0) > args.slow_s:  # too slow to repeat: this run counts
                            slow.add(key)
                        log(f"  {b.name} {dname} t={label} {task:8s} {tool:12s} "
                            f"{_fmt_s(cpu)} s cpu {out.hvps:5d} HVPs err {_fmt_e(err)} {out.note}")
            rows += [best[(task, tool)] for task in args.tasks for tool in runners
                     if (task, tool) in best]
            flush(rows)
    return rows


# -- start-up ----------------------------------------------------------------------------------
def _cli() -> list[str]:
    exe = shutil.which("condlab")
    return [exe] if exe else [sys.executable, "-m", "condlab"]


def _child_run(cmd: list[str], out: list | None = None) -> tuple[float, float]:
    """CPU and wall seconds of ``cmd`` in a child process (its stdout appended to ``out``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE if out is not None else
                          subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out is not None:
        out.append(proc.stdout)
    return cpu, wall


def whole_process(ckpt: Path, args) -> dict:
    """Top-5 + bottom-3 at 1e-6 in float64, each tool in a fresh process from the saved model:
    ``condlab spectrum`` against curvlinops + ARPACK (scipy ``eigsh``, LA then SA)."""
    ours = [*_cli(), "spectrum", str(ckpt), "--top", "5", "--bottom", "3", "--tol", "1e-6",
            "--dtype", "float64", "--threads", "1", "--device", args.device, "--format", "json"]
    peer = [sys.executable, "-c", (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import bench_peers as bp; from pathlib import Path; torch.set_num_threads(1); "
        f"b = bp.build_bench('digits-mlp', Path({str(args.cache_dir)!r})); "
        f"r = bp.CurvlinopsRunner(b, torch.float64, torch.device({args.device!r}), "
        f"{args.max_hvps}); print(r.run('top5').hvps + r.run('bottom3').hvps)")]
    runs: dict = {"condlab": [], "curvlinops": []}
    texts: dict = {"condlab": [], "curvlinops": []}
    for _ in range(args.cli_repeats):
        runs["condlab"].append(_child_run(ours, texts["condlab"]))
        runs["curvlinops"].append(_child_run(peer, texts["curvlinops"]))
    report = json.loads(texts["condlab"][-1])
    rows = report.get("results", report) if isinstance(report, dict) else report
    out = {"condlab_hvps": sum(int(r.get("hvp_count", 0)) for r in rows),
           "curvlinops_hvps": int(texts["curvlinops"][-1].split()[-1])}
    for tool, v in runs.items():
        out[f"{tool}_cpu_s"] = min(c for c, _ in v)
        out[f"{tool}_wall_s"] = min(w for _, w in v)
    out["ratio_cpu"] = out["condlab_cpu_s"] / out["curvlinops_cpu_s"]
    out["command"] = " ".join(["condlab", *ours[len(_cli()):]]).replace(str(ckpt), "digits_mlp.pt")
    return out


def startup(b: Bench, args, log) -> dict:
    """``condlab --help`` and a whole-process ``condlab spectrum`` top-5 on the digits MLP."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "digits_mlp.pt"
        torch.save(b.ckpt, ckpt)
        spectrum = [*_cli(), "spectrum", str(ckpt), "--top", "5", "--bottom", "0", "--tol",
                    "1e-6", "--dtype", "float64", "--threads", "1", "--device", args.device,
                    "--format", "json"]
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            # the same measurement from a script: a fresh process, no command line, no report
            script = (
                "import torch; from condlab.config import SpectrumConfig; "
                "from condlab.pipeline import run_spectrum; torch.set_num_threads(1); "
                f"run_spectrum(SpectrumConfig(checkpoint={str(ckpt)!r}, top=5, bottom=0, "
                f"tol=1e-6, dtype='float64', device={args.device!r}))"
            )
            runs = {"help": [], "spectrum": [], "import_torch": [], "script": []}
            for _ in range(args.cli_repeats):
                runs["help"].append(_child_run([*_cli(), "--help"]))
                runs["spectrum"].append(_child_run(spectrum))
                runs["import_torch"].append(_child_run([sys.executable, "-c", "import torch"]))
                runs["script"].append(_child_run([sys.executable, "-c", script]))
            whole = whole_process(ckpt, args)
        finally:
            if env_threads is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads
    for k, v in runs.items():
        out[f"{k}_cpu_s"] = min(c for c, _ in v)
        out[f"{k}_wall_s"] = min(w for _, w in v)
    torch.set_num_threads(1)
    r = CondlabRunner(b, torch.float64, torch.device(args.device), args.max_hvps)
    api = [timed(lambda: r.run("top5"), torch.device(args.device)) for _ in range(args.cli_repeats)]
    out["api_cpu_s"] = min(c for _, c, _ in api)
    out["api_wall_s"] = min(w for _, _, w in api)
    out["spectrum_minus_api_cpu_s"] = out["spectrum_cpu_s"] - out["api_cpu_s"]
    out["beyond_torch_cpu_s"] = out["spectrum_minus_api_cpu_s"] - out["import_torch_cpu_s"]
    out["command"] = " ".join(["condlab", *spectrum[1:]]).replace(str(ckpt), "digits_mlp.pt")
    out["whole_process"] = whole
    log(f"  start-up: {json.dumps({k: v for k, v in out.items() if k != 'command'})}")
    return out


# -- report ------------------------------------------------------------------------------------
def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.3f}" if s < 10 else f"{s:.1f}"


def _fmt_e(e: float | None) -> str:
    if e is None:
        return "-"
    return "inf" if not math.isfinite(e) else f"{e:.0e}"


def _accurate(row: Row) -> bool:
    """Meets condlab's contract (eigenvalues within tol * lambda_max of the reference)."""
    if row.s is None or row.note.startswith("failed"):
        return False
    if row.task in ("top5", "bottom3"):
        return row.error is not None and row.error <= row.tol
    return True


def target(row: Row, peers: list[Row]) -> tuple[str, str]:
    """(ratio text, verdict) for condlab's row against the fastest peer meeting the tolerance."""
    ok = [p for p in peers if _accurate(p)]
    if row.s is None or not ok:
        return "-", "no accurate peer" if row.s is not None else "-"
    fastest = min(ok, key=lambda p: p.s)
    ratio = row.s / fastest.s
    if row.task in ("top5", "bottom3"):
        goal = 0.25 if row.problem != "digits-mlp" else 0.5
    else:
        goal = 1.0
    verdict = "met" if ratio <= goal and _accurate(row) else f"gap: {ratio / goal:.1f}x"
    if not _accurate(row):
        verdict = "condlab off tolerance"
    return f"{ratio:.2f} ({fastest.tool}; goal <= {goal:g})", verdict


def markdown(rows: list[Row], refs: dict, start: dict | None, args) -> str:
    tools = [t for t in TOOLS if any(r.tool == t for r in rows)]
    clock = "CPU" if args.device == "cpu" else "wall (synchronized)"
    lines = [
        f"Cells: {clock} seconds (min of interleaved runs) / Hessian-vector products / error "
        "(eigenvalues: max |error| / lambda_max; trace and density: relative trace error). "
        "Ratio: condlab's time / the fastest peer's that met the tolerance.",
        "",
        "| problem | dtype | threads | task | " + " | ".join(tools) + " | ratio | target |",
        "|---|---|---|---|" + "---|" * len(tools) + "---|---|",
    ]
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        groups.setdefault((r.problem, r.dtype, r.threads, r.task), {})[r.tool] = r
    for (prob, dname, threads, task), cells in groups.items():
        texts = []
        for t in tools:
            r = cells.get(t)
            if r is None:
                texts.append("")
            elif r.note == "not offered":
                texts.append("not offered")
            elif r.s is None:
                texts.append(r.note or "failed")
            else:
                flag = "" if _accurate(r) else " ✗"
                texts.append(f"{_fmt_s(r.s)} / {r.hvps} / {_fmt_e(r.error)}{flag}")
        if "condlab" in cells:
            peers = [c for t, c in cells.items() if not t.startswith("condlab")]
            ratio, verdict = target(cells["condlab"], peers)
        else:
            ratio, verdict = "-", "-"
        lines.append(f"| {prob} ({cells[next(iter(cells))].n_params:,} p) | {dname} | {threads} "
                     f"| {task} | " + " | ".join(texts) + f" | {ratio} | {verdict} |")
    lines += ["", "✗: off the tolerance (or not converged); not counted as the fastest peer.", ""]
    notes = sorted({f"{r.tool}: {r.note}" for r in rows if r.note and r.tool != "condlab"
                    and not r.note.startswith("max_iter")})
    if any(r.note.startswith("max_iter") for r in rows) and not args.no_reference:
        notes.append("eigenthings: max_iter set to the smallest that meets the tolerance, found "
                     "with the reference (it has no stopping rule; no user could do this)")
    lines += [f"- {n}" for n in notes]
    for name, ref in refs.items():
        lines.append(f"- reference {name}: {ref['method']}; trace {ref['trace_method']}")
    if start:
        lines += [
            "",
            f"| start-up (min of {args.cli_repeats}, one thread) | wall s | CPU s |",
            "|---|---|---|",
            f"| `python -c 'import torch'` | {start['import_torch_wall_s']:.2f} | {start['import_torch_cpu_s']:.2f} |",
            f"| `condlab --help` | {start['help_wall_s']:.2f} | {start['help_cpu_s']:.2f} |",
            f"| `{start['command']}` | {start['spectrum_wall_s']:.2f} | {start['spectrum_cpu_s']:.2f} |",
            f"| the same run from a script in a fresh process (`run_spectrum`) | {start['script_wall_s']:.2f} | {start['script_cpu_s']:.2f} |",
            f"| the same top-5 as an in-process API call | {start['api_wall_s']:.3f} | {start['api_cpu_s']:.3f} |",
            "",
            f"Whole process minus in-process: {start['spectrum_minus_api_cpu_s']:.2f} CPU s "
            f"(target <= 1.5 s: {'met' if start['spectrum_minus_api_cpu_s'] <= 1.5 else 'not met'}), "
            f"of which `import torch` is {start['import_torch_cpu_s']:.2f} s and the rest "
            f"{start['beyond_torch_cpu_s']:.2f} s (condlab's imports, torch's first-call costs, "
            f"loading and the report; a script pays all but the report too); "
            f"`condlab --help` {start['help_cpu_s']:.2f} CPU s (target < 0.5 s: "
            f"{'met' if start['help_cpu_s'] < 0.5 else 'not met'}). CPU seconds, because wall "
            "time on a shared machine counts other processes' load.",
        ]
        w = start["whole_process"]
        lines += [
            "",
            f"Whole process, top-5 + bottom-3 at 1e-6 in float64 (min of {args.cli_repeats}): "
            f"`{w['command']}` {w['condlab_cpu_s']:.2f} CPU s / {w['condlab_hvps']} HVPs against "
            f"curvlinops + ARPACK {w['curvlinops_cpu_s']:.2f} CPU s / {w['curvlinops_hvps']} HVPs "
            f"in a fresh process each: ratio {w['ratio_cpu']:.2f} (target <= 0.3: "
            f"{'met' if w['ratio_cpu'] <= 0.3 else 'not met'}).",
        ]
    return "\n".join(lines) + "\n"


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "condlab": condlab.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count()}
    for mod in ("curvlinops", "hessian_eigenthings", "pyhessian", "scipy"):
        try:
            from importlib.metadata import version

            dist = {"curvlinops": "curvlinops-for-pytorch", "hessian_eigenthings":
                    "hessian-eigenthings"}.get(mod, mod)
            out[mod] = version(dist)
        except Exception:
            pass
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, cwd=ROOT).stdout.strip()
    except OSError:
        pass
    return out


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--problems", type=csv, default=list(PROBLEMS))
    ap.add_argument("--dtypes", type=csv, default=["float64", "float32"])
    ap.add_argument("--tasks", type=csv, default=list(TASKS))
    ap.add_argument("--tools", type=csv, default=list(TOOLS))
    ap.add_argument("--threads", type=csv, default=["1", "all"], help="e.g. 1,all")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per cell (min counts)")
    ap.add_argument("--slow-s", type=float, default=30.0,
                    help="a cell whose run takes longer than this (CPU s) is not repeated")
    ap.add_argument("--max-hvps", type=int, default=3000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cli-repeats", type=int, default=3)
    ap.add_argument("--no-cli", action="store_true", help="skip the start-up figures")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference (no error column; a smoke run)")
    ap.add_argument("--quick", action="store_true",
                    help="digits MLP, float64, one thread, one run, no warm-up")
    ap.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    ap.add_argument("--cache-dir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "condlab-bench")
    args = ap.parse_args(argv)
    if args.quick:
        args.problems, args.dtypes, args.threads = ["digits-mlp"], ["float64"], ["1"]
        args.repeats, args.cli_repeats = 1, 1
    for name, got, allowed in (("problem", args.problems, PROBLEMS), ("dtype", args.dtypes, DTYPES),
                               ("task", args.tasks, TASKS), ("tool", args.tools, TOOLS)):
        bad = [g for g in got if g not in allowed]
        if bad:
            ap.error(f"unknown {name} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return args


def write(args, rows: list[Row], refs: dict, start: dict | None, t0: float) -> str:
    """The table, CSV and JSON so far (rewritten after every problem and dtype)."""
    import pandas as pd

    md = markdown(rows, refs, start, args)
    info = {"versions": versions(), "args": {k: str(v) for k, v in vars(args).items()},
            "seconds": round(time.perf_counter() - t0, 1)}
    (args.out_dir / "bench_peers.md").write_text(md)
    (args.out_dir / "bench_peers.json").write_text(json.dumps(
        {**info, "rows": [asdict(r) for r in rows], "references": refs, "startup": start},
        indent=1))
    pd.DataFrame([asdict(r) for r in rows]).to_csv(args.out_dir / "bench_peers.csv", index=False)
    return md


def main(argv=None) -> int:
    args = parse(argv)
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    tools = []
    for t in args.tools:
        mod = PEER_MODULES.get(t)
        if mod is not None:
            try:
                __import__(mod)
            except Exception as e:  # not installed (or broken): skip, say so
                log(f"skipping {t}: {type(e).__name__}: {e} (pip install -e .[bench])")
                continue
        tools.append(t)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    rows, refs, start = [], {}, None
    t0 = time.perf_counter()
    if not args.quick:
        warm_up(args, tools, log)
    for name in args.problems:
        torch.set_num_threads(os.cpu_count() or 1)  # setup (training, reference) at full speed
        b = build_bench(name, args.cache_dir)
        if args.no_reference:
            refs[name] = {"method": "none (--no-reference)", "trace_method": "none"}
        else:
            refs[name] = reference(b, args.cache_dir, device, args.tasks, log)
            log(f"{name}: {b.n_params:,} parameters, {len(b.X)} samples; reference "
                f"{ {k: v for k, v in refs[name].items() if k in ('top', 'bottom', 'trace')} }")
        flush = partial(lambda done, st, new: write(args, done + new, refs, st, t0), list(rows), start)
        rows += bench_problem(b, args, refs[name], tools, log, flush)
        if name == "digits-mlp" and not args.no_cli:
            start = startup(b, args, log)
    md = write(args, rows, refs, start, t0)
    print(md)
    log(f"wrote {args.out_dir}/bench_peers.{{md,csv,json}} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
