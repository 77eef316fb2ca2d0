"""A job's meta hash, read and noted through one owner; whether a job's producer process still runs.

Producers never write a job's meta fields themselves: they say what
happened (a producer reads the input, it stopped) and read what they need
(counts, batches stored) through :class:`JobMeta`, which every job kind's
stages inherit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.pipeline.keys import KEEP_JOB_S, job_key


class JobNotFound(KeyError):
    """The job is not in Redis: never created, expired, or lost with a Redis that kept nothing.

    Its message is the one every command gives for a job id it does not
    find (the command line exits 2 on it: a user's mistake). A job lost
    while a producer follows it is :func:`producers.submit.vanished` instead.
    """

    def __init__(self, job: str):
        super().__init__(job)
        self.job = job

    def __str__(self) -> str:
        return (f"no job {self.job!r} in Redis: a job's id is printed when it starts and `waveshield status` lists "
                f"the newest; a finished job is kept {KEEP_JOB_S // 86400} days")


class JobMeta:
    """The fields of a job's meta hash that producers read and note (needs ``self.redis``)."""

    def _meta(self, job: str, *fields: str) -> list[bytes | None]:
        values = self.redis.hmget(job_key(job, "meta"), [*fields, "started"])
        if values[-1] is None:  # every job has its start time from its creation
            raise JobNotFound(job)
        return values[:-1]

    def counts(self, job: str) -> tuple[int, int]:
        """``(expected, done)``: the job's units and those finished."""
        expected, done = self._meta(job, "expected", "done")
        return int(expected), int(done)

    def batches_stored(self, job: str) -> int:
        """Batches (a screening job's chunks) a producer has stored so far."""
        return int(self._meta(job, "batches")[0] or 0)

    def batches_fed(self, job: str) -> int:
        """Corpus batches stored by a producer (see ``note_fed``): where a new producer goes on."""
        return int(self._meta(job, "fed")[0] or 0)

    def source(self, job: str) -> tuple[str, int]:
        """``(data, unreadable)``: the image set an evaluation job was submitted from, and its items that could
        not be read ("" and 0 for a job submitted without them)."""
        data, unreadable = self._meta(job, "data", "unreadable")
        return (data or b"").decode(), int(unreadable or 0)

    def note_producer(self, job: str, who: str) -> None:
        """``who`` (``host:pid``) reads the job's input now: its heartbeat."""
        self.redis.hset(job_key(job, "meta"), mapping={"producer": who, "producer_seen": time.time()})

    def clear_producer(self, job: str) -> None:
        """The job's producer read all its input."""
        self.redis.hdel(job_key(job, "meta"), "producer")

    def producer(self, job: str) -> tuple[str, float, bool, int]:
        """``(who, last heartbeat, still reading its input, items read)``; ``who`` is "" when none reads it."""
        who, seen, ingesting, images = self._meta(job, "producer", "producer_seen", "ingesting", "images")
        return (who or b"").decode(), float(seen or 0), ingesting is not None, int(images or 0)


def running(pid: int | str) -> bool:
    """True while process ``pid`` of this host runs; a zombie (ended, not yet reaped) counts as ended.

    Reads ``/proc/PID/status`` where there is a ``/proc``; elsewhere asks the
    kernel with signal 0, which cannot tell a zombie.
    """
    try:
        pid = int(pid)
    except ValueError:
        return False
    if pid <= 0:
        return False
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return False
    return "zombie" not in state
