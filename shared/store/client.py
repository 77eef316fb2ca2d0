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
