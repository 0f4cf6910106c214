"""The settings stage: the list of what is measured, each a typed :class:`Setting`.

    settings = build_settings(cfg, problem, inputs)   # baseline, preconditioners, norms, layers

A :class:`Setting` holds the operator to measure and everything the record needs to say what it
is: the objective whose curvature it is, the stability context (method, lr, beta1, and the
threshold, all known before any product), the nullity prior (the normalizations' predicted null
directions, a GGN's rank bound). Nothing about a setting is read back from a result.

- the baseline: ``A``, or ``A + lambda I`` under weight decay;
- preconditioners: the same operator, wrapped as ``P^-1/2 A P^-1/2``;
- normalizations: another model (the normalized reparameterization) on the same, possibly
  transformed, data: a new Problem (built with :func:`condlab.problem.make_problem`, the one
  call back to the previous stage) with its own operator;
- ``per_layer``: each parameter tensor's diagonal block of the baseline, its null threshold
  relative to the whole operator's ``||A||`` (``relative_to_baseline``).

Every setting is built before the first is measured: one that cannot be built (a zero diagonal,
a missing optimizer state) fails the run before any eigenvalue is computed. The options of this
stage are the fields of :class:`SettingsOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from condlab.optionfield import BELOW_ONE, LIST, NONNEGATIVE, PATH, POSITIVE, option

_BASE = "condlab.preconditioners.base"


@dataclass(frozen=True)
class SettingsOptions:
    """What is measured beside the baseline, and the optimizer the stability check is about."""

    GROUP: ClassVar[str] = "Preconditioners and normalization"

    precond: tuple[str, ...] = option(
        LIST, (), "Also measure P^-1/2 A P^-1/2 for this diagonal preconditioner (repeatable).",
        choices=f"{_BASE}:PRECONDITIONERS")
    optimizer_state: str | None = option(
        PATH, None, "A torch optimizer state_dict for --precond optimizer.",
        default_text="the checkpoint's or the weights file's")
    precond_batch_size: int | None = option(
        int, None, "Mini-batch size of the gradients behind --precond adam/rmsprop/adagrad.",
        check=POSITIVE, default_text="--batch-size, else full batch", advanced=True)
    diag_estimator: str = option(
        str, "exact", "Exact diagonal, or Hutchinson with --probes samples.",
        choices=f"{_BASE}:DIAG_ESTIMATORS", advanced=True)
    eps: float | None = option(
        float, None, "Added to the diagonal preconditioner.", check=NONNEGATIVE, advanced=True,
        default_text="the rule's: the optimizer's own, 1e-8 adam/rmsprop, 1e-10 adagrad, 0 "
        "gn/gn-sqrt/jacobi")
    basis: str = option(
        str, "identity", "Apply the diagonal rule in the identity basis or the eigenbasis of G.",
        choices=f"{_BASE}:BASES", advanced=True)
    weight_decay: float = option(float, 0.0, "Weight decay lambda.", check=NONNEGATIVE)
    decay: str = option(str, "none", "coupled (Adam + L2), decoupled (AdamW) or l1.",
                        choices=f"{_BASE}:DECAYS")
    lr: float | None = option(
        float, None, "Learning rate: compare the preconditioned sharpness with the stability "
        "threshold.", check=POSITIVE, default_text="no stability check")
    beta1: float | None = option(
        float, None, "Momentum of the method for the stability threshold.", check=BELOW_ONE,
        default_text="0.9 for adam, else 0", advanced=True)
    norm: tuple[str, ...] = option(
        LIST, (), "Also measure after this function-preserving normalization: the same function "
        "reparameterized (repeatable; to compare architectures with and without normalization "
        "use `condlab compare`, findings: paper-a-norm).",
        choices="condlab.normalization.apply:KINDS")
    norm_eps: float = option(
        float, 1e-5, "The epsilon of the BatchNorm / LayerNorm layers that --norm inserts.",
        check=POSITIVE, advanced=True)
    per_layer: bool = option(bool, False, "Also measure each parameter tensor's diagonal block.",
                             group="Estimators", advanced=True)


@dataclass(frozen=True)
class Stability:
    """Which stability threshold a row's ``lambda_max`` is compared with, fixed before any
    product: ``2 / lr`` (gd), ``(2 + 2 beta1) / lr`` (heavy ball), ``(2 + 2 beta1) / ((1 -
    beta1) lr)`` (Adam-style EMA momentum); see :mod:`condlab.stability`."""

    method: str
    lr: float
    beta1: float
    lr_source: str
    threshold: float

    def of(self, lambda_max: float | None) -> dict | None:
        """The record's ``stability``: the threshold, the ratio and the regime."""
        from condlab.stability import edge_of_stability

        if lambda_max is None:
            return None
        eos = edge_of_stability(lambda_max, self.threshold)
        return {**eos, "method": self.method, "lr": self.lr, "beta1": self.beta1,
                "lr_source": self.lr_source}


