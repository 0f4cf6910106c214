r"""Coordinates whose preconditioner is its eps alone: which tensors, how much of lambda_max.

With ``P = sqrt(v_hat) + eps``, a coordinate whose second moment is (near) zero (a position
embedding the shifted loss never reaches, a dead unit) has ``P ~ eps``, so
``P^-1/2 A P^-1/2`` multiplies its curvature by ``1 / eps``. The number is right, yet the
headline ``lambda_max`` (and the stability ratio built on it) may then describe coordinates
the optimizer never moved (e.g. a GPT-2's stab. 615 from 64 entries of ``wpe[63]``,
0.218 on the trained positions). Criterion: ``P_i <= 2 eps`` (the statistic is at most eps),
for the rules built from gradient statistics (optimizer, adam, rmsprop, adagrad).
The share is ``sum_{i in Z} y_i^2`` of the top Ritz vector ``y`` (unit norm): the fraction of
the top eigenvector on those coordinates. When it is at least ``DOMINANT`` the same operator is
measured again on the other coordinates (``R A R^T``, ``R`` the selection): the row
``<setting>:trained``. ``--params`` can leave out whole tensors only; this leaves out entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from condlab.operators.base import LinearOperator

DOMINANT = 0.5  # the top eigenvector's share on eps-only coordinates that adds the ':trained' row


class Restricted(LinearOperator):
    """``R A R^T``: the principal block of ``A`` on the coordinates ``keep`` (a bool mask)."""

    def __init__(self, A, keep: Tensor):
        self.index = keep.nonzero().reshape(-1).to(A.device)
        super().__init__(int(self.index.numel()), A.dtype, A.device)
        self.A, self.full = A, A.shape[0]

    def _matmat(self, V: Tensor) -> Tensor:
        W = torch.zeros(self.full, V.shape[1], dtype=V.dtype, device=V.device)
        W[self.index] = V
        return (self.A @ W)[self.index]


def _p_diag(op) -> Tensor | None:
    """The diagonal ``P`` of a preconditioned operator (through an ``_Observed`` wrapper)."""
    while op is not None and not hasattr(op, "p_diag"):
        op = getattr(op, "A", None)
    return None if op is None else op.p_diag


def zero_state(result, setting, vectors: Tensor | None):
    """``(result with details['zero_state'], extra Setting or None)`` for a preconditioned row.

    ``extra`` is ``setting`` restricted to the other coordinates, named ``<name>:trained``,
    when the eps-only coordinates carry ``>= DOMINANT`` of the top eigenvector; else None.
    """
    import dataclasses

    op, problem = setting.operator, setting.problem
    d = result.details or {}
    if d.get("basis_note") and d["basis_note"] not in d.get("trust_notes", []):
        d = {**d, "trust_notes": [*d.get("trust_notes", []), d["basis_note"]]}
        result = dataclasses.replace(result, details=d)
    eps = d.get("eps")
    P = _p_diag(op)
    statistic = str(setting.preconditioner or "") in ("optimizer", "adam", "rmsprop", "adagrad")
    if (not statistic or not eps or P is None or vectors is None or not result.eigenvalues_top
            or P.numel() != vectors.shape[0]):  # (a ':trained' row measures a block of P)
        return result, None
    Z = (P <= 2 * float(eps)).cpu()
    n = int(Z.sum())
    if not n or n == Z.numel():
        return result, None
    y = vectors[:, 0].double().cpu()
    share = float(y[Z].square().sum() / y.square().sum())
    tensors: dict[str, int] = {}
    if d.get("basis", "identity") == "identity":
        for name in problem.spec.names:
            k = int(Z[problem.spec.slice(name)].sum())
            if k:
                tensors[name] = k
    named = ", ".join(f"{t} ({k})" for t, k in list(tensors.items())[:6]) or "eigen-directions"
    rec = {"coordinates": n, "tensors": tensors, "top_share": share,
           "criterion": f"P <= 2 eps = {2 * float(eps):.3g}"}
    notes = list(d.get("trust_notes", []))
    extra = None
    if share >= DOMINANT:
        label = f"{result.setting}:trained"
        notes.append(
            f"lambda_max is dominated by {n} coordinates whose optimizer statistic is (near) zero "
            f"(P <= 2 eps): {named}; they carry {share:.0%} of its eigenvector. Row '{label}' "
            "measures the same operator without them"
        )
        rec["without"] = label
        extra = dataclasses.replace(
            setting, name=label, operator=Restricted(op, ~Z), nullity_bound=None,
            details={**setting.details, "restricted_to": "coordinates with P > 2 eps",
                     "left_out": tensors or n})
    elif share >= 0.01:
        notes.append(f"{share:.0%} of lambda_max's eigenvector lies on {n} coordinates with "
                     f"(near) zero optimizer statistic: {named}")
    details = {**d, "zero_state": rec, **({"trust_notes": notes} if notes else {})}
    return dataclasses.replace(result, details=details), extra
