"""``report.html`` beside a screening job's records: the summary, the suspicion histogram, the flagged images.

The page is one HTML file and a folder, ``report_files/``, that open from
disk (``file://``) with no server and no network request:

- ``report.html``: the same for every job (markup, style and script); it
  loads ``report_files/index.js``, then each part in turn;
- ``index.js``: the summary, the histogram's counts, the number of parts;
- ``part-NNNNN.js``: the flagged entries and unreadable items of up to
  :data:`PART_SIZE` records' worth of batches. Memory holds the open part
  only; a full part is written once and left alone;
- ``thumbs/``: one small PNG per flagged image (its pixels as screening
  decoded them) and, where the signal has one, its "why" picture
  (:mod:`shared.screening.why`), written as its batch lands.

The suspicion histogram is drawn by the page itself (SVG) from the index's
counts: it costs the writer nothing, and is as fresh as the index. A
matplotlib figure cost about 0.8 s per job (import and first draw): 6 % of
``screen --local`` on 5,000 mirror test images on a 2-core machine
(``benchmarks/bench_report_page.py``).

Files are named by the flagged image's sequence number, never by its id:
ids come from users' file names, and the page shows them as text only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.screening.verdicts import HISTOGRAM_BINS, suspicion_histogram
from shared.screening.why import GAIN as WHY_GAIN

#: The folder beside report.html that holds its data and pictures.
FOLDER = "report_files"
#: Entries (flagged images and unreadable items) per part file.
PART_SIZE = 2000
#: index.js and the open part are rewritten at most this often while records arrive (seconds).
REFRESH_S = 3.0
#: Entries per file of the views written when the job ends: the flagged images by suspicion (10 gallery pages of
#: 48) and the unreadable items in order (10 table pages of 50). The page opens on the first of each.
SORTED_SIZE, ERRORS_SIZE = 480, 500
#: A flagged entry's fields, in order (the page's script reads them by position).
FLAGGED_COLUMNS = ("seq", "id", "label", "confidence", "raw_label", "suspicion", "signal", "thumb", "why")
_ASSETS = Path(__file__).resolve().parent / "assets"
log = logging.getLogger("waveshield")


def _never_fails_the_job(method):
    """A page that cannot be written (a full disk, a picture that cannot be drawn) stops, with a warning; the
    records, written before it, are whole, and screening goes on."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.stopped:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self.stopped = True
            log.warning("the report page %s stopped being written (%s: %s); the records are whole",
                        self.out / "report.html", type(exc).__name__, exc)
            return None
    return guarded


def page_html() -> str:
    """report.html: the template with its script inlined (one file, the same for every job).

    The page's Content-Security-Policy admits that script by its hash and the
    scripts of its folder, nothing else: no inline handler, whatever a file
    name smuggled into the page.
    """
    template = (_ASSETS / "screening.html").read_text()
    page = template.replace("/*SCRIPT*/", (_ASSETS / "screening.js").read_text())
    inline = page[page.index("<script>") + len("<script>"):page.index("</script>")]
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    return page.replace("/*SCRIPT-HASH*/", f"'sha256-{digest}'")


