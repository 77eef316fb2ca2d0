"""`waveshield screen` and `waveshield results`: bulk screening on the workers, or in this process."""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from shared.dwt import defences
from shared.evaluation.plan import RUN_MODES, ModelPath
from shared.images.image_set import CIFAR10_CLASSES, ImageSet, to_float_nchw
from shared.models.store import ModelStore
from shared.screening import config as screening_config
from shared.screening import detector, verdicts
from shared.settings import Settings, resolve_device

log = logging.getLogger("waveshield")

# Nothing here imports torch at import time: a producer reads, enqueues and writes records without it,
# and only screening in this process (screen_chunks) loads the models.


def screening_settings(settings: Settings, source: str | None = None) -> dict:
    """Score, threshold, defence and models to screen with; checks the weights (and detector) exist.

    ``source`` picks a calibration recorded by ``waveshield calibrate --source``
    (default: the one the score was fitted or calibrated with).
    """
    chosen = screening_config.load(settings.weights_dir, settings.models_dir)
    store = ModelStore(settings.weights_dir, models_dir=settings.models_dir)
    names = (chosen["raw_model"], chosen["defended_model"])
    if chosen["score"] == "detector":
        card = store.detector_card()
        if chosen.get("detector_sha256", card["sha256"]) != card["sha256"]:
            file = screening_config.path(settings.weights_dir, settings.models_dir)
            # What to delete to screen with the shipped files: the user's settings, else the user's detector.
            stale = next((p for p in (file, store.detector_path()) if p.parent != settings.weights_dir), None)
            advice = (f"fit it again (waveshield fit-detector) or delete {stale} to screen with the shipped files"
                      if stale else "the shipped files disagree: install them again")
            raise ValueError(f"{file} was written for detector {chosen['detector_sha256'][:12]}, and the detector in "
                             f"use is {store.detector_path()} ({card['sha256'][:12]}): {advice}")
        paths = detector.reads(card)["paths"]
        names = sorted({ModelPath.named(p).model for p in paths})
        for name, fitted_on in card.get("models", {}).items():  # a card of an earlier release names none
            now = store.card(name)["sha256"] if store.has(name) else None
            if now != fitted_on:
                raise ValueError(f"the detector {store.detector_path()} was fitted on model {name!r} with weights "
                                 f"{fitted_on[:12]}, and {name!r} is now "
                                 f"{now[:12] if now else 'missing'}: fit one for it (waveshield fit-detector "
                                 "--clean IMAGES ...) or screen with the models it was fitted on")
        chosen["detector_sha256"] = card["sha256"]
        raw, defended = ModelPath(chosen["raw_model"]).name, ModelPath(chosen["defended_model"], chosen["defence"]).name
        if raw not in paths or defended not in paths:
            raise ValueError(f"the detector reads the paths {', '.join(paths)}; {screening_config.FILENAME} names "
                             f"{raw} and {defended}")
    for name in names:
        store.require(name, "screening")
    defences.get(chosen["defence"], settings.weights_dir)
    calibration = screening_config.calibration_for(chosen, source)
    plan = {k: chosen[k] for k in ("score", "defence", "raw_model", "defended_model", "detector_sha256") if k in chosen}
    return {**plan, "threshold": calibration["threshold"], "calibration": calibration}


def screen_chunks(chunks, settings: Settings, chosen: dict) -> Iterator[list[dict]]:
    """Screen each chunk (:class:`shared.images.intake.Chunk`) in this process: its records, readable or not, in order.

    ``chosen``: the settings of :func:`screening_settings`.
    """
    from shared.images.coarse import coarse_statistics

    store = ModelStore(settings.weights_dir, resolve_device(settings.device), settings.models_dir)
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, settings.weights_dir))
    for chunk in chunks:
        found = []
        if len(chunk.ids):
            x = to_float_nchw(chunk.images, store.device)
            p_raw, p_def, suspicion, signals = verdicts.screen_batch(chosen, x, store.get, options, store.detector)
            found = verdicts.records(chunk.ids, p_raw, p_def, suspicion, chosen["threshold"], CIFAR10_CLASSES,
                                      signals, coarse_statistics(x))
        yield verdicts.in_item_order(found, [verdicts.error_record(e.id, e.reason) for e in chunk.errors],
                                     chunk.error_at)


def screen_local(image_set: ImageSet, settings: Settings, batch_size: int = 256, source: str | None = None,
                 chosen: dict | None = None) -> list[dict]:
    """Screen an in-memory set in this process; one record per item, readable or not (unreadable last).

    ``chosen``: the settings of :func:`screening_settings` (read here when None).
    """
    from producers.screening.ingest import chunks_of

    chosen = chosen or screening_settings(settings, source)
    return [r for found in screen_chunks(chunks_of(image_set, batch_size), settings, chosen) for r in found]


