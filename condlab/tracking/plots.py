"""Plots of a tracked run against the step (matplotlib, the ``plot`` extra, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from condlab.errors import UsageError


def plot_track(rows: list[dict], path: str | Path, title: str = "") -> None:
    """``lambda_max`` with each setting's stability threshold (dashed), ``kappa``, the stability
    ratio (1 = the threshold) and the trace against the step, one line per setting; panels with
    no value and skipped checkpoints are left out."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'condlab[plot]'") from None
    ok = [r for r in rows if r.get("status") == "ok"]
    settings = list(dict.fromkeys(r["setting"] for r in ok))
    panels = [("lambda_max", "lambda_max", "log"), ("kappa", "kappa", "log"),
              ("stability_ratio", "lambda_max / threshold", "linear")]
    panels.append(("trace", "trace", "linear"))
    # a panel without a value is left out (kappa of an indefinite Hessian, the trace unasked)
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in ok)] or panels[:1]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 2.1 * len(panels)), sharex=True, dpi=80,
                             squeeze=False)
    axes = axes[:, 0]
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for i, s in enumerate(settings):
            pts = [(r["step"], r[key]) for r in ok if r["setting"] == s and r.get(key) is not None]
            if not pts:
                continue
            color = f"C{i}"
            ax.plot(*zip(*pts, strict=True), marker=".", color=color, label=s)
            if key == "lambda_max":
                th = [(r["step"], r["threshold"]) for r in ok if r["setting"] == s and r.get("threshold")]
                if th:
                    ax.plot(*zip(*th, strict=True), "--", color=color, label=f"{s} threshold")
        if key == "stability_ratio":
            ax.axhline(1.0, color="gray", lw=0.8)
        values = [r[key] for r in ok if r.get(key) is not None]
        if scale == "log" and min(values) > 0 and max(values) > 20 * min(values):
            ax.set_yscale("log")  # only when the values span more than a factor of 20
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
