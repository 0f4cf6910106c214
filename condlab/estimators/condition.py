r"""Condition numbers of a symmetric matrix from its extreme eigenvalues, with their definition.

Null criterion. An operator evaluated in floating point is ``A + E`` with ``||E|| <= t``, the
arithmetic noise, and by Weyl's inequality every computed eigenvalue may be off by ``t``. So

    t = NOISE_FACTOR * eps(dtype) * ||A||          (||A|| = max(|lambda_max|, |lambda_min|))

is the threshold: an eigenvalue with ``|lambda| <= t`` cannot be told from 0 in that dtype and
counts as null; every larger one is resolved and never counted null. ``NOISE_FACTOR`` was
measured on real operators (digits MLP Hessian and GGN, a CNN; float32 and float64; see
``scripts/bench_null_criterion.py`` and the README). It does not depend on the convergence
tolerance. A Lanczos estimate ``theta`` with residual ``r`` carries its own error
``u = min(r, r^2 / gap)`` (Weyl / Kato-Temple, ``gap`` the distance to the nearest other
computed eigenvalue), so for it the band is ``|theta| <= t + u``. ``threshold_rel`` (the CLI's
``--null-threshold``) replaces ``NOISE_FACTOR * eps`` by a value of the user's choice.

Resolution. A ratio whose denominator ``lambda`` is within ``RESOLVE_FACTOR`` times its band
(``lambda < RESOLVE_FACTOR (t + u)``) is not resolved: its relative error could exceed
``1 / RESOLVE_FACTOR``. Then the value is None and the definition says
``kappa > bound: not resolved in float32; use --dtype float64`` (``bound`` a lower bound on the
true value). A reported value carries ``error``, the bound on its relative error from the same
bands.

Quantity, by definiteness:

- positive definite (``lambda_min`` above its band): ``kappa = lambda_max / lambda_min``;
- positive semi-definite (``lambda_min`` within its band): the positive-part condition number
  ``kappa_+ = lambda_max / lambda_min+``, ``lambda_min+`` = smallest eigenvalue above its band.
  From Lanczos this is the smallest reported bottom eigenvalue above the band: single-vector
  Lanczos finds a repeated (null) eigenvalue once, so the bottom Ritz values read
  ``0, lambda_min+, ..``. ``kappa_+`` is only as good as the gap between the null band and
  ``lambda_min+``: if the spectrum runs down into the noise, eigenvalues counted null may be
  genuine small positives, and the resolution rule above reports it as not resolved;
- indefinite (``lambda_min`` below its band, ``lambda_max`` above): ``kappa_+`` needs
  ``lambda_min+``, which is interior to the spectrum; it is computed only from an exact spectrum
  (dense ``eigvalsh``), otherwise the value is None. ``negative_ratio = |lambda_min| / lambda_max``
  says how negative the curvature is;
- negative (semi-)definite and zero matrices mirror the above.

The nullity (eigenvalues with ``|lambda| <= t``) is exact from an exact spectrum, else
whatever the caller passes (e.g. a lower bound from the rank of a GGN), else None.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from condlab.errors import UsageError

# ||A_dtype - A||_2 <= NOISE_FACTOR * eps(dtype) * ||A|| on every operator measured by
# scripts/bench_null_criterion.py (largest: 25.3, a trained digits MLP's float32 Hessian); an
# empirical factor, not a proof: an operator whose products cancel more can be noisier
NOISE_FACTOR = 32.0
RESOLVE_FACTOR = 10.0  # a ratio is reported when its denominator is >= 10x its error band


def noise_rel(dtype: torch.dtype) -> float:
    """The null threshold relative to ``||A||`` for arithmetic in ``dtype``."""
    return NOISE_FACTOR * torch.finfo(dtype).eps


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# -- the null band and what condlab proved (trust) ---------------------------------------------
def null_band(
    *,
    anorm: float,
    dtype: torch.dtype,
    threshold_rel: float | None = None,
    noise: float | None = None,
    spectrum: Tensor | None = None,
    lmin: float | None = None,
    proven_nullity: tuple[int, str] | None = None,
    semidefinite: str | None = None,
    inertia: tuple[int, int, int, str] | None = None,
) -> tuple[float, str, dict]:
    """The absolute null band ``t``, what set it, and its parts (the JSON's ``noise``).

    Start: ``threshold_rel * ||A||`` when the user gave one, else
    ``max(NOISE_FACTOR eps ||A||, NOISE_SAFETY * noise)`` (the measured noise only widens the
    fixed floor). Then the proofs, each of which can only widen it, since a theorem beats an
    estimate of the noise:

    - ``semidefinite``: no eigenvalue is negative, so a computed ``lambda_min < 0`` is noise and
      the band reaches ``|lambda_min|``;
    - ``proven_nullity = (n, ...)`` with the whole ``spectrum`` (ascending): the ``n``
      eigenvalues nearest 0 (the ``n`` smallest for a PSD operator) are null, so the band
      reaches the largest of them;
    - ``inertia = (neg, zero, pos, ...)`` with the whole spectrum: Sylvester's law fixes which
      eigenvalues are null (indices ``neg .. neg + zero - 1`` ascending); the band reaches them.
    """
    from condlab.estimators.noise import NOISE_SAFETY, noise_record

    fixed = noise_rel(dtype) * anorm
    measured = NOISE_SAFETY * float(noise) if noise else None
    if threshold_rel is not None:
        t, how = float(threshold_rel) * anorm, "--null-threshold"
    elif measured is not None and measured > fixed:
        t, how = measured, f"{NOISE_SAFETY:g} x the measured noise {float(noise):.2g}"
    else:
        t, how = fixed, f"{NOISE_FACTOR:g} eps ||A|| floor"
    extra: dict = {}
    if semidefinite and lmin is not None and lmin < -t:
        t, how = -float(lmin), f"|lambda_min| of an operator PSD by construction ({semidefinite})"
        extra["semidefinite"] = semidefinite
    elif semidefinite:
        extra["semidefinite"] = semidefinite
    if spectrum is not None and spectrum.numel():
        if proven_nullity is not None and proven_nullity[0] > 0:
            n = min(int(proven_nullity[0]), spectrum.numel())
            near = spectrum[:n] if semidefinite else spectrum.abs().sort().values[:n]
            reach = float(near.abs().max())
            if reach > t:
                t, how = reach, f"the rank bound: nullity >= {n} ({proven_nullity[1]})"
        if inertia is not None:
            neg, zero = int(inertia[0]), int(inertia[1])
            null = spectrum[neg:neg + zero]
            if null.numel() and float(null.abs().max()) > t:
                t, how = float(null.abs().max()), f"Sylvester's inertia ({inertia[3]})"
            extra["inertia"] = {"negative": neg, "zero": zero, "positive": int(inertia[2]),
                                "reason": inertia[3]}
    return t, how, noise_record(t, fixed, None if noise is None else float(noise), how, extra)


def _proven(cond: Condition, proven: tuple[int, str] | None, semidefinite: str | None,
            top, bottom) -> Condition:
    """``cond`` made consistent with a proven nullity ``(n, reason)``.

    An operator with ``n >= 1`` null eigenvalues is singular: not "positive definite", no
    ``lambda_max / lambda_min``, nullity at least ``n``. From Lanczos ends its ``lambda_min+``
    is the ``(n+1)``-th smallest eigenvalue, and a bottom Ritz value is an upper bound on the
    eigenvalue of its rank (Cauchy interlacing), so with ``n + 1`` or more bottom values
    ``kappa_+ >= theta_top / theta_(n+1)``; with fewer nothing bounds it.
    """
    import dataclasses

    if proven is None or proven[0] < 1:
        return cond
    n, reason = int(proven[0]), proven[1]
    if cond.exact:
        return cond
    null = cond.nullity if cond.nullity is not None and cond.nullity >= n else n
    lower = not (cond.nullity is not None and cond.nullity >= n and not cond.nullity_is_lower_bound)
    fields = dict(nullity=null, nullity_is_lower_bound=lower)
    if cond.definiteness not in ("positive definite", "negative definite"):
        if cond.value is None and f"at least {n} eigenvalues" not in cond.definition:
            # e.g. a bottom Ritz value whose backed error reaches the band: say what is proven
            fields["definition"] = (f"{cond.definition}; at least {n} eigenvalues are exactly 0 "
                                    f"({reason})")
        return dataclasses.replace(cond, **fields)
    sign = 1.0 if cond.definiteness == "positive definite" else -1.0
    ends = _values(bottom if sign > 0 else top)
    ends = ends[torch.isfinite(ends)]
    ends = (ends if sign > 0 else -ends).sort().values
    far = cond.lambda_max if sign > 0 else cond.lambda_min
    kind = "positive semi-definite" if sign > 0 else "negative semi-definite"
    head = (
        f"not {cond.definiteness}: at least {n} eigenvalues are exactly 0 ({reason}); the "
        f"{'bottom' if sign > 0 else 'top'} Ritz value {sign * float(ends[0]):.3g} is unconverged "
        "noise of that null space, not an eigenvalue"
    ) if ends.numel() else f"not {cond.definiteness}: at least {n} eigenvalues are exactly 0 ({reason})"
    if ends.numel() > n and float(ends[n]) > 0:
        bound = abs(far) / float(ends[n])
        words = (
            f"kappa_+ >= {bound:.3g}: {head}; lambda_min+ is the {n + 1}-th eigenvalue from the "
            f"end and the {n + 1}-th Ritz value {sign * float(ends[n]):.3g} is an upper bound on "
            "its size (interlacing)"
        )
    else:
        bound = None
        words = (
            f"undefined from these eigenvalues: {head}; lambda_min+ is the {n + 1}-th eigenvalue "
            f"from the end, beyond the {ends.numel()} listed: use --exact on a small model, or "
            f"--bottom and --block-size above {n}"
        )
    return dataclasses.replace(
        cond, value=None, definition=words, definiteness=kind, resolved=bound is None, bound=bound,
        error=None, lambda_min_positive=None, **fields,
    )


@dataclass(frozen=True)
class Condition:
    """A condition number, the sentence that defines it, and the eigenvalues it came from."""

    value: float | None  # None when undefined or not resolved (see definition)
    definition: str
    definiteness: str  # 'positive definite' | 'positive semi-definite' | 'indefinite' | ...
    lambda_max: float
    lambda_min: float
    lambda_min_positive: float | None  # smallest eigenvalue above the null band, when known
    threshold: float  # absolute: threshold_rel * max(|lambda_max|, |lambda_min|)
    nullity: int | None  # eigenvalues with |lambda| <= threshold, when known
    nullity_is_lower_bound: bool
    negative_ratio: float | None = None  # |lambda_min| / lambda_max when lambda_min < -threshold
    threshold_rel: float = 0.0
    exact: bool = False  # computed from a full spectrum
    resolved: bool = True  # False: the value is None because the arithmetic cannot resolve it
    bound: float | None = None  # not resolved: a lower bound on the true value
    error: float | None = None  # relative error bound of ``value`` from the null bands
    band_source: str = ""  # what set ``threshold``: the fixed floor, the measured noise, a proof
    noise: dict | None = None  # the band's parts (see :func:`null_band`), for the JSON


def _values(x) -> Tensor:
    """Entries of a sequence or tensor as float64 (ghost slots are NaN)."""
    return torch.as_tensor(x if x is not None else [], dtype=torch.float64).reshape(-1).cpu()


def _nullity_words(nullity: int | None, lower_bound: bool) -> str:
    if nullity is None:
        return "nullity not estimated"
    return f"{'at least ' if lower_bound else ''}{nullity} eigenvalues within +-threshold"


def _with_errors(values, errors) -> tuple[Tensor, Tensor]:
    """Finite values and their error bounds (0 when not given), same order."""
    v = _values(values)
    e = _values(errors) if errors is not None else torch.zeros_like(v)
    if e.numel() != v.numel():
        raise UsageError(f"{e.numel()} error bounds for {v.numel()} eigenvalues")
    keep = torch.isfinite(v)
    return v[keep], e[keep].nan_to_num(nan=float("inf"))


def condition_number(*args, **kwargs) -> Condition:
    cond = _condition_number(*args, **kwargs)
    return _proven(cond, kwargs.get("proven_nullity"), kwargs.get("semidefinite"),
                   kwargs.get("eigenvalues_top", args[0] if args else None),
                   kwargs.get("eigenvalues_bottom", args[1] if len(args) > 1 else None))


def _condition_number(
    eigenvalues_top: Sequence[float] | Tensor,
    eigenvalues_bottom: Sequence[float] | Tensor,
    *,
    threshold_rel: float | None = None,
    dtype: torch.dtype = torch.float64,
    errors_top: Sequence[float] | Tensor | None = None,
    errors_bottom: Sequence[float] | Tensor | None = None,
    lambda_max: float | None = None,
    lambda_min: float | None = None,
    exact_spectrum: Tensor | None = None,
    nullity: int | None = None,
    nullity_is_lower_bound: bool = False,
    scale: float | None = None,
    noise: float | None = None,
    proven_nullity: tuple[int, str] | None = None,
    semidefinite: str | None = None,
    inertia: tuple[int, int, int, str] | None = None,
) -> Condition:
    """The condition number that fits the definiteness of ``A``, with its definition.

    ``eigenvalues_top`` (descending) and ``eigenvalues_bottom`` (ascending) are Lanczos
    estimates with optional error bounds ``errors_*`` (``min(r, r^2 / gap)``); ``lambda_max``/
    ``lambda_min`` override their ends; ``exact_spectrum [P]`` (all eigenvalues) overrides
    everything and makes the result exact. ``dtype``: the arithmetic the eigenvalues were
    computed in (sets the default null threshold, see the module docstring). ``nullity`` is
    used when no exact spectrum is given. ``scale``: the norm of the whole operator when ``A``
    is a block of it (a layer), so a block of rounding noise reads as zero, not as a spectrum.

    What condlab knows beyond the eigenvalues (see :func:`null_band` and :func:`_proven`):
    ``noise`` the operator's measured rounding noise (absolute, :mod:`~condlab.estimators.noise`);
    ``proven_nullity = (n, reason)`` a theorem that at least ``n`` eigenvalues are 0 (the GGN's
    rank bound); ``semidefinite`` the reason the operator is positive semi-definite by
    construction (the GGN of a convex loss, congruences and shifts of it), or None;
    ``inertia = (negative, zero, positive, reason)`` the exact inertia by Sylvester's law (a
    congruence of an operator whose spectrum is known). None of them can make the result
    contradict the theorem: a proven-singular operator is never "positive definite", a PSD one
    never "indefinite".
    """
    if threshold_rel is not None and not threshold_rel >= 0:
        raise UsageError(f"threshold_rel must be >= 0, got {threshold_rel}")
    rel = noise_rel(dtype) if threshold_rel is None else float(threshold_rel)
    exact = exact_spectrum is not None
    top, etop = _with_errors(eigenvalues_top, errors_top)
    bottom, ebot = _with_errors(eigenvalues_bottom, errors_bottom)
    if exact:
        spectrum = _values(exact_spectrum)
        spectrum = spectrum[torch.isfinite(spectrum)]
        if spectrum.numel() == 0:
            raise UsageError("exact_spectrum is empty")
        top, bottom = spectrum.sort(descending=True).values, spectrum.sort().values
        etop, ebot = torch.zeros_like(top), torch.zeros_like(bottom)
    elif lambda_min is None and bottom.numel() == 0:
        raise UsageError("a condition number needs the bottom eigenvalues (or lambda_min)")
    elif lambda_max is None and top.numel() == 0:
        raise UsageError("a condition number needs the top eigenvalues (or lambda_max)")
    both, eboth = torch.cat([top, bottom]), torch.cat([etop, ebot])
    lmax = float(lambda_max) if lambda_max is not None else float(both.max())
    lmin = float(lambda_min) if lambda_min is not None else float(both.min())

    def err(x: float) -> float:
        """The error bound of the computed value closest to ``x`` (0 for an exact spectrum)."""
        if exact or both.numel() == 0:
            return 0.0
        return float(eboth[(both - x).abs().argmin()])

    anorm = max(abs(lmax), abs(lmin), abs(scale or 0.0))
    t, band_source, band_parts = null_band(
        anorm=anorm, dtype=dtype, threshold_rel=threshold_rel, noise=noise,
        spectrum=spectrum.sort().values if exact else None, lmin=lmin,
        proven_nullity=proven_nullity, semidefinite=semidefinite, inertia=inertia,
    )
    rel = t / anorm if anorm > 0 else rel
    if exact:
        nullity, nullity_is_lower_bound = int((spectrum.abs() <= t).sum()), False

    def result(value, definition, definiteness, lmin_pos=None, ratio=None, null=nullity, **kw):
        return Condition(
            value=value,
            definition=definition,
            definiteness=definiteness,
            lambda_max=lmax,
            lambda_min=lmin,
            lambda_min_positive=lmin_pos,
            threshold=t,
            nullity=null,
            nullity_is_lower_bound=nullity_is_lower_bound and null is not None,
            negative_ratio=ratio,
            threshold_rel=rel,
            exact=exact,
            band_source=band_source,
            noise=band_parts,
            **kw,
        )

    def ratio_or_bound(num: float, den: float, msg: str, definiteness: str, lmin_pos=None,
                       ratio=None, null=nullity):
        """``num / den`` when ``den`` is resolved to ``1 / RESOLVE_FACTOR``, else a bound."""
        bn, bd = t + err(num), t + err(den)
        if abs(den) >= RESOLVE_FACTOR * bd:
            error = bd / abs(den) + bn / abs(num)
            return result(num / den, f"{msg}; relative error <= {error:.1g}", definiteness,
                          lmin_pos, ratio, null, error=error)
        bound = max(abs(num) - bn, 0.0) / (abs(den) + bd)
        name = dtype_name(dtype)
        if bd - t > t:
            fix = "the estimate's error dominates: tighten --tol"
        elif dtype != torch.float64:
            fix = "use --dtype float64"
        else:
            fix = "float64 arithmetic cannot resolve it"
        extra = f" plus the estimate's error {bd - t:.2g}" if bd > t else ""
        words = (
            f"kappa > {bound:.2g}: not resolved in {name}; {fix} ({msg}; the denominator "
            f"{den:.3g} is within {RESOLVE_FACTOR:g}x its error band {bd:.2g}: the {name} noise "
            f"{t:.2g}{extra})"
        )
        return result(None, words, definiteness, lmin_pos, ratio, null, resolved=False,
                      bound=bound)

    null_words = _nullity_words(nullity, nullity_is_lower_bound)
    src = " (exact spectrum)" if exact else ""
    thr = f"threshold {t:.2g} = {rel / torch.finfo(dtype).eps:.3g} eps({dtype_name(dtype)}) ||A||, {band_source}"
    b_min, b_max = t + err(lmin), t + err(lmax)
    if abs(lmax) <= b_max and abs(lmin) <= b_min:
        whole = " of the whole operator" if scale and abs(scale) > max(abs(lmax), abs(lmin)) else ""
        msg = f"undefined: structurally zero, every eigenvalue is within the null band{whole} ({thr})"
        return result(None, msg, "zero")
    if lmin > b_min:
        msg = f"lambda_max / lambda_min (positive definite){src}"
        return ratio_or_bound(lmax, lmin, msg, "positive definite", lmin, null=0)
    if lmax < -b_max:
        msg = f"lambda_min / lambda_max (negative definite){src}"
        return ratio_or_bound(lmin, lmax, msg, "negative definite", null=0)
    above = bottom[bottom > t + ebot]
    lmin_pos = float(above.min()) if above.numel() else None
    if lmin >= -b_min:  # positive semi-definite
        if lmin_pos is None:
            msg = (
                f"undefined from these eigenvalues: every reported bottom eigenvalue is within "
                f"the null band, {thr} plus the estimate's residual error bound (up to "
                f"{float(ebot.max()) if ebot.numel() else 0.0:.2g}); ask for more bottom "
                "eigenvalues, tighten --tol, or use the exact spectrum"
            )
            return result(None, msg, "positive semi-definite")
        msg = (
            f"positive part: lambda_max / lambda_min+, lambda_min+ = smallest eigenvalue above "
            f"the null band ({thr}){src}; {null_words}"
        )
        return ratio_or_bound(lmax, lmin_pos, msg, "positive semi-definite", lmin_pos)
    ratio = abs(lmin) / lmax if lmax > 0 else None
    if lmax <= b_max:  # negative semi-definite: mirror of the positive case
        below = top[top < -(t + etop)]
        lmax_neg = float(below.max()) if below.numel() else None
        msg = (
            f"negative part: lambda_min / lambda_max-, lambda_max- = largest eigenvalue below "
            f"the null band ({thr}){src}; {null_words}"
        )
        if lmax_neg is None:
            return result(None, msg, "negative semi-definite")
        return ratio_or_bound(lmin, lmax_neg, msg, "negative semi-definite")
    if exact and lmin_pos is not None:
        n_neg = int((spectrum < -t).sum())
        msg = (
            f"positive part: lambda_max / lambda_min+, lambda_min+ = smallest eigenvalue above "
            f"the null band ({thr}) (exact spectrum); indefinite: {n_neg} eigenvalues below "
            f"-threshold and {null_words} are left out"
        )
        return ratio_or_bound(lmax, lmin_pos, msg, "indefinite", lmin_pos, ratio)
    msg = (
        f"undefined: indefinite (lambda_min = {lmin:.3g} < -{b_min:.2g}, below the null band), so "
        f"the smallest positive eigenvalue is interior to the spectrum and Lanczos at the ends "
        f"does not reach it; use --exact or --damping (|lambda_min| / lambda_max = {ratio:.3g})"
    )
    return result(None, msg, "indefinite", ratio=ratio)


condition_number = functools.wraps(_condition_number)(condition_number)
