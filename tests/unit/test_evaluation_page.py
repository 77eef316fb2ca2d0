"""report.html: the tables and charts of an evaluation (and of a corpus) on one page that opens from disk."""

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from shared.evaluation import corpus as corpus_files
from shared.evaluation import report
from shared.reports import evaluation_page

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "<img src=x onerror=alert(1)>"


class _Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def test_the_page_escapes_what_users_wrote_and_names_every_table(tmp_path):
    cells, plan, meta = report.read(REPO / "docs" / "results" / "report.json")
    meta = {**meta, "data": HOSTILE}
    notes = [*report.run_notes(meta, plan), f"note: {HOSTILE} & more"]
    report.write(cells, tmp_path, plan=plan, meta=meta, notes=notes)
    page = (tmp_path / "report.html").read_text()
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    tags = _tags(page)
    figures = {"accuracy.png", "drops.png", "adaptive.png"}
    assert all(attrs.get("src") in figures for tag, attrs in tags if tag == "img")
    assert {attrs["src"] for tag, attrs in tags if tag == "img"} == figures
    assert not any(tag in {"script", "link", "iframe"} for tag, _ in tags)
    assert not re.search(r"https?://|//[a-z]", page) and not any("on" + "error" in attrs for _, attrs in tags)
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    titles = [t.title for t in report.tables(cells)]
    assert headings == [evaluation_page.html.escape(t) for t in titles] and len(titles) >= 4
    # Every cell's accuracy, as report.md shows it, is in the page's tables too.
    markdown = (tmp_path / "report.md").read_text()
    for cell in cells:
        value = f"{100 * cell.accuracy:.2f}"
        assert value in markdown and f"<td>{value}</td>" in page
    assert len(page.encode()) < 1024 * 1024


def test_the_markdown_and_the_page_render_the_same_table_rows(tmp_path):
    cells, plan, meta = report.read(REPO / "docs" / "results" / "report.json")
    markdown = report.to_markdown(cells)
    for table in report.tables(cells):
        html = evaluation_page.table_html(table)
        for row in table.rows:
            assert "| " + " | ".join(row) + " |" in markdown
            assert "<tr>" + "".join(f"<td>{evaluation_page.html.escape(v)}</td>" for v in row) + "</tr>" in html


def test_a_corpus_page_counts_its_attacks_and_shows_its_preview(tmp_path, sample):
    import torch

    from shared import attacks
    from shared.models.store import ModelStore

    model = ModelStore(REPO / "weights").get("standard")
    picked = list(range(0, 1000, 50))  # 20 images, two per class
    x, y = sample.to_tensor()[picked], torch.from_numpy(sample.labels[picked])
    specs = [{"name": "fgsm", "params": {"eps": 0.01}}, {"name": "bim", "params": {"eps": 0.004}}]
    for spec in specs:
        adversarial = attacks.get(spec["name"])(model, x, y, **spec["params"])
        lines = corpus_files.manifest_lines(model, x, adversarial, y, [sample.ids[i] for i in picked], spec, seed=0,
                                            model_sha256="0" * 64)
        corpus_files.write_shard(tmp_path, spec, 0, adversarial.numpy(), y.numpy(),
                                 [sample.ids[i] for i in picked], lines, "float32")
    assert corpus_files.finish(tmp_path, specs, 1) == 40
    corpus_files.preview(tmp_path, specs)
    page = corpus_files.page(tmp_path).read_text()
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    for spec, label in zip(specs, ("fgsm eps=0.01 (2.6/255)", "bim eps=0.004 (1/255)")):
        mine = [m for m in manifest if m["attack"] == spec["name"]]
        fooled = sum(m["success"] for m in mine)
        assert f"<tr><td>{label}</td><td>{len(mine)}</td><td>{fooled}</td>" in page
    assert [attrs["src"] for tag, attrs in _tags(page) if tag == "img"] == ["preview.png"]
    assert (tmp_path / "preview.png").read_bytes()[:4] == b"\x89PNG"


def test_waveshield_report_redraws_a_detectors_report_from_its_json(tmp_path):
    from producers.cli import main

    shipped = REPO / "docs" / "calibration" / "detector"
    for name in ("report.json", "photographs.json"):
        shutil.copyfile(shipped / name, tmp_path / name)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {tmp_path / 'detector.md'}"
    # The same Markdown fit-detector wrote, and the ROC drawn again.
    assert (tmp_path / "detector.md").read_text() == (shipped / "detector.md").read_text()
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = CliRunner().invoke(main, ["report", str(tmp_path / "report.json"), "--examples"])
    assert refused.exit_code != 0 and "detector's report" in refused.output


def test_a_json_that_is_no_report_is_refused_in_one_line(tmp_path):
    from producers.cli import main

    (tmp_path / "report.json").write_text(json.dumps({"kind": "something"}))
    result = CliRunner().invoke(main, ["report", str(tmp_path / "report.json")])
    assert result.exit_code == 2 and "not a waveshield report.json" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_roc_shows_the_source_tables_attacks_and_marks_each_at_the_threshold(tmp_path, monkeypatch):
    """A fit measures more attacks than the ROC shows (its per-source columns): the others stay off the chart."""
    from producers.detector.report import SOURCE_ATTACKS, read_report, write_report
    from shared.reports import charts

    found = read_report(REPO / "docs" / "calibration" / "detector" / "report.json")
    extra = "bim eps=0.004"  # measured by every fit, not a column of the per-source table
    found["curves"] = {**found["curves"], extra: found["curves"]["bim eps=0.01"]}
    detected = found["card"]["per_source"][found["first"]]["detected"]
    assert extra not in {spec.id for spec in SOURCE_ATTACKS} and extra in detected
    drawn, roc = {}, charts.roc
    monkeypatch.setattr(charts, "roc", lambda curves, **kw: drawn.update(curves=curves, **kw) or roc(curves, **kw))
    write_report(tmp_path, **found)
    assert json.loads((tmp_path / "report.json").read_text())["curves"].keys() == found["curves"].keys()
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert list(drawn["curves"]) == [spec.label for spec in SOURCE_ATTACKS]
    assert drawn["detected"] == {spec.label: 100 * detected[spec.id] for spec in SOURCE_ATTACKS}
