"""Training: optimizers by name and a minimal, reproducible loop."""

from condlab.train.loop import TrainResult, dataset_loss, loss_fn, train, train_from_config
from condlab.train.optimizers import OPTIMIZERS, build_optimizer, list_optimizers, resolve_hparams

__all__ = [
    "OPTIMIZERS",
    "TrainResult",
    "build_optimizer",
    "dataset_loss",
    "list_optimizers",
    "loss_fn",
    "resolve_hparams",
    "train",
    "train_from_config",
]
