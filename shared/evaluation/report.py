"""Reports of an evaluation: Markdown tables and JSON, from a list of cells."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from shared.evaluation.plan import CLEAN, AttackSpec, Cell, ModelPath, paper_attacks

_CLEAN = AttackSpec(CLEAN)
#: The sheet of clean / adversarial / reconstructed images beside a report, when its images were at hand.
EXAMPLES = "examples.png"
#: The charts :func:`write` draws beside report.md: Tables 1-2, the average drops, Table 3, the defences compared.
ACCURACY, DROPS, ADAPTIVE, COMPARISON = "accuracy.png", "drops.png", "adaptive.png", "comparison.png"
#: Bars one chart shows at most (the paper's grid with --adaptive: 8 attacks x 5 configurations); more: a heat map.
MAX_BARS = 60


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


@dataclass(frozen=True)
class Table:
    """One table of a report, as text cells: what both the Markdown and the HTML page render.

    ``total`` is a last row set apart (bold in Markdown, a footer on the
    page): the average drop under a Table 2.x. ``intro`` and ``outro`` are
    paragraphs before and after it.
    """

    title: str
    header: list[str]
    rows: list[list[str]]
    total: list[str] | None = None
    intro: tuple[str, ...] = ()
    outro: tuple[str, ...] = ()


def paper_table(cells: list[Cell]) -> Table | None:
    """The measured drops and worst cases beside the paper's, where comparable; None where not (the paper's
    attacks or clean images missing, or none of its configurations measured)."""
    table = accuracy_table(cells)
    if _CLEAN not in table or not set(PAPER_ATTACKS) <= set(table):
        return None
    rows = []
    for config, paper in PAPER_DROPS.items():
        if config not in table[_CLEAN]:
            continue
        clean = table[_CLEAN][config].accuracy
        attacked = [table[a][config].accuracy for a in PAPER_ATTACKS]
        drop = 100 * (clean - sum(attacked) / len(attacked))
        rows.append([config, f"{paper:.0f} points", f"{drop:.1f} points", f"{100 * min(attacked):.1f} %"])
    if not rows:  # none of the paper's configurations measured (a model of one's own): nothing to set beside
        return None
    return Table("Compared with the paper",
                 ["configuration", "paper: average drop", "measured: average drop", "measured: worst attack accuracy"],
                 rows, outro=("The paper: strongest attacks leave the undefended model under 5 %, the Haar-trained "
                              "model with Haar input at 77 % or more (12 points under its clean accuracy).",))


def paper_comparison(cells: list[Cell]) -> list[str]:
    """Markdown lines setting the measured drops and worst cases beside the paper's, where comparable."""
    found = paper_table(cells)
    return markdown_table(found) if found else []


def _layout(cells: list[Cell]):
    """The accuracy table, the configurations in plan order, and the transfer and adaptive attacks."""
    table = accuracy_table(cells)
    configs = list(dict.fromkeys(c.configuration for c in cells))
    return table, configs, [a for a in table if not a.adaptive], [a for a in table if a.adaptive]


def _rows(table: dict[AttackSpec, dict[str, Cell]], attacks: list[AttackSpec], configs: list[str]) -> list[list[str]]:
    return [[attack.label, *(f"{100 * table[attack][c].accuracy:.2f}" if c in table[attack] else "" for c in configs)]
            for attack in attacks]


def tables(cells: list[Cell]) -> list[Table]:
    """Table 1 (clean accuracy), Tables 2.x (transfer attacks per defence family, with the average drop
    against clean), Table 3 (adaptive attacks, when the plan has any) and the comparison with the paper."""
    table, configs, transfer, adaptive = _layout(cells)
    out = []
    if _CLEAN in table:
        out.append(Table("Table 1: clean accuracy", ["configuration", "accuracy"],
                         [[c, f"{100 * table[_CLEAN][c].accuracy:.2f}"] for c in configs if c in table[_CLEAN]]))
    drops = average_drops(cells)
    # A plan of adaptive attacks alone has no Table 2: a clean row and an undefined drop would say nothing.
    groups = configuration_groups(cells) if any(a != _CLEAN for a in transfer) else []
    for number, (family, group) in enumerate(groups, start=1):
        heading = "Table 2" + (f".{number}" if len(groups) > 1 else "") + ": accuracy under attack"
        heading += f", {family} defence" if family else ""
        total = (["average drop vs clean (points)", *(f"{drops.get(c, math.nan):.1f}" for c in group)]
                 if drops else None)
        out.append(Table(heading, ["attack", *group], _rows(table, transfer, group), total))
    if adaptive:
        out.append(Table("Table 3: adaptive attacks (crafted through a configuration: BPDA through a defence "
                         "without a gradient, EOT through a randomised one)",
                         ["attack", *configs], _rows(table, adaptive, configs),
                         intro=("Not in the averages above: the attacks of Table 2 were all crafted on the source "
                                "model, undefended.",) if groups else ()))
    compared = defences_table(cells)
    comparison = paper_table(cells)
    return out + ([compared] if compared else []) + ([comparison] if comparison else [])


