"""The reports' charts and sheets: the data they draw are the report's numbers, and they stay readable.

Every check reads the figure's artists back (bar heights, line data, text
extents after drawing), on the shipped results (docs/results/report.json,
docs/calibration/detector/report.json) and on images the shipped models
classify here.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shared.evaluation import report
from shared.evaluation.plan import AttackSpec
from shared.reports import charts, sheets

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results" / "report.json"
DETECTOR = REPO / "docs" / "calibration" / "detector" / "report.json"


@pytest.fixture(scope="module")
def shipped():
    cells, plan, meta = report.read(RESULTS)
    return cells, plan, meta


def _bars(fig) -> dict[str, list[float]]:
    ax, = fig.axes
    return {bars.get_label(): list(bars.datavalues) for bars in ax.containers}


def _overlap(a, b) -> bool:
    """Whether two window extents share any area (touching edges do not count)."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_bars_are_the_reports_accuracies(shipped, adaptive):
    cells = shipped[0]
    fig = report.accuracy_figure(cells, adaptive=adaptive)
    attacks = list(dict.fromkeys(c.attack for c in cells if c.attack.adaptive == adaptive))
    expected = {config: [100 * next(c.accuracy for c in cells if c.attack == a and c.configuration == config)
                         for a in attacks] for config in dict.fromkeys(c.configuration for c in cells)}
    drawn = _bars(fig)
    assert list(drawn) == list(expected)
    for config in expected:
        assert np.allclose(drawn[config], expected[config]), config
    ax, = fig.axes
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert all(a.label.startswith(label) for a, label in zip(attacks, labels)) and len(labels) == len(attacks)
    assert [t for t in ax.get_yticks()] == [0, 20, 40, 60, 80, 100] and ax.get_ylim() == (0, 100)


def test_the_drops_are_the_reports_and_the_papers(shipped):
    cells = shipped[0]
    drawn = _bars(report.drops_figure(cells))
    measured = report.average_drops(cells)
    assert np.allclose(drawn["measured"], list(measured.values()))
    paper = [report.PAPER_DROPS.get(c, math.nan) for c in measured]
    assert np.allclose(drawn["paper"], paper, equal_nan=True)


def test_no_legend_covers_a_bar_and_no_tick_label_runs_into_another(shipped):
    cells = shipped[0]
    for fig in (report.accuracy_figure(cells), report.accuracy_figure(cells, adaptive=True),
                report.drops_figure(cells)):
        fig.canvas.draw()
        ax, = fig.axes
        legend = ax.get_legend().get_window_extent()
        bars = [p.get_window_extent() for p in ax.patches]
        assert bars and not any(_overlap(legend, bar) for bar in bars)
        # Turned labels lie on parallel lines: those stay apart when the ticks' spacing, across the text's
        # direction, exceeds the height of a line of it.
        labels = ax.get_xticklabels()
        xs = ax.transData.transform([(x, 0) for x in ax.get_xticks()])[:, 0]
        spacing = np.diff(xs).min() * math.sin(math.radians(labels[0].get_rotation()))
        assert spacing > labels[0].get_fontsize() * fig.dpi / 72 * 1.2
        assert fig.get_tightbbox().x1 <= fig.bbox.x1 + 1  # nothing cut off at the right edge


def test_the_roc_is_drawn_on_a_log_axis_with_its_operating_point():
    payload = json.loads(DETECTOR.read_text())
    first, card = payload["first"], payload["card"]
    shown = payload["curves"]
    fpr = 100 * card["per_source"][first]["false_positives"]
    detected = {k: 100 * v for k, v in card["per_source"][first]["detected"].items() if k in shown}
    fig = charts.roc(shown, title="roc", fpr=fpr, detected=detected, target=100 * card["fpr"])
    ax, = fig.axes
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    for attack, points in shown.items():
        kept = sorted((x, y) for x, y in points if x > 0)
        assert np.allclose(lines[attack].get_xydata(), kept), attack
    marks = [line for line in ax.get_lines() if line.get_gid() == charts.OPERATING]
    assert sorted(tuple(m.get_xydata()[0]) for m in marks) == sorted((fpr, d) for d in detected.values())
    # The operating point lies on its curve: thresholds flagging fewer clean images flag no more fooling ones,
    # and those flagging more, no fewer.
    for attack, y in detected.items():
        assert all(dy <= y + 1e-9 for dx, dy in shown[attack] if dx < fpr - 1e-9), attack
        assert all(dy >= y - 1e-9 for dx, dy in shown[attack] if dx > fpr + 1e-9), attack
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert ticks and all(float(t) in (0.01, 0.1, 1, 10, 100) for t in ticks)
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # outside the data


