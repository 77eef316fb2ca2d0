"""`waveshield screen --watch DIR`: screen files as they land, in batches closed by size or by time.

The output ``records.jsonl`` is also the state: on start, every id already in
it is skipped, and a torn last line (a crash mid-write) is cut off so that
file is screened again. A file is taken once its size and mtime have held
still for one poll, so a file still being copied is not read half-written.

New files are found through file-system events (watchdog: inotify on
Linux), so a poll costs nothing for the files already screened, however
many stay in the inbox; the folder is walked once, at start, for what
landed while nothing watched. Where events cannot be had (watchdog missing,
the inotify watch limit reached, a file system that sends none), every
poll walks the folder instead, as :class:`Inbox` says.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from shared.images.load import load_many


def _candidate(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")


class Inbox:
    """The files of a watched folder worth a look at each poll.

    With ``events`` (the default), the first poll walks the folder and later
    ones return only the paths file-system events named since, plus those a
    caller asked to see again (:meth:`again`: still being written). Without
    events, or when they cannot be had, every poll walks the folder.
    ``mode`` says which: ``events`` or ``polling``.
    """

    def __init__(self, directory: Path, events: bool = True):
        self.directory, self.mode = Path(directory), "polling"
        self._lock, self._named, self._again, self._walked = threading.Lock(), set(), set(), False
        self._observer = self._start_observer() if events else None

    def _start_observer(self):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        inbox = self

        class Named(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory:
                    return
                with inbox._lock:
                    inbox._named.add(getattr(event, "dest_path", "") or event.src_path)

        observer = Observer()
        try:
            observer.schedule(Named(), str(self.directory), recursive=True)
            observer.start()
        except OSError:  # e.g. fs.inotify.max_user_watches reached: poll instead
            return None
        self.mode = "events"
        return observer

    def candidates(self) -> Iterable[Path]:
        """This poll's paths to look at, sorted."""
        if self._observer is None or not self._walked:
            self._walked = True
            with self._lock:
                self._named.clear()
                self._again.clear()
            return sorted(p for p in self.directory.rglob("*") if _candidate(p))
        with self._lock:
            named = {Path(p) for p in self._named} | self._again
            self._named, self._again = set(), set()
        return sorted(p for p in named if _candidate(p))

    def again(self, path: Path) -> None:
        """Look at ``path`` at the next poll too, whether or not an event names it."""
        with self._lock:
            self._again.add(path)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)


def screened_ids(records_path: Path) -> set[str]:
    """Ids already in a records file; a torn trailing line is removed first."""
    if not records_path.is_file():
        return set()
    data = records_path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        records_path.write_bytes(data)
    return {json.loads(line)["id"] for line in data.splitlines() if line.strip()}


def append(records_path: Path, records: list[dict]) -> None:
    """Append records and make them durable before their files count as screened."""
    with open(records_path, "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
        fh.flush()
        os.fsync(fh.fileno())


def watch(directory: Path, out: Path, screen_batch: Callable, *, batch_size: int = 256, max_wait_s: float = 2.0,
          poll_s: float = 0.5, should_stop: Callable[[], bool] = lambda: False,
          on_batch: Callable[[int, int], None] | None = None, events: bool = True,
          on_start: Callable[[str], None] | None = None, decode_workers: int = 1, page=None) -> int:
    """Screen new files of ``directory`` until ``should_stop()``; return how many were screened.

    ``screen_batch(image_set) -> records`` does the work (on the workers or in this process).
    ``events``: find new files through file-system events (:class:`Inbox`), else by walking at each poll;
    ``on_start(mode)`` hears which it got (``events`` or ``polling``); ``decode_workers`` decode each batch.
    ``page``: the report page (:class:`producers.screening.screen.RecordPage`), fed the records
    already screened, then each batch with its pixels; marked stopped at the end.
    """
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    done = screened_ids(records_path)
    seen: dict[str, tuple[int, float]] = {}
    batch: list[str] = []
    opened_at = 0.0
    total = 0
    inbox = Inbox(directory, events)
    if on_start:
        on_start(inbox.mode)

    def flush():
        nonlocal batch, total
        image_set = load_many(batch, workers=decode_workers)
        found = screen_batch(image_set)
        append(records_path, found)
        if page is not None:
            page.add(found, dict(zip(image_set.ids, image_set.images)))
        done.update(r["id"] for r in found)
        total += len(found)
        if on_batch:
            on_batch(len(found), total)
        batch = []

    try:
        if page is not None and done:
            _feed(page, records_path)
        while True:
            stopping = should_stop()
            for path in inbox.candidates():
                key = str(path)
                if key in done or key in batch:
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # gone between the event and the look
                    seen.pop(key, None)
                    continue
                if seen.get(key) == (stat.st_size, stat.st_mtime):  # unchanged for one poll: complete
                    seen.pop(key)
                    if not batch:
                        opened_at = time.monotonic()
                    batch.append(key)
                    if len(batch) >= batch_size:
                        flush()
                else:
                    seen[key] = (stat.st_size, stat.st_mtime)
                    inbox.again(path)  # look again next poll, even if no event names it
            if batch and (stopping or time.monotonic() - opened_at >= max_wait_s):
                flush()
            if stopping:
                return total
            if page is not None:
                page.tick()
            time.sleep(poll_s)
    finally:
        inbox.close()
        if page is not None:
            page.close("stopped")


def _feed(page, records_path: Path, batch: int = 1024) -> None:
    """The records of an earlier run, to the page, a batch at a time."""
    with open(records_path) as fh:
        while lines := [line for line in (fh.readline() for _ in range(batch)) if line]:
            page.add([json.loads(line) for line in lines if line.strip()])