def submit_screen(client, app, image_set: ImageSet, settings: Settings, batch_size: int = 256, *,
                  mode: str = "staged", source: str | None = None, chosen: dict | None = None,
                  writer: str | None = None, on_progress=None) -> str:
    """Put an in-memory set on the queues as a screening job (with backpressure); return its id.

    ``source``: as for :func:`screening_settings`; ``chosen``: its result,
    when the caller has it (a watch submits a job per batch). ``writer``:
    the process that will read its records takes the job's writer lease
    (:func:`shared.pipeline.durable.who`), so that the collector leaves them
    in Redis for it; ``on_progress`` as for :func:`producers.screening.ingest.enqueue`.
    """
    from producers.screening.ingest import chunks_of, enqueue
    from shared.pipeline import Pipeline

    chosen = chosen or screening_settings(settings, source)
    if mode not in RUN_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(RUN_MODES)}")
    job = Pipeline(client).open_screen_job({**chosen, "mode": mode}, CIFAR10_CLASSES, writer=writer)
    enqueue(client, app, job, chunks_of(image_set, batch_size), settings, on_progress=on_progress)
    return job


class RecordWriter:
    """records.jsonl and records.csv written as records arrive, and summary.json at the end.

    Memory holds the counts of :class:`shared.screening.verdicts.Tally`, never the
    records, whatever the set's size. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, out: Path, calibration: dict | None = None, *, defence: str | None = None):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.path = out, out / "records.jsonl"
        self._jsonl = open(self.path, "w")
        self._csv_file = open(out / "records.csv", "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=verdicts.RECORD_FIELDS)
        self._csv.writeheader()
        self.counted = RecordPage(out, calibration, defence)
        self.tally, self.page = self.counted.tally, self.counted.page

    def write(self, records: list[dict], pixels: dict | None = None) -> None:
        """Append ``records`` to both files (flushed, so that a reader sees whole batches), and to the page.

        ``pixels``: id -> the pixels screened, where the caller has them
        (the page reads the other flagged images back by id).
        """
        self._jsonl.writelines(json.dumps(r) + "\n" for r in records)
        self._csv.writerows(records)
        self._jsonl.flush()
        self._csv_file.flush()
        self.counted.add(records, pixels)

    def sync(self) -> int:
        """Put what is written on disk (a job's records then leave Redis); return records.jsonl's length."""
        for file in (self._jsonl, self._csv_file):
            file.flush()
            os.fsync(file.fileno())
        return self._jsonl.tell()

    def discard(self) -> None:
        """Close the files without a summary (a writer that is replaced)."""
        self._jsonl.close()
        self._csv_file.close()
        if self.page.release is not None:
            self.page.release()

    def close(self, page_status: str = "complete") -> dict:
        """Close the files, write summary.json and the page (marked ``page_status``), and return the summary."""
        self._jsonl.close()
        self._csv_file.close()
        summary = self.tally.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.page.close(page_status)
        return summary

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, kind, *exc) -> None:
        if not self._jsonl.closed:
            self.close("complete" if kind is None else "interrupted")


def report_page(out: Path, tally: verdicts.Tally, defence: str | None):
    """The page (report.html) of a writer: flagged images read back by id, with the "why" of ``defence``."""
    from shared.images.read_back import ItemReader
    from shared.reports.screening_page import ScreeningPage
    from shared.screening import why

    explain = None
    if defence is not None:
        from shared import settings as settings_mod

        weights = settings_mod.load().weights_dir
        known = set(defences.load(weights))
        options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, weights))

        def explain(images, signals):
            return why.residual_pictures(images, [why.defence_of(s, defence, known) for s in signals], options)
    reader = ItemReader()
    return ScreeningPage(out, tally, read_item=reader.read, explain=explain, release=reader.close,
                         clean_histogram=(tally.calibration or {}).get("clean_histogram"))


class RecordPage:
    """The running counts of records and their page: a :class:`RecordWriter`'s, or on their own for records that
    another writer puts on disk (a watch appends its own records.jsonl)."""

    def __init__(self, out: Path, calibration: dict | None, defence: str | None):
        self.tally = verdicts.Tally(calibration)
        self.page = report_page(out, self.tally, defence)

    def add(self, records: list[dict], pixels: dict | None = None) -> None:
        self.tally.add(records)
        self.page.add(records, pixels)

    def tick(self) -> None:
        self.page.tick()

    def close(self, status: str = "complete") -> None:
        self.page.close(status)


def screen_and_write(chunks, writer: RecordWriter, settings: Settings, chosen: dict,
                     on_progress=lambda screened, errors: None) -> dict:
    """Screen ``chunks`` in this process (:func:`screen_chunks`) into ``writer``, each chunk's pixels to its page;
    close the writer and return the summary. ``on_progress`` as for :func:`producers.screening.runs.screen_here`."""
    last = []

    def remembered(chunks):  # the chunk whose records come next: its pixels go to the page's thumbnails
        for chunk in chunks:
            last[:] = [chunk]
            yield chunk

    with writer:
        for found in screen_chunks(remembered(chunks), settings, chosen):
            writer.write(found, pixels=dict(zip(last[0].ids, last[0].images)))
            on_progress(writer.tally.screened, writer.tally.errors)
        return writer.close()


def write_outputs(records, out: Path, calibration: dict | None = None, defence: str | None = None) -> dict:
    """records.jsonl, records.csv, summary.json and report.html in ``out`` from an iterable of records;
    return the summary.

    ``calibration``: the plan's (:func:`shared.screening.config.calibration_for`); the summary names
    it and carries the source check (whether the flags run far over the calibrated rate). ``defence``:
    the plan's, for the page's "why" pictures.
    """
    writer = RecordWriter(out, calibration, defence=defence)
    batch: list[dict] = []
    for record in records:
        batch.append(record)
        if len(batch) >= 1024:
            writer.write(batch)
            batch = []
    writer.write(batch)
    return writer.close()


class JobRecords:
    """A followed screening job's records, written to ``out`` chunk by chunk, in order, as its batches finish;
    each chunk leaves Redis once it is on disk (:mod:`shared.pipeline.durable`).

    The follower holds the job's writer lease while it follows. If it finds
    the lease held by another follower, it leaves the writing to that one
    and copies the records into ``out`` at the end (:meth:`close`). Use as a
    context manager.
    """

    def __init__(self, pipe, job: str, out: Path, calibration: dict | None = None, *, role: str = "follower"):
        from producers.submit import when_room
        from shared import settings
        from shared.pipeline import durable

        self.pipe, self.job, self.out, self.calibration = pipe, job, out, calibration
        self.defence = pipe.plan(job).get("defence")
        cfg = settings.load()
        self.mover = durable.RecordMover(pipe, job, durable.who(role), lambda do: when_room(pipe.redis, cfg, do))
        self.writer: RecordWriter | None = None
        self.other = self.mover.acquire()
        if self.other:
            log.warning("job %s: %s writes its records; %s gets a copy of them when the job is done", job, self.other,
                        out)
        else:
            try:
                self._open()
            except BaseException:
                self.mover.release()
                raise

    def _open(self) -> None:
        """(Re)build the writer with every record written so far (a resumed follower's, or the collector's)."""
        if self.writer is not None:
            self.writer.discard()
        self.writer = None
        self.writer = self.mover.open(self.out / "records.jsonl", lambda keep: RecordWriter(self.out, self.calibration,
                                                                                  defence=self.defence),
                                      resumable=False)

    def drain(self, _state: dict | None = None) -> int:
        """Write every finished chunk from the next one on, stopping at the first unfinished; return how many."""
        from shared.pipeline.durable import LeaseLost

        if self.other:
            return 0
        if not self.mover.renew():  # away longer than the lease (a suspended laptop): take it back, reread
            if not self.mover.try_acquire():
                return 0
            try:
                self._open()
            except LeaseLost:
                return 0
        moved = self.mover.drain()
        if self.writer is not None:
            self.writer.page.tick()  # the last batch on the page too, once the refresh interval has passed
        return moved

    def close(self) -> dict:
        """After the job completed: the last records, then the summary (a copy of the other follower's records)."""
        from shared.pipeline.durable import LeaseLost

        if not self.other and not self.mover.renew():
            self.other = self.mover.acquire()
            if not self.other:
                try:
                    self._open()
                except LeaseLost:
                    self.other = "another writer"
        if self.other:
            return self._copy_of_other()
        self.mover.finish()
        return self.writer.close()

    def _copy_of_other(self) -> dict:
        """The records another follower writes, in ``out`` too; the job is complete, so they end up whole.

        Where that follower writes this very ``out``, its files are left to
        it: this one waits for it to finish and reads its summary (or takes
        over, if it stopped first).
        """
        from shared.pipeline.durable import Written
        from shared.pipeline.keys import writer_key

        if self.writer is not None:
            self.writer.discard()
            self.writer = None
        theirs = Written.of(self.pipe.redis, self.job).path
        if not theirs or Path(theirs).absolute() != (self.out / "records.jsonl").absolute():
            return write_outputs(self.pipe.iter_screen_records(self.job), self.out, self.calibration, self.defence)
        while (self.pipe.redis.get(writer_key(self.job)) or b"").decode() == self.other:
            time.sleep(0.5)
        if (self.out / "summary.json").is_file():
            return json.loads((self.out / "summary.json").read_text())
        self.other = self.mover.acquire()  # it stopped before the end: finish its work
        if self.other:
            raise RuntimeError(f"job {self.job}: {self.other} writes {self.out}; fetch its records with "
                               f"waveshield results {self.job} --out DIR")
        self._open()
        self.mover.finish()
        return self.writer.close()

    def __enter__(self) -> "JobRecords":
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None and not self.writer._jsonl.closed:
            self.writer.page.close("interrupted")  # followed no further: the job may go on without this page
            self.writer.discard()
        if not self.other:
            self.mover.release()
