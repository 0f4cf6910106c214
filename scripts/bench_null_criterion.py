"""How large is the arithmetic noise of a curvature operator, in units of eps(dtype) * ||A||?

This measures the factor ``c`` of the null criterion ``|lambda| <= c * eps(dtype) * ||A||``
(see :mod:`condlab.estimators.condition`) on real operators: the digits MLP (Hessian and GGN,
cross-entropy) and a CNN on digits, each at its initialization and after a short training run.
The truth is a float64 dense matrix; for each operator it reports, in units of
``eps(dtype) * ||A||``:

- ``product``: ``||A_32 - A_64||_2``, the float32 operator's own noise (a bound on how far any
  float32 eigenvalue can move, by Weyl's inequality);
- ``dense``: the largest ``|lambda_i(A_32) - lambda_i(A_64)|`` (what ``--exact`` sees in float32);
- ``null32``: the largest float32 ``|lambda|`` among the eigenvalues null in float64
  (``|lambda_64| <= NOISE_FACTOR eps(float64) ||A||``);
- ``lanczos``: the largest error of the default float32 run's bottom Ritz values.

It then prints the nullity and kappa that the shipped criterion reports in each dtype, beside
the float64 exact truth.

    python scripts/bench_null_criterion.py [--samples 512] [--steps 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from condlab.config import SpectrumConfig
from condlab.estimators.condition import noise_rel
from condlab.inputs import read_inputs as load
from condlab.measure import EstimatorSettings, measure
from condlab.operators.curvature import curvature_operator
from condlab.problem import make_problem

CASES = [
    ("mlp", {"widths": [32]}, "hessian"),
    ("mlp", {"widths": [32]}, "ggn"),
    ("cnn", {"channels": [4, 8]}, "hessian"),
    ("cnn", {"channels": [4, 8]}, "ggn"),
]


def train(loaded, steps: int, seed: int) -> None:
    """A few full-batch Adam steps, so the spectrum has a trained model's small eigenvalues."""
    torch.manual_seed(seed)
    model, ds = loaded.model, loaded.dataset
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = ds.X.float(), ds.y
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()


def dense(loaded, cfg: SpectrumConfig) -> torch.Tensor:
    A = curvature_operator(make_problem(loaded, cfg), cfg.curvature, block_size=64)
    M = A.to_dense(block_size=64).double()
    return (M + M.T) / 2


def one_case(model: str, args: dict, curvature: str, samples: int, steps: int) -> dict:
    base = dict(model=model, model_args=args, data="digits", max_samples=samples, curvature=curvature)
    loaded = load(SpectrumConfig(**base))
    if steps:
        train(loaded, steps, seed=0)
    M64 = dense(loaded, SpectrumConfig(**base, dtype="float64"))
    M32 = dense(loaded, SpectrumConfig(**base, dtype="float32"))
    e64, e32 = torch.linalg.eigvalsh(M64), torch.linalg.eigvalsh(M32)
    norm = float(e64.abs().max())
    eps32 = torch.finfo(torch.float32).eps
    null = e64.abs() <= noise_rel(torch.float64) * norm
    unit32 = eps32 * norm
    row = {
        "case": f"{model} {curvature}" + (f" ({steps} Adam steps)" if steps else " (init)"),
        "P": M64.shape[0],
        "norm": norm,
        "true_nullity": int(null.sum()),
        "product": float(torch.linalg.matrix_norm(M32 - M64, ord=2)) / unit32,
        "dense": float((e32 - e64).abs().max()) / unit32,
        "null32": float(e32[null].abs().max()) / unit32 if null.any() else None,
    }
    truth = measure(M64, EstimatorSettings(top=3, bottom=3, exact=True)).result
    row["truth (float64 dense)"] = {"nullity": truth.nullity, "kappa": truth.condition_number,
                                    "definiteness": truth.definiteness}
    for dtype in ("float32", "float64"):
        cfg = SpectrumConfig(**base, dtype=dtype)
        A = curvature_operator(make_problem(loaded, cfg), curvature, block_size=64)
        for exact in (True, False):
            est = EstimatorSettings(top=3, bottom=3, tol=cfg.resolved_tol, exact=exact, max_hvps=400)
            r = measure(A, est).result
            key = f"{dtype}{' exact' if exact else ''}"
            row[key] = {
                "nullity": r.nullity,
                "kappa": r.condition_number,
                "threshold": r.threshold,
                "definiteness": r.definiteness,
                "bound": r.condition_bound,
                "bottom": r.eigenvalues_bottom,
            }
            if dtype == "float32" and not exact and r.eigenvalues_bottom:
                errs = [
                    min(abs(v - float(t)) for t in e64) for v in r.eigenvalues_bottom if v == v
                ]
                row["lanczos"] = max(errs) / unit32
    row["true_bottom"] = e64[:3].tolist()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for steps in sorted({0, args.steps}):
        for model, margs, curvature in CASES:
            row = one_case(model, margs, curvature, args.samples, steps)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
