"""What condlab proved about a row, before and after it is estimated (the trust checks).

Before: :func:`proven` gives :func:`condlab.measure.estimate` what the row's operator is known
to satisfy: a proven nullity (a GGN's rank; the baseline's exact null count carried to a
congruent preconditioned row), positive semi-definiteness by construction (the GGN of a convex
loss), the exact inertia by Sylvester's law. After: :func:`checked` adds what the numbers alone
do not say: the batching the operator depends on, Ostrowski's cap on a preconditioned kappa,
eps-only coordinates that dominate lambda_max (with a ``:trained`` row measured without them),
an eigenbasis rule that depends on an arbitrary rotation. See docs/accuracy.md.
"""

from __future__ import annotations


def proven(setting, baseline, cfg) -> dict:
    """``estimate`` keywords for ``setting`` given the baseline's record (None for the baseline)."""
    from condlab.losses import semidefinite_reason
    from condlab.normalization.invariance import shift_nullity_bound
    from condlab.preconditioners.build import congruence_proof

    out = {"nullity_bound": setting.nullity_bound,
           "semidefinite": semidefinite_reason(cfg.curvature, setting.problem.loss_name)}
    if "restricted_to" in setting.details:  # a principal block (':trained'): PSD stays PSD, but
        return {**out, "nullity_bound": None}  # neither null directions nor inertia carry over
    if not (cfg.weight_decay and cfg.decay != "l1"):  # + lambda I removes every null space
        shift = shift_nullity_bound(setting.problem)
        if shift and (out["nullity_bound"] is None or shift[0] > out["nullity_bound"][0]):
            out["nullity_bound"] = shift
    if setting.preconditioner and baseline is not None:
        proof = congruence_proof(baseline, damping=cfg.damping, weight_decay=cfg.weight_decay,
                                 decay=cfg.decay)
        out["sylvester"] = proof.get("sylvester")
        if proof.get("nullity_bound") and (out["nullity_bound"] is None
                                           or proof["nullity_bound"][0] > out["nullity_bound"][0]):
            out["nullity_bound"] = proof["nullity_bound"]
    return out


def _narrow_state(result):
    """A note when P comes from an optimizer state narrower than the run's dtype: P is computed
    in the run's dtype, but the state itself carries its own rounding."""
    import dataclasses

    d = result.details or {}
    state = str(d.get("state_dtype") or "")
    if not state or result.dtype != "float64" or "float64" in state:
        return result
    import torch

    unit = getattr(torch, state.split(",")[0], None)
    rel = f" (about {torch.finfo(unit).eps / 2:.1g} relative)" if isinstance(unit, torch.dtype) else ""
    note = (f"P is built in float64 from a {state} optimizer state: the state's values carry "
            f"{state} rounding{rel}, which no later precision removes")
    return dataclasses.replace(result, details={**d, "trust_notes": [*d.get("trust_notes", []),
                                                                     note]})


def checked(setting, result, baseline, vectors):
    """``(result with the trust notes, an extra Setting to measure next or None)``."""
    from condlab.normalization.batching import batch_dependence
    from condlab.preconditioners.build import ostrowski_check
    from condlab.preconditioners.zero_state import zero_state

    result = batch_dependence(result, setting.problem)
    result = _narrow_state(result)
    if not setting.preconditioner or baseline is None:
        return result, None
    result = ostrowski_check(result, baseline)
    return zero_state(result, setting, vectors)


def trust_notes(results) -> list[str]:
    """``"setting: note"`` for every distinct note the checks attached (``details['trust_notes']``)
    and for every kappa withheld because a proven null space hides ``lambda_min+``."""
    lines: list[str] = []
    for r in results:
        notes = list(r.details.get("trust_notes", []))
        if (r.condition_number is None and r.nullity_lower_bound
                and "exactly 0" in (r.condition_definition or "")):
            notes.append(f"kappa withheld: at least {r.nullity_lower_bound} eigenvalues are exactly 0 "
                         f"({r.nullity_bound_reason}); the bottom Ritz values are noise of that "
                         "null space (--exact, or --bottom and --block-size above the nullity)")
        for note in notes:
            if not any(line.endswith(f": {note}") for line in lines):
                lines.append(f"{r.setting}: {note}")
    return lines