def _own_attacks(cells: list[Cell]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    """The configurations, the adaptive attacks as one column each whatever they were crafted through
    (``pgd eps=0.01``), and per (configuration, column) the cell of the attack crafted through that configuration."""
    table, configs, _, adaptive = _layout(cells)
    columns = list(dict.fromkeys(AttackSpec(a.name, a.params).label for a in adaptive))
    own = {(a.through.id, AttackSpec(a.name, a.params).label): table[a][a.through.id]
           for a in adaptive if a.through.id in table[a]}
    return configs, columns, own


def defences_table(cells: list[Cell]) -> Table | None:
    """Each configuration's clean accuracy, its accuracy under the transfer attacks (mean and worst), and under
    each adaptive attack crafted through itself; None unless two configurations or more were attacked through
    themselves (with one, Table 3 says it all)."""
    table, _, transfer, _ = _layout(cells)
    configs, columns, own = _own_attacks(cells)
    if len({config for config, _ in own}) < 2:
        return None
    transfer = [a for a in transfer if a != _CLEAN]
    rows = []
    for config in configs:
        row = [config, f"{100 * table[_CLEAN][config].accuracy:.2f}" if config in table.get(_CLEAN, {}) else ""]
        attacked = [table[a][config].accuracy for a in transfer if config in table[a]]
        if transfer:
            mean_and_worst = [100 * sum(attacked) / len(attacked), 100 * min(attacked)] if attacked else []
            row += [f"{v:.2f}" for v in mean_and_worst] or ["", ""]
        row += [f"{100 * own[(config, c)].accuracy:.2f}" if (config, c) in own else "" for c in columns]
        rows.append(row)
    header = ["configuration", "clean", *(["transfer attacks: mean", "transfer attacks: worst"] if transfer else []),
              *(f"{c}, crafted through itself" for c in columns)]
    intro = (f"Transfer attacks: the {len(transfer)} attacks crafted on the source model. " if transfer else "") + (
        "The adaptive columns take, for each configuration, the attack crafted through that configuration itself "
        "(its model behind its defence; BPDA where the defence has no gradient, EOT where it is randomised): what "
        "an attacker who knows the defence achieves.")
    title = "Defences compared: clean" + (", the transfer attacks," if transfer else "") + \
        " and the adaptive attack on each configuration"
    return Table(title, header, rows, intro=(intro,))


def comparison_figure(cells: list[Cell]):
    """Bars per configuration: clean, the mean over the transfer attacks, each adaptive attack through itself."""
    from shared.reports import charts

    found = defences_table(cells)
    series = {name: [float(row[i]) if row[i] else math.nan for row in found.rows]
              for i, name in enumerate(found.header) if i and name != "transfer attacks: worst"}  # in the table
    series = {name.replace(", crafted through itself", " (adaptive)"): values for name, values in series.items()}
    return charts.grouped_bars([row[0] for row in found.rows], series,
                               title="Defences compared: clean, transfer and adaptive", legend_title="accuracy")


def markdown_table(table: Table) -> list[str]:
    """A :class:`Table` as Markdown lines: its heading, paragraphs, rows, and a blank line after."""
    lines = [f"## {table.title}", ""]
    for paragraph in table.intro:
        lines += [paragraph, ""]
    lines += ["| " + " | ".join(table.header) + " |", "|" + " --- |" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.total:
        lines.append(f"| **{table.total[0]}** | " + " | ".join(table.total[1:]) + " |")
    lines.append("")
    for paragraph in table.outro:
        lines += [paragraph, ""]
    return lines


def to_markdown(cells: list[Cell], *, title: str = "waveshield evaluation", notes: list[str] = ()) -> str:
    """The report's heading and notes, then each of :func:`tables`."""
    images = max((c.total for c in cells), default=0)
    lines = [f"# {title}", "", f"{images} images per cell. Accuracy in %; eps in [0, 1] pixel units (and /255).", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    for table in tables(cells):
        lines += markdown_table(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def run_notes(meta: dict, plan: dict) -> list[str]:
    """The report's lines on how a run went: its data, runner, source model and time (from ``meta``)."""
    seconds, images = meta.get("seconds") or 0.0, meta.get("images", 0)
    return [f"data: {meta.get('data') or 'not recorded'} ({images} images, {meta.get('unreadable', 0)} unreadable)",
            f"runner: {meta.get('runner', 'not recorded')}",
            f"attacks crafted on {plan['source_model']!r} (transfer setting)",
            f"{seconds:.1f} s, {images / seconds if seconds else 0.0:.1f} images/s"]


def accuracy_figure(cells: list[Cell], *, adaptive: bool = False):
    """The bars of Tables 1-2 (or, ``adaptive``, Table 3): accuracy per attack and configuration; the Figure."""
    from shared.reports import charts  # matplotlib: only when a report is drawn

    table, configs, transfer, adaptive_attacks = _layout(cells)
    attacks = adaptive_attacks if adaptive else transfer
    throughs = sorted({a.through.id for a in attacks if a.through})
    title = ("Accuracy per attack and configuration" if not adaptive
             else f"Adaptive attacks, crafted through {', '.join(throughs)}" if len(throughs) <= 2
             else "Adaptive attacks, each crafted through the configuration it names")
    # Bars labelled as the tables label them (eps in /255 too); one path crafted through is named in the title.
    labels = [a.label.removesuffix(f" via {throughs[0]}") if len(throughs) == 1 else a.label for a in attacks]
    values = {c: [100 * table[a][c].accuracy if c in table[a] else math.nan for a in attacks] for c in configs}
    if len(attacks) * len(configs) > MAX_BARS:  # a comparison's grid: a matrix, since that many bars cannot be read
        return charts.heatmap(labels, configs, [[values[c][i] for c in configs] for i in range(len(attacks))],
                              title=title)
    return charts.grouped_bars(labels, values, title=title)


def drops_figure(cells: list[Cell]):
    """The average drop per configuration beside the paper's (where the plan has the paper's attacks); the Figure."""
    from shared.reports import charts

    paper = PAPER_DROPS if paper_table(cells) else {}
    return charts.drops(average_drops(cells), paper,
                        title="Average accuracy drop vs clean" + (", beside the paper's" if paper else ""))


def write(cells: list[Cell], out_dir: str | Path, *, plan: dict, meta: dict | None = None, notes: list[str] = (),
          examples: bool = False) -> Path:
    """Write ``report.md``, ``report.json``, the charts and ``report.html`` into ``out_dir``; return the Markdown path.

    ``accuracy.png`` shows the transfer attacks, ``drops.png`` the average
    drop beside the paper's, ``adaptive.png`` (when the plan has any) the
    adaptive attacks; ``examples``: the caller wrote :data:`EXAMPLES` there,
    and the report and the page show it.
    """
    from shared.reports import charts, evaluation_page

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, _, transfer, adaptive = _layout(cells)
    charts.save(accuracy_figure(cells), out / ACCURACY)
    tables_shown = "Tables 1-2" if any(a != _CLEAN for a in transfer) else "Table 1"  # no Table 2: clean alone
    shown = [(ACCURACY, tables_shown, f"Accuracy per attack and configuration ({tables_shown})")]
    if any(d == d for d in average_drops(cells).values()):  # NaN != NaN: no clean cell, no drop
        charts.save(drops_figure(cells), out / DROPS)
        beside = ", beside the paper's" if paper_table(cells) else ""
        shown.append((DROPS, f"average drops{beside}",
                      f"Average accuracy drop against clean per configuration{beside}"))
    if adaptive:
        charts.save(accuracy_figure(cells, adaptive=True), out / ADAPTIVE)
        shown.append((ADAPTIVE, "Table 3", "Accuracy under the adaptive attacks (Table 3)"))
    if defences_table(cells):
        charts.save(comparison_figure(cells), out / COMPARISON)
        shown.append((COMPARISON, "defences compared", "Each configuration clean, under the transfer attacks (mean) "
                                                        "and under the adaptive attacks crafted through itself"))
    if examples:
        shown.append((EXAMPLES, "clean / attacked / reconstructed",
                       "Clean, attacked, reconstructed for the undefended model, and the full defence: "
                       "the true label and each prediction (red: wrong)"))
    figures_note = (f"Figures: {', '.join(f'{name} ({what})' for name, what, _ in shown)}; "
                    f"tables and figures on one page: {evaluation_page.PAGE}.")
    (out / "report.md").write_text(to_markdown(cells, notes=[*notes, figures_note]))
    # The caller's notes go into the JSON, so that `read` + `write` renders the same report again.
    payload = {"plan": plan, "meta": {**(meta or {}), "notes": list(notes)}, "cells": [c.as_dict() for c in cells],
               "average_drop": average_drops(cells)}
    (out / "report.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    images = max((c.total for c in cells), default=0)
    evaluation_page.write_evaluation(out, tables=tables(cells), notes=notes,
                                     figures=[(name, caption) for name, _, caption in shown],
                                     lead=f"{images} images per cell. Accuracy in %; eps in [0, 1] pixel units "
                                          "(and /255). The same tables: report.md; the numbers: report.json.")
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
