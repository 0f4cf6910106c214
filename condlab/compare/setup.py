"""From a compare config to what one (variant, seed) trains: data, model, Problem, helpers.

- Data: ``load_dataset(data)`` (synthetic data keep their own ``seed``, default 0), split with
  ``train_test_split(test_fraction, split_seed)``; ``standardize`` maps ``x -> (x - mu) / s``
  with the training set's mean and (population) std, on both parts.
- Model: :func:`condlab.inputs.model_for_data` (the route of ``spectrum`` and ``train``) in ``dtype``; ``init_scale`` multiplies the trained
  parameters ``theta_0`` (the others stay as built, frozen).
- The Problem holds the whole training set as one batch (BatchNorm on its statistics); the
  training loss, accuracy and full-batch gradients come from it. Mini-batch ``j`` of an epoch is
  ``perm[j B : (j + 1) B]`` of a fresh permutation drawn from a generator seeded with ``seed``
  (``floor(N / B)`` batches: the remainder is dropped so every step sees ``B`` samples).
- The eigenbasis ``U`` of paper B: eigenvectors of the GGN over the training set at ``theta_0``,
  fixed for the run (:func:`condlab.preconditioners.ggn_eigenbasis`).
- GN curvature for ``gn`` / ``gn-sqrt``: ``diag(U^T G U)`` on a separate batch of
  ``curvature_batch`` samples (a second generator, seed ``seed + 10007``; null: the whole
  training set), exact or Hutchinson (:func:`condlab.preconditioners.gn_diagonal`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import torch
from torch import Tensor
from torch.func import grad

from condlab.errors import UsageError
from condlab.inputs import model_for_data
from condlab.load.data import Dataset, load_dataset, train_test_split
from condlab.losses import check_loss_fits, default_loss
from condlab.operators.curvature import GGNOperator
from condlab.operators.diagonal import BasisOperator
from condlab.preconditioners import ggn_eigenbasis, gn_diagonal
from condlab.problem import Problem
from condlab.train.track import Tracker, TrackSettings, at

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CURVATURE_SEED_OFFSET = 10007


@dataclass(frozen=True, eq=False)
class Data:
    train: Dataset
    test: Dataset | None
    loss: str


def load_data(problem: dict, dtype: torch.dtype) -> Data:
    """The training and held-out data of one variant (``problem``: its resolved problem keys)."""
    ds = load_dataset(problem["data"]).to(dtype)
    loss = check_loss_fits(problem["loss"] or default_loss(ds.task), ds.task)
    train, test = ds, None
    if problem["test_fraction"] > 0:
        train, test = train_test_split(ds, problem["test_fraction"], problem["split_seed"])
    if problem["standardize"]:
        mu, sd = train.X.mean(0), train.X.std(0, unbiased=False)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        train = replace(train, X=(train.X - mu) / sd)
        if test is not None:
            test = replace(test, X=(test.X - mu) / sd)
    return Data(train, test, loss)


class Setup:
    """One variant at one seed: the problem, the initial ``theta_0`` and the helpers a run needs."""

    def __init__(self, problem: dict, data: Data, seed: int, dtype: torch.dtype, track: TrackSettings):
        self.keys, self.data, self.seed, self.dtype = problem, data, seed, dtype
        tr = data.train
        # the route spectrum and train take from a model spec and data to a model
        self.model = model_for_data(problem["model"], tr, seed=seed, dtype=dtype)[0].to(dtype)
        self.params = list(problem["params"]) or None
        self.problem = self._problem(tr.X, tr.y)
        self.theta0 = self.problem.theta * problem["init_scale"]
        self.problem = at(self.problem, self.theta0)
        n = len(tr)
        B = problem["batch_size"]
        if B is not None and not 1 <= B <= n:
            raise UsageError(f"batch_size {B} must be between 1 and the {n} training samples")
        self.batch_size = None if B is None or B >= n else int(B)
        cp = self.problem
        if track.samples is not None and track.samples < n:
            cp = at(self._problem(tr.X[: track.samples], tr.y[: track.samples]), self.theta0)
        self.tracker = Tracker(cp, track)
        self._grad = grad(self._batch_loss)

    def _problem(self, X: Tensor, y: Tensor) -> Problem:
        return Problem(self.model, [(X, y)], self.data.loss, params=self.params,
                       bn_mode=self.keys["bn_mode"], dtype=self.dtype)

    def _batch_loss(self, theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        p = self.problem
        return p.output_loss(p.outputs(theta, X, 0), y)

    # -- training -----------------------------------------------------------------------------
    def batches(self):
        """Mini-batches ``(X, y)`` forever (the full training set when full batch)."""
        X, y = self.problem.batches[0]
        if self.batch_size is None:
            while True:
                yield X, y
        gen = torch.Generator().manual_seed(self.seed)
        n, B = X.shape[0], self.batch_size
        while True:
            perm = torch.randperm(n, generator=gen)
            for j in range(n // B):
                idx = perm[j * B : (j + 1) * B]
                yield X[idx], y[idx]

    def gradient(self, theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        return self._grad(theta, X, y)

    @torch.no_grad()
    def evaluate(self, theta: Tensor) -> dict[str, float | None]:
        """Training and held-out loss (and accuracy for classification) at ``theta``."""
        row: dict[str, float | None] = {}
        parts = [("train", self.problem.batches[0])]
        if self.data.test is not None:
            parts.append(("test", (self.data.test.X, self.data.test.y)))
        for name, (X, y) in parts:
            out = self.problem.outputs(theta, X, 0)
            row[f"{name}_loss"] = float(self.problem.output_loss(out, y))
            if self.data.train.task == "classification":
                row[f"{name}_acc"] = float((out.argmax(-1) == y).to(torch.float64).mean())
        return row

    # -- preconditioner helpers -----------------------------------------------------------------
    @cached_property
    def eigenbasis(self) -> Tensor:
        """``U [P, P]``: eigenvectors of the GGN over the training set at ``theta_0``."""
        return ggn_eigenbasis(self.problem)[1]

    def curvature(self, hparams: dict, basis: Tensor | None):
        """``theta -> diag(U^T G U)`` on a fresh curvature batch each call (see module doc)."""
        X, y = self.problem.batches[0]
        n, B = X.shape[0], hparams["curvature_batch"]
        gen = torch.Generator().manual_seed(self.seed + CURVATURE_SEED_OFFSET)
        calls = [0]

        def diag(theta: Tensor) -> Tensor:
            calls[0] += 1
            if B is None or B >= n:
                prob = self.problem
            else:
                idx = torch.randperm(n, generator=gen)[:B]
                prob = self._problem(X[idx], y[idx])
            prob = at(prob, theta)
            probe_seed = self.seed * 1_000_003 + calls[0]
            kw = {"estimator": hparams["estimator"], "probes": hparams["probes"], "seed": probe_seed}
            ggn = GGNOperator(prob, cache=False)  # a few products per theta: tracing does not pay
            if basis is None:
                if kw["estimator"] == "exact":
                    return gn_diagonal(prob, **kw).values  # per-sample Jacobians
                return gn_diagonal(ggn=ggn, **kw).values
            return gn_diagonal(ggn=BasisOperator(ggn, basis), **kw).values

        return diag
