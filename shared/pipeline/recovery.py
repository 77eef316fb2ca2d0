"""Re-driving a stalled job: the first message of every unit whose results never arrived.

Celery's Redis transport pops a message (BRPOP) before it writes it to its
``unacked`` hash, on another connection. A Redis crash between the two loses
that message: neither the queue nor the visibility-timeout sweep has it any
more, and its job stalls a few cells short. Every stage is idempotent (a
finished stage only re-sends its messages; collectors record each result
once), so re-sending the first message of each unfinished unit (a batch's
attack, a fused batch, a screening batch, a corpus shard) walks the chain
again: finished stages are skipped and the lost hop is redone. Each job
kind's module says which of its units are unfinished
(``unfinished_<kind>(job, plan, stored)``).
"""

from __future__ import annotations

import json

from shared.pipeline.base import JobStore
from shared.pipeline.keys import QUEUES, job_key
from shared.pipeline.orphans import UNACKED_KEY


class Recovery(JobStore):
    """Find and count the unfinished work of a job."""

    def in_flight(self) -> int:
        """Messages waiting in a queue or held by a worker (delivered, not acknowledged), over all jobs."""
        pipe = self.redis.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
        pipe.hlen(UNACKED_KEY)
        return sum(int(n) for n in pipe.execute())

    def unfinished(self, job: str) -> list:
        """The first-stage messages of every unit of ``job`` whose results are not all recorded.

        Raises
        ------
        shared.pipeline.meta.JobNotFound
            If the job is not in Redis.
        """
        plan = self.plan(job)
        meta = self.redis.hgetall(job_key(job, "meta"))
        if meta.get(b"status") == b"complete":
            return []
        # Only what a producer stored: a job whose producer is still sending (or was stopped) has batches
        # that were never stored, and their messages would find no images.
        stored = int(meta.get(b"fed", meta[b"batches"]))
        # Each job kind answers for its own units: ``unfinished_<kind>`` in its module.
        return getattr(self, f"unfinished_{plan.get('kind', 'evaluate')}")(job, plan, stored)

    def note_redrive(self, job: str, messages: list) -> None:
        """Count the re-sent units in the job's meta (``redriven``), for progress and the report."""
        self.redis.hincrby(job_key(job, "meta"), "redriven", len(messages))


def describe(messages: list) -> str:
    """One line naming re-sent messages, e.g. ``attack {"batch": 1, "attack": 3}``."""
    return "; ".join(f"{name} {json.dumps({k: v for k, v in kw.items() if k != 'job'})}" for name, kw in messages)
