"""Synthetic problems with controlled conditioning: ``linreg`` and ``logreg``.

Gaussian features ``x = mean + scale * (S^1/2 z)``, ``z ~ N(0, I)``; the covariance ``S`` has
eigenvalues log-spaced from 1 to ``1/kappa`` (or the list ``eigs``) in a random orthogonal
basis (``rotate=true``) or along the axes, or with ``blocks`` is block diagonal with blocks
``(1 - e) 1 1^T + e I`` (a reconstruction of paper B's example). See :mod:`condlab.load.data` for the spec syntax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from condlab.errors import UsageError


def _num(lo: float, strict: bool = False) -> Callable[[Any], float]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < lo or (strict and v == lo):
            raise TypeError(f"a number {'>' if strict else '>='} {lo:g}")
        return float(v)
    return check


def _int(lo: int) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise TypeError(f"an integer >= {lo}")
        return v
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _opt_list(item: Callable, scalar_ok: bool = False) -> Callable:
    def check(v):
        if v is None or (scalar_ok and not isinstance(v, (list, tuple))):
            return v if v is None else item(v)
        if not isinstance(v, (list, tuple)) or not v:
            raise TypeError("a non-empty list" + (" or a number" if scalar_ok else ""))
        return [item(x) for x in v]
    return check


_SYNTH: dict[str, tuple[Any, Callable]] = {
    "n": (512, _int(1)),
    "d": (10, _int(1)),
    "kappa": (100.0, _num(1.0)),
    "eigs": (None, _opt_list(_num(0.0, strict=True))),
    "rotate": (False, _bool),
    "mean": (0.0, _opt_list(_num(-math.inf), scalar_ok=True)),
    "scale": (None, _opt_list(_num(0.0, strict=True))),
    "noise": (None, lambda v: v if v is None else _num(0.0)(v)),  # default 0.1 / 0.5
    "blocks": (None, _opt_list(_int(1))),
    "e": (0.1, _num(0.0, strict=True)),
    "exact": (False, _bool),
    "seed": (0, _int(0)),
}
SYNTHETIC = {
    "linreg": "linear regression y = x^T w + noise eps over Gaussian x with covariance of condition kappa",
    "logreg": "multinomial logistic labels softmax(x^T W / noise) over Gaussian x with condition kappa",
}



# -- BLAS-free linear algebra ------------------------------------------------------------------
# Seeded data must be the same bytes on every machine. numpy's ``@``, ``qr``, ``cholesky`` and
# ``eigh`` go through OpenBLAS/LAPACK, whose kernels (chosen per CPU, OPENBLAS_CORETYPE) sum in
# different orders and, for repeated eigenvalues, return different eigenvectors. ``einsum``
# without ``optimize`` runs numpy's own loops in a fixed order, whatever BLAS is loaded.
def _mm(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A @ B`` without BLAS."""
    return np.einsum("ij,jk->ik", A, B, optimize=False)


def _block_root(b: int, e: float) -> np.ndarray:
    """The symmetric square root of ``(1 - e) 1 1^T + e I`` (size ``b``), in closed form: the
    matrix has eigenvalue ``e + b (1 - e)`` on ``1 / sqrt(b)`` and ``e`` on its complement."""
    J = np.ones((b, b)) / b
    return math.sqrt(e) * (np.eye(b) - J) + math.sqrt(e + b * (1 - e)) * J


def haar_orthogonal(G: np.ndarray) -> np.ndarray:
    """The Q factor (with R's diagonal positive, so Haar distributed for Gaussian ``G``) of
    ``G``'s columns, by modified Gram-Schmidt twice (BLAS-free; the same Q as a sign-fixed QR)."""
    Q = np.array(G, dtype=float, copy=True)
    for j in range(Q.shape[1]):
        for _ in range(2):
            for i in range(j):
                Q[:, j] -= np.einsum("i,i->", Q[:, i], Q[:, j]) * Q[:, i]
        Q[:, j] /= math.sqrt(np.einsum("i,i->", Q[:, j], Q[:, j]))
    return Q


