"""The report pages as a person sees them: opened from disk in headless Chromium (Debian's), no server.

Each page must load with no console error and no request outside its folder, show what the records
say in the order they say it, and show users' file names as text. A screenshot of each page is
left in the test's temporary folder.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared import attacks
from shared.models.store import ModelStore

from .test_cli import WAVESHIELD

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=alert(1)>.png"
PER_PAGE = 48  # the gallery's page (shared/reports/assets/screening.js)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


class Visit:
    """A page opened in Chromium, with what it logged and asked for."""

    def __init__(self, browser, path: Path):
        self.errors, self.requests, self.dialogs = [], [], []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri())

    def outside(self, folder: Path) -> list[str]:
        """Requests for anything but the files of ``folder``."""
        return [url for url in self.requests if not url.startswith(folder.as_uri() + "/")]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def screened(tmp_path_factory, sample, redis_url):
    """A folder screened with the shipped weights: 120 images of every class attacked (FGSM 8/255), 30 clean, one of
    them under a hostile name, and an unreadable item."""
    root = tmp_path_factory.mktemp("pages")
    inbox, out = root / "in", root / "out"
    inbox.mkdir()
    model = ModelStore(REPO / "weights").get("standard")
    chosen = np.arange(0, 960, 8)  # the sample is sorted by class: every eighth image spans them all
    x = torch.from_numpy(sample.images[chosen]).permute(0, 3, 1, 2).float() / 255
    adversarial = attacks.get("fgsm")(model, x, torch.from_numpy(sample.labels[chosen]), eps=8 / 255)
    pixels = (adversarial.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for k, image in enumerate(pixels):
        Image.fromarray(image).save(inbox / (HOSTILE if k == 7 else f"attacked{k:02d}.png"))
    for k in range(963, 993):
        Image.fromarray(sample.images[k]).save(inbox / f"clean{k:02d}.png")
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff not a picture")
    env = {**os.environ, "WAVESHIELD_WEIGHTS_DIR": str(REPO / "weights"), "WAVESHIELD_OUTPUT_DIR": str(root / "o"),
           "WAVESHIELD_DEVICE": "cpu", "REDIS_URL": redis_url}
    result = subprocess.run(WAVESHIELD + ["screen", str(inbox), "--local", "--out", str(out)], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return out, records


def test_screening_page_shows_the_flagged_images_in_order_filters_pages_and_escapes(browser, screened, tmp_path):
    out, records = screened
    flagged = [r for r in records if r["flagged"]]
    assert len(flagged) > PER_PAGE, "the set must fill more than one page of the gallery"
    # The gallery's order: most suspicious first, ties in the records' order.
    order = sorted(range(len(flagged)), key=lambda k: (-flagged[k]["suspicion"], k))
    visit = Visit(browser, out / "report.html")
    page = visit.page
    page.wait_for_selector("#gallery .tile")
    assert visit.errors == [] and visit.dialogs == [] and visit.outside(out) == []
    shown = page.locator("#gallery .tile .id").all_text_contents()
    assert shown == [flagged[k]["id"] for k in order[:PER_PAGE]]
    thumbs = [url for url in visit.requests if "/thumbs/" in url]
    assert 0 < len(thumbs) <= 2 * PER_PAGE  # only the page shown has its pictures loaded
    # A finished job's page opens on the first file of each view, not on the whole job's data.
    data = sorted(Path(url).name for url in visit.requests if url.endswith(".js"))
    assert data == ["errors-00000.js", "index.js", "sorted-00000.js"]
    page.wait_for_load_state("load")
    widths = page.eval_on_selector_all("#gallery img", "images => images.map(i => i.naturalWidth)")
    assert len(widths) > PER_PAGE and set(widths) == {32}  # every picture and "why" there, at its real pixels
    page.screenshot(path=str(tmp_path / "screening.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'screening.png'}")

    # The hostile file name is text: no element made of it, no script run.
    hostile = [r for r in records if r["id"].endswith(HOSTILE)]
    assert hostile and hostile[0]["flagged"]
    assert page.locator("img[src='x']").count() == 0 and visit.dialogs == []
    page.select_option("#sort", "id")  # this one reads every part
    page.wait_for_selector("#gallery .tile")
    assert any(Path(url).name == "part-00000.js" for url in visit.requests)
    assert page.locator("#gallery .tile .id").first.text_content() == min(r["id"] for r in flagged)
    assert hostile[0]["id"] in page.locator("#gallery .tile .id").all_text_contents()

    # The pager, then the filter by label.
    page.select_option("#sort", "suspicion")
    page.click("#next")
    assert page.locator("#page").text_content() == f"page 2 of {-(-len(flagged) // PER_PAGE)}"
    assert page.locator("#gallery .tile .id").all_text_contents() == [flagged[k]["id"] for k in order[PER_PAGE:2 * PER_PAGE]]
    label = max({r["label"] for r in flagged}, key=lambda name: sum(r["label"] == name for r in flagged))
    page.select_option("#label-filter", label)
    assert page.locator("#page").text_content().startswith("page 1 of")
    expected = [flagged[k]["id"] for k in order if flagged[k]["label"] == label][:PER_PAGE]
    assert page.locator("#gallery .tile .id").all_text_contents() == expected
    page.select_option("#label-filter", "")
    signal = min({r["signal"] or "none" for r in flagged}, key=lambda name: sum((r["signal"] or "none") == name
                                                                               for r in flagged))
    page.select_option("#signal-filter", signal)
    expected = [flagged[k]["id"] for k in order if (flagged[k]["signal"] or "none") == signal][:PER_PAGE]
    assert page.locator("#gallery .tile .id").all_text_contents() == expected

    # The histograms: the records' suspicion per bin, the calibration's clean images', the threshold.
    screened = [r["suspicion"] for r in records if r["error"] is None]
    bars = page.eval_on_selector_all("svg.histogram", "charts => charts.map(c => Array.from(c.querySelectorAll("
                                     "'rect[data-count]'), r => Number(r.dataset.count)))")
    clean = json.loads((REPO / "weights" / "screening.json").read_text()).get("clean_histogram")
    assert bars == [np.histogram(screened, bins=50, range=(0, 1))[0].tolist()] + ([clean] if clean else [])
    lines = page.eval_on_selector_all("svg.histogram line.threshold", "lines => lines.map(l => l.dataset.threshold)")
    assert lines and {float(t) for t in lines} == {records[0]["threshold"]}

    # The unreadable item, with its reason; the summary's counts.
    assert "broken.jpg" in page.locator("#errors").text_content()
    summary = json.loads((out / "summary.json").read_text())
    table = page.locator("#summary").text_content()
    assert f"{summary['flagged']} (" in table
    check = summary["source_check"]  # too few images to check: the page says so, and why
    assert not check["warning"] and check["reason"] in table
    assert visit.errors == [] and visit.outside(out) == []
    page.close()


def test_a_large_finished_page_pages_through_its_views_file_by_file(browser, tmp_path):
    """1,500 flagged images (four view files) and 120 unreadable items, written by the real writer."""
    from producers.screening.screen import RecordWriter
    from shared.screening import verdicts

    rng = np.random.default_rng(3)
    records = []
    for k in range(1500):
        records.append(verdicts.Record(f"set/{k:04d}.png", label="cat", confidence=0.9, raw_label="dog",
                                       suspicion=round(float(rng.uniform(0.9, 1)), 6), threshold=0.9, flagged=True,
                                       signal="haar@haar").as_dict())
        if k % 12 == 0:
            records.append(verdicts.error_record(f"set/{k:04d}-broken.jpg", "not an image Pillow can identify"))
    with RecordWriter(tmp_path) as writer:
        for first in range(0, len(records), 256):
            writer.write(records[first:first + 256])
    flagged = sorted((r for r in records if r["flagged"]), key=lambda r: -r["suspicion"])  # stable: ties in order
    errors = [r["id"] for r in records if r["error"]]
    visit = Visit(browser, tmp_path / "report.html")
    page = visit.page
    page.wait_for_selector("#gallery .tile")
    for _ in range(11):  # to page 12: entries 528-575, in the second file of the view
        page.click("#next")
    page.wait_for_selector(f"#gallery .tile[data-seq='{int(flagged[11 * PER_PAGE]['id'][4:8]) + 1}']")
    assert page.locator("#gallery .tile .id").all_text_contents() == [r["id"] for r in flagged[528:576]]
    assert page.locator("#page").text_content() == f"page 12 of {-(-1500 // PER_PAGE)}"
    page.click("#errors-next")
    page.click("#errors-next")
    page.wait_for_selector("#errors td")
    assert page.locator("#errors td:first-child").all_text_contents() == errors[100:125]
    assert page.locator("#errors-page").text_content() == "page 3 of 3"
    assert visit.errors == [] and visit.outside(tmp_path) == []
    assert not any(Path(url).name.startswith("part-") for url in visit.requests)
    page.close()


def test_evaluation_page_shows_its_tables_and_charts(browser, tmp_path):
    """The shipped results' page drawn again from report.json: every table of report.md, every chart loaded."""
    from .test_cli import run

    out = tmp_path / "results"
    result = run(["report", str(REPO / "docs" / "results" / "report.json"), "--out", str(out)],
                 {"WAVESHIELD_WEIGHTS_DIR": str(REPO / "weights"), "WAVESHIELD_DEVICE": "cpu"})
    assert result.returncode == 0, result.stderr
    visit = Visit(browser, out / "report.html")
    page = visit.page
    page.wait_for_load_state("load")
    assert visit.errors == [] and visit.dialogs == [] and visit.outside(out) == []
    headings = [line[3:] for line in (out / "report.md").read_text().splitlines() if line.startswith("## ")]
    shown = page.locator("h2").all_text_contents()
    assert headings and all(h in shown for h in headings)
    sources = page.eval_on_selector_all("img", "images => images.map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert {"accuracy.png", "drops.png", "examples.png"} <= {src for src, _ in sources}
    assert all(width > 0 for _, width in sources)  # every chart there
    page.screenshot(path=str(tmp_path / "evaluation.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'evaluation.png'}")
    page.close()