class ScreeningPage:
    """Writes report.html and report_files/ as a screening job's records arrive.

    Parameters
    ----------
    out : Path
        The job's output folder (records.jsonl's).
    tally : shared.screening.verdicts.Tally
        The writer's running counts: the page's summary.
    read_item : callable, optional
        Id -> its pixels (H x W x 3 uint8) or None, for flagged images whose
        pixels the caller does not pass (:class:`shared.images.read_back.ItemReader`).
    explain : callable, optional
        (pixels N x H x W x 3, signals) -> a "why" picture or None per image
        (:func:`shared.screening.why.residual_pictures` with the plan's defences).
    clean_histogram : list of int, optional
        The calibration's clean images' suspicion counts in :data:`~shared.screening.verdicts.HISTOGRAM_BINS` bins, when it recorded them.
    size : int
        The side of the pixels screening decodes to, as the page states it.
    release : callable, optional
        Called on :meth:`close`: lets go of what ``read_item`` keeps open.
    """

    def __init__(self, out: Path, tally, *, read_item: Callable[[str], np.ndarray | None] | None = None,
                 explain: Callable | None = None, clean_histogram: list[int] | None = None, size: int = 32,
                 release: Callable[[], None] | None = None):
        self.out, self.folder, self.tally = Path(out), Path(out) / FOLDER, tally
        self.stopped = False
        self.read_item, self.explain, self.size, self.release = read_item, explain, size, release
        self.clean_histogram = clean_histogram
        # A writer that starts again (a resumed follower) is fed every record again: start from nothing.
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "thumbs").mkdir(parents=True, exist_ok=True)
        self.counts = [0] * HISTOGRAM_BINS
        self.seq = 0
        self.parts_closed = 0
        self.flagged: list[list] = []
        self.errors: list[list] = []
        self.labels: set[str] = set()  # among the flagged images, for the page's filters
        self.signals: set[str] = set()
        self.views: dict | None = None
        self.last_write = float("-inf")
        self.dirty = False
        _write_text(self.out / "report.html", page_html())
        self._write_index("running")

    @_never_fails_the_job
    def add(self, records: list[dict], pixels: dict[str, np.ndarray] | None = None) -> None:
        """Take a batch of records (after the tally counted them); its flagged images' pictures are written now.

        ``pixels``: id -> the pixels screening classified, where the caller has
        them; other flagged images are read back by id.
        """
        self.counts = [a + b for a, b in zip(self.counts, suspicion_histogram(
            [r["suspicion"] for r in records if r["error"] is None and r["suspicion"] is not None]))]
        found: list[tuple[list, np.ndarray]] = []
        for r in records:
            if r["error"] is not None:
                self.errors.append([r["id"], r["error"]])
            elif r["flagged"]:
                self.seq += 1
                entry = [self.seq, r["id"], r["label"], r["confidence"], r["raw_label"], r["suspicion"], r["signal"],
                         0, 0]
                self.labels.add(r["label"])
                self.signals.add(r["signal"] or "none")
                image = pixels.get(r["id"]) if pixels is not None else None
                if image is None and self.read_item is not None:
                    image = self.read_item(r["id"])
                if image is not None:
                    image = _as_uint8(image)
                    _save_png(self.folder / "thumbs" / thumbnail_name(self.seq), image)
                    entry[7] = 1  # the page derives the file's name from the sequence number
                    found.append((entry, image))
                self.flagged.append(entry)
        if found and self.explain is not None:
            why = self.explain(np.stack([image for _, image in found]), [entry[6] for entry, _ in found])
            for (entry, _), picture in zip(found, why):
                if picture is not None:
                    _save_png(self.folder / "thumbs" / thumbnail_name(entry[0], why=True), picture)
                    entry[8] = 1
        self.dirty = True
        if len(self.flagged) + len(self.errors) >= PART_SIZE:
            self._write_part()
            self.parts_closed += 1
            self.flagged, self.errors = [], []
            self._write_index("running")
        else:
            self.tick()

    @_never_fails_the_job
    def tick(self) -> None:
        """Write what arrived since the last write, if that was :data:`REFRESH_S` ago (a watch calls it at each poll)."""
        if self.dirty and time.monotonic() - self.last_write >= REFRESH_S:
            self._write_part()
            self._write_index("running")

    @_never_fails_the_job
    def close(self, status: str = "complete") -> None:
        """Write the last part and the index, marked ``status`` ("complete"; a watch: "stopped"; a run that
        ended on an error or Ctrl-C: "interrupted"), and let go of what the item reader keeps."""
        self._write_part()
        self.views = self._write_views()
        self._write_index(status)
        if self.release is not None:
            self.release()

    def _write_views(self) -> dict:
        """The flagged entries by suspicion and the unreadable items, in files of a few pages each.

        A page that opens on the gallery's first page then reads a file of
        :data:`SORTED_SIZE` entries, not the whole job's. Each part is sorted
        on its own and the parts merged line by line: memory holds one part.
        """
        runs = self.folder / "runs"
        runs.mkdir(exist_ok=True)
        errors = _Chunked(self.folder, "errors", "wsErrors", ERRORS_SIZE)
        files = []
        for k in range(self._parts()):
            part = json.loads(_script_argument(self.folder / f"part-{k:05d}.js", "wsPart").split(",", 1)[1])
            for entry in part["errors"]:
                errors.add(entry)
            files.append(runs / f"{k:05d}.jsonl")
            files[-1].write_text("".join(json.dumps(e, separators=(",", ":")) + "\n"
                                         for e in sorted(part["flagged"], key=_by_suspicion)))
        ordered = _Chunked(self.folder, "sorted", "wsSorted", SORTED_SIZE)
        handles = [open(f) for f in files]
        try:
            for entry in heapq.merge(*[map(json.loads, h) for h in handles], key=_by_suspicion):
                ordered.add(entry)
        finally:
            for h in handles:
                h.close()
        shutil.rmtree(runs)
        return {"sorted": ordered.close(), "errors": errors.close(), "sorted_size": SORTED_SIZE,
                "errors_size": ERRORS_SIZE}

    def _parts(self) -> int:
        return self.parts_closed + bool(self.flagged or self.errors)

    def _write_part(self) -> None:
        if not (self.flagged or self.errors):
            return
        payload = json.dumps({"flagged": self.flagged, "errors": self.errors}, separators=(",", ":"))
        _write_text(self.folder / f"part-{self.parts_closed:05d}.js", f"wsPart({self.parts_closed}, {payload});\n")

    def _write_index(self, status: str) -> None:
        # ``flagged`` and ``errors``: the entries this index counts; a part rewritten after the page read this
        # index may hold more, which the page leaves out so that the gallery and the summary agree.
        index = {"status": status, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "summary": self.tally.summary(), "parts": self._parts(), "size": self.size,
                 "flagged": self.seq, "errors": self.tally.errors, "views": self.views,
                 "labels": sorted(self.labels), "signals": sorted(self.signals),
                 "histogram": self.counts, "clean_histogram": self.clean_histogram, "columns": FLAGGED_COLUMNS,
                 "why_gain": WHY_GAIN}
        _write_text(self.folder / "index.js", f"wsIndex({json.dumps(index, separators=(',', ':'))});\n")
        self.last_write, self.dirty = time.monotonic(), False


