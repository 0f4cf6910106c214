"""The settings measured beside the baseline.

- preconditioners: the same operator, wrapped as ``P^-1/2 A P^-1/2``;
- normalizations: another model (the normalized reparameterization) on the same,
  possibly transformed, data — a new Problem with its own operator.

Each yields ``(setting name, operator or problem, extra record fields)``.
"""

from __future__ import annotations

from collections.abc import Iterator

from condlab.config import SpectrumConfig


def regularized_baseline(cfg: SpectrumConfig, A):
    """The baseline operator: ``A``, or ``A + lambda I`` under coupled or decoupled weight decay."""
    if not cfg.weight_decay or cfg.decay in ("none", "l1"):
        return A
    from condlab.preconditioners import preconditioned_operator

    return preconditioned_operator(A, None, weight_decay=cfg.weight_decay, decay=cfg.decay)


def _optimizer_state(cfg: SpectrumConfig, loaded) -> dict:
    import torch

    from condlab.errors import UsageError
    from condlab.load.checkpoint import OPTIMIZER_KEYS, find_optimizer_state

    if cfg.optimizer_state:
        path = cfg.optimizer_state
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
    ckpt = loaded.checkpoint or {}
    if ckpt.get("optimizer"):
        return ckpt["optimizer"]
    raise UsageError(
        "--precond optimizer needs optimizer state: a condlab checkpoint written by `condlab "
        "train`, a weights file with an 'optimizer' entry, or --optimizer-state PATH"
    )


def objective(cfg: SpectrumConfig, *, preconditioned: bool = False, normalized: bool = False) -> dict:
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


def stability_method(name: str, precond) -> str:
    """Which stability threshold applies: Adam-style momentum, heavy ball, or plain GD."""
    kind = (precond.meta.get("optimizer") if precond is not None else None) or name
    if kind in ("adam", "adamw"):
        return "adam"
    if precond is not None and (precond.meta.get("hparams") or {}).get("momentum"):
        return "momentum"  # RMSprop's momentum buffer: heavy ball on P^-1 g
    return "gd"


def optimizer_hparams(precond) -> dict:
    """The learning rate, momentum and weight decay the optimizer state was stepped with
    (``param_groups[0]``), for the stability threshold and the objective it minimized."""
    hp = (precond.meta.get("hparams") or {}) if precond is not None else {}
    out = {}
    if isinstance(hp.get("lr"), (int, float)):
        out["optimizer_lr"] = float(hp["lr"])
    betas, momentum = hp.get("betas"), hp.get("momentum")
    if isinstance(betas, (list, tuple)) and betas:
        out["optimizer_beta1"] = float(betas[0])
    elif isinstance(momentum, (int, float)):
        out["optimizer_beta1"] = float(momentum)
    for key in ("weight_decay", "decay"):
        if precond is not None and key in precond.meta:
            out[f"optimizer_{key}"] = precond.meta[key]
    return out


def preconditioned_settings(cfg: SpectrumConfig, problem, A, loaded) -> Iterator[tuple]:
    """One ``P^-1/2 A P^-1/2`` (with the configured weight decay) per ``--precond`` name."""
    from condlab.operators import GGNOperator, HessianOperator
    from condlab.preconditioners import (
        build_preconditioner,
        lasso_weights,
        preconditioned_operator,
        summarize,
    )

    if not cfg.precond:
        return
    ggn = A if cfg.curvature == "ggn" else GGNOperator(problem, block_size=cfg.product_block)
    hessian = A if cfg.curvature == "hessian" else HessianOperator(problem, cfg.product_block)
    if cfg.basis == "eigen":
        ggn = ggn.to_dense()  # decomposed once, shared by every rule in the eigenbasis
    state = _optimizer_state(cfg, loaded) if "optimizer" in cfg.precond else None
    for name in cfg.precond:
        pc = build_preconditioner(
            name,
            problem,
            optimizer_state=state,
            eps=cfg.eps,
            batch_size=cfg.precond_batch_size or cfg.batch_size,
            diag_estimator=cfg.diag_estimator,
            probes=cfg.probes,
            basis=cfg.basis,
            seed=cfg.seed,
            ggn=ggn,
            hessian=hessian,
        )
        op = preconditioned_operator(A, pc, weight_decay=cfg.weight_decay, decay=cfg.decay)
        details = {
            "formula": pc.formula,
            "eps": pc.eps,
            "source": pc.source,
            "basis": pc.basis_name,
            "decay": cfg.decay,
            "weight_decay": cfg.weight_decay,
            **objective(cfg, preconditioned=True),
            "stability_method": stability_method(name, pc),
            "diag_summary": summarize(pc.diag),
        }
        details.update(
            {
                k: v
                for k, v in pc.meta.items()
                if isinstance(v, (int, float, str, bool)) and k not in ("weight_decay", "decay")
            }
        )
        details.update(optimizer_hparams(pc) if pc.meta.get("optimizer") else {})
        if cfg.decay == "l1" and cfg.weight_decay:
            details["lasso_weights"] = summarize(lasso_weights(pc, cfg.weight_decay))
        yield name, op, dict(preconditioner=name, details=details)


def normalized_settings(cfg: SpectrumConfig, loaded) -> Iterator[tuple]:
    """One Problem per ``--norm`` kind, on the normalized copy of the model."""
    from condlab.build import make_problem
    from condlab.errors import UsageError
    from condlab.load.data import make_batches
    from condlab.normalization import (
        apply_normalization,
        predicted_nullity,
        softmax_shift_nullity,
    )
    from condlab.operators.params import select_params

    dtype = cfg.torch_dtype
    for kind in cfg.norm:
        raw = [(X.to(dtype), y) for X, y in make_batches(loaded.dataset, cfg.batch_size)]
        res = apply_normalization(
            loaded.model, loaded.dataset.X.to(dtype), kind, batches=raw, dtype=dtype,
            eps=cfg.norm_eps,
        )
        # the same block of the original parameters: inserted layers renumber a Sequential
        params = cfg.params
        if params and res.renamed:
            chosen = select_params(loaded.model.named_parameters(), cfg.params).names
            lost = [n for n in chosen if n not in res.renamed]
            if lost:
                raise UsageError(
                    f"--params selects {', '.join(lost)}, which --norm {kind} does not keep; "
                    "drop --norm or choose other --params"
                )
            params = tuple(res.renamed[n] for n in chosen)  # the norms' own parameters: not added
        prob = make_problem(
            loaded, cfg, model=res.model, transform=lambda X, t=res.transform: t(X.to(dtype)),
            params=params,
        )
        details = {k: v for k, v in res.summary().items() if k not in ("kind",)}
        if params:
            details["params"] = list(params)
        details.update(objective(cfg, normalized=True))
        yield kind, prob, dict(
            normalization=kind,
            function_change=float(res.function_change),
            params_added=int(res.params_added),
            predicted_nullity=predicted_nullity(
                res.model, curvature=cfg.curvature, bn_mode=cfg.bn_mode
            )
            + softmax_shift_nullity(res.model, loaded.loss),
            details=details,
        )