@pytest.fixture(scope="module")
def examples_figure(shipped, sample):
    from producers.local import example_figure
    from shared.settings import load

    plan = shipped[1]
    return example_figure(plan, sample, load(), count=10), sample


def test_the_examples_sheet_names_the_true_label_the_attack_and_its_eps(shipped, examples_figure):
    fig, sample = examples_figure
    picked = sheets.across_classes(sample.labels, 10)
    assert sorted(sample.labels[picked].tolist()) == list(range(10))  # one image per class
    rows = [sub._suptitle.get_text() for sub in fig.subfigs]
    plan = shipped[1]
    attack = next(a for a in reversed(plan["attacks"]) if a.get("params", {}).get("eps") and not a.get("through"))
    assert AttackSpec.of(attack).label in rows[1] and "/255)" in rows[1]
    assert len(rows) == 4 and "standard+haar" in rows[2] and "haar+haar" in rows[3]
    for sub in fig.subfigs:
        titles = [ax.get_title() for ax in sub.axes]
        truth = [sample.classes[sample.labels[i]] for i in picked]
        assert [t.splitlines()[0] for t in titles] == [f"true: {name}" for name in truth]
        assert all(t.splitlines()[1].removeprefix("pred: ") in sample.classes for t in titles)
        for ax in sub.axes:  # red exactly where the prediction is wrong
            true, pred = (line.split(": ")[1] for line in ax.get_title().splitlines())
            assert (ax.title.get_color() == sheets.WRONG) == (true != pred)


def test_no_caption_runs_into_another_or_into_an_image(examples_figure):
    fig, _ = examples_figure
    fig.canvas.draw()
    axes = [ax for sub in fig.subfigs for ax in sub.axes]
    titles = [ax.title.get_window_extent() for ax in axes]
    images = [ax.get_window_extent() for ax in axes]
    rows = [sub._suptitle.get_window_extent() for sub in fig.subfigs]
    for i, title in enumerate(titles):
        assert not any(_overlap(title, other) for j, other in enumerate(titles) if j != i)
        assert not any(_overlap(title, image) for image in images)
        assert not any(_overlap(title, row) for row in rows)


def test_a_comparison_grid_too_large_for_bars_is_a_heat_map_of_the_same_numbers():
    cells, _, _ = report.read(REPO / "docs" / "comparison" / "report.json")
    fig = report.accuracy_figure(cells, adaptive=True)
    ax = fig.axes[0]
    assert not ax.containers  # no bars: 16 attacks x 10 configurations
    written = [float(t.get_text()) for t in ax.texts]
    table, configs, _, adaptive = report._layout(cells)
    assert written == [round(100 * table[a][c].accuracy, 1) for a in adaptive for c in configs]
    assert [t.get_text() for t in ax.get_xticklabels()] == configs
    fig.canvas.draw()  # every row label and column label inside the picture
    box = fig.bbox
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        extent = label.get_window_extent()
        assert extent.x0 >= box.x0 - 1 and extent.y0 >= box.y0 - 1 and extent.x1 <= box.x1 + 1


def test_a_heat_map_leaves_missing_cells_blank_and_refuses_a_ragged_matrix():
    fig = charts.heatmap(["a", "b"], ["x", "y"], [[10.0, math.nan], [90.0, 55.5]], title="t")
    assert [t.get_text() for t in fig.axes[0].texts] == ["10.0", "90.0", "55.5"]
    with pytest.raises(ValueError, match="2 rows of 2"):
        charts.heatmap(["a", "b"], ["x", "y"], [[1.0, 2.0], [3.0]], title="t")
