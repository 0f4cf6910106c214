"""The load stage: every file a run needs, read once, into :class:`Inputs`.

    inputs = read_inputs(cfg)   # model with its weights, dataset, loss, optimizer state

One route from a spec to a model and its data: :func:`read_inputs` (``spectrum``, ``track``,
``check``, the demo) and :func:`model_for_data` (``train``) both size a built-in model from the
data here. A weights file (or a checkpoint) is read once; its optimizer entry, when it has one,
is kept as :attr:`Inputs.optimizer_state` for ``--precond optimizer``, and the whole file is
then let go. The options of this stage are the fields of :class:`LoadOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported where it is used: --help lists these options without it
    import torch
    from torch import nn

from condlab.errors import UsageError
from condlab.optionfield import BELOW_ONE, LIST, MAPPING, PATH, POSITIVE, SPEC, option


@dataclass(frozen=True)
class LoadOptions:
    """What to load: the model and its weights, the data, the loss."""

    GROUP: ClassVar[str] = "What to load"

    checkpoint: str | None = option(
        PATH, None, "A condlab checkpoint (from `condlab train`) or a state_dict file.",
        flags=())  # the command's argument CHECKPOINT
    model: str | None = option(
        str, None, "A built-in model (linear, mlp, cnn, transformer), 'package.module:factory', "
        "or a Hugging Face config: 'hf-config:PATH'.")
    model_args: dict = option(
        MAPPING, {}, "The model's arguments (e.g. widths: [32], norm: batch).", flags=())
    weights: str | None = option(
        PATH, None, "Weights for --model: a state_dict, a dict holding one (model / state_dict / "
        "model_state_dict, beside optimizer / optimizer_state_dict), a Lightning checkpoint, "
        ".safetensors, or a save_pretrained directory.")
    strip_prefix: str | None = option(
        str, None, "Strip this prefix from the weights' keys (Lightning: 'model.'); keys without "
        "it are ignored.", default_text="detected when exactly one prefix fits", advanced=True)
    trust_checkpoint: bool = option(
        bool, False, "Allow loading a pickled full-module file (runs code from it). Only this "
        "flag grants it; a file cannot.", flags=("--trust-checkpoint",), in_file=False,
        advanced=True)
    data: Any = option(
        SPEC, None, "digits, iris, wine, breast_cancer, diabetes, a synthetic spec "
        "(linreg:d=10,kappa=1e3), a .npz/.csv/.pt file, or 'package.module:factory'.",
        default_text="the checkpoint's")
    target: str | None = option(
        str, None, "The target column of a .csv file.", default_text="the last", advanced=True)
    task: str | None = option(
        str, None, "classification or regression: overrides the guess from the targets (integers "
        "with at most 20 values are class labels).", choices=("classification", "regression"),
        default_text="guessed", advanced=True)
    loss: str | None = option(
        str, None, "cross-entropy, sequence-cross-entropy, mse, bce, or 'package.module:fn'.",
        default_text="the checkpoint's, else from the task and targets")
    ignore_index: int = option(
        int, -100, "Targets with this value are left out of the cross-entropies (padding).",
        advanced=True)
    label_smoothing: float = option(
        float, 0.0, "Label smoothing of the cross-entropies.", check=BELOW_ONE, advanced=True)
    input_keys: tuple[str, ...] = option(
        LIST, (), "Dict samples: an entry passed to the model as a keyword argument (repeatable, "
        "or comma-separated).", default_text="all but the target", advanced=True)
    target_key: str | None = option(
        str, None, "Dict samples: the entry holding the targets.",
        default_text="labels, label, targets, target or y", advanced=True)
    max_samples: int | None = option(
        int, None, "Use the first N samples.", check=POSITIVE, default_text="all", advanced=True)


@dataclass(frozen=True)
class Inputs:
    """A model with its weights, the dataset it is measured on, the loss, and the optimizer
    state found beside the weights (None without one)."""

    model: nn.Module
    dataset: Any  # condlab.load.data.Dataset
    loss: str
    optimizer_state: dict | None
    source: str
    loss_spec: Any = None  # condlab.losses.Loss: the loss with its options

    @property
    def loss_fn(self):
        from condlab.losses import make_loss

        return self.loss_spec or make_loss(self.loss)


def _data_spec(cfg: LoadOptions, spec):
    """A factory spec with the run's --input-keys / --target-key; a folder refused by name."""
    from condlab.load.data import is_factory_spec

    if isinstance(spec, (str, Path)) and Path(spec).is_dir():
        raise UsageError(
            f"--data '{spec}' is a directory; give a data file (.npz, .csv, .pt), a built-in "
            "dataset name, or 'package.module:factory'"
        )
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


