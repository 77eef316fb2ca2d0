"""`waveshield screen --watch DIR`: screen files as they land, in batches closed by size or by time.

The output ``records.jsonl`` is also the state: on start, every id already in
it is skipped, and a torn last line (a crash mid-write) is cut off so that
file is screened again. A file is taken once its size and mtime have held
still for one poll, so a file still being copied is not read half-written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from shared.data import load_many


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
          on_batch: Callable[[int, int], None] | None = None) -> int:
    """Screen new files of ``directory`` until ``should_stop()``; return how many were screened.

    ``screen_batch(image_set) -> records`` does the work (on the workers or in this process).
    """
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    done = screened_ids(records_path)
    seen: dict[str, tuple[int, float]] = {}
    batch: list[str] = []
    opened_at = 0.0
    total = 0

    def flush():
        nonlocal batch, total
        image_set = load_many(batch)
        found = screen_batch(image_set)
        append(records_path, found)
        done.update(r["id"] for r in found)
        total += len(found)
        if on_batch:
            on_batch(len(found), total)
        batch = []

    while True:
        stopping = should_stop()
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
            key = str(path)
            if key in done or key in batch:
                continue
            stat = path.stat()
            if seen.get(key) == (stat.st_size, stat.st_mtime):  # unchanged for one poll: complete
                if not batch:
                    opened_at = time.monotonic()
                batch.append(key)
                if len(batch) >= batch_size:
                    flush()
            else:
                seen[key] = (stat.st_size, stat.st_mtime)
        if batch and (stopping or time.monotonic() - opened_at >= max_wait_s):
            flush()
        if stopping:
            return total
        time.sleep(poll_s)