def cholesky(A: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of a symmetric positive definite ``A`` (BLAS-free)."""
    n = A.shape[0]
    L = np.zeros_like(A, dtype=float)
    for j in range(n):
        s = A[j, j] - np.einsum("k,k->", L[j, :j], L[j, :j])
        if not s > 0:
            raise np.linalg.LinAlgError("matrix is not positive definite")
        L[j, j] = math.sqrt(s)
        L[j + 1:, j] = (A[j + 1:, j] - np.einsum("ik,k->i", L[j + 1:, :j], L[j, :j])) / L[j, j]
    return L


def _lower_inverse(L: np.ndarray) -> np.ndarray:
    """``L^-1`` of a lower triangular ``L`` by forward substitution (BLAS-free)."""
    n = L.shape[0]
    inv = np.zeros_like(L)
    for i in range(n):
        inv[i, i] = 1.0 / L[i, i]
        inv[i, :i] = -np.einsum("k,kj->j", L[i, :i], inv[:i, :i]) / L[i, i]
    return inv


def _synthetic(name: str, opts: dict) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    own = {"logreg": {"classes": (2, _int(2))}, "linreg": {"w": (None, _opt_list(_num(-math.inf), scalar_ok=True))}}
    schema = {**_SYNTH, **own[name]}
    accepted = list(schema)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise UsageError(
            f"dataset {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are {', '.join(accepted)}"
        )
    p: dict[str, Any] = {}
    for key, (default, check) in schema.items():
        value = opts.get(key, default)
        try:
            p[key] = check(value)
        except TypeError as e:
            raise UsageError(f"dataset {name!r}: {key}={value!r} must be {e}") from None
    if p["noise"] is None:
        p["noise"] = 0.1 if name == "linreg" else 0.5
    n, d = p["n"], p["d"]

    def bad(msg: str) -> UsageError:
        return UsageError(f"dataset {name!r}: {msg}")

    lists = [k for k in ("eigs", "scale", "mean", "w") if isinstance(p.get(k), list)]
    for key in lists:
        if p[key] is not None and len(p[key]) != d:
            raise bad(f"{key} has {len(p[key])} entries but d={d}; give one per feature")
    if p["blocks"] is not None:
        if sum(p["blocks"]) != d:
            raise bad(f"blocks {p['blocks']} sum to {sum(p['blocks'])}, not d={d}")
        if "kappa" in opts or p["eigs"] is not None:
            raise bad("give either blocks (with e) or kappa/eigs, not both")
        if p["e"] > 1:
            raise bad(f"e={p['e']} must be in (0, 1] for a positive definite block (1-e) 11^T + e I")
    if p["eigs"] is not None and "kappa" in opts:
        raise bad("give either kappa or eigs, not both")
    if p["exact"] and n <= d:
        raise bad(f"exact=true needs n > d (got n={n}, d={d})")

    g = np.random.default_rng(p["seed"])
    # S^1/2 built directly (never from eigenvectors of S: a block covariance has repeated
    # eigenvalues, whose eigenvectors LAPACK picks differently on each BLAS kernel)
    if p["blocks"] is not None:
        root = np.zeros((d, d))
        i = 0
        for b in p["blocks"]:
            root[i:i + b, i:i + b] = _block_root(b, p["e"])
            i += b
    else:
        lam = np.asarray(p["eigs"] if p["eigs"] is not None else np.logspace(0, -math.log10(p["kappa"]), d))
        root = np.diag(np.sqrt(lam))
    if p["rotate"]:
        U = haar_orthogonal(g.standard_normal((d, d)))
        root = _mm(_mm(U, root), U.T)  # (U S U^T)^1/2 = U S^1/2 U^T
    else:
        U = np.eye(d)
    D = np.asarray(p["scale"]) if p["scale"] is not None else np.ones(d)
    L = D[:, None] * root  # C = D S D = L L^T
    C = _mm(L, L.T)
    C = (C + C.T) / 2
    w = np.linalg.eigvalsh(C)  # for meta only: the data never depend on it
    Z = g.standard_normal((n, d))
    if p["exact"]:  # empirical covariance of Z (centered, 1/n) becomes I exactly
        Z = Z - Z.mean(0)
        Z = _mm(Z, _lower_inverse(cholesky(_mm(Z.T, Z) / n)).T)
    mu = np.asarray(p["mean"], dtype=float) * np.ones(d)
    XL = _mm(Z, L.T)
    X = mu + XL
    if name == "linreg":
        w_true = g.standard_normal(d) / math.sqrt(d)  # drawn even when given: the same noise
        if p["w"] is not None:
            w_true = np.asarray(p["w"], dtype=float) * np.ones(d)
        y = _mm(X, w_true[:, None])[:, 0] + p["noise"] * g.standard_normal(n)
    else:
        w_true = g.standard_normal((d, p["classes"]))
        logits = _mm(XL, w_true) / np.sqrt(np.einsum("dk,de,ek->k", w_true, C, w_true))
        if p["noise"] == 0:
            y = logits.argmax(1)
        else:
            gumbel = -np.log(-np.log(g.uniform(size=logits.shape)))  # softmax sampling
            y = (logits / p["noise"] + gumbel).argmax(1)
    meta = {
        "covariance": torch.as_tensor(C),
        "eigenvalues": torch.as_tensor(np.sort(w)[::-1].copy()),
        "kappa": float(w.max() / w.min()) if w.min() > 0 else math.inf,
        "basis": torch.as_tensor(U),
        "w_true": torch.as_tensor(w_true),
    }
    drop = {"kappa"} if p["eigs"] is not None or p["blocks"] is not None else set()
    drop |= set() if p["blocks"] is not None else {"e"}
    spec = {k: v for k, v in p.items() if v is not None and k not in drop}
    return X, y, {"name": name, **spec}, meta
