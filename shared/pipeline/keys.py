"""Names in Redis, queues and the lifetime of a finished job: what every job kind shares.

Every Redis key of the pipeline is named here, but two: the blob store's
per-job traffic counter (:func:`shared.store.blobs.traffic_key`, below the
pipeline) and Celery's own queues and ``unacked`` hash
(:data:`shared.pipeline.orphans.UNACKED_KEY`, the transport's name).
"""

from __future__ import annotations

RAW = "raw"  # the "defence" of configurations that classify unreconstructed input
#: The queues, in the order of the data flow; one worker process serves each. ``fused``
#: runs all of a batch's stages in one task, for jobs in fused mode.
QUEUES = ("attack", "dwt", "classify", "collect", "fused")
#: Every task the stages send, and the queue it runs on.
TASK_QUEUES = {"attack": "attack", "dwt": "dwt", "classify": "classify", "collect": "collect",
               "fused": "fused", "collect_cells": "collect",
               "screen_dwt": "dwt", "screen_classify": "classify", "screen_collect": "collect",
               "screen_fused": "fused", "corpus_attack": "attack", "corpus_collect": "collect"}


def task_name(stage: str) -> str:
    """The Celery task that runs ``stage`` (a key of :data:`TASK_QUEUES`)."""
    return f"waveshield.{stage}"


KEEP_JOB_S = 7 * 86400  # how long a finished job's counts stay in Redis
_JOB_KEYS = ("meta", "plan", "cells", "agg", "labels", "ids", "records", "errors", "traffic")
#: The stage failures a job keeps (``errors``) by default: the first ones; the meta counts them all.
KEEP_ERRORS = 100
#: A screening job's stages whose done-markers are bitmaps (one bit per batch: a few bytes a job).
SCREEN_STAGES = ("screen_dwt", "screen_classify", "screen_fused")
#: Every key of a screening job (its blobs aside): what its completion gives the finished job's lifetime
#: and what forgetting it deletes. ``collected`` is a bitmap of the batches counted (exactly once), ``writer``
#: the lease of the one process that moves finished records out of Redis (:mod:`shared.pipeline.durable`).
SCREEN_JOB_PARTS = ("meta", "records", "plan", "ids", "errors", "traffic", "collected",
                    *(f"done:{stage}" for stage in SCREEN_STAGES))


#: Every job's id, scored by when it was created (``status`` lists the newest).
JOBS_KEY = "ws:jobs"
#: The one worker that sweeps for stranded messages holds this while it does.
SWEEP_LOCK_KEY = "ws:sweep-lock"


def lease_key(task_id: str) -> str:
    """A running task's lease, renewed while it runs (:class:`shared.pipeline.orphans.Lease`)."""
    return f"ws:lease:{task_id}"


def worker_key(hostname: str) -> str:
    """A worker's heartbeat."""
    return f"ws:worker:{hostname}"


def deliveries_key(task_id: str) -> str:
    """How often a task was delivered (for the redelivery cap)."""
    return f"ws:deliveries:{task_id}"


def corpus_blob_key(job: str, shard: int, attack: int) -> str:
    """A corpus shard's adversarial images, waiting for the collector to write them."""
    return f"ws:blob:{job}:{shard}:corpus:{attack}"


def job_key(job: str, *parts) -> str:
    """``ws:job:JOB:PART:...``: every key of a job but its blobs."""
    return ":".join(["ws", "job", job, *map(str, parts)])



def corpus_output(output_dir, name: str):
    """The corpus folder ``name`` inside the collector's output directory (no escaping it)."""
    from pathlib import Path

    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"corpus name {name!r} must be a relative folder inside the output directory")
    return Path(output_dir) / relative


def corpus_shards_key(corpus_key: str) -> str:
    """The set of ``shard|attack`` pairs written for a corpus (what a rerun of its command skips)."""
    return f"ws:corpus:{corpus_key}:shards"


def records_key(job: str, batch: int) -> str:
    """Where a screening batch's records wait for the collector (who deletes them once counted)."""
    return job_key(job, "batch_records", batch)


def stage_done_key(job: str, stage: str) -> str:
    """The bitmap of a screening stage's finished batches (bit ``batch`` set once that batch's stage ran)."""
    return job_key(job, "done", stage)


def writer_key(job: str) -> str:
    """The lease of the process moving a screening job's finished records to a file (``who`` as its value)."""
    return job_key(job, "writer")


def clean_key(job, batch):
    return f"ws:blob:{job}:{batch}:clean"


def adversarial_key(job, batch, attack):
    return f"ws:blob:{job}:{batch}:adv:{attack}"


def reconstructed_key(job, batch, attack, defence):
    return f"ws:blob:{job}:{batch}:rec:{attack}:{defence}"
