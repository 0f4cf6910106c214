"""Figures (matplotlib is an optional extra: ``pip install condlab[plot]``), imported lazily."""

from __future__ import annotations

from pathlib import Path

from condlab.errors import UsageError


def _pyplot():
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
    """The spectral density of each setting, on a symmetric-log eigenvalue axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for d in densities:
        ax.plot(d.grid, d.density, label=d.setting)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("spectral density (stochastic Lanczos quadrature)")
    save_figure(fig, path)
    plt.close(fig)
