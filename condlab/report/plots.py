"""Figures (matplotlib is an optional extra: ``pip install condlab[plot]``), imported lazily."""

from __future__ import annotations

from pathlib import Path

from condlab.errors import UsageError


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(
            "plotting needs matplotlib: pip install 'condlab[plot]' (or drop --plot)"
        ) from None
    return plt


def save_figure(fig, path: str | Path) -> None:
    """Save with :func:`condlab.files.atomic_write` (PNG unless the suffix names a format)."""
    from condlab.files import atomic_write

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"))


def plot_density(densities, path: str | Path) -> None:
    """The spectral density of each setting in its own panel (settings differ in scale by
    orders of magnitude), on a log density axis cut 8 decades below each panel's peak (the
    Gaussian tails of SLQ's smoothing reach 1e-88 and would hide the spectrum)."""
    plt = pyplot()
    n = max(len(densities), 1)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.6 * n), squeeze=False)
    for ax, d in zip(axes[:, 0], densities):
        peak = max(d.density) if d.density and max(d.density) > 0 else 1.0
        ax.plot(d.grid, d.density)
        ax.set_yscale("log")
        ax.set_ylim(peak * 1e-8, peak * 2)
        ax.set_ylabel("density")
        ax.set_title(d.setting, fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("eigenvalue")
    fig.suptitle("spectral density (stochastic Lanczos quadrature)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


