"""Loading what a measurement needs: models, datasets, checkpoints."""

from condlab.load.checkpoint import (
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    load_weights,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from condlab.load.data import (
    Dataset,
    list_datasets,
    load_dataset,
    make_batches,
    parse_spec,
    train_test_split,
)
from condlab.load.models import build_model, import_factory, list_models, resolve_model_spec

__all__ = [
    "Dataset",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_model",
    "import_factory",
    "list_datasets",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_weights",
    "make_batches",
    "make_checkpoint",
    "model_from_checkpoint",
    "parse_spec",
    "resolve_model_spec",
    "save_checkpoint",
    "train_test_split",
]
