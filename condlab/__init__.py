"""condlab: how well-conditioned is a network's loss surface, and what do preconditioners and
normalization do to it?

One call on a model and data you already have::

    report = condlab.spectrum(model, nn.CrossEntropyLoss(), loader, top=5, bottom=3)
    report["baseline"].condition_number, report.to_frame()

The stages, for control (what the one call and the command line run)::

    import torch, condlab

    data = condlab.load_dataset("digits", max_samples=512)
    model = condlab.build_model({"name": "mlp", "widths": [32]}, (64,), 10, seed=0)
    problem = condlab.Problem(model, condlab.make_batches(data, 128), "cross-entropy",
                              dtype=torch.float64)
    H = condlab.HessianOperator(problem)                  # matrix-free, [P, P]
    result = condlab.measure(H, condlab.EstimatorSettings(top=5, bottom=3, trace=True)).result
    print(result.lambda_max, result.condition_number, result.condition_definition)
"""

__version__ = "0.1.0"

import importlib
import sys
import types

# name -> module: imported on first use, so `condlab --help` (and anything that needs only a
# part of the package) does not pay for torch, scipy and pandas
_EXPORTS = {
    "SpectrumConfig": "condlab.config",
    "CondlabError": "condlab.errors",
    "UsageError": "condlab.errors",
    "condition_number": "condlab.estimators",
    "extreme_eigenpairs": "condlab.estimators",
    "hutchinson": "condlab.estimators",
    "hutchpp": "condlab.estimators",
    "lanczos": "condlab.estimators",
    "slq_density": "condlab.estimators",
    "load_checkpoint": "condlab.load.checkpoint",
    "model_from_checkpoint": "condlab.load.checkpoint",
    "load_dataset": "condlab.load.data",
    "make_batches": "condlab.load.data",
    "build_model": "condlab.load.models",
    "EstimatorSettings": "condlab.measure",
    "estimate": "condlab.measure",
    "measure": "condlab.measure",
    "Inputs": "condlab.inputs",
    "read_inputs": "condlab.inputs",
    "Setting": "condlab.settings",
    "build_settings": "condlab.settings",
    "apply_normalization": "condlab.normalization",
    "DenseOperator": "condlab.operators",
    "GGNOperator": "condlab.operators",
    "HessianOperator": "condlab.operators",
    "LinearOperator": "condlab.operators",
    "curvature_operator": "condlab.operators",
    "dense_ggn": "condlab.operators",
    "dense_hessian": "condlab.operators",
    "build_preconditioner": "condlab.preconditioners",
    "preconditioned_operator": "condlab.preconditioners",
    "Problem": "condlab.problem",
    "SpectrumResult": "condlab.report.records",
    "run_spectrum": "condlab.pipeline",
    "spectrum": "condlab.pipeline",
    "SpectrumReport": "condlab.pipeline",
    "Tracker": "condlab.tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'condlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """Importing the submodule ``condlab.measure`` must not replace the function ``measure``."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
