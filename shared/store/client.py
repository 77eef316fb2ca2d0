"""Redis clients that ride out a short outage: every command retried with backoff across a window.

A worker or producer whose Redis restarts, fails over or drops the connection
for a few seconds carries on where it was; past the window, the last error is
raised (the command line prints it as one line). Retrying a command whose reply
was lost is safe here: every write the pipeline makes is idempotent (SET of a
deterministic key, HSETNX-guarded counting, set-based blob release).
"""

from __future__ import annotations

import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

#: Errors that mean "the connection", not "the command": retried.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RetryWithin(Retry):
    """Retry until ``window_s`` seconds have passed since the first failure, backing off up to 2 s.

    Parameters
    ----------
    window_s : float
        How long an outage is ridden out; 0 gives one try.
    """

    def __init__(self, window_s: float):
        super().__init__(ExponentialBackoff(cap=2.0, base=0.05), retries=-1,
                         supported_errors=(*CONNECTION_ERRORS, OSError))
        self.window_s = float(window_s)

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        self._backoff.reset()
        failures, deadline = 0, None
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.window_s
                if now >= deadline:
                    raise
                time.sleep(min(self._backoff.compute(failures), deadline - now))


def connect(url: str, retry_window_s: float = 60.0) -> redis.Redis:
    """A client for ``url`` whose commands retry across ``retry_window_s`` seconds of lost connection."""
    return redis.Redis.from_url(url, retry=RetryWithin(retry_window_s), socket_connect_timeout=5,
                                health_check_interval=30)


class RedisFull(RuntimeError):
    """Redis stayed full (``maxmemory`` reached under ``noeviction``) for longer than a caller waits."""


def is_full(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing a write because ``maxmemory`` is reached (its ``OOM`` reply)."""
    # A refused command inside a script or a transaction comes back as a ResponseError that quotes the reply.
    return isinstance(error, redis.exceptions.OutOfMemoryError) or (
        isinstance(error, redis.exceptions.ResponseError) and "OOM command not allowed" in str(error))


def memory_use(client: redis.Redis) -> tuple[int, int]:
    """``(used, limit)`` bytes: Redis's ``used_memory`` and its ``maxmemory`` (0: no limit)."""
    info = client.info("memory")
    return int(info["used_memory"]), int(info.get("maxmemory", 0))


def full_message(client: redis.Redis) -> str:
    """``Redis is full (used X of Y MiB)``, as the producers and workers say it while they wait."""
    try:
        used, limit = memory_use(client)
    except redis.exceptions.RedisError:
        return "Redis is full"
    return f"Redis is full (used {used / 2 ** 20:.1f} of {limit / 2 ** 20:.1f} MiB)"


def has_room(client: redis.Redis, nbytes: int) -> bool:
    """Whether ``nbytes`` more fit under Redis's ``maxmemory`` (always, without a limit)."""
    used, limit = memory_use(client)
    return not limit or used + nbytes <= limit


def _still_full(client: redis.Redis, give_up_s: float) -> RedisFull:
    return RedisFull(f"{full_message(client)} for {give_up_s:.0f} s: raise its maxmemory or free it "
                     "(waveshield status shows the jobs that hold it)")


def while_full(do, client: redis.Redis, *, say, give_up_s: float, poll_s: float = 0.5, on_wait=None):
    """``do()``, tried again while Redis refuses its writes as full; ``say(line)`` hears why, every 30 s,
    and ``on_wait()`` runs at each poll (a heartbeat, a follower writing records out of Redis).

    Raises
    ------
    RedisFull
        If Redis is still full after ``give_up_s`` seconds.
    """
    since, said = time.monotonic(), None
    while True:
        try:
            return do()
        except redis.exceptions.ResponseError as error:
            if not is_full(error):
                raise
        now = time.monotonic()
        if now - since > give_up_s:
            raise _still_full(client, give_up_s)
        if said is None or now - said >= 30:
            said = now
            say(full_message(client) + "; waiting for the workers to free room")
        if on_wait:
            on_wait()
        time.sleep(poll_s)


def wait_for_room(client: redis.Redis, nbytes: int, *, say, give_up_s: float, on_wait=None,
                  poll_s: float = 0.5) -> None:
    """Backpressure on memory: block while ``nbytes`` more would not fit under Redis's ``maxmemory``.

    ``say(line)`` hears why ("Redis is full (used X of Y MiB)") when the wait
    starts and every 30 s; ``on_wait()`` runs at each poll (a heartbeat).

    Raises
    ------
    RedisFull
        If there is still no room after ``give_up_s`` seconds.
    """
    since = said = None
    while not has_room(client, nbytes):
        now = time.monotonic()
        since = since if since is not None else now
        if now - since > give_up_s:
            raise _still_full(client, give_up_s)
        if said is None or now - said >= 30:
            said = now
            say(f"{full_message(client)}; the next batch ({nbytes / 2 ** 20:.1f} MiB) waits for the workers to "
                "free room")
        if on_wait:
            on_wait()
        time.sleep(poll_s)
