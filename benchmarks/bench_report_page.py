"""The screening page: what writing it costs, how much it weighs, how fast it opens.

1. Writing: ``screen --local`` (:func:`producers.screening.screen.screen_and_write`) on the
   first ``--n`` images of the CIFAR-10 test split (the JPEG mirror), with the page and
   with the page replaced by one that does nothing, alternating, side by side in one
   run; and the time spent inside the page's own calls.
2. Opening: a job of ``--records`` synthetic records (a clean set's flagged share, and
   an attacked set's: every record flagged) written through the real writer with a
   32 x 32 picture per flagged image; its page opened in headless Chromium (Debian's),
   first paint and the gallery's first tiles timed; the page's weight, pictures aside.

    python benchmarks/bench_report_page.py [--n 5000] [--records 100000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CIFAR_TEST, machine
from producers.screening import screen as screen_mod
from shared.reports.screening_page import FOLDER
from shared.screening import verdicts
from shared.settings import load as load_settings


class _NoPage:
    release = None

    def add(self, records, pixels=None):
        pass

    def tick(self):
        pass

    def close(self, status="complete"):
        pass


class _TimedPage:
    """The real page, with the seconds spent in it counted."""

    def __init__(self, page):
        self.page, self.seconds = page, 0.0

    def add(self, records, pixels=None):
        start = time.perf_counter()
        self.page.add(records, pixels)
        self.seconds += time.perf_counter() - start

    def tick(self):
        self.page.tick()

    def close(self, status="complete"):
        start = time.perf_counter()
        self.page.close(status)
        self.seconds += time.perf_counter() - start


def screening_cost(n: int, repeats: int, root: Path) -> list[str]:
    settings = load_settings()
    chosen = screen_mod.screening_settings(settings)
    real = screen_mod.report_page
    times = {"with the page": [], "without": []}
    in_page = []
    for _ in range(repeats):
        for name in ("without", "with the page"):
            timed = []

            def make(out, tally, defence):
                page = _TimedPage(real(out, tally, defence)) if name == "with the page" else _NoPage()
                timed.append(page)
                return page

            screen_mod.report_page = make
            out = root / name.replace(" ", "-")
            start = time.perf_counter()
            summary = _screen_first(n, out, settings, chosen)
            times[name].append(time.perf_counter() - start)
            if name == "with the page":
                in_page.append(timed[0].seconds)
            shutil.rmtree(out)
    screen_mod.report_page = real
    best = {k: min(v) for k, v in times.items()}
    return [f"screen --local, first {n} test images ({summary['flagged']} flagged): "
            f"{best['without']:.1f} s without the page, {best['with the page']:.1f} s with it "
            f"(x{best['with the page'] / best['without']:.3f}); inside the page's calls: {min(in_page):.2f} s "
            f"({100 * min(in_page) / best['with the page']:.2f} % of the run)"]


def _screen_first(n, out, settings, chosen):
    from shared.images.intake import iter_chunks, iter_items, prefetch

    items = (item for _, item in zip(range(n), iter_items([CIFAR_TEST])))
    chunks = prefetch(iter_chunks(items, 256, workers=settings.decode_workers))
    writer = screen_mod.RecordWriter(out, chosen["calibration"], defence=chosen["defence"])
    return screen_mod.screen_and_write(chunks, writer, settings, chosen)


def synthetic_job(out: Path, records: int, flagged_share: float, seed: int = 0) -> float:
    """Write a job of ``records`` records through the real writer; return the seconds it took."""
    rng = np.random.default_rng(seed)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    start = time.perf_counter()
    with screen_mod.RecordWriter(out, {"name": "default", "threshold": 0.9, "fpr": 0.05}) as writer:
        for first in range(0, records, 256):
            batch, pixels = [], {}
            for k in range(first, min(first + 256, records)):
                flagged = rng.random() < flagged_share
                item = f"incoming/batch-{k // 1000:03d}/image-{k:06d}.jpg"
                batch.append(verdicts.Record(
                    item, label=classes[k % 10], confidence=round(float(rng.uniform(0.3, 1)), 6),
                    raw_label=classes[(k * 7) % 10], suspicion=round(float(rng.uniform(0.9, 1) if flagged
                                                                             else rng.beta(1, 12)), 6),
                    threshold=0.9, flagged=flagged, signal=["haar@haar", "standard@raw", "steps"][k % 3],
                    coarse_contrast=3.8, coarse_colour=30.0).as_dict())
                if flagged:
                    pixels[item] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            writer.write(batch, pixels)
    return time.perf_counter() - start


def weight(out: Path, requested: list[str] | None = None) -> int:
    """Bytes of report.html and its data files (the pictures aside): those ``requested``, or all of them."""
    files = [out / "report.html", *(out / FOLDER).glob("*.js")]
    if requested is not None:
        files = [f for f in files if f.name in requested]
    return sum(f.stat().st_size for f in files)


def open_times(browser, page_path: Path, repeats: int = 3) -> tuple[float, float, list[str]]:
    """Best first paint and time to the gallery's first tile, in seconds, over ``repeats`` fresh tabs, and the
    files the page read to show its first gallery page."""
    paints, tiles = [], []
    for _ in range(repeats):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requested = []
        page.on("request", lambda r: requested.append(Path(r.url).name))
        start = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_selector("#gallery .tile", timeout=60_000)
        tiles.append(time.perf_counter() - start)
        paints.append(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime") / 1000)
        page.close()
    return min(paints), min(tiles), requested


def sort_by_id_time(browser, page_path: Path) -> float:
    """Seconds from choosing the sort by id (which reads every part) to its first tiles."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_path.as_uri())
    page.wait_for_selector("#gallery .tile", timeout=60_000)
    start = time.perf_counter()
    page.select_option("#sort", "id")  # the gallery is replaced by a note at once, its tiles come back when read
    page.wait_for_selector("#gallery .tile", timeout=60_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    lines = [f"machine: {machine()}"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            for name, share in (("clean set, 4 % flagged", 0.04), ("attacked set, all flagged", 1.0)):
                out = root / name.split(",")[0].replace(" ", "-")
                seconds = synthetic_job(out, args.records, share)
                paint, tile, requested = open_times(browser, out / "report.html")
                lines.append(f"{args.records:,} records, {name}: written in {seconds:.1f} s; page "
                             f"{weight(out, requested) / 2**20:.2f} MiB read to open, "
                             f"{weight(out) / 2**20:.2f} MiB with every data file, pictures aside; "
                             f"first paint {paint:.2f} s, first tiles {tile:.2f} s; sorted by id (every part read) "
                             f"{sort_by_id_time(browser, out / 'report.html'):.2f} s later")
            browser.close()
        lines += screening_cost(args.n, args.repeats, root)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
