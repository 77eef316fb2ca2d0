"""What every job kind's stages share: the plan, done-markers, progress, traffic, redelivery counts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from shared.pipeline.keys import KEEP_ERRORS, KEEP_JOB_S, deliveries_key, job_key
from shared.pipeline.meta import JobMeta, JobNotFound
from shared.pipeline.scripts import (
    _COLLECT,
    _CORPUS_COLLECT,
    _CORPUS_COMPLETE,
    _NOTE_FED,
    _SCREEN_COLLECT,
    _SCREEN_SEAL,
)
from shared.store.blobs import BlobStore


class JobStore(JobMeta):
    """A job's plan, markers and counts in one Redis; the base of every job kind's stages.

    The parameters are :class:`shared.pipeline.Pipeline`'s.
    """

    def __init__(self, redis, *, get_model: Callable | None = None, defence_options: Callable | None = None,
                 get_detector: Callable | None = None, device: str = "cpu", blob_ttl_s: int = 86400,
                 keep_errors: int = KEEP_ERRORS):
        self.redis = redis
        self.keep_errors = keep_errors
        self.get_detector = get_detector
        self.blobs = BlobStore(redis, blob_ttl_s)
        self.get_model = get_model
        self.defence_options = defence_options
        self.device = device
        self._collect = redis.register_script(_COLLECT)
        self._screen_collect = redis.register_script(_SCREEN_COLLECT)
        self._corpus_collect = redis.register_script(_CORPUS_COLLECT)
        self._corpus_complete = redis.register_script(_CORPUS_COMPLETE)
        self._screen_seal = redis.register_script(_SCREEN_SEAL)
        self._note_fed = redis.register_script(_NOTE_FED)

    def plan(self, job: str) -> dict:
        raw = self.redis.get(job_key(job, "plan"))
        if raw is None:
            raise JobNotFound(job)
        return json.loads(raw)

    def labels(self, job: str, batch: int):
        """A batch's labels as a tensor on the stages' device."""
        import torch

        return torch.tensor(json.loads(self.redis.hget(job_key(job, "labels"), batch)), device=self.device)

    def _done(self, marker: str) -> bool:
        return bool(self.redis.exists(marker))

    def _sent_before(self, marker: str) -> list | None:
        """The messages a finished stage sent (it is being redelivered), or None on its first run."""
        if not self._done(marker):
            return None
        cached = self.redis.get(marker + ":messages")
        return json.loads(cached) if cached else []

    def _finish(self, marker: str, input_key: str, consumer: str, messages: list, *, remember: bool = False) -> list:
        """Set the stage's done-marker (keeping its messages for a redelivery if ``remember``), release its input."""
        if remember:
            self.redis.set(marker + ":messages", json.dumps(messages), ex=KEEP_JOB_S)
        self.redis.set(marker, 1, ex=KEEP_JOB_S)
        self.blobs.release(input_key, consumer)
        return messages

    def note_fed(self, job: str, batch: int) -> None:
        """Count batch ``batch`` as stored (``fed``): recovery re-sends only batches a producer stored."""
        self._note_fed(keys=[job_key(job, "meta")], args=[batch + 1])

    def record_error(self, job: str, where: str, reason: str) -> None:
        """Note a stage that gave up (bad input, too many redeliveries): the first ``keep_errors`` are kept,
        the meta's ``errors`` counts them all (so a job that fails at every batch stays a few KiB)."""
        if not self.redis.exists(job_key(job, "meta")):
            return  # a late message of a job that is gone: nothing to note it in
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(job_key(job, "errors"), json.dumps({"where": where, "reason": reason, "at": time.time()}))
        pipe.ltrim(job_key(job, "errors"), 0, self.keep_errors - 1)
        pipe.hincrby(job_key(job, "meta"), "errors", 1)
        pipe.execute()

    def progress(self, job: str) -> dict:
        """Cells done and expected, images/s, status, errors."""
        meta = {k.decode(): v.decode() for k, v in self.redis.hgetall(job_key(job, "meta")).items()}
        if "started" not in meta:  # none, or a stray field written after Redis lost the job (a heartbeat)
            raise JobNotFound(job)
        done, expected = int(meta["done"]), int(meta["expected"])
        elapsed = float(meta.get("finished", time.time())) - float(meta["started"])
        images_done = (int(meta["screened"]) if "screened" in meta else
                       int(meta["images"]) * done / expected if expected else 0)
        errors = [json.loads(e) for e in self.redis.lrange(job_key(job, "errors"), 0, -1)]
        state = {"job": job, "status": meta["status"], "done": done, "expected": expected, "images": int(meta["images"]),
                 "images_per_s": images_done / elapsed if elapsed > 0 else 0.0, "seconds": elapsed, "errors": errors,
                 "redriven": int(meta.get("redriven", 0)), "ingesting": "ingesting" in meta,
                 "errors_total": int(meta.get("errors", len(errors)))}
        if "screened" in meta:  # a screening job: items read (so far), images enqueued and screened
            state.update(read=int(meta["images"]), enqueued=int(meta["enqueued"]), screened=int(meta["screened"]))
        return state

    def traffic(self, job: str) -> dict[str, dict[str, int]]:
        """Blob bytes each stage of a job wrote to Redis (``in``) and read from it (``out``)."""
        out: dict[str, dict[str, int]] = {}
        for field, value in self.redis.hgetall(job_key(job, "traffic")).items():
            stage, direction = field.decode().rsplit(":", 1)
            out.setdefault(stage, {"in": 0, "out": 0})[direction] = int(value)
        return out

    def deliveries(self, task_id: str) -> int:
        """Count one more delivery of a task (for the redelivery cap)."""
        key = deliveries_key(task_id)
        count = self.redis.incr(key)
        self.redis.expire(key, KEEP_JOB_S)
        return int(count)