def dataset_from_batches(data, name: str = "the given data"):
    """A Dataset from a ``DataLoader`` (its batches read once, in order, and kept fixed), a list
    of ``(X, y)`` batches, or one ``(X, y)`` pair; batches may be dicts with a ``labels`` entry.
    Integer targets are class labels."""
    import torch

    from condlab.load.data import Dataset
    from condlab.load.structure import batch_len, concat
    from condlab.load.userdata import split_sample

    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        data = [data]
    batches = [split_sample(b, None, None, f"batch {i} of {name}") for i, b in enumerate(data)]
    batches = [(X, y) for X, y in batches if batch_len(X)]
    if not batches:
        raise UsageError(f"{name} holds no batches")
    try:
        X, y = concat([b[0] for b in batches]), concat([b[1] for b in batches])
    except RuntimeError:  # batches padded to different lengths: no single tensor
        X, y = None, None
    labels = [t for _, t in batches]
    integer = not labels[0].is_floating_point()
    ids = torch.cat([t.reshape(-1) for t in labels]) if integer else None
    num_classes = int(ids[ids >= 0].max()) + 1 if integer and bool((ids >= 0).any()) else None
    meta = {"batches": batches} if len(batches) > 1 else {}
    return Dataset(X=X, y=y, task="classification" if integer else "regression",
                   num_classes=num_classes, name=name, spec={"name": name}, meta=meta)


def token_model_spec(spec: dict, dataset) -> tuple[dict, int]:
    """The built-in token transformer sized from the data: ``vocab`` 1 + the largest token id
    (of the inputs, and of per-position targets), a language-model head (logits per position,
    over the vocab) for per-position targets, a mean-pooled classifier for labels ``[N]``."""
    import torch

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
    return spec, (vocab if per_position else dataset.num_outputs)


def default_loss_for(dataset) -> str:
    """cross-entropy / mse by task; integer targets per position: the sequence cross-entropy."""
    from condlab.losses import default_loss

    y = dataset.y if dataset.y is not None else dataset.batches[0][1]
    if not y.is_floating_point() and y.ndim >= 2:
        return "sequence-cross-entropy"
    return default_loss(dataset.task)


def model_for_data(spec: dict, dataset, *, seed: int, dtype: torch.dtype | None = None
                   ) -> tuple[nn.Module, Any, dict, int]:
    """A model ``spec`` (``{"name", **arguments}``: a built-in or ``package.module:factory``)
    sized from ``dataset``: ``(model, dataset, spec, outputs)``, the spec with the sizes it
    took. The transformer takes its vocabulary from the token ids; integer features of another
    built-in become ``dtype`` floats (the returned dataset). ``spectrum`` and ``train`` both
    build their models here."""
    import torch

    from condlab.load.models import build_model

    dtype = torch.float64 if dtype is None else dtype
    name = spec.get("name", "")
    n_out = None
    if name == "transformer":
        spec, n_out = token_model_spec(spec, dataset)
    structured = not isinstance(dataset.X, torch.Tensor)
    if ":" not in name and name != "transformer" and not structured \
            and not dataset.X.is_floating_point():
        dataset = replace(dataset, X=dataset.X.to(dtype))  # integer features, float model
    n_out = dataset.num_outputs if n_out is None else n_out
    shape = dataset.input_shape if not structured or (":" not in name and name != "transformer") \
        else ()
    return build_model(spec, shape or (1,), n_out, seed=seed), dataset, spec, n_out


def read_inputs(cfg, *, checkpoint: dict | None = None) -> Inputs:
    """Read what ``cfg`` (a :class:`condlab.config.SpectrumConfig`) names, each file once.

    ``checkpoint``: a condlab checkpoint already in memory (the demo's), in place of the file
    ``cfg.checkpoint``.
    """
    from condlab.load.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint
    from condlab.load.data import load_dataset
    from condlab.losses import check_loss_fits, make_loss, shift_copied_labels

    if cfg.weights and not cfg.model:
        raise UsageError("--weights needs --model: the weights alone do not say which model they fit")
    ckpt = checkpoint
    if ckpt is None and cfg.checkpoint:
        ckpt = load_checkpoint(cfg.checkpoint, trust=cfg.trust_checkpoint)
    is_condlab = ckpt is not None and ckpt.get("format") == FORMAT
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
    if loss == "sequence-cross-entropy":  # HF's labels = input_ids: shifted, with a note
        dataset, shifted = shift_copied_labels(dataset, cfg.ignore_index)

    if cfg.model:
        model, dataset, source = _model(cfg, dataset)
        weights = (_read_weights(cfg.weights, cfg.trust_checkpoint) if cfg.weights is not None
                   else ckpt)
        if weights is not None:
            where = cfg.weights if cfg.weights is not None else cfg.checkpoint
            source += _load_into(model, weights, where, cfg.strip_prefix, hf=_is_hf(cfg.model))
            if ckpt is None or not is_condlab:  # --precond optimizer reads the weights' file
                ckpt = weights
        elif ":" not in cfg.model or _is_hf(cfg.model):
            source += f" at its initialization (seed {cfg.seed})"
    elif ckpt is not None:
        model = model_from_checkpoint(ckpt)
        source = f"checkpoint {cfg.checkpoint}"
    else:
        raise UsageError("nothing to measure: pass a checkpoint, or --model")
    state = _optimizer_state(cfg, ckpt)
    if shifted:
        source += f" ({shifted})"
    return Inputs(model, dataset, loss, state, source, loss_spec)


