"""Reports of an evaluation: Markdown tables and JSON, from a list of cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

from shared.evaluation import figures
from shared.evaluation.plan import CLEAN, AttackSpec, Cell, ModelPath, paper_attacks

_CLEAN = AttackSpec(CLEAN)
#: The sheet of clean / adversarial / reconstructed images beside a report, when its images were at hand.
EXAMPLES = "examples.png"


def accuracy_table(cells: list[Cell]) -> dict[AttackSpec, dict[str, Cell]]:
    """Cells as {attack: {configuration id: cell}}, in plan order."""
    table: dict[AttackSpec, dict[str, Cell]] = {}
    for cell in cells:
        table.setdefault(cell.attack, {})[cell.configuration] = cell
    return table


def average_drops(cells: list[Cell]) -> dict[str, float]:
    """Per configuration: mean over the transfer attacks of (clean accuracy - attacked accuracy), in points.

    Adaptive attacks are left out so that the averages stay comparable with the
    paper's, which had none.
    """
    table = accuracy_table(cells)
    clean = table.get(_CLEAN, {})
    drops: dict[str, float] = {}
    for config, clean_cell in clean.items():
        attacked = [row[config].accuracy for attack, row in table.items()
                    if attack != _CLEAN and not attack.adaptive and config in row]
        drops[config] = 100 * (clean_cell.accuracy - sum(attacked) / len(attacked)) if attacked else math.nan
    return drops


def configuration_groups(cells: list[Cell]) -> list[tuple[str | None, list[str]]]:
    """The configurations per defence family, as the paper's Tables 2.1 (Haar) and 2.2 (Daubechies).

    Each group holds the undefended configurations followed by those of one
    defence; with no defence at all there is a single group.
    """
    seen: dict[str, str | None] = {}
    for cell in cells:
        seen.setdefault(cell.configuration, cell.defence)
    raw = [c for c, d in seen.items() if d is None]
    families = list(dict.fromkeys(d for d in seen.values() if d is not None))
    if not families:
        return [(None, raw)]
    return [(d, raw + [c for c, dd in seen.items() if dd == d]) for d in families]


# The published result (average drop against clean over the paper's seven attacks).
PAPER_DROPS = {"standard+raw": 67.0, "standard+haar": 31.0, "haar+haar": 6.0}
PAPER_ATTACKS = [AttackSpec.of(a) for a in paper_attacks()]


def paper_comparison(cells: list[Cell]) -> list[str]:
    """Markdown lines setting the measured drops and worst cases beside the paper's, where comparable."""
    table = accuracy_table(cells)
    if _CLEAN not in table or not set(PAPER_ATTACKS) <= set(table):
        return []
    lines = ["## Compared with the paper", "",
             "| configuration | paper: average drop | measured: average drop | measured: worst attack accuracy |",
             "| --- | --- | --- | --- |"]
    for config, paper in PAPER_DROPS.items():
        if config not in table[_CLEAN]:
            continue
        clean = table[_CLEAN][config].accuracy
        attacked = [table[a][config].accuracy for a in PAPER_ATTACKS]
        drop = 100 * (clean - sum(attacked) / len(attacked))
        lines.append(f"| {config} | {paper:.0f} points | {drop:.1f} points | {100 * min(attacked):.1f} % |")
    lines += ["", "The paper: strongest attacks leave the undefended model under 5 %, the Haar-trained model "
              "with Haar input at 77 % or more (12 points under its clean accuracy).", ""]
    return lines


def _layout(cells: list[Cell]):
    """The accuracy table, the configurations in plan order, and the transfer and adaptive attacks."""
    table = accuracy_table(cells)
    configs = list(dict.fromkeys(c.configuration for c in cells))
    return table, configs, [a for a in table if not a.adaptive], [a for a in table if a.adaptive]


def _rows(table: dict[AttackSpec, dict[str, Cell]], attacks: list[AttackSpec], configs: list[str]) -> list[str]:
    lines = ["| attack | " + " | ".join(configs) + " |", "| --- |" + " --- |" * len(configs)]
    for attack in attacks:
        row = table[attack]
        lines.append(f"| {attack.label} | "
                     + " | ".join(f"{100 * row[c].accuracy:.2f}" if c in row else "" for c in configs) + " |")
    return lines


