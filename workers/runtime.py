"""Per-process state of a worker: one Pipeline, models loaded lazily once, message routing."""

from __future__ import annotations

import functools
import logging

import redis
from celery.exceptions import Reject

from shared import settings
from shared.dwt import defences
from shared.models.store import ModelStore
from shared.pipeline import TASK_QUEUES, Pipeline
from shared.pipeline.keys import task_name
from shared.pipeline.meta import JobNotFound
from shared.pipeline.orphans import Lease
from shared.store.client import CONNECTION_ERRORS, RedisFull, connect, while_full

log = logging.getLogger("waveshield.worker")


def broker_url() -> str:
    return settings.load().redis_url or "redis://127.0.0.1:6379/0"


@functools.lru_cache(maxsize=1)
def pipeline() -> Pipeline:
    """This process's Pipeline (created in the pool child, where CUDA may be used)."""
    from shared.evaluation.run import deterministic_kernels  # torch: in the worker's pool child, not in producers

    cfg = settings.load()
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    device = settings.resolve_device(cfg.device)
    deterministic_kernels()
    client = connect(broker_url(), cfg.redis_retry_s)

    store = ModelStore(cfg.weights_dir, device, cfg.models_dir)
    return Pipeline(client, get_model=store.get, defence_options=lambda name: defences.get(name, cfg.weights_dir),
                    get_detector=store.detector, device=device, blob_ttl_s=cfg.blob_ttl_s,
                    keep_errors=cfg.keep_errors)


@functools.lru_cache(maxsize=1)
def quick_client() -> redis.Redis:
    """A client that fails fast instead of riding out an outage: for renewing leases and heartbeats."""
    return redis.Redis.from_url(broker_url(), socket_timeout=5, socket_connect_timeout=2)


def run_stage(task, stage: str, **kwargs) -> None:
    """Run one stage for a task under its lease, send the messages it returns; give up after too many deliveries.

    A stage whose writes a full Redis refuses runs again (it is idempotent)
    until there is room; after ``WAVESHIELD_STALL_TIMEOUT`` its message goes
    back unacknowledged. A message of a job that is gone is dropped.
    """
    pipe = pipeline()
    cfg = settings.load()

    def when_room(do):
        return while_full(do, pipe.redis, give_up_s=cfg.stall_timeout_s,
                          say=lambda line: log.warning("%s %s: %s", stage, kwargs, line))

    lease = Lease(pipe.redis, task.request.id, renew_client=quick_client())  # while it runs, no sweep hands it out
    try:
        when_room(lease.__enter__)
        try:
            if when_room(lambda: pipe.deliveries(task.request.id)) > cfg.max_deliveries:
                when_room(lambda: pipe.record_error(kwargs["job"], f"{stage} {kwargs}",
                                                    "dropped after too many redeliveries"))
                return
            messages = when_room(lambda: getattr(pipe, stage)(**kwargs))
        finally:
            lease.__exit__(None, None, None)
    except CONNECTION_ERRORS as exc:  # Redis gone for longer than the retry window: hand the task back
        raise Reject(f"Redis unreachable: {exc}", requeue=True) from exc
    except (RedisFull, redis.exceptions.OutOfMemoryError) as exc:  # no room: not acknowledged, so not lost
        raise Reject(str(exc), requeue=True) from exc
    except JobNotFound as exc:  # finished and forgotten, or lost with a Redis that kept nothing: nothing to do
        log.info("%s %s: %s; message dropped", stage, kwargs, exc)
        return

    def send() -> None:  # sent again whole if a full Redis refuses one: a duplicate message changes nothing
        for name, message in messages if isinstance(messages, list) else []:
            task.app.send_task(task_name(name), kwargs=message, queue=TASK_QUEUES[name])

    try:
        when_room(send)
    except RedisFull as exc:
        raise Reject(str(exc), requeue=True) from exc
