"""Put an evaluation on the queues and follow it: backpressure, progress, the report from Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import redis

from shared.data import ImageSet
from shared.pipeline import TASK_QUEUES, Pipeline
from shared.settings import Settings

QUEUES = ("attack", "dwt", "classify", "collect")


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
        send(app, pipe.add_batch(job, b, image_set.images[start:start + size]))
    return job


def wait(client: redis.Redis, job: str, progress: Callable[[dict], None] | None = None, poll_s: float = 0.5,
         timeout_s: float | None = None) -> dict:
    """Block until the job is complete; return its final progress."""
    pipe = Pipeline(client)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = pipe.progress(job)
        if progress:
            progress(state)
        if state["status"] == "complete":
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job} not complete after {timeout_s} s ({state['done']}/{state['expected']} cells)")
        time.sleep(poll_s)