def to_markdown(cells: list[Cell], *, title: str = "waveshield evaluation", notes: list[str] = ()) -> str:
    """Table 1 (clean accuracy), Tables 2.x (transfer attacks per defence family, with the
    average drop against clean) and Table 3 (adaptive attacks, when the plan has any)."""
    table, configs, transfer, adaptive = _layout(cells)
    images = max((c.total for c in cells), default=0)
    lines = [f"# {title}", "", f"{images} images per cell. Accuracy in %; eps in [0, 1] pixel units (and /255).", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if _CLEAN in table:
        lines += ["## Table 1: clean accuracy", "", "| configuration | accuracy |", "| --- | --- |"]
        lines += [f"| {c} | {100 * table[_CLEAN][c].accuracy:.2f} |" for c in configs if c in table[_CLEAN]]
        lines.append("")
    drops = average_drops(cells)
    groups = configuration_groups(cells)
    for number, (family, group) in enumerate(groups, start=1):
        heading = "Table 2" + (f".{number}" if len(groups) > 1 else "") + ": accuracy under attack"
        heading += f", {family} defence" if family else ""
        lines += [f"## {heading}", ""] + _rows(table, transfer, group)
        if drops:
            lines.append("| **average drop vs clean (points)** | "
                         + " | ".join(f"{drops.get(c, math.nan):.1f}" for c in group) + " |")
        lines.append("")
    if adaptive:
        lines += ["## Table 3: adaptive attacks (crafted through a defended configuration, BPDA)", "",
                  "Not in the averages above: the paper's attacks were all crafted on the standard model.", ""]
        lines += _rows(table, adaptive, configs) + [""]
    comparison = paper_comparison(cells)
    if comparison:
        lines += comparison
    return "\n".join(lines).rstrip("\n") + "\n"


def _figure(table: dict[AttackSpec, dict[str, Cell]], attacks: list[AttackSpec], configs: list[str], path: Path,
            title: str) -> None:
    # Short bar labels: "bim 0.007"; the adaptive figure names its configuration in the title instead.
    labels = [a.short_label for a in attacks]
    figures.grouped_bars(labels, {c: [100 * table[a][c].accuracy if c in table[a] else math.nan for a in attacks]
                                  for c in configs}, path, ylabel="accuracy (%)", title=title)


def run_notes(meta: dict, plan: dict) -> list[str]:
    """The report's lines on how a run went: its data, runner, source model and time (from ``meta``)."""
    seconds, images = meta.get("seconds") or 0.0, meta.get("images", 0)
    return [f"data: {meta.get('data') or 'not recorded'} ({images} images, {meta.get('unreadable', 0)} unreadable)",
            f"runner: {meta.get('runner', 'not recorded')}",
            f"attacks crafted on {plan['source_model']!r} (transfer setting)",
            f"{seconds:.1f} s, {images / seconds if seconds else 0.0:.1f} images/s"]


def write(cells: list[Cell], out_dir: str | Path, *, plan: dict, meta: dict | None = None, notes: list[str] = (),
          examples: bool = False) -> Path:
    """Write ``report.md``, ``report.json`` and the figures into ``out_dir``; return the Markdown path.

    ``accuracy.png`` shows the transfer attacks, ``adaptive.png`` (when the
    plan has any) the adaptive ones; ``examples``: the caller wrote
    :data:`EXAMPLES` there, and the report names it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, configs, transfer, adaptive = _layout(cells)
    _figure(table, transfer, configs, out / "accuracy.png", "Accuracy per attack and configuration")
    figure_notes = "accuracy.png (Tables 1-2)"
    if adaptive:
        throughs = sorted({a.through.id for a in adaptive})
        _figure(table, adaptive, configs, out / "adaptive.png",
                f"Adaptive attacks, crafted through {', '.join(throughs)} with BPDA")
        figure_notes += ", adaptive.png (Table 3)"
    if examples:
        figure_notes += f", {EXAMPLES} (clean / adversarial / reconstructed)"
    figures_note = f"Figures: {figure_notes}."
    (out / "report.md").write_text(to_markdown(cells, notes=[*notes, figures_note]))
    # The caller's notes go into the JSON, so that `read` + `write` renders the same report again.
    payload = {"plan": plan, "meta": {**(meta or {}), "notes": list(notes)}, "cells": [c.as_dict() for c in cells],
               "average_drop": average_drops(cells)}
    (out / "report.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return out / "report.md"


def read(path: str | Path) -> tuple[list[Cell], dict, dict]:
    """The cells, plan and meta of a ``report.json`` written by :func:`write`.

    Each cell's attack is the plan's entry of that id.

    Raises
    ------
    ValueError
        If the file is not such a report.
    """
    try:
        payload = json.loads(Path(path).read_text())
        specs = {spec.id: spec for spec in map(AttackSpec.of, payload["plan"].get("attacks", []))}
        cells = [Cell(specs[c["attack"]], ModelPath(c["model"], c["defence"]), c["correct"], c["total"])
                 for c in payload["cells"]]
        return cells, payload["plan"], payload.get("meta", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a waveshield report.json ({exc})") from None
