"""The retry window of the Redis client: how long an outage is ridden out, then the error."""

import socket
import time

import pytest
import redis

from shared.store.client import RetryWithin, connect


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


@pytest.mark.parametrize("window", [0.0, 1.5])
def test_commands_are_retried_across_the_window_then_fail(window):
    client = connect(f"redis://127.0.0.1:{_closed_port()}/0", retry_window_s=window)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    took = time.monotonic() - started
    assert window <= took < window * 2 + 2  # the whole window, not much more


def test_a_failure_that_heals_within_the_window_is_invisible():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise redis.exceptions.ConnectionError("connection reset")
        return "PONG"

    assert RetryWithin(5).call_with_retry(flaky, lambda error: None) == "PONG"
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) == 4 and gaps == sorted(gaps)  # backing off


def test_errors_other_than_the_connection_are_not_retried():
    calls = []

    def wrong():
        calls.append(1)
        raise redis.exceptions.ResponseError("WRONGTYPE")

    with pytest.raises(redis.exceptions.ResponseError):
        RetryWithin(5).call_with_retry(wrong, lambda error: None)
    assert calls == [1]


def test_the_bundled_server_ends_with_the_process_that_started_it_even_killed_outright():
    import os
    import signal
    import subprocess
    import sys

    from shared.pipeline.meta import running

    owner = subprocess.Popen([sys.executable, "-c", "import time\nfrom producers.redis_server import EmbeddedRedis\n"
                              "print(EmbeddedRedis().start().process.pid, flush=True)\ntime.sleep(120)"],
                             stdout=subprocess.PIPE, text=True)
    server = None
    try:
        server = int(owner.stdout.readline())
        assert running(server)
        owner.kill()  # SIGKILL: the owner cannot stop its server itself
        owner.wait(10)
        deadline = time.monotonic() + 10
        while running(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(server), "the server outlived the process that started it"
    finally:
        owner.kill()
        owner.wait(10)
        if server is not None and running(server):
            os.kill(server, signal.SIGKILL)
