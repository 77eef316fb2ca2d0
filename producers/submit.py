"""Put an evaluation on the queues and follow it: backpressure, progress, the report from Redis."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import redis

from shared.evaluation.plan import DEFAULT_BATCH_SIZE
from shared.images.image_set import iter_batches
from shared.images.load import ImageSet
from shared.pipeline import QUEUES, TASK_QUEUES, Pipeline, orphans
from shared.pipeline.inflight import batches_allowed, evaluate_batch_bytes
from shared.pipeline.keys import task_name
from shared.pipeline.meta import JobNotFound
from shared.pipeline.recovery import describe
from shared.settings import Settings
from shared.store.client import wait_for_room, while_full

log = logging.getLogger("waveshield")

#: What `status`, a producer's warning and a stall's message say when no worker is alive.
NO_WORKER = "no worker is alive: start them with `waveshield up` in another terminal"


class JobFailed(RuntimeError):
    """A followed job cannot finish; the message says why and what to do (one line)."""


def vanished(job: str) -> JobFailed:
    return JobFailed(f"job {job} is gone from Redis (restarted without persistence, or flushed) and will never "
                     "finish; run the same command again to resubmit it")


@contextlib.contextmanager
def followed(job: str) -> Iterator[None]:
    """Inside, ``job`` going missing from Redis (a Redis that lost its data) is the one line of :func:`vanished`."""
    try:
        yield
    except JobNotFound:
        raise vanished(job) from None


def warn_if_no_worker(client: redis.Redis, job: str) -> None:
    """Warn at once (on the ``waveshield`` logger) when no worker is alive to take ``job``'s messages.

    Without it a producer would wait out ``WAVESHIELD_STALL_TIMEOUT`` before
    saying so. It only warns: the job goes on as soon as workers start.
    Workers are known by their heartbeats (:func:`shared.pipeline.orphans.census`).
    """
    if not any(c["workers"] for c in orphans.census(client).values()):
        log.warning("job %s waits: %s (it goes on when they come)", job, NO_WORKER)


def queue_lengths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each queue (Celery's Redis transport keeps a list per queue)."""
    return {q: int(client.llen(q)) for q in QUEUES}


def send(app, messages) -> None:
    for name, kwargs in messages:
        app.send_task(task_name(name), kwargs=kwargs, queue=TASK_QUEUES[name])


class Throttle:
    """Backpressure for one job: wait before sending while ``allowed`` of its units are unfinished.

    Units are what the job's ``done`` counts (screening batches, corpus
    shard x attack pairs, evaluation cells); ``allowed`` comes from
    :func:`shared.pipeline.inflight.batches_allowed`. Units the job had
    before this producer started (a resumed job) are counted from its meta
    when ``from_meta`` (``expected - done``), else only what this producer sent.
    """

    def __init__(self, client: redis.Redis, job: str, allowed: int, *, from_meta: bool = False,
                 on_wait: Callable[[], None] | None = None, poll_s: float = 0.2, stall_timeout_s: float | None = None):
        self.client, self.job, self.allowed, self.from_meta = client, job, allowed, from_meta
        self.pipe = Pipeline(client)
        self.on_wait, self.poll_s, self.stall_timeout_s = on_wait, poll_s, stall_timeout_s
        self.sent = 0
        self.done_before = self._counts()[1]
        self.checked_workers = False  # whether it has looked for a live worker (the first time it had to wait)

    def _counts(self) -> tuple[int, int]:
        with followed(self.job):
            return self.pipe.counts(self.job)

    def _pending(self, expected: int, done: int) -> int:
        return expected - done if self.from_meta else self.sent - (done - self.done_before)

    def wait_for_room(self, units: int) -> None:
        """Block until ``units`` more fit (a job with nothing unfinished always gets its next batch).

        Raises
        ------
        JobFailed
            If no unit finishes for ``stall_timeout_s`` while it waits (the
            message says what the queues hold); the job stays resumable.
        """
        last, since = None, time.monotonic()
        while True:
            expected, done = self._counts()
            pending = self._pending(expected, done)
            if pending <= 0 or pending + units <= self.allowed:
                return
            if not self.checked_workers:
                self.checked_workers = True
                warn_if_no_worker(self.client, self.job)
            if pending != last:
                last, since = pending, time.monotonic()
            elif self.stall_timeout_s is not None and time.monotonic() - since > self.stall_timeout_s:
                raise JobFailed(stall_message(self.client, self.job, {"done": done, "expected": expected},
                                              self.stall_timeout_s))
            if self.on_wait:
                self.on_wait()
            time.sleep(self.poll_s)

    def sent_units(self, units: int) -> None:
        self.sent += units


def submit(client: redis.Redis, app, plan: dict, image_set: ImageSet, settings: Settings,
           on_wait: Callable[[], None] | None = None, *, data: str = "") -> str:
    """Create the job and enqueue its batches, keeping at most ``WAVESHIELD_IN_FLIGHT_MIB`` of blobs unfinished.

    ``data`` names the image set in the job, for its report.
    """
    if image_set.labels is None:
        raise ValueError("evaluation needs labelled images")
    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    job = when_room(client, settings, lambda: pipe.create_job(plan, np.asarray(image_set.labels), data=data,
                                                              unreadable=len(image_set.errors)), on_wait)
    size = int(plan.get("batch_size", DEFAULT_BATCH_SIZE))
    cells = len(plan["attacks"]) * len(plan["configurations"])
    peak = evaluate_batch_bytes(plan, min(size, len(image_set)), image_set.images.itemsize, image_set.images.shape[1:3])
    if peak > settings.in_flight_mib * 2 ** 20:
        log.warning("one batch of %d holds up to %.0f MiB of blobs at its peak, over WAVESHIELD_IN_FLIGHT_MIB (%d): "
                    "batches go one at a time; a smaller batch_size keeps it under", size, peak / 2 ** 20,
                    settings.in_flight_mib)
    throttle = Throttle(client, job, batches_allowed(peak, settings.in_flight_mib) * cells, on_wait=on_wait,
                        stall_timeout_s=settings.stall_timeout_s)  # no worker: give up in one line, as wait does
    for b, batch in enumerate(iter_batches(len(image_set), size)):
        throttle.wait_for_room(cells)
        store_batch(client, app, settings, peak, lambda: pipe.add_batch(job, b, image_set.images[batch]), job,
                    on_wait)
        throttle.sent_units(cells)
    return job


