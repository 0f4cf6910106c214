"""How well does the antisymmetric part of a computed operator measure its rounding noise?

For each operator (digits linear model, MLP Hessian / GGN, a GELU GGN) the dense matrix is
computed in float64 and float32 by condlab's products. It prints, in units of eps(dtype) ||A||:

- ``asym``: ``||(M - M^T) / 2||_2``, what :func:`condlab.estimators.noise.dense_noise` measures;
- ``true`` (float32 only): ``||(M + M^T) / 2 - A_64||_2``, the noise that moves eigenvalues;
- ``ratio``: true / asym, which ``NOISE_SAFETY`` (4) must exceed;
- ``block``: :func:`~condlab.estimators.noise.block_noise` from 6 random orthonormal vectors;
- ``null``: the largest of the ``n0`` smallest |eigenvalues|, ``n0`` the float64 nullity (the
  null space's spread in this dtype).

    python scripts/bench_noise_band.py
"""

from __future__ import annotations

import torch

from condlab.config import SpectrumConfig
from condlab.estimators.noise import block_noise, dense_noise
from condlab.inputs import read_inputs as load
from condlab.operators.curvature import curvature_operator
from condlab.problem import make_problem

CASES = [
    ("linear", {}, "hessian", None),
    ("mlp", {"widths": [32]}, "ggn", 64),
    ("mlp", {"widths": [32]}, "hessian", 256),
    ("mlp", {"widths": [16], "activation": "gelu"}, "ggn", 300),
]


def dense(cfg: SpectrumConfig) -> torch.Tensor:
    A = curvature_operator(make_problem(load(cfg), cfg), cfg.curvature, block_size=64)
    return A.to_dense(block_size=64).double()


def main() -> None:
    print(f"{'operator':34s} {'dtype':8s} {'asym':>7s} {'true':>7s} {'ratio':>6s} {'block':>7s} "
          f"{'null':>7s}")
    for model, args, curvature, n in CASES:
        mats = {dt: dense(SpectrumConfig(model=model, model_args=args, data="digits",
                                         curvature=curvature, dtype=dt, max_samples=n))
                for dt in ("float64", "float32")}
        ref = (mats["float64"] + mats["float64"].T) / 2
        ev64 = torch.linalg.eigvalsh(ref).abs()
        norm = float(ev64.max())
        n0 = int((ev64 <= 32 * 2.0**-52 * norm).sum())  # the float64 null space
        for dt, M in mats.items():
            unit = torch.finfo(getattr(torch, dt)).eps * norm
            asym = dense_noise(M) / unit
            sym = (M + M.T) / 2
            true = float(torch.linalg.matrix_norm(sym - ref, 2)) / unit if dt == "float32" else None
            g = torch.Generator().manual_seed(0)
            Y = torch.linalg.qr(torch.randn(M.shape[0], 6, generator=g, dtype=torch.float64))[0]
            block = block_noise(Y, M @ Y, M.shape[0]) / unit
            ev = torch.linalg.eigvalsh(sym).abs().sort().values
            null = float(ev[n0 - 1]) / unit if n0 else float("nan")
            name = f"{model} {args or ''} {curvature} N={n or 'all'}"
            t = f"{true:7.3f} {true / asym:6.2f}" if true is not None else f"{'-':>7s} {'-':>6s}"
            print(f"{name:34s} {dt:8s} {asym:7.3f} {t} {block:7.3f} {null:7.3f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