@dataclass(frozen=True)
class Setting:
    """One row of the report: an operator and what it is."""

    name: str
    operator: Any  # a LinearOperator, [P, P]
    problem: Any  # the Problem it is the curvature of
    objective: str  # whose curvature: H, H+λI, P^-½HP^-½+λI, G(folded), H[layer], ...
    objective_lambda: float | None  # the weight decay in that objective
    stability: Stability | None = None
    predicted_nullity: int | None = None  # null directions the model's normalizations create
    nullity_bound: tuple[int, str] | None = None  # proven (a GGN's rank), with its reason
    preconditioner: str | None = None
    normalization: str | None = None
    layer: str | None = None
    relative_to_baseline: bool = False  # null threshold against the baseline's ||A||
    function_change: float | None = None  # normalized: max |f_new - f_old| on the data
    params_added: int | None = None  # normalized: parameters the normalization added
    details: dict = field(default_factory=dict)  # provenance for the JSON (formula, eps, ...)


def build_settings(cfg, problem, inputs, *, summaries: bool = True) -> list[Setting]:
    """Every setting ``cfg`` (a :class:`condlab.config.SpectrumConfig`) asks for, in order:
    the baseline, each ``--precond``, each ``--norm``, then (``per_layer``) each parameter
    tensor's block. ``summaries=False`` leaves out the quantiles of ``P`` and of the lasso
    weights that only the report shows (a training loop's measurements skip them)."""
    from condlab.normalization import predicted_nullity, softmax_shift_nullity
    from condlab.operators.curvature import curvature_operator

    A = curvature_operator(problem, cfg.curvature, block_size=cfg.product_block)
    null = predicted_nullity(problem.model, curvature=cfg.curvature, bn_mode=cfg.bn_mode)
    null += softmax_shift_nullity(problem.model, inputs.loss)
    base = Setting("baseline", regularized_baseline(cfg, A), problem, **objective(cfg),
                   stability=stability(cfg, "momentum" if cfg.beta1 else "gd"),
                   predicted_nullity=null, nullity_bound=_bound(cfg, problem))
    settings = [base, *preconditioned_settings(cfg, problem, A, inputs, summaries=summaries),
                *normalized_settings(cfg, inputs)]
    if cfg.per_layer:
        settings += layer_settings(cfg, problem)
    return settings


def layer_settings(cfg, problem) -> list[Setting]:
    """Each parameter tensor's diagonal block of the baseline operator."""
    from condlab.operators.curvature import curvature_operator

    out = []
    A = "G" if cfg.curvature == "ggn" else "H"
    for pname in problem.spec.names:
        sub = problem.restrict([pname])
        op = regularized_baseline(cfg, curvature_operator(sub, cfg.curvature, cfg.product_block))
        label = objective(cfg)
        label["objective"] = label["objective"].replace(A, f"{A}[{pname}]", 1)
        out.append(Setting(f"layer:{pname}", op, sub, **label, layer=pname,
                           relative_to_baseline=True, nullity_bound=_bound(cfg, sub)))
    return out


def _bound(cfg, problem) -> tuple[int, str] | None:
    """A GGN's rank bound holds for A and for P^-1/2 A P^-1/2, not once weight decay adds
    lambda I."""
    if cfg.weight_decay and cfg.decay != "l1":
        return None
    return ggn_nullity_bound(problem, cfg.curvature)


def regularized_baseline(cfg, A):
    """The baseline operator: ``A``, or ``A + lambda I`` under coupled or decoupled weight decay."""
    if not cfg.weight_decay or cfg.decay in ("none", "l1"):
        return A
    from condlab.preconditioners import preconditioned_operator

    return preconditioned_operator(A, None, weight_decay=cfg.weight_decay, decay=cfg.decay)