def when_room(client: redis.Redis, settings: Settings, do: Callable, on_wait: Callable[[], None] | None = None):
    """``do()``, a producer's write, tried again while a full Redis refuses it (saying so every 30 s)."""
    return while_full(do, client, say=log.warning, give_up_s=settings.stall_timeout_s, on_wait=on_wait)


def store_batch(client: redis.Redis, app, settings: Settings, peak: int, store: Callable[[], list], job: str,
                on_wait: Callable[[], None] | None = None) -> None:
    """Store a batch (``store()`` returns its messages) once its ``peak`` bytes fit under Redis's maxmemory, and
    send its messages; a write that a full Redis refuses all the same is tried again (storing is idempotent).

    Raises
    ------
    shared.store.client.RedisFull
        If Redis stays full for ``WAVESHIELD_STALL_TIMEOUT``.
    """
    wait_for_room(client, peak, say=log.warning, give_up_s=settings.stall_timeout_s, on_wait=on_wait)
    with followed(job):
        messages = when_room(client, settings, store, on_wait)
    when_room(client, settings, lambda: send(app, messages), on_wait)


def wait(client: redis.Redis, job: str, progress: Callable[[dict], None] | None = None, poll_s: float = 0.5,
         timeout_s: float | None = None, stall_timeout_s: float = 600, *, app=None,
         redrive_after_s: float = 30) -> dict:
    """Block until the job is complete; return its final progress.

    Parameters
    ----------
    app : celery.Celery, optional
        Given, a job that makes no progress while no message is queued or held
        by a worker (over all jobs) for ``redrive_after_s`` has lost messages
        (a Redis crash at the wrong moment): its unfinished units are re-sent
        through ``app``, once per stall, and each stage skips what it had
        already done.
    redrive_after_s : float
        How long nothing may be in flight before re-sending.

    A job not yet complete when it starts waiting, with no worker alive, gets
    a warning at once (:func:`warn_if_no_worker`).

    Raises
    ------
    JobFailed
        If the job disappears from Redis, or makes no progress for ``stall_timeout_s``.
    TimeoutError
        If ``timeout_s`` is given and the job is not complete by then.
    """
    pipe = Pipeline(client)
    checked_workers = False
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_done, last_change = -1, time.monotonic()
    idle_since = None  # since when nothing has been in flight while the job stood still
    may_redrive = True  # once per stall: a unit that fails every time is left to the stall timeout
    while True:
        with followed(job):
            state = pipe.progress(job)
        if progress:
            progress(state)
        if state["status"] == "complete":
            return state
        if not checked_workers:
            checked_workers = True
            warn_if_no_worker(client, job)
        now = time.monotonic()
        progressed = state["done"] != last_done
        if progressed:
            last_done, last_change, idle_since, may_redrive = state["done"], now, None, True
        elif now - last_change > stall_timeout_s:
            raise JobFailed(stall_message(client, job, state, stall_timeout_s))
        if app is not None and may_redrive and not progressed:  # look at the queues only while it stands still
            idle_since = None if pipe.in_flight() else (idle_since or now)
            if idle_since is not None and now - idle_since >= redrive_after_s:
                redrive(pipe, app, job)
                idle_since, may_redrive = None, False
        if deadline is not None and now > deadline:
            raise TimeoutError(f"job {job} not complete after {timeout_s} s ({state['done']}/{state['expected']} cells)")
        time.sleep(poll_s)


def stall_message(client: redis.Redis, job: str, state: dict, stall_timeout_s: float) -> str:
    """One line: what the queues held when the job stood still, and what to do about it."""
    counts = orphans.census(client)
    idle = [q for q, c in counts.items() if c["workers"] == 0 and (c["queued"] or c["unacked"])]
    if not any(c["workers"] for c in counts.values()):
        hint = NO_WORKER
    elif idle:
        hint = f"no worker consumes {', '.join(idle)}: start one (celery -A workers worker -Q {idle[0]})"
    else:
        hint = f"every queue with work has a worker; re-send the job's unfinished work: waveshield resume {job}"
    return (f"job {job} made no progress for {stall_timeout_s:.0f} s ({state['done']}/{state['expected']} done); "
            f"queues: {orphans.describe_census(counts)}; {hint}")


def redrive(pipe: Pipeline, app, job: str) -> list:
    """Re-send the first message of every unfinished unit of ``job``; return those messages.

    Safe at any time: a stage that already finished only passes its messages
    on, and collectors record each result once. Work still in flight may run
    twice, so :func:`wait` calls this only when nothing is in flight.
    """
    with followed(job):
        messages = pipe.unfinished(job)
    if messages:
        pipe.note_redrive(job, messages)
        send(app, messages)
        log.warning("job %s: nothing in flight and %d unit(s) unfinished (messages lost, e.g. in a Redis crash); "
                    "re-sent: %s", job, len(messages), describe(messages))
    return messages
