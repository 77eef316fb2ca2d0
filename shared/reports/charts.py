"""The reports' charts, drawn with matplotlib: grouped bars, a heat map, drops beside the paper's, a ROC, a scatter.

Each chart function builds a :class:`matplotlib.figure.Figure` and returns it,
so that a test reads the data back from its artists; :func:`save` writes it
as PNG. Figures are made without pyplot, on the Agg canvas: no GUI backend,
no global figure registry, nothing a worker or a plain script trips on. This
module imports matplotlib only inside its functions, so that importing it
costs nothing until a chart is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

#: Colours of the series, in order (matplotlib's "tab10", which stays apart for colour-blind readers too).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
#: Inches of a chart, at :data:`DPI`: 1000 x 480 pixels, which a page shows at full width without scaling text.
SIZE, DPI = (10.0, 4.8), 100
#: Marks the point where the detector runs: its threshold, on a ROC.
OPERATING = "operating point"


def figure(size: tuple[float, float] = SIZE):
    """An empty Figure on the Agg canvas, laid out by matplotlib's constrained layout (legends outside included)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path``; return the path.

    No "Software" entry in the file, so that the same data give the same
    bytes under another matplotlib release.
    """
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return Path(path)


def _percent_axis(ax) -> None:
    """The y axis from 0 to 100 % with a tick every 20: round numbers, never a tick at 82.9."""
    ax.set_ylim(0, 100)
    ax.set_yticks(range(0, 101, 20))


def _legend_outside(ax, **kwargs):
    """The legend to the right of the axes, so that it never covers data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False, fontsize=9,
                     **kwargs)


def grouped_bars(categories: list[str], series: dict[str, list[float]], *, title: str, ylabel: str = "accuracy (%)",
                 y_range: tuple[float, float] = (0.0, 100.0), legend_title: str | None = "configuration",
                 values_on_bars: bool = False):
    """One group of bars per category, one bar per series; the Figure.

    Parameters
    ----------
    categories : list of str
        The groups' labels (e.g. attacks), written under the axis, turned 30
        degrees so that long ones never run into each other.
    series : dict of str to list of float
        Per series (e.g. configuration), one value per category; NaN draws no bar.
    y_range : (float, float)
        The value axis; (0, 100) gets a tick every 20.
    values_on_bars : bool
        Write each value over its bar (for a few bars: too many would crowd).

    Raises
    ------
    ValueError
        If a series does not have one value per category.
    """
    for name, values in series.items():
        if len(values) != len(categories):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(categories)} categories")
    fig = figure()
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for s, (name, values) in enumerate(series.items()):
        offsets = [c - 0.4 + width * (s + 0.5) for c in range(len(categories))]
        bars = ax.bar(offsets, values, width * 0.92, label=name, color=PALETTE[s % len(PALETTE)])
        if values_on_bars:
            ax.bar_label(bars, [f"{v:.1f}" if v == v else "" for v in values], padding=2, fontsize=8)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    low, high = y_range
    if (low, high) == (0.0, 100.0):
        _percent_axis(ax)
    else:
        ax.set_ylim(low, high)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", color="#e0e0e0")
    ax.set_axisbelow(True)
    _legend_outside(ax, title=legend_title)
    return fig


def heatmap(rows: list[str], columns: list[str], values: list[list[float]], *, title: str,
            label: str = "accuracy (%)", value_range: tuple[float, float] = (0.0, 100.0)):
    """A matrix of values as coloured cells, each with its value written in it; the Figure.

    For a grid too large for bars (the adaptive attacks of a comparison: 16
    attacks x 10 configurations would be 160 bars). Light cells are high values.

    Parameters
    ----------
    rows, columns : list of str
        The labels, down the left and under the matrix (turned 30 degrees).
    values : list of list of float
        One row per label of ``rows``, one value per column; NaN leaves a cell blank.

    Raises
    ------
    ValueError
        If a row does not have one value per column.
    """
    if len(values) != len(rows) or any(len(row) != len(columns) for row in values):
        raise ValueError(f"values must be {len(rows)} rows of {len(columns)}")
    import numpy as np

    matrix = np.array(values, dtype=float)
    height = max(SIZE[1], 1.2 + 0.32 * len(rows) + 0.09 * max((len(c) for c in columns), default=0))
    fig = figure((SIZE[0], height))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=value_range[0], vmax=value_range[1],
                      aspect="auto")
    middle = (value_range[0] + value_range[1]) / 2
    for (r, c), value in np.ndenumerate(matrix):
        if value == value:  # NaN: blank
            ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if value > middle else "white")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    fig.suptitle(title)  # over the whole figure: long row labels push the axes right, and a title over them overflows
    fig.colorbar(image, ax=ax, label=label)
    return fig


