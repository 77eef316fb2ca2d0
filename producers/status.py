"""`waveshield status`: queue lengths, Redis traffic, which worker serves which queue, and job progress."""

from __future__ import annotations

from producers.stack import connect
from producers.submit import NO_WORKER, queue_lengths
from shared.pipeline import Pipeline
from shared.pipeline.keys import JOBS_KEY
from shared.pipeline.meta import JobNotFound

#: How many of the newest jobs status shows when no job is named.
RECENT_JOBS = 10


def status_lines(redis_url: str | None, job: str | None = None, *, app=None) -> list[str]:
    """What `waveshield status` prints: queues, traffic, workers, then ``job`` (or the newest jobs) line by line.

    ``app``: the Celery app whose workers are asked which queues they serve
    [default: the project's].

    Raises
    ------
    shared.pipeline.meta.JobNotFound
        If ``job`` is not in Redis (of the newest jobs, one that expired is left out).
    """
    if app is None:
        from workers.app import app
    _, client = connect(redis_url)
    lines = ["queues: " + ", ".join(f"{q} {n}" for q, n in queue_lengths(client).items())]
    stats = client.info("stats")
    lines.append(f"Redis traffic now: {stats['instantaneous_input_kbps']:.0f} KB/s in, "
                 f"{stats['instantaneous_output_kbps']:.0f} KB/s out")
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    consumers = {q["name"]: w for w, qs in replies.items() for q in qs}
    lines.append("workers: " + (", ".join(f"{q} <- {w}" for q, w in sorted(consumers.items())) or "none"))
    if not consumers:
        lines.append(NO_WORKER)
    pipe = Pipeline(client)
    if job:
        return lines + [job_line(job, pipe.progress(job))]
    for j in (j.decode() for j in client.zrevrange(JOBS_KEY, 0, RECENT_JOBS - 1)):
        try:
            lines.append(job_line(j, pipe.progress(j)))
        except JobNotFound:
            pass  # listed, but its keys expired (KEEP_JOB_S after it finished)
    return lines


def job_line(job: str, p: dict) -> str:
    """One job's progress (:meth:`shared.pipeline.Pipeline.progress`) in a line."""
    screening = "screened" in p
    items = (f"{p['read']} items read{' so far' if p['ingesting'] else ''}, {p['enqueued']} enqueued, "
             f"{p['screened']} screened" if screening else f"{p['images']} images")
    return (f"job {job}: {p['status']}, {p['done']}/{p['expected']} {'batches' if screening else 'cells'}, "
            f"{items}, {p['images_per_s']:.1f} images/s, {p['errors_total']} errors"
            + (f", {p['redriven']} unit(s) re-sent after lost messages" if p["redriven"] else ""))
