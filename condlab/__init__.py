"""condlab: how well-conditioned is a network's loss surface, and what do preconditioners and
normalization do to it?

The library API that the command line calls::

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

from condlab.config import SpectrumConfig  # noqa: E402
from condlab.errors import CondlabError, UsageError  # noqa: E402
from condlab.estimators import (  # noqa: E402
    condition_number,
    extreme_eigenpairs,
    hutchinson,
    hutchpp,
    lanczos,
    slq_density,
)
from condlab.load.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from condlab.load.data import load_dataset, make_batches  # noqa: E402
from condlab.load.models import build_model  # noqa: E402
from condlab.measure import EstimatorSettings, measure  # noqa: E402
from condlab.normalization import apply_normalization  # noqa: E402
from condlab.operators import (  # noqa: E402
    DenseOperator,
    GGNOperator,
    HessianOperator,
    LinearOperator,
    curvature_operator,
    dense_ggn,
    dense_hessian,
)
from condlab.preconditioners import build_preconditioner, preconditioned_operator  # noqa: E402
from condlab.problem import Problem  # noqa: E402
from condlab.report.records import SpectrumResult  # noqa: E402
from condlab.spectrum import run_spectrum  # noqa: E402

__all__ = [
    "CondlabError",
    "DenseOperator",
    "EstimatorSettings",
    "GGNOperator",
    "HessianOperator",
    "LinearOperator",
    "Problem",
    "SpectrumConfig",
    "SpectrumResult",
    "UsageError",
    "apply_normalization",
    "build_model",
    "build_preconditioner",
    "condition_number",
    "curvature_operator",
    "dense_ggn",
    "dense_hessian",
    "extreme_eigenpairs",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "load_checkpoint",
    "load_dataset",
    "make_batches",
    "measure",
    "model_from_checkpoint",
    "preconditioned_operator",
    "run_spectrum",
    "slq_density",
]
