"""From a config to a model, a dataset and a Problem: the loading half of every command."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from condlab.config import SpectrumConfig
from condlab.distributed import local_batches
from condlab.errors import UsageError
from condlab.load.checkpoint import (
    describe_keys,
    load_checkpoint,
    load_weights,
    match_prefix,
    model_from_checkpoint,
)
from condlab.load.data import Dataset, load_dataset, make_batches
from condlab.load.models import build_model, import_factory
from condlab.losses import check_loss_fits, default_loss
from condlab.problem import Problem, couples_samples


@dataclass(frozen=True)
class Loaded:
    """A model with its weights, the dataset it is measured on, and the loss."""

    model: nn.Module
    dataset: Dataset
    loss: str
    checkpoint: dict | None
    source: str


def num_outputs(dataset: Dataset) -> int:
    if dataset.task == "classification":
        return int(dataset.num_classes)
    return 1 if dataset.y.ndim == 1 else int(dataset.y.shape[1])


def load(cfg: SpectrumConfig) -> Loaded:
    """Load the checkpoint and/or model, and the data, as ``cfg`` says."""
    ckpt = load_checkpoint(cfg.checkpoint, trust=cfg.trust_checkpoint) if cfg.checkpoint else None
    is_condlab = ckpt is not None and ckpt.get("format") == "condlab-checkpoint"
    data_spec = cfg.data if cfg.data is not None else (ckpt["data"] if is_condlab else None)
    if data_spec is None:
        raise UsageError("no data to measure on: pass --data (e.g. --data digits or a .npz file)")
    dataset = load_dataset(
        data_spec, target=cfg.target, max_samples=cfg.max_samples, seed=cfg.seed, task=cfg.task
    )
    loss = cfg.loss or (ckpt.get("loss") if is_condlab else None) or default_loss(dataset.task)
    loss = check_loss_fits(loss, dataset.task)

    if cfg.model:
        if ":" in cfg.model:
            model = import_factory(cfg.model, dict(cfg.model_args))
            source = cfg.model
        else:
            spec = {"name": cfg.model, **dict(cfg.model_args)}
            model = build_model(spec, tuple(dataset.X.shape[1:]), num_outputs(dataset), seed=cfg.seed)
            source = f"built-in {cfg.model}"
        weights = cfg.weights
        if weights is not None:
            w = load_checkpoint(weights, trust=cfg.trust_checkpoint)
            source += _load_into(model, w, weights, cfg.strip_prefix)
            if ckpt is None or not is_condlab:  # --precond optimizer reads the weights' file
                ckpt = w
        elif ckpt is not None:
            source += _load_into(model, ckpt, cfg.checkpoint, cfg.strip_prefix)
        elif ":" not in cfg.model:
            source += f" at its initialization (seed {cfg.seed})"
    elif ckpt is not None:
        model = model_from_checkpoint(ckpt)
        source = f"checkpoint {cfg.checkpoint}"
    else:
        raise UsageError("nothing to measure: pass a checkpoint, or --model")
    if cfg.weights and not cfg.model:
        raise UsageError("--weights needs --model: the weights alone do not say which model they fit")
    return Loaded(model, dataset, loss, ckpt, source)


def _load_into(model: nn.Module, ckpt: dict, path, strip_prefix: str | None) -> str:
    """Load a checkpoint's weights into ``model``; the source line says which entries were used."""
    state, note = match_prefix(ckpt["state_dict"], model, strip_prefix)
    load_weights(model, state, source=str(path))
    return f" with weights {path}" + describe_keys(ckpt, note)


def make_problem(
    loaded: Loaded,
    cfg: SpectrumConfig,
    *,
    model: nn.Module | None = None,
    transform=None,
    params: tuple[str, ...] | None = None,
) -> Problem:
    """The Problem for ``loaded`` (or a replacement ``model`` on ``transform``-ed inputs).

    Under torchrun it holds this rank's contiguous shard of the batches, weighted by the global
    sample count (see :mod:`condlab.distributed`).
    """
    model = loaded.model if model is None else model
    batches = make_batches(loaded.dataset, cfg.batch_size)
    if transform is not None:
        batches = [(transform(X), y) for X, y in batches]
    n_total = sum(int(X.shape[0]) for X, _ in batches)
    coupled = couples_samples(model, cfg.bn_mode, cfg.dropout_mode)
    batches, first = local_batches(batches, coupled=coupled)
    return Problem(
        model,
        batches,
        loaded.loss,
        params=cfg.params if params is None else params,
        bn_mode=cfg.bn_mode,
        dropout_mode=cfg.dropout_mode,
        dtype=cfg.torch_dtype,
        device=cfg.device,
        seed=cfg.seed,
        n_total=n_total,
        batch_offset=first,
    )


def set_threads(threads: int | None, loaded: Loaded | None = None) -> None:
    """``threads`` torch CPU threads; None: 1 for small problems (parameters x samples < 5e7),
    where threading overhead outweighs the work, else torch's default."""
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif loaded is not None:
        size = sum(p.numel() for p in loaded.model.parameters()) * len(loaded.dataset.y)
        if size < 5e7:
            torch.set_num_threads(1)
