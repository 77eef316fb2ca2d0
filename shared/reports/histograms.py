"""The suspicion histogram of a screening job (matplotlib, Agg), with the threshold marked.

matplotlib is imported when a figure is drawn, never with this module's callers.
"""

from __future__ import annotations

from pathlib import Path


def suspicion_figure(counts: list[int], calibration: dict | None = None, clean: list[int] | None = None):
    """A Figure: this job's images per suspicion bin (0 to 1), and the calibration's clean images' below it.

    Parameters
    ----------
    counts : list of int
        Images per equal bin of suspicion over 0 to 1.
    calibration : dict, optional
        The plan's (``name``, ``threshold``): the threshold is drawn on each panel.
    clean : list of int, optional
        The calibration's clean images in the same bins, where it recorded them: a second panel.

    Returns
    -------
    matplotlib.figure.Figure
        Bars of the counts (log scale: the flagged tail is a few % of a clean set).
    """
    from matplotlib.figure import Figure

    panels = [("this job", counts)] + ([("clean calibration images", clean)] if clean else [])
    figure = Figure(figsize=(8, 2.6 * len(panels) + 0.6), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    threshold = (calibration or {}).get("threshold")
    for ax, (title, values) in zip(axes, panels):
        width = 1 / len(values)
        ax.bar([(k + 0.5) * width for k in range(len(values))], values, width=width * 0.92,
               color="#4c72b0" if title == "this job" else "#8c8c8c")
        ax.set_yscale("log" if any(values) else "linear")
        ax.set_ylabel("images")
        ax.set_title(f"{title}: {sum(values):,} images", loc="left", fontsize=10)
        if threshold is not None:
            ax.axvline(threshold, color="#c0392b", linewidth=1.5, label=f"threshold {threshold:.3f}")
            ax.legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), fontsize=8, frameon=False)  # outside the bars
        ax.set_xlim(0, 1)
    axes[-1].set_xlabel("suspicion (flagged above the threshold)")
    return figure


def save(figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG (Agg) and return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return Path(path)
