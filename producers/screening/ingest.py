"""A screening job's intake, streamed onto the queues: bounded, resumable, with progress.

Reading, decoding and enqueueing overlap: a thread reads and decodes the next
chunks (:func:`shared.images.intake.prefetch`) while this one stores a chunk in
Redis and sends its message, and the producer waits while the job's
unfinished batches would hold more than ``WAVESHIELD_IN_FLIGHT_MIB`` of
blobs. A job's id is a digest of its inputs (their paths, sizes and
modification times) and its plan, so running the same command again finds
the job: an open one continues after the last chunk it counted, a sealed
one is not screened again. ``--no-wait`` hands the intake to a detached
producer process (:func:`detach`), which outlives the command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import redis

from producers.submit import Throttle, followed, store_batch, when_room
from shared import settings as settings_mod
from shared.images.image_set import CIFAR10_CLASSES, iter_batches
from shared.images.intake import Chunk, iter_chunks, iter_items, prefetch
from shared.pipeline import Pipeline
from shared.pipeline.inflight import batches_allowed, screen_batch_bytes
from shared.pipeline.meta import JobNotFound, running
from shared.screening import verdicts
from shared.settings import Settings

log = logging.getLogger("waveshield")

#: A producer that has not counted a chunk or waited for room this long is taken for gone (``resume`` restarts it).
PRODUCER_GONE_S = 60


def _fingerprint(text: str) -> list:
    """A path as it is now: absolute, and its size and modification time (a glob as written, from here)."""
    path = Path(text)
    if text == "sample" or not path.exists():
        return [text if text == "sample" else os.path.abspath(text)]
    stat = path.stat()
    return [str(path.resolve()), stat.st_size if path.is_file() else "dir", stat.st_mtime_ns]


def job_identity(paths: Iterable[str], plan: dict, batch_size: int) -> str:
    """The digest that names a job: the same inputs, unchanged, with the same plan give the same id."""
    text = json.dumps({"inputs": [_fingerprint(str(p)) for p in paths], "plan": plan, "batch_size": batch_size},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def start_job(client: redis.Redis, paths: list[str], plan: dict, batch_size: int, *, fresh: bool = False) -> tuple[str, bool]:
    """The job for these inputs and plan: ``(job, found)``, found when it was started before and is still in Redis.

    Its id is :func:`job_identity`; ``fresh`` opens a job with a new id
    instead. The plan records the inputs (absolute paths) and batch size, so
    that ``resume`` can restart an intake whose producer is gone.
    """
    pipe = Pipeline(client)
    job = uuid.uuid4().hex[:12] if fresh else job_identity(paths, plan, batch_size)
    try:
        pipe.plan(job)
        return job, True
    except JobNotFound:
        pass  # never started, or gone with a Redis that lost its data
    inputs = [p if p == "sample" else os.path.abspath(p) for p in map(str, paths)]
    when_room(client, settings_mod.load(), lambda: pipe.open_screen_job(
        {**plan, "intake": {"inputs": inputs, "batch_size": batch_size}}, CIFAR10_CLASSES, job=job))
    return job, False


def chunks_of(image_set, batch_size: int) -> Iterator[Chunk]:
    """An in-memory set as chunks (its unreadable items with the last)."""
    batches = list(iter_batches(len(image_set), batch_size)) or [slice(0, 0)]
    for b, batch in enumerate(batches):
        errors = image_set.errors if b == len(batches) - 1 else []
        yield Chunk(b, image_set.ids[batch], image_set.images[batch], errors)


def enqueue(client: redis.Redis, app, job: str, chunks: Iterable[Chunk], settings: Settings, *,
            on_progress: Callable[[dict], None] | None = None) -> dict:
    """Add ``chunks`` to open ``job`` and send their messages, with backpressure; seal the job; return its progress.

    ``on_progress(state)`` hears the job's progress after each chunk and
    while the producer waits for room (a follower streams records there).

    Raises
    ------
    producers.submit.JobFailed
        If the job disappears from Redis (restarted without persistence).
    """
    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    plan = pipe.plan(job)
    me = f"{socket.gethostname()}:{os.getpid()}"
    last = {"beat": 0.0}

    def beat(now: bool = False):
        # While the producer waits for room this runs every poll (0.2 s): the heartbeat and a follower's
        # progress (which reads the job's error list) go at most once a second; after each chunk, always.
        if not now and time.monotonic() - last["beat"] < 1.0:
            return
        last["beat"] = time.monotonic()
        try:
            pipe.note_producer(job, me)
        except redis.exceptions.OutOfMemoryError:
            pass  # a full Redis: the producer is waiting for room, and says so; the next beat notes it
        if on_progress:
            on_progress(pipe.progress(job))

    throttle = Throttle(client, job, 1, from_meta=True, on_wait=beat, stall_timeout_s=settings.stall_timeout_s)
    for chunk in chunks:
        batch_bytes = screen_batch_bytes(plan, len(chunk.ids), chunk.images.itemsize, chunk.images.shape[1:3])
        throttle.allowed = batches_allowed(batch_bytes, settings.in_flight_mib)
        throttle.wait_for_room(1)
        # Redis's own limit (maxmemory, noeviction) holds every job's data: wait for room there too (adding a
        # chunk again is safe until it is counted).
        errors = [verdicts.error_record(e.id, e.reason) for e in chunk.errors]
        store_batch(client, app, settings, batch_bytes, lambda: pipe.add_screen_chunk(
            job, chunk.index, chunk.ids, chunk.images, errors, chunk.error_at), job, beat)
        beat(now=True)
    when_room(client, settings, lambda: pipe.seal_screen_job(job), beat)
    pipe.clear_producer(job)
    return pipe.progress(job)


def ingest(client: redis.Redis, app, job: str, paths: list[str], settings: Settings, batch_size: int, *,
           on_progress: Callable[[dict], None] | None = None) -> dict:
    """Stream ``paths`` into open ``job`` from its first uncounted chunk; seal it; return its progress.

    A sealed job is left as it is.
    """
    pipe = Pipeline(client)
    with followed(job):
        state = pipe.progress(job)
    if not state["ingesting"]:
        return state
    if who := producer_alive(client, job):
        log.warning("job %s: producer %s is reading its input; following it instead", job, who)
        return state
    counted = pipe.batches_stored(job)
    if counted:
        log.info("job %s: %d chunk(s) counted before; reading on from item %d", job, counted, counted * batch_size)
    items = iter_items(paths, max_bytes=settings.max_item_bytes)
    chunks = prefetch(iter_chunks(items, batch_size, workers=settings.decode_workers, skip=counted * batch_size))
    try:
        return enqueue(client, app, job, chunks, settings, on_progress=on_progress)
    finally:
        chunks.close()


def producer_alive(client: redis.Redis, job: str) -> str | None:
    """The ``host:pid`` of the producer feeding ``job``, or None when none is.

    On this host the process is looked up; a producer elsewhere counts as
    alive while it reported within :data:`PRODUCER_GONE_S`.
    """
    who, seen, ingesting, _ = Pipeline(client).producer(job)
    if not ingesting or not who:
        return None
    host, _, pid = who.rpartition(":")
    if host == socket.gethostname():
        return who if running(pid) else None
    return who if time.time() - seen <= PRODUCER_GONE_S else None


def detach(argv: list[str], log_path: Path, redis_url: str) -> int:
    """Run ``waveshield ARGV`` in a session of its own, its output appended to ``log_path``; return its pid.

    The process outlives the command that started it (and its terminal): it
    is how ``screen --no-wait`` and ``corpus`` hand over an intake that
    backpressure keeps waiting on the workers.
    """
    import subprocess
    import sys

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "producers.cli", *argv], stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "REDIS_URL": redis_url})
    return process.pid


def restart_intake(client: redis.Redis, job: str, settings: Settings, redis_url: str) -> str | None:
    """Give an open screening job whose producer is gone a new one, in the background; say what happened.

    Returns None for a job with nothing left to read (sealed, or not a
    streamed screening job).
    """
    pipe = Pipeline(client)
    plan = pipe.plan(job)
    _, _, ingesting, read = pipe.producer(job)
    if not ingesting or "intake" not in plan:
        return None
    if who := producer_alive(client, job):
        return f"its producer ({who}) is still reading ({read} items so far)"
    intake = plan["intake"]
    source = plan.get("calibration", {}).get("name", "default")
    argv = ["screen", *intake["inputs"], "--job", job, "--batch-size", str(intake["batch_size"]),
            "--mode", plan.get("mode", "staged"), *(["--source", source] if source != "default" else []),
            "--out", str(settings.output_dir / "screen" / job)]
    log_path = settings.output_dir / "producers" / f"{job}.log"
    pid = detach(argv, log_path, redis_url)
    return (f"its producer was gone after {read} items; a new one (pid {pid}, log {log_path}) reads on from there "
            f"and writes {settings.output_dir / 'screen' / job} when the job is done")
