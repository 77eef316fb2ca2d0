"""The Celery application and every setting that matters, each with its reason."""

from celery import Celery

from shared import settings
from shared.pipeline import TASK_QUEUES
from shared.pipeline.keys import task_name

from .runtime import broker_url
from .sweeper import Sweeper

_cfg = settings.load()

app = Celery("waveshield", broker=broker_url(), include=["workers.tasks"])
app.conf.update(
    # JSON only: a pickled message could run code on the worker, so it is refused.
    task_serializer="json", accept_content=["json"], result_serializer="json",
    # Stages route themselves and counts live in Redis: no result backend to fill.
    task_ignore_result=True,
    # Ack after the work, one message at a time: a killed worker's task is redelivered, not lost.
    task_acks_late=True, worker_prefetch_multiplier=1, task_reject_on_worker_lost=True,
    # The transport's own backstop: an unacked message comes back after this (our sweep, below,
    # hands out stranded ones within a minute); the same value wherever Celery reads it.
    broker_transport_options={"visibility_timeout": _cfg.visibility_timeout_s,
                              "unacked_restore_interval": max(1, min(10, _cfg.visibility_timeout_s // 4)),
                              "unacked_restore_throttle": 1},
    # A stuck task is stopped (soft first, so it can log) instead of holding its queue.
    task_soft_time_limit=int(_cfg.task_time_limit_s * 0.9), task_time_limit=_cfg.task_time_limit_s,
    # On a lost broker connection, running tasks are cancelled and redelivered, not finished twice.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # One process per worker: each holds its models once; the parent never loads torch models or CUDA.
    worker_pool="prefork", worker_concurrency=1,
    # Loading models happens lazily inside the task, not at process start, so the start check never times out.
    worker_proc_alive_timeout=60,
    task_default_queue="collect", task_create_missing_queues=True,
    task_routes={task_name(stage): {"queue": queue} for stage, queue in TASK_QUEUES.items()},
    # Events feed Flower and `waveshield status`.
    worker_send_task_events=True, task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    # A message sent while Redis is away is retried across the same window as every other
    # Redis command (backoff 0, 0.5, 1, 1.5, then 2 s a try).
    task_publish_retry=True,
    task_publish_retry_policy={"max_retries": _cfg.redis_retry_s // 2 + 3, "interval_start": 0,
                               "interval_step": 0.5, "interval_max": 2},
    # On shutdown, a running task gets this long to finish before it is handed back to the queue
    # (docker-compose's stop_grace_period is longer).
    worker_soft_shutdown_timeout=60.0,
)
# A message stranded by a lost connection or a dead worker goes out again within a minute
# (workers/sweeper.py), not after the visibility timeout.
app.steps["consumer"].add(Sweeper)


def use_broker(url: str) -> None:
    """Point this process's app at the Redis at ``url``, forgetting connections to an earlier one.

    Celery caches its connection and producer pools on first use; a process
    (a test session, say) that moves to another Redis must drop them.
    """
    if app.conf.broker_url == url:
        return
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None
