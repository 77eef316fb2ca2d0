"""Every queue's tasks: one per pipeline stage, named ``waveshield.STAGE``, on the queue ``TASK_QUEUES`` gives it.

A task only hands its message's arguments to the stage of the same name
(:func:`.runtime.run_stage`), which fetches blobs, computes, stores and
sends the next messages. ``celery -A workers worker -Q attack`` serves the
tasks routed to ``attack``; every worker knows them all.
"""

from shared import settings
from shared.pipeline import TASK_QUEUES
from shared.pipeline.keys import task_name

from .app import app
from .runtime import run_stage


def _worker_arguments(stage: str) -> dict:
    # The collector's own output directory: it is a corpus's single writer, and writes the records of a
    # screening job nobody follows (shared/pipeline/durable.py).
    return {"output_dir": settings.load().output_dir} if stage in ("corpus_collect", "screen_collect") else {}


def _task(stage: str):
    def task(self, **message) -> None:
        run_stage(self, stage, **message, **_worker_arguments(stage))

    task.__name__ = task.__qualname__ = stage
    task.__doc__ = f"{TASK_QUEUES[stage]} queue: :meth:`shared.pipeline.Pipeline.{stage}` of one message."
    return app.task(name=task_name(stage), bind=True)(task)


#: Stage name -> its Celery task.
TASKS = {stage: _task(stage) for stage in TASK_QUEUES}
