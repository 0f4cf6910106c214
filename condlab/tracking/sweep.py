"""``condlab track``: the spectrum of every checkpoint of a run, in step order, into one CSV.

Checkpoints are files matched by globs or found in folders. Each is read as
:func:`condlab.load.checkpoint.load_checkpoint` reads it (``weights_only``; pickled code only
with ``trust``): a condlab checkpoint, a plain ``state_dict``, a dict such as
``{"model": state_dict, "optimizer": opt.state_dict(), "step": k}``, Lightning's layout. The
step is the checkpoint's ``step`` (or ``global_step``, ``iteration``; a condlab checkpoint's
``train.steps``), else the last number in the file name. ``lr`` and ``beta1`` (Adam's
``betas[0]``, SGD's ``momentum``) come from each checkpoint's optimizer state unless given.

Every checkpoint is measured exactly as ``condlab spectrum`` would
(:func:`condlab.pipeline.run_spectrum`), with Lanczos warm-started from the previous checkpoint's Ritz vectors of the same setting
(``warm``); ``--top 1 --bottom 0`` (lambda_max alone) takes the tracker's fast path
(:mod:`condlab.tracking.sharpness`: single-vector Lanczos from the previous top vectors, stopped
on the eigenvalue). Its rows are appended to the CSV and fsync'ed before the next checkpoint
starts, and the Ritz vectors go to ``NAME.warm`` beside it with a fingerprint of those rows, so
a resumed sweep continues the same chain of warm starts and writes the same bytes as an
uninterrupted one; a warm file that does not match the CSV is not used.

Each checkpoint's tensors are read once: discovery maps the files (:func:`peek`: step and
shapes), the measurement reads them (the first one's read at start-up is kept for its
measurement). Only a resume without a usable warm file reads the checkpoints already in the
CSV again, to rebuild the chain.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from condlab.config import SpectrumConfig
from condlab.errors import CondlabError, UsageError
from condlab.inputs import Inputs, read_inputs
from condlab.load.checkpoint import (
    FORMAT,
    classify,
    load_weights,
    match_prefix,
    read_torch_file,
    save_checkpoint,
)
from condlab.options import TRACK_FLAGS, by_name
from condlab.tracking.rows import error_row, is_adaptive, optimizer_hparams, result_rows
from condlab.tracking.sharpness import measure_step

STEP_KEYS = ("step", "global_step", "iteration")
SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar", ".safetensors")  # what a folder is searched for
ON_ERROR = by_name(TRACK_FLAGS)["on_error"].choices  # stop, skip


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file of the sweep; ``error`` if it could not be read at discovery."""

    path: Path
    step: int
    error: str | None = None

    @property
    def key(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Contents:
    state_dict: dict
    optimizer: dict | None
    step: int | None
    condlab: bool  # a condlab checkpoint (it names its model and data)
    checkpoint: dict = field(default_factory=dict, repr=False)  # as load_checkpoint returns it


@dataclass
class SweepSummary:
    measured: int = 0
    resumed: int = 0  # checkpoints already in the CSV
    replayed: int = 0  # of those, re-measured to rebuild the warm start
    stale_warm: bool = False  # NAME.warm was another sweep's or older than the CSV: not used
    skipped: list[str] = field(default_factory=list)  # one line per skipped checkpoint
    hvps: int = 0


# -- finding and reading checkpoints -----------------------------------------------------------
def find_checkpoints(patterns: Sequence[str]) -> list[Path]:
    """Files matched by each glob, or found (``*.pt``, ``*.pth``, ..) in each folder."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        p = Path(pattern)
        if p.is_dir():
            paths = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in SUFFIXES)
            if not paths:
                raise UsageError(f"folder '{p}' holds no checkpoint files ({', '.join(SUFFIXES)}); "
                                 "give a glob such as 'run/ckpt_*.pt'")
        else:
            paths = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
            if not paths:
                raise UsageError(f"no checkpoint file matches '{pattern}'; give a folder or a "
                                 "glob such as 'run/ckpt_*.pt' (quoted, so the shell does not expand it)")
        found.update(dict.fromkeys(paths))
    return list(found)


def step_from_name(path: Path) -> int | None:
    """The last number in the file name (``ckpt_000300.pt`` -> 300), or None."""
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def _step(value: Any, path: Path) -> int:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise UsageError(f"checkpoint '{path}' has step {value!r}; a step is an integer >= 0")
    return int(value)


def contents(obj: Any, path: Path) -> Contents:
    """The weights, optimizer state and step of what ``torch.load`` returned (any layout
    :func:`condlab.load.checkpoint.load_checkpoint` reads)."""
    ck = classify(obj, path)
    step = None
    if isinstance(obj, Mapping):
        step = next((obj[k] for k in STEP_KEYS if obj.get(k) is not None), None)
        if step is None and ck["format"] == FORMAT:
            step = (obj.get("train") or {}).get("steps")
    optimizer = ck.get("optimizer")
    return Contents(dict(ck["state_dict"]), optimizer if isinstance(optimizer, Mapping) else None,
                    None if step is None else _step(step, path), ck["format"] == FORMAT, ck)


def read(path: Path, trust: bool = False) -> Contents:
    """The whole checkpoint: its tensors are read."""
    return contents(read_torch_file(path, trust=trust), path)


def peek(path: Path, trust: bool = False) -> Contents:
    """The checkpoint's structure, step and shapes, its tensors' bytes left on disk: torch files
    are mapped (``mmap``), a safetensors file's header is read. For discovery only: the
    mapped tensors must not be kept (a file rewritten in place would invalidate them)."""
    if path.suffix.lower() != ".safetensors":
        return contents(read_torch_file(path, trust=trust, mmap=True), path)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"'{path}' is not a readable safetensors file ({e})") from None
    if not shapes:
        raise UsageError(f"safetensors file '{path}' holds no tensors")
    return contents({k: torch.empty(v, device="meta") for k, v in shapes.items()}, path)


def _signature(state_dict: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _differ(a: dict, b: dict) -> str:
    missing = [k for k in a if k not in b]
    extra = [k for k in b if k not in a]
    shapes = [f"{k} {list(a[k])} vs {list(b[k])}" for k in a if k in b and a[k] != b[k]]
    parts = [f"lacks {', '.join(missing[:3])}" if missing else "",
             f"adds {', '.join(extra[:3])}" if extra else "",
             f"shapes {', '.join(shapes[:3])}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def discover(patterns: Sequence[str], *, trust: bool = False) -> list[Checkpoint]:
    """Every checkpoint in step order, its step and architecture found by :func:`peek` (the
    tensors' bytes are read once, later, when the checkpoint is measured).

    Raises a UsageError before any measurement for an empty match, a checkpoint without a step,
    or checkpoints of different architectures. A file that cannot be read is kept (with its
    step from the file name) and fails, or is skipped, when the sweep reaches it.
    """
    found, first = [], None
    for path in find_checkpoints(patterns):
        named = step_from_name(path)
        try:
            c = peek(path, trust)
        except UsageError as e:
            if named is None:
                raise UsageError(f"{e}; and its name holds no step to order it by: remove it from the sweep") from None
            found.append(Checkpoint(path, named, error=str(e)))
            continue
        step = c.step if c.step is not None else named
        if step is None:
            raise UsageError(
                f"checkpoint '{path}' holds no step (no {', '.join(STEP_KEYS)} entry) and its file "
                "name has no number; save {'step': k} in it or name it like ckpt_<step>.pt"
            )
        sig = _signature(c.state_dict)
        if first is None:
            first = (path, sig)
        elif sig != first[1]:
            raise UsageError(
                f"checkpoints of different architectures in one sweep: '{path}' {_differ(first[1], sig)} "
                f"compared with '{first[0]}'; sweep each run separately"
            )
        found.append(Checkpoint(path, step))
    return sorted(found, key=lambda c: (c.step, c.key))


# -- measuring ---------------------------------------------------------------------------------
def warm_path(csv_path: Path) -> Path:
    """Where a sweep keeps the Ritz vectors of its last checkpoint: ``NAME.warm`` (a torch
    file whose suffix no checkpoint search picks up, should the CSV sit beside them)."""
    return csv_path.with_name(csv_path.stem + ".warm")


class Sweep:
    """Measures checkpoints one by one as ``cfg`` says, chaining warm starts."""

    def __init__(self, cfg: SpectrumConfig, checkpoints: list[Checkpoint], *, warm: bool = True,
                 threads: int | None = None):
        self.cfg, self.checkpoints, self.warm, self.threads = cfg, checkpoints, warm, threads
        readable = [c for c in checkpoints if c.error is None]
        if not readable:
            raise UsageError("no checkpoint of the sweep can be read: "
                             + "; ".join(c.error or "" for c in checkpoints[:2]))
        first = readable[0]
        c = read(first.path, cfg.trust_checkpoint)
        if not cfg.model and not c.condlab:
            raise UsageError(
                f"'{first.path}' does not say which model it holds; pass --model (a built-in spec "
                "with --model-config, or 'package.module:factory')"
            )
        # the model (built once, weights replaced per checkpoint) and the data, as spectrum loads
        # them; a condlab checkpoint is handed over, not read again
        base_cfg = dataclasses.replace(cfg, checkpoint=str(first.path) if c.condlab else None)
        self.base: Inputs = read_inputs(base_cfg, checkpoint=c.checkpoint if c.condlab else None)
        self.loaded(c, first.path)  # weights that do not fit the model: a usage error, before any work
        self.held: tuple[str, Contents] | None = (first.key, c)  # measured next: not read twice

    def loaded(self, c: Contents, path: Path) -> Inputs:
        model = copy.deepcopy(self.base.model)
        dtypes = {v.dtype for v in c.state_dict.values() if v.is_floating_point()}
        if len(dtypes) == 1:  # keep the precision the weights were saved in (float64 stays float64)
            model = model.to(dtypes.pop())
        state, _ = match_prefix(c.state_dict, model, self.cfg.strip_prefix)
        model = load_weights(model, state, source=str(path))
        return dataclasses.replace(self.base, model=model, optimizer_state=c.optimizer,
                                   source=f"checkpoint {path}")

    def measure(self, ckpt: Checkpoint, starts: dict | None, on_progress=None):
        """``(rows, Ritz vectors)`` of one checkpoint; CondlabError if it cannot be measured."""
        if ckpt.error is not None:
            raise CondlabError(ckpt.error)
        if self.held is not None and self.held[0] == ckpt.key:
            c, self.held = self.held[1], None
        else:
            try:
                c = read(ckpt.path, self.cfg.trust_checkpoint)
            except UsageError as e:  # a file that changed since discovery
                raise CondlabError(str(e)) from None
        lr, beta1 = optimizer_hparams(c.optimizer)
        lr = self.cfg.lr if self.cfg.lr is not None else lr
        beta1 = self.cfg.beta1 if self.cfg.beta1 is not None else beta1
        cfg = dataclasses.replace(self.cfg, checkpoint=ckpt.key, lr=lr, beta1=beta1)
        results, vectors = measure_step(cfg, self.loaded(c, ckpt.path), starts if self.warm else None,
                                        threads=self.threads, on_progress=on_progress)
        rows = result_rows(ckpt.step, ckpt.key, results, lr, beta1, is_adaptive(c.optimizer))
        return rows, vectors


def run_sweep(
    sweep: Sweep,
    log,
    done_rows: list[dict],
    *,
    on_error: str = "stop",
    on_checkpoint: Callable[[int, int, Checkpoint], None] | None = None,
    on_progress=None,
) -> SweepSummary:
    """Measure every checkpoint not yet in ``done_rows``, appending its rows to ``log``.

    ``on_error='stop'`` raises a CondlabError at the first checkpoint that cannot be measured
    (the rows before it are kept); ``'skip'`` writes a warning row for it and goes on.
    """
    if on_error not in ON_ERROR:
        raise UsageError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    summary = SweepSummary()
    done = list(dict.fromkeys(r["checkpoint"] for r in done_rows if r.get("checkpoint")))
    state_path = warm_path(Path(log.path))
    starts = _resume_starts(sweep, done, done_rows, state_path, summary, on_progress)
    todo = [c for c in sweep.checkpoints if c.key not in set(done)]
    summary.resumed = len(done)
    for i, ckpt in enumerate(todo):
        if on_checkpoint is not None:
            on_checkpoint(i, len(todo), ckpt)
        try:
            rows, vectors = sweep.measure(ckpt, starts, on_progress)
        except CondlabError as e:  # also a usage error that only this checkpoint raises
            if on_error == "stop":
                raise CondlabError(
                    f"checkpoint '{ckpt.path}': {e} (the rows before it are in '{log.path}'; fix or "
                    "remove the file and rerun with --resume, or pass --on-error skip)"
                ) from None
            rows, vectors = [error_row(ckpt.step, ckpt.key, str(e))], starts
            summary.skipped.append(f"{ckpt.path}: {e}")
        for row in rows:
            log.write(row)
        log.sync()
        summary.measured += 1
        summary.hvps += sum(r.get("hvps") or 0 for r in rows)
        if sweep.warm:
            save_checkpoint(state_path, {"checkpoint": ckpt.key, "rows": fingerprint(rows),
                                         "vectors": dict(vectors or {})})
        starts = vectors
    return summary


def fingerprint(rows: list[dict]) -> list[list]:
    """What a checkpoint's rows say, as the CSV reads them back (floats bit for bit): the warm
    file records it, so a resume can tell whether the file was written after those rows."""
    return [[str(r.get("setting") or ""), str(r.get("status") or ""), r.get("lambda_max"),
             r.get("lambda_min"), r.get("hvps")] for r in rows]


def _read_warm(state_path: Path) -> dict | None:
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file
        return None
    ok = (isinstance(state, dict) and isinstance(state.get("checkpoint"), str)
          and isinstance(state.get("rows"), list) and isinstance(state.get("vectors"), dict))
    return state if ok else None


def _resume_starts(sweep: Sweep, done: list[str], done_rows: list[dict], state_path: Path,
                   summary: SweepSummary, on_progress) -> dict | None:
    """The warm start after the last checkpoint already in the CSV.

    ``NAME.warm`` is trusted only when it was written right after the CSV's rows of the
    checkpoint it names (same settings, values, products and status): then the chain goes on
    from it, re-measuring (rows not written again) the checkpoints after that one. A stale file
    (another sweep's, one written before the CSV was rewritten, one whose rows differ), a torn
    one or none: the chain is rebuilt from the first checkpoint in the CSV.
    """
    if not sweep.warm or not done:
        return None
    state = _read_warm(state_path)
    order = [c for c in sweep.checkpoints if c.key in set(done)]
    keys = [c.key for c in order]
    held = state["checkpoint"] if state is not None else None
    if held in keys:
        written = [r for r in done_rows if r.get("checkpoint") == held]
        if fingerprint(written) != state["rows"]:
            held = None  # stale: not the file written after these rows
    if state is not None and held is None:
        summary.stale_warm = True
    starts = dict(state["vectors"]) if held in keys else None
    begin = keys.index(held) + 1 if held in keys else 0
    for ckpt in order[begin:]:
        try:
            _, starts = sweep.measure(ckpt, starts, on_progress)
        except CondlabError:
            pass  # skipped then, skipped now: the chain goes on from the previous vectors
        summary.replayed += 1
    return starts