def _is_hf(spec: str) -> bool:
    from condlab.load.hf import is_hf_spec

    return is_hf_spec(spec)


def _model(cfg, dataset) -> tuple[nn.Module, Any, str]:
    """The model ``--model`` names, at its initialization, and the source line."""
    import torch

    from condlab.load.hf import build_hf_model
    from condlab.load.models import import_factory

    args = dict(cfg.model_args)
    if _is_hf(cfg.model):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return build_hf_model(cfg.model, args), dataset, f"Hugging Face {cfg.model}"
    if ":" in cfg.model:
        return import_factory(cfg.model, args), dataset, cfg.model
    model, dataset, _, _ = model_for_data({"name": cfg.model, **args}, dataset, seed=cfg.seed)
    return model, dataset, f"built-in {cfg.model}"


def _read_weights(path, trust: bool) -> dict:
    """A weights file (or the weights file of a ``save_pretrained`` directory), read once."""
    from condlab.load.checkpoint import load_checkpoint
    from condlab.load.hf import WEIGHT_FILES

    path = Path(path)
    if path.is_dir():
        found = [path / f for f in WEIGHT_FILES if (path / f).is_file()]
        if not found:
            raise UsageError(f"--weights '{path}' is a directory holding none of "
                             f"{', '.join(WEIGHT_FILES)}; give a weights file or a save_pretrained "
                             "directory")
        path = found[0]
    return load_checkpoint(path, trust=trust)


def tied_fill(model: nn.Module, state: dict) -> dict:
    """``state`` with the entries of tied parameters it leaves out (``save_pretrained`` and
    safetensors keep one name per shared tensor, e.g. ``lm_head.weight`` tied to the token
    embedding) filled from the name it keeps."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    state = dict(state)
    for names in groups.values():
        kept = [n for n in names if n in state]
        for n in names:
            if kept and n not in state:
                state[n] = state[kept[0]]
    return state


def _load_into(model: nn.Module, ckpt: dict, path, strip_prefix: str | None, *, hf: bool) -> str:
    """Load a checkpoint's weights into ``model``; the source line says which entries were used.
    A Hugging Face model rebuilds its buffers (attention masks) itself: those may be absent."""
    from condlab.load.checkpoint import describe_keys, load_weights, match_prefix

    state, note = match_prefix(ckpt["state_dict"], model, strip_prefix)
    state = tied_fill(model, state)
    if hf:
        params = dict(model.named_parameters(remove_duplicate=False))
        own = model.state_dict()
        state = {**{k: v for k, v in own.items() if k not in params and k not in state}, **state}
    load_weights(model, state, source=str(path))
    return f" with weights {path}" + describe_keys(ckpt, note)


def _optimizer_state(cfg, ckpt: dict | None) -> dict | None:
    """The optimizer state for ``--precond optimizer``: ``--optimizer-state``, else the entry of
    the checkpoint or weights file (None: neither has one)."""
    if cfg.optimizer_state:
        return read_optimizer_state(cfg.optimizer_state)
    return (ckpt or {}).get("optimizer") or None


def read_optimizer_state(path) -> dict:
    """A torch optimizer ``state_dict`` file (``--optimizer-state``), or one holding it under
    an optimizer key, or condlab's ``{"name", "hparams", "state_dict"}`` entry."""
    import torch

    from condlab.load.checkpoint import OPTIMIZER_KEYS, find_optimizer_state

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"optimizer state '{path}' does not exist") from None
    except Exception as e:
        raise UsageError(
            f"'{path}' is not a torch optimizer state_dict loadable with weights_only=True "
            f"({type(e).__name__}); save optimizer.state_dict() with torch.save"
        ) from None
    found = find_optimizer_state(obj)
    if found is None and isinstance(obj, dict) and "state_dict" in obj:
        return obj  # condlab's {"name", "hparams", "state_dict"} optimizer entry
    if found is None:
        raise UsageError(
            f"'{path}' holds no torch optimizer state_dict (itself, or under "
            f"{', '.join(map(repr, OPTIMIZER_KEYS))}); save optimizer.state_dict()"
        )
    return found[0]


def set_threads(threads: int | None, inputs: Inputs | None = None) -> None:
    """``threads`` torch CPU threads; None: 1 for small problems (parameters x samples < 5e7),
    where threading overhead outweighs the work, else torch's default."""
    import torch

    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif inputs is not None:
        size = sum(p.numel() for p in inputs.model.parameters()) * len(inputs.dataset)
        if size < 5e7:
            torch.set_num_threads(1)