def _by_suspicion(entry: list) -> tuple:
    """The gallery's order: most suspicious first, then in the order the records came."""
    return -entry[5], entry[0]


class _Chunked:
    """Entries written to ``NAME-NNNNN.js`` files of ``size`` each, as ``CALL(n, [...])``."""

    def __init__(self, folder: Path, name: str, call: str, size: int):
        self.folder, self.name, self.call, self.size = folder, name, call, size
        self.entries: list = []
        self.files = 0

    def add(self, entry) -> None:
        self.entries.append(entry)
        if len(self.entries) == self.size:
            self._flush()

    def _flush(self) -> None:
        payload = json.dumps(self.entries, separators=(",", ":"))
        _write_text(self.folder / f"{self.name}-{self.files:05d}.js", f"{self.call}({self.files}, {payload});\n")
        self.files, self.entries = self.files + 1, []

    def close(self) -> int:
        """Write the last file; return how many there are."""
        if self.entries:
            self._flush()
        return self.files


def _script_argument(path: Path, call: str) -> str:
    """What a data file passes to ``call(...)``."""
    text = path.read_text()
    return text[len(call) + 1:text.rstrip().rindex(")")]


def thumbnail_name(seq: int, why: bool = False) -> str:
    """The file of the ``seq``-th flagged image's picture (or its "why") in ``thumbs/``; the page derives it too."""
    return f"{seq:07d}{'-why' if why else ''}.png"


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """The pixels of a float array set rounded to 8 bits, for the picture only."""
    return pixels if pixels.dtype == np.uint8 else np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(pixels)).save(path, compress_level=1)


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` whole: a page reloaded meanwhile reads the old file or the new, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
