"""``--plot``: loss and condition-number curves of a comparison (matplotlib, an optional extra).

Four panels over training steps, one line per (variant, optimizer) at its chosen lr and first
seed (a colour per optimizer, a line style per variant): the training loss; kappa of the curvature ``A``; kappa of the optimizer's own
``P^-1/2 A P^-1/2``; and the effective lr ``lr / ||w||^2`` of the scale-invariant group when one
is tracked (paper C), else the sharpness over the stability threshold; and, when ``track.block``
is set, kappa of that block.

A measured point whose eigenvalues did not converge within ``track.max_hvps`` (the row's
``converged`` is false: the table's ``~``) is an estimate: it is drawn as a hollow marker, and the
legend says so. A kappa the dtype cannot resolve has no value; the bound it is known to exceed
is drawn as a hollow triangle, also explained in the legend.
"""

from __future__ import annotations

from pathlib import Path

from condlab.compare import CompareReport
from condlab.report.plots import pyplot, save_figure

STYLES = ("-", "--", ":", "-.")
# the columns measured by Lanczos at tracked steps (the row's `converged` covers them)
MEASURED = ("kappa", "pre_kappa", "block_kappa", "sharpness_ratio")
UNCONVERGED = "hollow: did not converge within track.max_hvps (an estimate)"
UNRESOLVED = "hollow triangle: kappa not resolved in the dtype, above this bound"


def _curves(report: CompareReport, key: str):
    """``(label, style, steps, values, flagged, bounds)`` per chosen run: a colour per
    optimizer, a line style per variant; ``flagged`` the indices of the points that did not
    converge; ``bounds`` the ``(step, bound)`` of the kappas the dtype could not resolve."""
    cfg = report.config
    seed, many = cfg.seeds[0], len(cfg.variants) > 1
    optimizers = [e.label for e in cfg.optimizers]
    variants = [v.label for v in cfg.variants]
    for c in report.choices:
        run = [r for r in report.rows if r["variant"] == c.variant and r["optimizer"] == c.optimizer
               and r["lr"] == c.lr and r["seed"] == seed]
        rows = [r for r in run if r.get(key) is not None]
        bounds = [(r["step"], r[f"{key}_bound"]) for r in run if r.get(f"{key}_bound") is not None]
        if rows or bounds:
            label = f"{c.variant}: {c.optimizer}" if many else c.optimizer
            style = {"color": f"C{optimizers.index(c.optimizer) % 10}",
                     "linestyle": STYLES[variants.index(c.variant) % len(STYLES)]}
            flagged = [i for i, r in enumerate(rows) if key in MEASURED and r.get("converged") is False]
            yield label, style, [r["step"] for r in rows], [r[key] for r in rows], flagged, bounds


def plot_report(report: CompareReport, path: str | Path) -> None:
    fig = draw_report(report)
    save_figure(fig, path)
    pyplot().close(fig)


def draw_report(report: CompareReport):
    """The figure of :func:`plot_report`, not yet saved."""
    plt = pyplot()
    si = any(r.get("si_eff_lr") is not None for r in report.rows)
    last = ("si_eff_lr", "effective lr  lr / ||w||^2") if si else \
        ("sharpness_ratio", "preconditioned sharpness / threshold")
    curv = report.config.track.curvature
    panels = [("train_loss", "training loss"), ("kappa", f"kappa({curv})"),
              ("pre_kappa", "kappa(P^-1/2 A P^-1/2)"), last]
    if any(r.get("block_kappa") is not None for r in report.rows):
        block = report.config.track.block
        name = "the last layer" if block == ("last",) else "the block " + ", ".join(block)
        panels.append(("block_kappa", f"kappa({curv}) of {name}"))
    cols = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(6 * cols, 8), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    hollow = above = None
    for ax, (key, title) in zip(axes.flat, panels):
        drawn = False
        for label, style, x, y, flagged, bounds in _curves(report, key):
            ax.plot(x, y, label=label, marker="." if len(x) < 30 else None, **style)
            drawn = True
            if bounds:
                above = ax.plot(*zip(*bounds, strict=True), linestyle="none", marker="^", markersize=7,
                                markerfacecolor="none", markeredgecolor=style["color"],
                                label="_unresolved")[0]
            if flagged:
                hollow = ax.plot([x[i] for i in flagged], [y[i] for i in flagged], linestyle="none",
                                 marker="o", markersize=7, markerfacecolor="none",
                                 markeredgecolor=style["color"], label="_unconverged")[0]
        ax.set_title(title)
        ax.set_xlabel("step")
        if drawn and key != "sharpness_ratio":
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "not tracked (or undefined)", ha="center", va="center",
                    transform=ax.transAxes)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for artist, marker, text in ((hollow, "o", UNCONVERGED), (above, "^", UNRESOLVED)):
        if artist is not None:  # one legend entry for every such marker, drawn in grey
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=7,
                                  markerfacecolor="none", markeredgecolor="grey"))
            labels.append(text)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"condlab compare: {report.config.name}")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    return fig