def drops(measured: dict[str, float], paper: dict[str, float], *, title: str = "Average accuracy drop vs clean"):
    """Per configuration, the measured average drop (points) beside the paper's, where it published one; the Figure.

    A configuration the paper did not measure gets no "paper" bar (NaN); with
    none at all, the chart has no "paper" series.
    """
    configs = list(measured)
    values = [v for v in [*measured.values(), *paper.values()] if not math.isnan(v)]
    top = max(10.0, 10 * math.ceil(max(values, default=0) / 10 + 0.05))
    bottom = min(0.0, 10 * math.floor(min(values, default=0) / 10))
    series = {"measured": [measured[c] for c in configs]}
    if any(c in paper for c in configs):  # no empty "paper" entry in the legend for models of one's own
        series["paper"] = [paper.get(c, math.nan) for c in configs]
    return grouped_bars(configs, series,
                        title=title, ylabel="average drop (points)", y_range=(bottom, top), legend_title=None,
                        values_on_bars=True)


def roc(curves: dict[str, list[tuple[float, float]]], *, title: str, fpr: float | None = None,
        detected: dict[str, float] | None = None, target: float | None = None):
    """ROC curves as lines on a log false-positive axis, and where the detector runs; the Figure.

    Parameters
    ----------
    curves : dict of str to list of (float, float)
        Per attack, (clean images flagged, fooling images flagged) points in
        percent. A log axis has no 0: points without false positives are left out.
    fpr, detected : float and dict of str to float, optional
        The operating point: the share of clean images flagged at the
        threshold, and per attack the share of its fooling images flagged
        there (percent). Each gets a marker on its curve's colour, tagged
        with gid :data:`OPERATING`.
    target : float, optional
        The false-positive rate the threshold was calibrated for (percent), a dashed vertical line.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = figure((9.0, 5.2))
    ax = fig.add_subplot()
    shown = [x for pts in curves.values() for x, _ in pts if x > 0] + [v for v in (fpr, target) if v]
    left = 10 ** math.floor(math.log10(min(shown, default=1.0)))
    for i, (name, points) in enumerate(curves.items()):
        kept = sorted((x, y) for x, y in points if x > 0)
        colour = PALETTE[i % len(PALETTE)]
        ax.plot([x for x, _ in kept], [y for _, y in kept], color=colour, label=name, linewidth=1.8)
        if fpr and detected and name in detected:
            ax.plot([fpr], [detected[name]], marker="o", markersize=7, color=colour, markeredgecolor="black",
                    linestyle="none", gid=OPERATING)
    if fpr and detected:
        ax.plot([], [], marker="o", color="white", markeredgecolor="black", linestyle="none",
                label=f"{OPERATING}: {fpr:.1f} % clean flagged")
    if target:
        ax.axvline(target, color="#555555", linestyle="--", linewidth=1, label=f"calibrated rate {target:g} %")
    ax.set_xscale("log")
    ax.set_xlim(left, 100)
    decades = [10.0 ** k for k in range(round(math.log10(left)), 3)]
    ax.xaxis.set_major_locator(FixedLocator(decades))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    _percent_axis(ax)
    ax.set_xlabel("clean images flagged (%, log scale)")
    ax.set_ylabel("fooling images flagged (%)")
    ax.set_title(title)
    ax.grid(color="#e0e0e0")
    _legend_outside(ax, title="attack")
    return fig


def scatter(groups: dict[str, list[tuple[float, float]]], *, xlabel: str, ylabel: str, title: str,
            vline: float | None = None, vline_label: str | None = None):
    """Points per named group, each group its own colour, and an optional vertical guide line; the Figure."""
    from matplotlib.ticker import MaxNLocator

    fig = figure((9.0, 5.2))
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(groups.items()):
        ax.scatter([x for x, _ in points], [y for _, y in points], s=14, color=PALETTE[i % len(PALETTE)], label=name,
                   alpha=0.8)
    if vline is not None:
        ax.axvline(vline, color="#555555", linestyle="--", linewidth=1, label=vline_label)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        axis.get_major_formatter().set_useOffset(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(color="#e0e0e0")
    _legend_outside(ax)
    return fig