def objective(cfg, *, preconditioned: bool = False, normalized: bool = False) -> dict:
    """Whose curvature a row measures: ``H``, ``H+λI``, ``P^-½HP^-½+λI``, ... (``objective``)
    and the decay ``objective_lambda`` (None without one).

    Rows with different decay placements are curvatures of different objectives (coupled L2
    adds ``lam I`` inside the preconditioner, decoupled decay outside it)."""
    A = "G" if cfg.curvature == "ggn" else "H"
    if normalized:
        A += "(folded)"
    lam = cfg.weight_decay if cfg.decay in ("coupled", "decoupled") and cfg.weight_decay else None
    shift = "+λI" if lam else ""
    if not preconditioned:
        label = A + shift
    elif cfg.decay == "coupled" and lam:
        label = f"P^-½({A}{shift})P^-½"
    else:
        label = f"P^-½{A}P^-½{shift}"
    return {"objective": label, "objective_lambda": lam}


def stability(cfg, method: str, hparams: dict | None = None) -> Stability | None:
    """The stability context of a row: ``--lr`` for every row, else, for a row built from an
    optimizer's state, the lr in its ``param_groups`` (the scale that state's ``P`` goes
    with); None with neither."""
    from condlab.stability import stability_threshold

    hparams = hparams or {}
    lr = cfg.lr if cfg.lr is not None else hparams.get("lr")
    if lr is None:
        return None
    source = "--lr" if cfg.lr is not None else "the optimizer state's param_groups"
    beta1 = cfg.beta1 if cfg.beta1 is not None else hparams.get("beta1")
    if beta1 is None:
        beta1 = 0.9 if method == "adam" else 0.0
    if method == "gd" and beta1:
        method = "momentum"
    return Stability(method, lr, beta1, source, stability_threshold(method, lr, beta1))


def stability_method(name: str, precond) -> str:
    """Which stability threshold applies: Adam-style momentum, heavy ball, or plain GD."""
    kind = (precond.meta.get("optimizer") if precond is not None else None) or name
    if kind in ("adam", "adamw"):
        return "adam"
    if precond is not None and (precond.meta.get("hparams") or {}).get("momentum"):
        return "momentum"  # RMSprop's momentum buffer: heavy ball on P^-1 g
    return "gd"


def optimizer_hparams(precond) -> dict:
    """The learning rate and momentum the optimizer state was stepped with (``param_groups[0]``),
    for the stability threshold: ``{"lr", "beta1"}`` where the state says."""
    hp = (precond.meta.get("hparams") or {}) if precond is not None else {}
    out = {}
    if isinstance(hp.get("lr"), (int, float)):
        out["lr"] = float(hp["lr"])
    betas, momentum = hp.get("betas"), hp.get("momentum")
    if isinstance(betas, (list, tuple)) and betas:
        out["beta1"] = float(betas[0])
    elif isinstance(momentum, (int, float)):
        out["beta1"] = float(momentum)
    return out


def preconditioned_settings(cfg, problem, A, inputs, *, summaries: bool = True) -> list[Setting]:
    """One ``P^-1/2 A P^-1/2`` (with the configured weight decay) per ``--precond`` name;
    ``summaries``: with the quantiles of ``P`` (``diag_summary``) and of the lasso weights."""
    from condlab.operators import GGNOperator, HessianOperator
    from condlab.preconditioners import (
        build_preconditioner,
        lasso_weights,
        preconditioned_operator,
        summarize,
    )

    if not cfg.precond:
        return []
    ggn = A if cfg.curvature == "ggn" else GGNOperator(problem, block_size=cfg.product_block)
    hessian = A if cfg.curvature == "hessian" else HessianOperator(problem, cfg.product_block)
    if cfg.basis == "eigen":
        ggn = ggn.to_dense()  # decomposed once, shared by every rule in the eigenbasis
    if "optimizer" in cfg.precond and inputs.optimizer_state is None:
        from condlab.errors import UsageError

        raise UsageError(
            "--precond optimizer needs optimizer state: a condlab checkpoint written by `condlab "
            "train`, a weights file with an 'optimizer' entry, or --optimizer-state PATH"
        )
    out = []
    for name in cfg.precond:
        pc = build_preconditioner(
            name, problem, optimizer_state=inputs.optimizer_state if name == "optimizer" else None,
            eps=cfg.eps, batch_size=cfg.precond_batch_size or cfg.batch_size,
            diag_estimator=cfg.diag_estimator, probes=cfg.probes, basis=cfg.basis, seed=cfg.seed,
            ggn=ggn, hessian=hessian,
        )
        op = preconditioned_operator(A, pc, weight_decay=cfg.weight_decay, decay=cfg.decay)
        details = {
            "formula": pc.formula, "eps": pc.eps, "source": pc.source, "basis": pc.basis_name,
            "decay": cfg.decay, "weight_decay": cfg.weight_decay,
            **({"diag_summary": summarize(pc.diag)} if summaries else {}),
        }
        details.update({k: v for k, v in pc.meta.items()
                        if isinstance(v, (int, float, str, bool)) and k not in ("weight_decay", "decay")})
        hp = optimizer_hparams(pc) if pc.meta.get("optimizer") else {}
        if pc.meta.get("optimizer"):
            details.update({f"optimizer_{k}": v for k, v in hp.items()})
            for key in ("weight_decay", "decay"):
                if key in pc.meta:
                    details[f"optimizer_{key}"] = pc.meta[key]
        if summaries and cfg.decay == "l1" and cfg.weight_decay:
            details["lasso_weights"] = summarize(lasso_weights(pc, cfg.weight_decay))
        out.append(Setting(name, op, problem, **objective(cfg, preconditioned=True),
                           stability=stability(cfg, stability_method(name, pc), hp),
                           nullity_bound=_bound(cfg, problem), preconditioner=name,
                           details=details))
    return out


