"""Screening jobs: DWT -> both classifications -> records (staged), or one fused task per batch."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import numpy as np

from shared.evaluation.plan import FUSED
from shared.images.image_set import to_float_nchw
from shared.pipeline.base import JobStore
from shared.pipeline.keys import (
    JOBS_KEY,
    KEEP_JOB_S,
    SCREEN_JOB_PARTS,
    clean_key,
    job_key,
    reconstructed_key,
    records_key,
    stage_done_key,
    writer_key,
)
from shared.screening import verdicts
from shared.store.blobs import BlobMissing


class ScreenStages(JobStore):
    """The stages of a screening job."""

    def open_screen_job(self, settings: dict, classes: list[str], *, job: str | None = None,
                        writer: str | None = None) -> str:
        """Store a screening job that chunks will be added to (:meth:`add_screen_chunk`) until it is sealed.

        While it is open (``ingesting`` in its meta) it cannot complete, however
        many of its batches are done; :meth:`seal_screen_job` closes it.
        ``writer`` takes the job's writer lease from the start
        (:mod:`shared.pipeline.durable`): the process that will read its records.
        """
        from shared.pipeline.durable import LEASE_S

        job = job or uuid.uuid4().hex[:12]
        pipe = self.redis.pipeline()
        if writer:
            pipe.set(writer_key(job), writer, ex=LEASE_S)
        pipe.set(job_key(job, "plan"), json.dumps({"kind": "screen", **settings, "classes": list(classes)}))
        pipe.hset(job_key(job, "meta"), mapping={
            "expected": 0, "done": 0, "images": 0, "batches": 0, "enqueued": 0, "screened": 0, "ingesting": 1,
            "started": time.time(), "status": "running"})
        pipe.zadd(JOBS_KEY, {job: time.time()})
        pipe.execute()
        return job

    def add_screen_chunk(self, job: str, batch: int, ids: list[str], images: np.ndarray,
                         errors: list[dict], error_at: list[int] | None = None) -> list:
        """Add chunk ``batch`` of an open job: its images to screen and the records of its unreadable items.

        The chunk is counted in one step (ids, error records with their
        places among the chunk's items, ``error_at``, ``batches`` and
        ``images``), so an interrupted intake resumes after the last chunk
        counted. Returns the batch's first message (none for a chunk with no
        readable image: its records are complete at once).
        """
        counted = int(self.redis.hget(job_key(job, "meta"), "batches") or -1)
        if not len(ids) and batch == counted - 1 and not self.redis.getbit(job_key(job, "collected"), batch):
            # Counted, but a full Redis refused its collection: an empty chunk's records are complete at once.
            self._collect_screen_records(job, batch, "[]")
            return []
        if batch != counted:
            raise ValueError(f"job {job}: chunk {batch} added where chunk {counted} is next"
                             + (" (another producer is feeding this job)" if batch < counted else ""))
        messages = self.add_screen_batch(job, batch, images) if len(ids) else []
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job_key(job, "ids"), batch, json.dumps(ids))
        if errors:
            pipe.hset(job_key(job, "records"), f"e{batch}", json.dumps({"records": errors, "at": error_at}))
        pipe.hincrby(job_key(job, "meta"), "images", len(ids) + len(errors))
        pipe.hincrby(job_key(job, "meta"), "enqueued", len(ids))
        pipe.hincrby(job_key(job, "meta"), "expected", 1)
        pipe.hset(job_key(job, "meta"), "batches", batch + 1)
        pipe.execute()
        if not len(ids):
            self._collect_screen_records(job, batch, "[]")
        return messages

    def seal_screen_job(self, job: str) -> bool:
        """Close an open job: every chunk is added. Return True if that completed it (all its batches done)."""
        return bool(self._screen_seal(keys=self._screen_job_keys(job), args=[time.time(), KEEP_JOB_S]))

    def create_screen_job(self, settings: dict, batch_ids: list[list[str]], errors: list[dict], classes: list[str],
                          *, job: str | None = None) -> str:
        """A sealed screening job whose batches' ids are all known (blobs to add with :meth:`add_screen_batch`)."""
        job = self.open_screen_job(settings, classes, job=job)
        pipe = self.redis.pipeline(transaction=True)
        for b, ids in enumerate(batch_ids):
            pipe.hset(job_key(job, "ids"), b, json.dumps(ids))
        if errors:
            pipe.hset(job_key(job, "records"), "errors", json.dumps(errors))
        pipe.hset(job_key(job, "meta"), mapping={"expected": len(batch_ids), "batches": len(batch_ids),
                                                 "images": sum(map(len, batch_ids)) + len(errors),
                                                 "enqueued": sum(map(len, batch_ids))})
        pipe.execute()
        self.seal_screen_job(job)
        return job

    def add_screen_batch(self, job: str, batch: int, images: np.ndarray) -> list:
        """Store one batch of NHWC images (uint8 or float32) to screen; return its first message."""
        if self.plan(job).get("mode") == FUSED:
            self.blobs.put(clean_key(job, batch), images, ["screen_fused"], stage="producer")
            return [("screen_fused", {"job": job, "batch": batch})]
        self.blobs.put(clean_key(job, batch), images, ["screen_dwt", "screen_classify"], stage="producer")
        return [("screen_dwt", {"job": job, "batch": batch})]

    def screen_fused(self, job: str, batch: int) -> list:
        """DWT and both classifications of a screening batch in this process; only its records go on."""
        plan = self.plan(job)  # first: a message of a job that is gone (forgotten, expired) stops here
        if not self._stage_done(job, "screen_fused", batch):
            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="screen_fused"), self.device)
            self._score_batch(job, batch, plan, x)
        return self._finish_stage(job, "screen_fused", batch, clean_key(job, batch),
                                  [("screen_collect", {"job": job, "batch": batch})])

    def _score_batch(self, job: str, batch: int, plan: dict, x, rec=None) -> None:
        """The records of one screening batch (``x`` and ``rec`` tensors), kept for the collector."""
        from shared.images.coarse import coarse_statistics

        p_raw, p_def, suspicion, signals = verdicts.screen_batch(plan, x, self.get_model, self.defence_options,
                                                                  self.get_detector, reconstructed=rec)
        ids = json.loads(self.redis.hget(job_key(job, "ids"), batch))
        found = verdicts.records(ids, p_raw, p_def, suspicion, plan["threshold"], plan["classes"], signals,
                                  coarse_statistics(x))
        # Until the collector counts them (and deletes this key); a blob's lifetime if it never does.
        self.redis.set(records_key(job, batch), json.dumps(found), ex=self.blobs.ttl_s)

    def _stage_done(self, job: str, stage: str, batch: int) -> bool:
        """Whether ``stage`` already ran for ``batch`` (a redelivered message then only re-sends its messages)."""
        return bool(self.redis.getbit(stage_done_key(job, stage), batch))

    def _finish_stage(self, job: str, stage: str, batch: int, input_key: str, messages: list) -> list:
        """Set the stage's bit for ``batch`` and release its input; return ``messages``.

        One bit a batch, kept as long as the job (:data:`KEEP_JOB_S` after it
        finishes): a redelivered message finds it however late it comes, and a
        message of a job that is gone finds no plan and stops.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.setbit(stage_done_key(job, stage), batch, 1)
        pipe.expire(stage_done_key(job, stage), KEEP_JOB_S)
        pipe.execute()
        self.blobs.release(input_key, stage)
        return messages

    def screen_dwt(self, job: str, batch: int) -> list:
        """Reconstruct a screening batch with the job's defence."""
        messages = [("screen_classify", {"job": job, "batch": batch})]
        plan = self.plan(job)
        if not self._stage_done(job, "screen_dwt", batch):
            from shared.evaluation.run import defend

            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="screen_dwt"), self.device)
            rec = defend(x, self.defence_options(plan["defence"]))
            self.blobs.put(reconstructed_key(job, batch, 0, plan["defence"]), rec.cpu().numpy(), ["screen_classify"],
                           stage="screen_dwt")
        return self._finish_stage(job, "screen_dwt", batch, clean_key(job, batch), messages)

    def screen_classify(self, job: str, batch: int) -> list:
        """Both paths (raw standard, reconstructed defended) and the records of one batch."""
        plan = self.plan(job)
        rec_key = reconstructed_key(job, batch, 0, plan["defence"])
        if not self._stage_done(job, "screen_classify", batch):
            import torch

            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="screen_classify"), self.device)
            rec = torch.from_numpy(self.blobs.get(rec_key, stage="screen_classify")).to(self.device)
            self._score_batch(job, batch, plan, x, rec)
        messages = self._finish_stage(job, "screen_classify", batch, clean_key(job, batch),
                                      [("screen_collect", {"job": job, "batch": batch})])
        # After the stage's bit: run again before it (a full Redis refused the bit), it still finds its input.
        self.blobs.release(rec_key, "screen_classify")
        return messages

    def screen_collect(self, job: str, batch: int, output_dir=None) -> bool:
        """Count a batch's records into the job exactly once; a sealed job completes with its last batch.

        The records wait in the job's ``records`` hash until a follower (or,
        for a job nobody follows, this collector into ``output_dir``) writes
        them to a file (:mod:`shared.pipeline.durable`). Returns True if the
        batch was new.
        """
        found = self.redis.get(records_key(job, batch))
        if found is not None:
            new = self._collect_screen_records(job, batch, found)
        elif self.redis.getbit(job_key(job, "collected"), batch):
            new = False  # a redelivery of a batch already counted (it may still have records to write, below)
        elif not self.redis.exists(job_key(job, "meta")):
            return False  # a message of a job that is gone
        else:
            raise BlobMissing(f"records of batch {batch} of job {job}")
        if output_dir is not None:
            from shared.pipeline.durable import write_unfollowed

            write_unfollowed(self, job, output_dir)
        return new

    def _collect_screen_records(self, job: str, batch: int, found) -> bool:
        count = len(json.loads(found))
        keys = [*self._screen_job_keys(job), records_key(job, batch)]
        return bool(self._screen_collect(keys=keys, args=[time.time(), KEEP_JOB_S, batch, found, count]))

    @staticmethod
    def _screen_job_keys(job: str) -> list[str]:
        return [job_key(job, part) for part in SCREEN_JOB_PARTS]

    def unfinished_screen(self, job: str, plan: dict, stored: int) -> list:
        """The first message of each of the ``stored`` batches not yet counted (for recovery)."""
        pipe = self.redis.pipeline(transaction=False)
        for b in range(stored):
            pipe.getbit(job_key(job, "collected"), b)
        first = "screen_fused" if plan.get("mode") == FUSED else "screen_dwt"
        return [(first, {"job": job, "batch": b}) for b, counted in enumerate(pipe.execute()) if not counted]

    def forget_job(self, job: str) -> None:
        """Delete every key of a finished screening job whose records are written elsewhere (a watch's batch).

        A message of it that comes late finds no plan and stops; the
        collector's script counts nothing for a job without meta.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*self._screen_job_keys(job), job_key(job, "writer"))
        pipe.zrem(JOBS_KEY, job)
        pipe.execute()

    def batch_records(self, job: str, batch: int) -> list[dict] | None:
        """The records of chunk ``batch`` in the order of its items, unreadable ones included; None while not done."""
        screened, errors = self.redis.hmget(job_key(job, "records"), [str(batch), f"e{batch}"])
        if screened is None:
            return None
        kept = json.loads(errors) if errors else []
        if isinstance(kept, list):  # stored before their places were kept: after the images
            kept = {"records": kept, "at": None}
        return verdicts.in_item_order(json.loads(screened), kept["records"], kept["at"])

    def iter_screen_records(self, job: str) -> Iterator[dict]:
        """Every record of a screening job so far, in order: those already written to a file
        (:mod:`shared.pipeline.durable`) from it, then those Redis holds; one chunk in memory at a time."""
        from shared.pipeline.durable import iter_records

        for records in iter_records(self, job):
            yield from records

    def set_error_records(self, job: str) -> list[dict]:
        """The records of a set's unreadable items, kept apart from its chunks (a job made from a set in memory)."""
        errors = self.redis.hget(job_key(job, "records"), "errors")
        return json.loads(errors) if errors else []

    def screen_records(self, job: str) -> list[dict]:
        """Every record of a screening job so far (:meth:`iter_screen_records` as a list)."""
        return list(self.iter_screen_records(job))
