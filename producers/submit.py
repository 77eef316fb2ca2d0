"""Put an evaluation on the queues and follow it: backpressure, progress, the report from Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import redis

from shared.data import ImageSet
from shared.pipeline import QUEUES, TASK_QUEUES, Pipeline
from shared.settings import Settings


class JobFailed(RuntimeError):
    """A followed job cannot finish; the message says why and what to do (one line)."""


def vanished(job: str) -> JobFailed:
    return JobFailed(f"job {job} is gone from Redis (restarted without persistence, or flushed) and will never "
                     "finish; run the same command again to resubmit it")


def queue_lengths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each queue (Celery's Redis transport keeps a list per queue)."""
    return {q: int(client.llen(q)) for q in QUEUES}


def send(app, messages) -> None:
    for name, kwargs in messages:
        app.send_task(f"waveshield.{name}", kwargs=kwargs, queue=TASK_QUEUES[name])


def submit(client: redis.Redis, app, plan: dict, image_set: ImageSet, settings: Settings,
           on_wait: Callable[[], None] | None = None) -> str:
    """Create the job and enqueue its batches, waiting while the attack queue is over the high-water mark."""
    if image_set.labels is None:
        raise ValueError("evaluation needs labelled images")
    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    job = pipe.create_job(plan, np.asarray(image_set.labels))
    size = int(plan.get("batch_size", 250))
    per_batch = len(plan["attacks"])
    for b, start in enumerate(range(0, len(image_set), size)):
        while client.llen("attack") > settings.high_water * per_batch:  # backpressure
            if on_wait:
                on_wait()
            time.sleep(0.2)
        try:
            messages = pipe.add_batch(job, b, image_set.images[start:start + size])
        except KeyError:  # the plan went with a Redis that lost its data
            raise vanished(job) from None
        send(app, messages)
    return job


def wait(client: redis.Redis, job: str, progress: Callable[[dict], None] | None = None, poll_s: float = 0.5,
         timeout_s: float | None = None, stall_timeout_s: float = 600) -> dict:
    """Block until the job is complete; return its final progress.

    Raises
    ------
    JobFailed
        If the job disappears from Redis, or makes no progress for ``stall_timeout_s``.
    TimeoutError
        If ``timeout_s`` is given and the job is not complete by then.
    """
    pipe = Pipeline(client)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_done, last_change = -1, time.monotonic()
    while True:
        try:
            state = pipe.progress(job)
        except KeyError:
            raise vanished(job) from None
        if progress:
            progress(state)
        if state["status"] == "complete":
            return state
        now = time.monotonic()
        if state["done"] != last_done:
            last_done, last_change = state["done"], now
        elif now - last_change > stall_timeout_s:
            raise JobFailed(f"job {job} made no progress for {stall_timeout_s:.0f} s ({state['done']}/{state['expected']}"
                            " done); are workers running for every queue? (waveshield status)")
        if deadline is not None and now > deadline:
            raise TimeoutError(f"job {job} not complete after {timeout_s} s ({state['done']}/{state['expected']} cells)")
        time.sleep(poll_s)