def normalized_settings(cfg, inputs) -> list[Setting]:
    """One Setting per ``--norm`` kind: the normalized copy of the model, its own Problem."""
    from condlab.errors import UsageError
    from condlab.load.data import make_batches
    from condlab.normalization import (
        apply_normalization,
        predicted_nullity,
        softmax_shift_nullity,
    )
    from condlab.operators.curvature import curvature_operator
    from condlab.params import select_params
    from condlab.problem import make_problem

    dtype = cfg.torch_dtype
    out = []
    for kind in cfg.norm:
        raw = [(X.to(dtype), y) for X, y in make_batches(inputs.dataset, cfg.batch_size)]
        res = apply_normalization(
            inputs.model, inputs.dataset.X.to(dtype), kind, batches=raw, dtype=dtype,
            eps=cfg.norm_eps,
        )
        # the same block of the original parameters: inserted layers renumber a Sequential
        params = cfg.params
        if params and res.renamed:
            chosen = select_params(inputs.model.named_parameters(), cfg.params).names
            lost = [n for n in chosen if n not in res.renamed]
            if lost:
                raise UsageError(
                    f"--params selects {', '.join(lost)}, which --norm {kind} does not keep; "
                    "drop --norm or choose other --params"
                )
            params = tuple(res.renamed[n] for n in chosen)  # the norms' own parameters: not added
        prob = make_problem(
            inputs, cfg, model=res.model, transform=lambda X, t=res.transform: t(X.to(dtype)),
            params=params,
        )
        details = {k: v for k, v in res.summary().items() if k not in ("kind",)}
        if params:
            details["params"] = list(params)
        op = regularized_baseline(cfg, curvature_operator(prob, cfg.curvature, cfg.product_block))
        out.append(Setting(
            kind, op, prob, **objective(cfg, normalized=True),
            stability=stability(cfg, "gd"), nullity_bound=_bound(cfg, prob), normalization=kind,
            function_change=float(res.function_change), params_added=int(res.params_added),
            predicted_nullity=predicted_nullity(res.model, curvature=cfg.curvature,
                                                bn_mode=cfg.bn_mode)
            + softmax_shift_nullity(res.model, inputs.loss),
            details=details,
        ))
    return out


def ggn_nullity_bound(problem, curvature: str) -> tuple[int, str] | None:
    """A lower bound on a GGN's nullity from its rank, for any model.

    ``G = sum_n J_n^T H_n J_n`` has rank at most ``sum_n rank(H_n)``: ``C - 1`` per sample for
    softmax cross-entropy over ``C`` logits (``H_n = diag(p) - p p^T``), ``M`` for mean squared
    error over ``M`` outputs. So ``nullity >= P - N (C - 1)`` (cross-entropy) or ``P - N M``.
    None for the Hessian, other losses, or a bound that is not positive.
    """
    import torch

    from condlab.load.structure import batch_len

    if curvature != "ggn" or problem.loss_name not in ("cross-entropy", "mse") or not problem.batches:
        return None
    X, _ = problem.batches[0]
    with torch.no_grad():
        out = problem.outputs(problem.theta, X, 0)
    per_sample = int(out.numel()) // max(1, batch_len(X))
    N, P = problem.n_samples, problem.n_params
    if problem.loss_name == "cross-entropy":
        rank, why = N * (per_sample - 1), f"a cross-entropy GGN has rank <= N (C - 1) = {N} x {per_sample - 1}"
    else:
        rank, why = N * per_sample, f"an MSE GGN has rank <= N x outputs = {N} x {per_sample}"
    return (P - rank, f"P - {rank}: {why}") if P > rank else None
