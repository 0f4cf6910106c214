"""The settings measured beside the baseline.

- preconditioners (issue 3): the same operator, wrapped as ``P^-1/2 A P^-1/2``;
- normalizations (issue 4): another model (the normalized reparameterization) on the same,
  possibly transformed, data — a new Problem with its own operator.

Each yields ``(setting name, operator or problem, extra record fields)``.
"""

from __future__ import annotations

from collections.abc import Iterator

from condlab.config import SpectrumConfig


def preconditioned_settings(cfg: SpectrumConfig, problem, A, baseline) -> Iterator[tuple]:
    return iter(())


def normalized_settings(cfg: SpectrumConfig, loaded) -> Iterator[tuple]:
    """One Problem per ``--norm`` kind, on the normalized copy of the model."""
    from condlab.build import make_problem
    from condlab.load.data import make_batches
    from condlab.normalization import apply_normalization, predicted_nullity

    dtype = cfg.torch_dtype
    for kind in cfg.norm:
        raw = [(X.to(dtype), y) for X, y in make_batches(loaded.dataset, cfg.batch_size)]
        res = apply_normalization(
            loaded.model, loaded.dataset.X.to(dtype), kind, batches=raw, dtype=dtype
        )
        # inserted layers renumber a Sequential: a --params selection only carries over for input
        params = cfg.params if kind == "input" else ()
        prob = make_problem(
            loaded, cfg, model=res.model, transform=lambda X, t=res.transform: t(X.to(dtype)),
            params=params,
        )
        details = {k: v for k, v in res.summary().items() if k not in ("kind",)}
        yield kind, prob, dict(
            normalization=kind,
            function_change=float(res.function_change),
            params_added=int(res.params_added),
            predicted_nullity=predicted_nullity(
                res.model, curvature=cfg.curvature, bn_mode=cfg.bn_mode
            ),
            details=details,
        )
