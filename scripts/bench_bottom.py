"""Bottom-3 by a Chebyshev filter built from lambda_max, against plain Lanczos (issue 22 item 4).

Problems: the digits MLP (2,410 parameters) and the CNN (51,988) of ``scripts/bench_peers.py``
(trained once and cached there), float64, one thread, tol 1e-6, the three smallest (most
negative) eigenvalues of the Hessian.

Plain: ``condlab.extreme_eigenpairs(H, top=0, bottom=3, tol=1e-6)`` at its defaults (a block of
3 vectors, residuals ``<= tol ||A||``, the end certified), and the same with ``block_size=1``
(single-vector Lanczos, which the filter below also is: the two differ only in the filter).

Shifted: the same single-vector run on ``A - lambda_max I`` (``ShiftedOperator``), which spans
the same Krylov space as ``A`` from the same start.

Filtered: ``lambda_max`` from a top-1 run (``extreme_eigenpairs(top=1, tol=1e-3)``; its products
are counted, and shown apart since a run that also asks for the top end has it already; its
smallest Ritz value is the rough lower end ``lower``). Then ``p(A) = T_d((A - c) / e)`` with
``[cut, upper]`` mapped to ``[-1, 1]`` (``upper = lambda_max (1 + 1e-3)``): bounded by 1 on
``[cut, upper]``, growing like ``cosh(d acosh |x|)`` below ``cut``, so the bottom of ``A`` is
the top of ``p(A)``. Cuts: ``ritz`` (at ``lower``: what the top run did not see is amplified),
``zero`` (knows the bottom is negative), ``oracle`` (midway between the true 3rd and 4th
eigenvalues, the best a fixed filter can know; the 4th comes from dense ``eigvalsh`` on the
digits MLP, condlab bottom-4 at tol 1e-8 on the CNN, cached). Single-vector Lanczos on ``p(A)``
(full reorthogonalization, no restart) builds the basis ``V``; every product ``p(A) v`` takes
``A v`` as its first step, which is kept, so the Rayleigh-Ritz values of ``A`` on ``V`` and
their true residuals ``||A V s - theta V s||`` come without another product. It stops when the
three smallest have true residuals ``<= tol * lambda_max``, the plain run's own rule, or
unconverged past a cap (5x the products of plain single-vector Lanczos on the digits MLP, 3x on
the CNN: it has lost by then). Every product of ``A`` is counted (``d`` per step on ``p(A)``).

Errors against the reference of ``bench_peers.py`` (dense ``eigvalsh`` on the digits MLP; for
the CNN condlab at tol 1e-8 with residuals re-checked by plain double backward):
``max |lambda - lambda_ref| / lambda_max``. CPU seconds (``time.process_time``), one thread.

    python scripts/bench_bottom.py       # 6.5 min on 2 shared cores (load 4-5), most of it the CNN
    python scripts/bench_bottom.py --problems digits-mlp --degrees 4,8 --cuts zero,oracle
    python scripts/bench_bottom.py --problems cnn --cuts oracle

Writes ``OUT/bench_bottom.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import condlab
from condlab.operators.base import LinearOperator, ShiftedOperator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers as bp  # noqa: E402  (the problems, their cache and references)

TOL = 1e-6
BOTTOM = 3
# per problem: degrees, cuts, and the cap (times the products of plain single-vector Lanczos)
# past which a filtered run stops unconverged; a CNN product costs 0.3 s, its grid stays small
GRID = {"digits-mlp": ([4, 8, 16], ["ritz", "zero", "oracle"], 5),
        "cnn": ([4], ["ritz"], 3)}


class ChebyshevFilter(LinearOperator):
    """``p(A) V = T_d((A - c) / e) V / T_d((lower - c) / e)``, ``c, e`` mapping ``[cut, upper]``
    to ``[-1, 1]``; ``A V`` of the last input is kept in ``self.AV`` (the recurrence's first
    product). ``d`` products of ``A`` per column."""

    def __init__(self, A, degree: int, cut: float, upper: float, lower: float):
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A, self.d = A, int(degree)
        self.c, self.e = (upper + cut) / 2, (upper - cut) / 2
        x = (lower - self.c) / self.e  # < -1: where the filter is scaled to about 1
        self.scale = math.cosh(self.d * math.acosh(-x)) if x < -1 else 1.0
        self.AV: torch.Tensor | None = None

    def _matmat(self, V):
        AV = self.A @ V
        self.AV = AV
        y0, y1 = V, (AV - self.c * V) / self.e
        for _ in range(2, self.d + 1):
            y0, y1 = y1, 2 * (self.A @ y1 - self.c * y1) / self.e - y0
        return y1 / self.scale


def filtered_bottom(H, lam_max: float, lower: float, degree: int, cut: float,
                    max_steps: int, seed: int = 0) -> dict:
    """Lanczos on the filter (basis ``V``), Rayleigh-Ritz of ``A`` on ``V`` with the kept
    ``A V``: the three smallest values and their true residuals, per step until they meet
    ``tol * lambda_max``."""
    upper = lam_max * (1 + 1e-3)
    F = ChebyshevFilter(H, degree, cut, upper, lower)
    g = torch.Generator().manual_seed(seed)
    P = H.shape[0]
    v = torch.randn(P, 1, generator=g, dtype=H.dtype)
    v /= torch.linalg.vector_norm(v)
    V, AV = [v], []
    threshold = TOL * lam_max
    out = {"degree": degree, "cut": cut, "upper": upper, "lower": lower,
           "converged": False}
    for step in range(1, max_steps + 1):
        w = F @ V[-1]
        AV.append(F.AV)
        Vm = torch.cat(V, dim=1)
        AVm = torch.cat(AV, dim=1)
        Hm = Vm.T @ AVm
        theta, S = torch.linalg.eigh((Hm + Hm.T) / 2)
        Y = Vm @ S[:, :BOTTOM]
        R = AVm @ S[:, :BOTTOM] - Y * theta[:BOTTOM]
        res = torch.linalg.vector_norm(R, dim=0)
        out.update(steps=step, values=theta[:BOTTOM].tolist(), residuals=res.tolist())
        if len(theta) >= BOTTOM and bool((res <= threshold).all()):
            out["converged"] = True
            break
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - Vm @ (Vm.T @ w)
        beta = float(torch.linalg.vector_norm(w))
        if beta < 1e-14:
            break
        V.append(w / beta)
    return out


def fourth(b, cache: Path, log) -> float:
    """The 4th smallest eigenvalue (for the oracle cut), once, cached: dense ``eigvalsh`` up to
    6,000 parameters, else condlab at tol 1e-8 (bottom-4)."""
    path = cache / f"{b.name}.bottom4.json"
    if path.exists():
        return json.loads(path.read_text())["bottom4"]
    log(f"  {b.name}: the 4th smallest eigenvalue (once; cached in {path})")
    p = condlab.Problem(b.model, [(b.X, b.y)], "cross-entropy", dtype=torch.float64)
    if b.n_params <= 6000:
        value, method = float(torch.linalg.eigvalsh(condlab.dense_hessian(p))[3]), "eigvalsh"
    else:
        r = condlab.extreme_eigenpairs(condlab.HessianOperator(p), top=0, bottom=4, tol=1e-8,
                                       max_matvecs=4000)
        value, method = float(r.eigenvalues_bottom[3]), "condlab bottom-4 at tol 1e-8"
    path.write_text(json.dumps({"bottom4": value, "method": method}))
    return value


def run_problem(name: str, args, log) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    b = bp.build_bench(name, args.cache_dir)
    ref = bp.reference(b, args.cache_dir, torch.device("cpu"), ["bottom3"], log)
    ref["bottom4"] = fourth(b, args.cache_dir, log)
    lam_ref = ref["top"][0]
    bottom_ref = torch.tensor(ref["bottom"][:BOTTOM], dtype=torch.float64)
    torch.set_num_threads(1)

    def operator():
        p = condlab.Problem(b.model, [(b.X, b.y)], "cross-entropy", dtype=torch.float64)
        return condlab.HessianOperator(p)

    def err(values) -> float:
        return float((torch.tensor(values[:BOTTOM], dtype=torch.float64) - bottom_ref).abs().max()
                     / lam_ref)

    rows = []

    def plain(label: str, shift: float = 0.0, top_products: int = 0, top_cpu: float = 0.0,
              **kw) -> None:
        """``extreme_eigenpairs`` bottom-3 on ``A + shift I``, its values shifted back."""
        H = operator()
        A = ShiftedOperator(H, shift) if shift else H
        t0 = time.process_time()
        r = condlab.extreme_eigenpairs(A, top=0, bottom=BOTTOM, tol=TOL, **kw)
        cpu = time.process_time() - t0 + top_cpu
        values = (r.eigenvalues_bottom - shift).tolist()
        rows.append({"problem": name, "method": label, "products": H.matvecs + top_products,
                     "top1_products": top_products, "cpu_s": cpu, "error": err(values),
                     "converged": bool(r.converged), "certified": bool(r.certified_bottom),
                     "values": values})
        log(f"  {name} {label}: {H.matvecs} + {top_products} products, {cpu:.2f} CPU s, error "
            f"{rows[-1]['error']:.1e}, certified {r.certified_bottom}")

    plain("plain Lanczos (default block)")
    plain("plain Lanczos, block 1", block_size=1)
    H = operator()
    t0 = time.process_time()
    top = condlab.extreme_eigenpairs(H, top=1, bottom=0, tol=args.top_tol, block_size=1)
    top_cpu = time.process_time() - t0
    top_products = H.matvecs
    lam_max, lower = float(top.eigenvalues_top[0]), float(top.lambda_min)
    log(f"  {name} top-1 at tol {args.top_tol:g}: lambda_max {lam_max:.6g}, lower end "
        f"{lower:.3g}, {top_products} products, {top_cpu:.2f} CPU s")
    # the shifted operator spans the same Krylov space (its threshold tol ||A - sigma I|| is
    # larger than tol ||A|| by |lambda_min| / lambda_max: 0.2% on both problems)
    plain("shifted A - lambda_max I, block 1", -lam_max, top_products, top_cpu, block_size=1)
    degrees = args.degrees or GRID[name][0]
    cuts = {}
    for spec in args.cuts or GRID[name][1]:
        if spec == "ritz":  # the free rough lower end: amplify what the top run did not see
            cuts[spec] = lower
        elif spec == "zero":  # knows that the bottom end is negative
            cuts[spec] = 0.0
        elif spec == "oracle":  # between the true 3rd and 4th: the best fixed filter
            cuts[spec] = (ref["bottom"][BOTTOM - 1] + ref["bottom4"]) / 2
        else:
            cuts[spec] = float(spec) * lam_max
    cap = (args.cap_factor or GRID[name][2]) * rows[1]["products"]  # it has lost by then: stop
    for degree in degrees:
        for spec, cut in cuts.items():
            H = operator()
            t0 = time.process_time()
            f = filtered_bottom(H, lam_max, lower, degree, cut,
                                max_steps=max(2, int(cap // degree)))
            cpu = time.process_time() - t0
            rows.append({"problem": name, "method": f"filter d={degree}, cut {spec} ({cut:.3g})",
                         "products": H.matvecs + top_products, "top1_products": top_products,
                         "cpu_s": cpu + top_cpu, "top1_cpu_s": top_cpu,
                         "error": err(f["values"]), "converged": f["converged"],
                         "certified": False, **f})
            log(f"  {name} filter d={degree} cut {spec} ({cut:.3g}): {H.matvecs} + "
                f"{top_products} products, {cpu + top_cpu:.2f} CPU s, error "
                f"{rows[-1]['error']:.1e}, converged {f['converged']} in {f['steps']} steps")
    return {"problem": name, "params": b.n_params, "reference": ref["method"],
            "bottom_ref": ref["bottom"][:BOTTOM], "lambda_max_ref": lam_ref, "rows": rows}


def table(results: list[dict]) -> str:
    lines = ["| problem | method | products (of which top-1) | CPU s | max error / lambda_max | "
             "residuals met | certified |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"| {r['problem']} | {r['method']} | {r['products']} "
                         f"({r['top1_products']}) | {r['cpu_s']:.2f} | {r['error']:.1e} | "
                         f"{'yes' if r['converged'] else 'no'} | "
                         f"{'yes' if r['certified'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--problems", type=csv, default=["digits-mlp", "cnn"])
    ap.add_argument("--degrees", type=lambda s: [int(x) for x in csv(s)], default=None,
                    help="filter degrees (default: 4,8,16 on the digits MLP, 4 on the CNN)")
    ap.add_argument("--cuts", type=csv, default=None,
                    help="ritz (the top run's smallest Ritz value), zero, oracle (between the "
                    "true 3rd and 4th) or a number f (cut = f lambda_max); default: "
                    "ritz,zero,oracle on the digits MLP, ritz on the CNN")
    ap.add_argument("--top-tol", type=float, default=1e-3,
                    help="tolerance of the top-1 run that gives lambda_max")
    ap.add_argument("--cap-factor", type=float, default=None,
                    help="a filtered run stops unconverged past this many times the products of "
                    "plain single-vector Lanczos (default: 5 on the digits MLP, 3 on the CNN)")
    ap.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    ap.add_argument("--cache-dir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "condlab-bench")
    args = ap.parse_args(argv)
    bad = [p for p in args.problems if p not in ("digits-mlp", "cnn")]
    if bad:
        ap.error(f"unknown problem {', '.join(bad)}; choose from digits-mlp, cnn")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = [run_problem(name, args, log) for name in args.problems]
    (args.out_dir / "bench_bottom.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
