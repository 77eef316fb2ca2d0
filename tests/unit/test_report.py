"""Reports: tables per defence family, averages over the transfer attacks only, JSON of every cell."""

import json
import math

import numpy as np
import pytest

from shared.evaluation import report
from shared.evaluation.plan import CLEAN, EPS_8_255, AttackSpec, Cell, ModelPath

CONFIGS = [("standard+raw", "standard", None), ("standard+haar", "standard", "haar"), ("haar+haar", "haar", "haar"),
           ("standard+daubechies", "standard", "daubechies"), ("daubechies+daubechies", "daubechies", "daubechies")]


def _cells(accuracy: dict[str, list[int]]) -> list[Cell]:
    """Cells of 100 images each; ``accuracy`` maps an attack to the correct count per configuration."""
    return [Cell(attack, ModelPath(model, defence), correct=correct, total=100)
            for attack, row in accuracy.items() for (config, model, defence), correct in zip(CONFIGS, row)]


CELLS = _cells({
    AttackSpec.named(CLEAN): [90, 85, 88, 84, 87],
    AttackSpec.named("fgsm", eps=0.004): [40, 70, 80, 69, 79],
    AttackSpec.named("deepfool"): [10, 60, 84, 61, 83],
    AttackSpec("pgd", (("eps", EPS_8_255),), ModelPath("haar", "haar")): [0, 5, 2, 30, 40],
})


def _bar_heights(fig) -> dict[str, list[float]]:
    """Per series (the legend's name), the height of each of its bars, left to right, read from the Figure."""
    ax, = fig.axes
    return {bars.get_label(): list(bars.datavalues) for bars in ax.containers}


def test_average_drop_leaves_adaptive_attacks_out():
    drops = report.average_drops(CELLS)
    assert math.isclose(drops["standard+raw"], 90 - (40 + 10) / 2)
    assert math.isclose(drops["haar+haar"], 88 - (80 + 84) / 2)


def test_tables_split_by_defence_family_with_the_undefended_column_in_each():
    groups = report.configuration_groups(CELLS)
    assert groups == [("haar", ["standard+raw", "standard+haar", "haar+haar"]),
                      ("daubechies", ["standard+raw", "standard+daubechies", "daubechies+daubechies"])]
    text = report.to_markdown(CELLS)
    table_21 = text.split("## Table 2.1")[1].split("## Table 2.2")[0]
    assert "haar defence" in table_21 and "daubechies+daubechies" not in table_21
    assert "| deepfool | 10.00 | 60.00 | 84.00 |" in table_21
    assert "| **average drop vs clean (points)** | 65.0 | 20.0 | 6.0 |" in table_21
    adaptive = text.split("## Table 3")[1]
    assert "pgd eps=0.031373 (8/255) via haar+haar | 0.00 | 5.00 | 2.00 | 30.00 | 40.00 |" in adaptive
    assert "pgd" not in text.split("## Table 3")[0]


