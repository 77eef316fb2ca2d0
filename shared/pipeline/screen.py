"""Screening jobs: DWT -> both classifications -> records (staged), or one fused task per batch."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import torch

from .. import screening
from ..blobstore import BlobMissing
from ..evaluation import FUSED, defend
from ..data import to_float_nchw
from ..sources import colour_roughness
from .base import JobStore
from .keys import _JOB_KEYS, KEEP_JOB_S, clean_key, job_key, reconstructed_key, records_key


class ScreenStages(JobStore):
    """The stages of a screening job."""

    def create_screen_job(self, settings: dict, batch_ids: list[list[str]], errors: list[dict], classes: list[str],
                          *, job: str | None = None) -> str:
        """Store a screening job: its settings, the item ids per batch, and the records of unreadable items."""
        job = job or uuid.uuid4().hex[:12]
        plan = {"kind": "screen", **settings, "classes": list(classes)}
        pipe = self.redis.pipeline()
        pipe.set(job_key(job, "plan"), json.dumps(plan))
        pipe.hset(job_key(job, "meta"), mapping={
            "expected": len(batch_ids), "done": 0, "images": sum(map(len, batch_ids)) + len(errors),
            "batches": len(batch_ids), "started": time.time(), "status": "running" if batch_ids else "complete"})
        pipe.zadd("ws:jobs", {job: time.time()})
        for b, ids in enumerate(batch_ids):
            pipe.hset(job_key(job, "ids"), b, json.dumps(ids))
        pipe.hset(job_key(job, "records"), "errors", json.dumps(errors))
        pipe.execute()
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
        marker = job_key(job, "done", "screen_fused", batch)
        if not self._done(marker):
            plan = self.plan(job)
            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="screen_fused"), self.device)
            self._score_batch(job, batch, plan, x)
        return self._finish(marker, clean_key(job, batch), "screen_fused",
                            [("screen_collect", {"job": job, "batch": batch})])

    def _score_batch(self, job: str, batch: int, plan: dict, x: torch.Tensor, rec: torch.Tensor | None = None) -> None:
        """The records of one screening batch, kept for the collector."""
        p_raw, p_def, suspicion, signals = screening.screen_batch(plan, x, self.get_model, self.defence_options,
                                                                  self.get_detector, reconstructed=rec)
        ids = json.loads(self.redis.hget(job_key(job, "ids"), batch))
        found = screening.records(ids, p_raw, p_def, suspicion, plan["threshold"], plan["classes"], signals,
                                  colour_roughness(x))
        self.redis.set(records_key(job, batch), json.dumps(found), ex=KEEP_JOB_S)

    def screen_dwt(self, job: str, batch: int) -> list:
        """Reconstruct a screening batch with the job's defence."""
        messages = [("screen_classify", {"job": job, "batch": batch})]
        marker = job_key(job, "done", "screen_dwt", batch)
        if not self._done(marker):
            plan = self.plan(job)
            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="screen_dwt"), self.device)
            rec = defend(x, self.defence_options(plan["defence"]))
            self.blobs.put(reconstructed_key(job, batch, 0, plan["defence"]), rec.cpu().numpy(), ["screen_classify"],
                           stage="screen_dwt")
        return self._finish(marker, clean_key(job, batch), "screen_dwt", messages)

    def screen_classify(self, job: str, batch: int) -> list:
        """Both paths (raw standard, reconstructed defended) and the records of one batch."""
        plan = self.plan(job)
        rec_key = reconstructed_key(job, batch, 0, plan["defence"])
        marker = job_key(job, "done", "screen_classify", batch)
        if not self._done(marker):
            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="screen_classify"), self.device)
            rec = torch.from_numpy(self.blobs.get(rec_key, stage="screen_classify")).to(self.device)
            self._score_batch(job, batch, plan, x, rec)
        messages = [("screen_collect", {"job": job, "batch": batch})]
        self.blobs.release(rec_key, "screen_classify")
        return self._finish(marker, clean_key(job, batch), "screen_classify", messages)

    def screen_collect(self, job: str, batch: int) -> bool:
        """Move a batch's records into the job exactly once; the job completes with its last batch."""
        found = self.redis.get(records_key(job, batch))
        if found is None:
            raise BlobMissing(f"records of batch {batch} of job {job}")
        keys = [job_key(job, "meta"), job_key(job, "records"),
                *(job_key(job, name) for name in _JOB_KEYS[1:] if name != "records")]
        return bool(self._screen_collect(keys=keys, args=[time.time(), KEEP_JOB_S, batch, found]))

    def screen_records(self, job: str) -> list[dict]:
        """Every record of a screening job so far: batches in order, then unreadable items."""
        stored = {k.decode(): json.loads(v) for k, v in self.redis.hgetall(job_key(job, "records")).items()}
        batches = sorted(int(k) for k in stored if k != "errors")
        return [r for b in batches for r in stored[str(b)]] + stored.get("errors", [])
