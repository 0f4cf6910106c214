"""From a config to a model, a dataset and a Problem: the loading half of every command."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
from condlab.load.data import Dataset, is_factory_spec, load_dataset, make_batches
from condlab.load.hf import build_hf_model, is_hf_spec, load_hf_weights
from condlab.load.models import build_model, import_factory
from condlab.load.structure import batch_len
from condlab.losses import Loss, check_loss_fits, default_loss, make_loss, shift_copied_labels
from condlab.problem import Problem, couples_samples


@dataclass(frozen=True)
class Loaded:
    """A model with its weights, the dataset it is measured on, and the loss."""

    model: nn.Module
    dataset: Dataset
    loss: str
    checkpoint: dict | None
    source: str
    loss_spec: Loss | None = None  # the loss with its options (ignore index, smoothing)

    @property
    def loss_fn(self) -> Loss:
        return self.loss_spec or make_loss(self.loss)


def num_outputs(dataset: Dataset) -> int:
    if dataset.task == "classification":
        return int(dataset.num_classes)
    return 1 if dataset.y.ndim == 1 else int(dataset.y.shape[1])


def _data_spec(cfg: SpectrumConfig, spec):
    """A factory spec with the run's --input-keys / --target-key."""
    if cfg.input_keys or cfg.target_key:
        if not is_factory_spec(spec if not isinstance(spec, dict) else spec.get("name")):
            raise UsageError(
                "--input-keys / --target-key select entries of dict samples from --data "
                "package.module:factory; drop them for this data"
            )
        spec = dict(spec) if isinstance(spec, dict) else {"name": spec}
        if cfg.input_keys:
            spec["input_keys"] = [k.strip() for key in cfg.input_keys for k in key.split(",") if k.strip()]
        if cfg.target_key:
            spec["target_key"] = cfg.target_key
    return spec


def token_model_spec(spec: dict, dataset: Dataset) -> tuple[dict, int]:
    """The built-in token transformer sized from the data: ``vocab`` 1 + the largest token id
    (of the inputs, and of per-position targets), a language-model head (logits per position,
    over the vocab) for per-position targets, a mean-pooled classifier for labels ``[N]``."""
    X, y = dataset.X, dataset.y
    if not isinstance(X, torch.Tensor) or X.is_floating_point():
        raise UsageError(
            "model 'transformer' takes integer token ids [N, T]; this data has "
            f"{'float' if isinstance(X, torch.Tensor) else type(X).__name__} inputs"
        )
    per_position = not y.is_floating_point() and y.ndim == 2
    ids = [X.reshape(-1)] + ([y[y >= 0].reshape(-1)] if per_position else [])
    vocab = spec.get("vocab") or int(torch.cat(ids).max()) + 1
    spec = {"vocab": vocab, "pool": "none" if per_position else "mean", **spec}
    if not per_position:
        spec.setdefault("tied", False)
    return spec, (vocab if per_position else num_outputs(dataset))


def default_loss_for(dataset: Dataset) -> str:
    """cross-entropy / mse by task; integer targets per position: the sequence cross-entropy."""
    y = dataset.y if dataset.y is not None else dataset.batches[0][1]
    if not y.is_floating_point() and y.ndim >= 2:
        return "sequence-cross-entropy"
    return default_loss(dataset.task)


def load(cfg: SpectrumConfig) -> Loaded:
    """Load the checkpoint and/or model, and the data, as ``cfg`` says."""
    ckpt = load_checkpoint(cfg.checkpoint, trust=cfg.trust_checkpoint) if cfg.checkpoint else None
    is_condlab = ckpt is not None and ckpt.get("format") == "condlab-checkpoint"
    data_spec = cfg.data if cfg.data is not None else (ckpt["data"] if is_condlab else None)
    if data_spec is None:
        raise UsageError("no data to measure on: pass --data (e.g. --data digits or a .npz file)")
    dataset = load_dataset(
        _data_spec(cfg, data_spec), target=cfg.target, max_samples=cfg.max_samples, seed=cfg.seed,
        task=cfg.task,
    )
    loss = cfg.loss or (ckpt.get("loss") if is_condlab else None) or default_loss_for(dataset)
    loss = check_loss_fits(loss, dataset.task)
    loss_spec = make_loss(loss, ignore_index=cfg.ignore_index, label_smoothing=cfg.label_smoothing)
    shifted = None
    if loss == "sequence-cross-entropy":  # trust: HF's labels = input_ids are shifted, with a note
        dataset, shifted = shift_copied_labels(dataset, cfg.ignore_index)

    if cfg.model:
        if is_hf_spec(cfg.model):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = build_hf_model(cfg.model, dict(cfg.model_args))
            source = f"Hugging Face {cfg.model}"
            if cfg.weights is not None:
                load_hf_weights(model, cfg.weights)
                source += f" with weights {cfg.weights}"
            else:
                source += f" at its initialization (seed {cfg.seed})"
        elif ":" in cfg.model:
            model = import_factory(cfg.model, dict(cfg.model_args))
            source = cfg.model
        else:
            spec = {"name": cfg.model, **dict(cfg.model_args)}
            n_out = num_outputs(dataset)
            if cfg.model == "transformer":
                spec, n_out = token_model_spec(spec, dataset)
            elif isinstance(dataset.X, torch.Tensor) and not dataset.X.is_floating_point():
                dataset = replace(dataset, X=dataset.X.double())  # integer features, float model
            model = build_model(spec, dataset.input_shape, n_out, seed=cfg.seed)
            source = f"built-in {cfg.model}"
        weights = cfg.weights
        if is_hf_spec(cfg.model):
            pass
        elif weights is not None:
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
    if shifted:
        source += f" ({shifted})"
    if cfg.weights and not cfg.model:
        raise UsageError("--weights needs --model: the weights alone do not say which model they fit")
    return Loaded(model, dataset, loss, ckpt, source, loss_spec)


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
    loss = loaded.loss_fn
    n_total = sum(batch_len(X) for X, _ in batches)
    count_total = sum(loss.count(y) for _, y in batches)
    coupled = couples_samples(model, cfg.bn_mode, cfg.dropout_mode)
    batches, first = local_batches(batches, coupled=coupled)
    return Problem(
        model,
        batches,
        loss,
        params=cfg.params if params is None else params,
        bn_mode=cfg.bn_mode,
        dropout_mode=cfg.dropout_mode,
        dtype=cfg.torch_dtype,
        device=cfg.device,
        seed=cfg.seed,
        n_total=n_total,
        count_total=count_total,
        batch_offset=first,
        output_key=cfg.output_key,
    )


def set_threads(threads: int | None, loaded: Loaded | None = None) -> None:
    """``threads`` torch CPU threads; None: 1 for small problems (parameters x samples < 5e7),
    where threading overhead outweighs the work, else torch's default."""
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif loaded is not None:
        size = sum(p.numel() for p in loaded.model.parameters()) * len(loaded.dataset)
        if size < 5e7:
            torch.set_num_threads(1)