def test_single_table_without_defences_and_json_holds_every_cell(tmp_path):
    raw_only = [c for c in CELLS if c.defence is None]
    text = report.to_markdown(raw_only)
    assert "## Table 2: accuracy under attack" in text and "Table 2.1" not in text
    plan = {"attacks": [spec.entry() for spec in dict.fromkeys(c.attack for c in CELLS)]}
    report.write(CELLS, tmp_path, plan=plan)
    payload = json.loads((tmp_path / "report.json").read_text())
    assert len(payload["cells"]) == len(CELLS)
    assert {c["configuration"] for c in payload["cells"]} == {c[0] for c in CONFIGS}
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "report.json", "report.html", "accuracy.png",
                                                    "drops.png", "adaptive.png"}
    assert all((tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
               for name in ("accuracy.png", "drops.png", "adaptive.png"))
    # What the charts show: each configuration's bars, read back from the figure, are the cells' accuracies.
    by_cell = {(c.attack.id, c.configuration): 100 * c.accuracy for c in CELLS}
    drawn = _bar_heights(report.accuracy_figure(CELLS))
    expected = {config: [by_cell[(a, config)] for a in [CLEAN, "fgsm eps=0.004", "deepfool"]]
                for config, _, _ in CONFIGS}
    assert drawn.keys() == expected.keys() and all(np.allclose(drawn[c], expected[c]) for c in expected), drawn
    drawn = _bar_heights(report.accuracy_figure(CELLS, adaptive=True))
    assert drawn == {config: [by_cell[("pgd eps=0.031373 via haar+haar", config)]] for config, _, _ in CONFIGS}
    cells, read_plan, meta = report.read(tmp_path / "report.json")
    assert cells == CELLS and read_plan == plan
    with pytest.raises(ValueError, match="not a waveshield report"):
        report.read(tmp_path / "accuracy.png")


def test_defences_compared_take_each_configurations_own_adaptive_attack():
    through_jpeg = ModelPath("standard", "jpeg:quality=30")
    configs = [("standard+raw", "standard", None), ("standard+jpeg:quality=30", "standard", "jpeg:quality=30"),
               ("haar+haar", "haar", "haar")]
    rows = {AttackSpec.named(CLEAN): [90, 84, 88],
            AttackSpec.named("fgsm", eps=0.01): [20, 60, 70],
            AttackSpec.named("deepfool"): [0, 70, 80],
            AttackSpec("pgd", (("eps", 0.01),), ModelPath("haar", "haar")): [50, 60, 30],
            AttackSpec("pgd", (("eps", 0.01),), through_jpeg): [40, 10, 75]}
    cells = [Cell(a, ModelPath(m, d), correct=n, total=100) for a, row in rows.items()
             for (_, m, d), n in zip(configs, row)]
    found = report.defences_table(cells)
    assert found.header[4:] == ["pgd eps=0.01 (2.6/255), crafted through itself"]
    assert found.rows == [["standard+raw", "90.00", "10.00", "0.00", ""],
                          ["standard+jpeg:quality=30", "84.00", "65.00", "60.00", "10.00"],
                          ["haar+haar", "88.00", "75.00", "70.00", "30.00"]]
    heights = _bar_heights(report.comparison_figure(cells))
    assert heights["pgd eps=0.01 (2.6/255) (adaptive)"][1:] == [10.0, 30.0]
    # The paper's grid with PGD through haar+haar alone: Table 3 says it all, no comparison.
    assert report.defences_table(CELLS) is None
    assert report.defences_table([c for c in CELLS if not c.attack.adaptive]) is None


def test_defences_compared_without_transfer_attacks_show_only_clean_and_the_adaptive_columns():
    configs = [("standard+raw", "standard", None), ("standard+median:size=2", "standard", "median:size=2")]
    budget = (("eps", EPS_8_255),)
    rows = {AttackSpec.named(CLEAN): [90, 85],
            AttackSpec("torchattacks:AutoAttack", budget, ModelPath("standard")): [0, 30],
            AttackSpec("torchattacks:AutoAttack", budget, ModelPath("standard", "median:size=2")): [40, 1]}
    cells = [Cell(a, ModelPath(m, d), correct=n, total=100) for a, row in rows.items()
             for (_, m, d), n in zip(configs, row)]
    found = report.defences_table(cells)
    assert found.header == ["configuration", "clean",
                            "torchattacks:AutoAttack eps=0.031373 (8/255), crafted through itself"]
    assert found.rows == [["standard+raw", "90.00", "0.00"], ["standard+median:size=2", "85.00", "1.00"]]
    assert "transfer" not in found.title + found.intro[0]
    assert set(_bar_heights(report.comparison_figure(cells))) == {"clean", found.header[2].replace(
        ", crafted through itself", " (adaptive)")}
    titles = [t.title for t in report.tables(cells)]
    assert not any(t.startswith("Table 2") for t in titles)  # no transfer attack: no drop to average
    assert titles[0] == "Table 1: clean accuracy" and titles[1].startswith("Table 3")
