"""Whether the measured operator depends on how the data are batched.

condlab's loss is the count-weighted mean over fixed batches, which equals the full-data mean
whatever the batch size, so the operator does not depend on the batching: unless a batch's
samples interact. BatchNorm on batch statistics (``--bn-mode batch``, or a BatchNorm built
without running statistics, which always uses them) normalizes each sample by its batch's mean
and variance, and fixed dropout masks are drawn per batch: then another ``--batch-size`` is
another function, and another operator (e.g. lambda_max 4.58 in one batch, 4.78 in
batches of 32). Such rows carry ``details['batch_dependent']`` and a table note.
"""

from __future__ import annotations

import dataclasses


def batch_dependence(result, problem):
    """``result`` with ``details['batch_dependent']`` (and a note) when ``problem`` couples the
    samples of a batch; unchanged otherwise."""
    if not getattr(problem, "couples_samples", False):
        return result
    why = []
    if getattr(problem, "batch_statistics", False) and getattr(problem, "has_batchnorm", False):
        why.append("BatchNorm normalizes with each batch's statistics (--bn-mode batch, or a "
                   "BatchNorm without running statistics)")
    if getattr(problem, "uses_dropout", False):
        why.append("dropout masks are fixed per batch (--dropout-mode fixed)")
    sizes = sorted(set(problem.sizes))
    shape = f"{len(problem.sizes)} batch(es) of {', '.join(map(str, sizes))} samples"
    text = (f"the operator depends on the batching: {'; '.join(why) or 'samples of a batch interact'}"
            f"; measured on {shape}, another --batch-size measures another operator")
    d = result.details or {}
    notes = [*d.get("trust_notes", []), text] if result.layer is None else d.get("trust_notes", [])
    details = {**d, "batch_dependent": {"reason": "; ".join(why), "batches": len(problem.sizes),
                                        "batch_sizes": sizes}}
    if notes:
        details["trust_notes"] = notes
    return dataclasses.replace(result, details=details)
