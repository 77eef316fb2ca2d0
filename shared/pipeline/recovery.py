"""Re-driving a stalled job: the first message of every unit whose results never arrived.

Celery's Redis transport pops a message (BRPOP) before it writes it to its
``unacked`` hash, on another connection. A Redis crash between the two loses
that message: neither the queue nor the visibility-timeout sweep has it any
more, and its job stalls a few cells short. Every stage is idempotent (a
finished stage only re-sends its messages; collectors record each result
once), so re-sending the first message of each unfinished unit (a batch's
attack, a fused batch, a screening batch, a corpus shard) walks the chain
again: finished stages are skipped and the lost hop is redone.
"""

from __future__ import annotations

import json

from ..plans import FUSED, configuration_id
from .base import JobStore
from .keys import QUEUES, job_key
from .orphans import UNACKED_KEY


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
        KeyError
            If the job is not in Redis.
        """
        plan = self.plan(job)
        meta = self.redis.hgetall(job_key(job, "meta"))
        if meta.get(b"status") == b"complete":
            return []
        # Only what a producer stored: a job whose producer is still sending (or was stopped) has batches
        # that were never stored, and their messages would find no images.
        batches = int(meta.get(b"fed", meta[b"batches"]))
        kind = plan.get("kind", "evaluate")
        recorded = {k.decode() for k in self.redis.hkeys(job_key(job, "records" if kind == "screen" else "cells"))}
        if kind == "screen":
            first = "screen_fused" if plan.get("mode") == FUSED else "screen_dwt"
            return [(first, {"job": job, "batch": b}) for b in range(batches) if str(b) not in recorded]
        if kind == "corpus":
            return [("corpus_attack", {"job": job, "shard": s, "attack": a})
                    for s, a in plan["todo"] if f"{s}|{a}" not in recorded and s < batches]
        configs = [configuration_id(c) for c in plan["configurations"]]
        missing = [(b, a) for b in range(batches) for a in range(len(plan["attacks"]))
                   if any(f"{b}|{a}|{c}" not in recorded for c in configs)]
        if plan.get("mode") == FUSED:
            return [("fused", {"job": job, "batch": b}) for b in sorted({b for b, _ in missing})]
        return [("attack", {"job": job, "batch": b, "attack": a}) for b, a in missing]

    def note_redrive(self, job: str, messages: list) -> None:
        """Count the re-sent units in the job's meta (``redriven``), for progress and the report."""
        self.redis.hincrby(job_key(job, "meta"), "redriven", len(messages))


def describe(messages: list) -> str:
    """One line naming re-sent messages, e.g. ``attack {"batch": 1, "attack": 3}``."""
    return "; ".join(f"{name} {json.dumps({k: v for k, v in kw.items() if k != 'job'})}" for name, kw in messages)
