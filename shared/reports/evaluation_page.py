"""``report.html``: the page beside an evaluation's ``report.md`` and beside a corpus's ``manifest.jsonl``.

A static page written here, in Python: the report's tables (the same
:class:`shared.evaluation.report.Table` cells the Markdown renders), its
charts and image sheets as ``<img>`` of the PNGs beside it, a little inline
CSS. No script, no font or stylesheet from elsewhere, no network request:
it opens from ``file://``. Every string shown passes through
:func:`html.escape`, since data paths, notes and attack names come from users.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

from shared.evaluation.plan import AttackSpec
from shared.evaluation.report import Table

#: The page's file name, beside report.md (an evaluation) or manifest.jsonl (a corpus).
PAGE = "report.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1060px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
tfoot td { font-weight: bold; background: #fafafa; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1em 0 2em; }
figcaption { color: #555; font-size: 0.9em; }
ul.notes { color: #444; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: Table) -> str:
    """A :class:`Table` as an HTML section: its heading, paragraphs, header, rows and total row."""
    parts = [f"<h2>{_e(table.title)}</h2>", *(f"<p>{_e(p)}</p>" for p in table.intro), "<table>",
             "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in table.header) + "</tr></thead>", "<tbody>"]
    parts += ["<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in table.rows]
    parts.append("</tbody>")
    if table.total:
        parts.append("<tfoot><tr>" + "".join(f"<td>{_e(v)}</td>" for v in table.total) + "</tr></tfoot>")
    parts.append("</table>")
    parts += [f"<p>{_e(p)}</p>" for p in table.outro]
    return "\n".join(parts)


def _figure(src: str, caption: str) -> str:
    # A relative src: the PNG sits beside the page, which then opens from any folder it is copied to.
    return f'<figure><img src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def page(title: str, *, notes=(), tables: list[Table] = (), figures: list[tuple[str, str]] = (),
         lead: str = "") -> str:
    """The whole page: heading, a lead paragraph, notes, the figures (``(png, caption)``) and the tables."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_e(title)}</title>",
             f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{_e(title)}</h1>"]
    if lead:
        parts.append(f"<p>{_e(lead)}</p>")
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts += [_figure(src, caption) for src, caption in figures]
    parts += [table_html(t) for t in tables]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_evaluation(out: str | Path, *, tables: list[Table], notes=(), figures: list[tuple[str, str]] = (),
                     lead: str = "", title: str = "waveshield evaluation") -> Path:
    """Write an evaluation's page into ``out`` (the PNGs named in ``figures`` are already there); its path."""
    path = Path(out) / PAGE
    path.write_text(page(title, notes=notes, tables=tables, figures=figures, lead=lead), encoding="utf-8")
    return path


def corpus_table(manifest: str | Path) -> Table:
    """Per attack of a corpus's ``manifest.jsonl``: its images, those that fool the model, mean L-inf and PSNR."""
    images, fooled, linf, quality = Counter(), Counter(), Counter(), Counter()
    measured = Counter()
    labels: dict[str, str] = {}
    with open(manifest) as fh:
        for text in fh:
            line = json.loads(text)
            params = {k: v for k, v in line.get("params", {}).items() if k != "eps_255"}
            key = json.dumps([line.get("attack"), params], sort_keys=True)
            labels.setdefault(key, AttackSpec.named(line["attack"], **params).label if line.get("attack")
                              else "attack not recorded")
            images[key] += 1
            fooled[key] += bool(line.get("success"))
            linf[key] += line.get("linf") or 0.0
            if line.get("psnr") is not None:
                quality[key] += line["psnr"]
                measured[key] += 1
    rows = [[labels[k], str(n), str(fooled[k]), f"{100 * fooled[k] / n:.1f} %", f"{255 * linf[k] / n:.2f}",
             f"{quality[k] / measured[k]:.1f}" if measured[k] else "-"] for k, n in images.items()]
    total = ["all attacks", str(sum(images.values())), str(sum(fooled.values())),
             f"{100 * sum(fooled.values()) / max(sum(images.values()), 1):.1f} %", "", ""]
    return Table("Attacks", ["attack", "images", "successful", "success rate", "mean L-inf (/255)", "mean PSNR (dB)"],
                 rows, total, intro=("Successful: the source model was right on the clean image and is wrong on "
                                     "the attacked one (manifest.jsonl, one line per image).",))


def write_corpus(out: str | Path, *, preview: str | None = "preview.png") -> Path:
    """Write a corpus's page into ``out``, beside its ``manifest.jsonl`` (and ``preview``, when given); its path."""
    out = Path(out)
    figures = [(preview, "Images of every attack, one per class in turn: the true label, the source model's "
                         "predictions before and after the attack (red: fooled)")] if preview else []
    path = out / PAGE
    path.write_text(page(f"waveshield corpus: {out.name}", tables=[corpus_table(out / "manifest.jsonl")],
                         figures=figures, lead="Adversarial images in float shards (<attack>/shard-NNNNN.npz), "
                                               "one manifest line per image."), encoding="utf-8")
    return path
