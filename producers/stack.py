"""The embedded deployment: a Redis (given or bundled) and one Celery worker per queue, as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.pipeline import QUEUES
from shared.settings import Settings, masked

from .redis_server import EmbeddedRedis, reachable, why_not_answering

STATE = Path.home() / ".cache" / "waveshield" / "up.json"  # where `up` tells other commands its Redis


def resolve_redis_url(redis_url: str | None) -> str | None:
    """REDIS_URL if set (it must answer), else the URL of a running `waveshield up`, else None.

    Raises
    ------
    ConnectionError
        If ``redis_url`` is set and does not answer (the message shows it masked).
    """
    if redis_url:
        if why := why_not_answering(redis_url):
            refused, reason = why
            what, fix = (("refuses the login", "fix the user or password in REDIS_URL") if refused else
                         ("does not answer", "start that server, or fix REDIS_URL"))
            raise ConnectionError(f"REDIS_URL is set to {masked(redis_url)}, which {what} ({reason}): {fix}; "
                                  "or unset REDIS_URL and run `waveshield up`, which starts a bundled Redis")
        return redis_url
    try:
        state = json.loads(STATE.read_text())
        os.kill(state["pid"], 0)
        if reachable(state["redis_url"]):
            return state["redis_url"]
    except (OSError, ValueError, KeyError):
        pass
    return None


def require_redis_url(redis_url: str | None, *, or_local: bool = False) -> str:
    """:func:`resolve_redis_url`, for a command that cannot go on without a Redis.

    Raises
    ------
    ConnectionError
        If REDIS_URL is set and does not answer.
    ValueError
        If it is unset and no `waveshield up` runs here: the message says how to start one (``or_local``: or
        to pass ``--local``).
    """
    url = resolve_redis_url(redis_url)
    if url is None:
        raise ValueError("no Redis: start one with `waveshield up` in another terminal, or set REDIS_URL"
                         + (", or pass --local" if or_local else ""))
    return url


class Stack:
    """Redis plus one worker per queue; a context manager that stops all it started, by pid.

    Parameters
    ----------
    redis_url : str, optional
        Use this Redis; None starts the bundled one.
    flower_auth : str, optional
        ``user:password``: also run Flower on 127.0.0.1:5555 with basic auth.
    log_dir : str or Path, optional
        Write each process's output to ``NAME.log`` there instead of the console.
    """

    def __init__(self, redis_url: str | None = None, *, flower_auth: str | None = None, env: dict | None = None,
                 log_dir: str | Path | None = None):
        self.redis_url = redis_url
        self.flower_auth = flower_auth
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.env = dict(os.environ if env is None else env)
        self.server: EmbeddedRedis | None = None
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Stack:
        if self.redis_url is None:
            self.server = EmbeddedRedis().start()
            self.redis_url = self.server.url
        self.env["REDIS_URL"] = self.redis_url
        try:
            for queue in QUEUES:
                self.procs[queue] = self._spawn(["worker", "-Q", queue, "-n", f"{queue}@%h", "--concurrency", "1",
                                                 "--loglevel", "WARNING"], self._threads(queue), name=queue)
            if self.flower_auth:
                # Flower reads its FLOWER_* options from the environment: the password stays off the command line,
                # which every user of the machine can read.
                self.procs["flower"] = self._spawn(["flower", "--address=127.0.0.1", "--port=5555"],
                                                   {"FLOWER_BASIC_AUTH": self.flower_auth}, name="flower")
            self.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _threads(self, queue: str) -> dict:
        # On one machine the workers share its cores: the attack queue carries most of
        # the compute and gets them all; the light stages get one thread each, so that
        # no two processes fight over a core (oversubscribed OpenMP threads stall).
        # Idle OpenMP threads sleep instead of spinning, which would steal the
        # cores another worker is computing on (0.63 -> 0.88 of --local's speed here).
        # The fused worker computes alone (the staged workers idle during a fused job), so it
        # keeps OpenMP's default waits, as --local does.
        extra = {} if queue == "fused" else {"OMP_WAIT_POLICY": self.env.get("OMP_WAIT_POLICY", "PASSIVE")}
        if "WAVESHIELD_TORCH_THREADS" not in self.env:
            # The attack worker gets torch's default for this environment (OMP_NUM_THREADS,
            # else every core), as `evaluate --local` has: both craft on the same threads.
            omp = self.env.get("OMP_NUM_THREADS", "")
            everything = omp if omp.isdigit() and int(omp) > 0 else str(os.cpu_count() or 1)
            extra["WAVESHIELD_TORCH_THREADS"] = everything if queue in ("attack", "fused") else "1"
        return extra

    def _spawn(self, args, extra_env: dict | None = None, *, name: str):
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{name}.log", "ab")  # the child keeps its own descriptor
        try:
            return subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", *args],
                                    env={**self.env, **(extra_env or {})}, start_new_session=True,
                                    stdout=output, stderr=subprocess.STDOUT if output else None)
        finally:
            if output is not None:
                output.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return when every queue's worker answers a ping."""
        from workers.app import app, use_broker

        use_broker(self.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    where = f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""
                    raise RuntimeError(f"the {name} worker exited with status {proc.returncode}{where}")
            replies = app.control.ping(timeout=1.0) or []
            names = {next(iter(r)).split("@")[0] for r in replies}
            if set(QUEUES) <= names:
                return
        raise TimeoutError("workers did not come up within a minute")

    def __exit__(self, *exc) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self.server:
            self.server.stop()


def serve(settings: Settings, *, flower: bool = False, say=print) -> None:
    """``waveshield up``: run the stack until SIGINT or SIGTERM, or until a worker exits; stop all of it.

    ``flower`` also runs Flower, behind ``settings.flower_basic_auth``.

    Raises
    ------
    ValueError
        If Flower is asked for without credentials: it never runs without authentication.
    """
    if flower and not settings.flower_basic_auth:
        raise ValueError("Flower never runs without authentication: set FLOWER_BASIC_AUTH=user:password")
    flower_auth = settings.flower_basic_auth if flower else None
    # Installed explicitly: a shell that starts `up` in the background hands it SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler of its own.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    logs = settings.output_dir / "up" / "logs"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Each Celery worker warns about this in its log; the terminal hears it once, with what to do.
        say("warning: running as root; Celery warns against it in each worker's log: "
            "run `waveshield up` as an unprivileged user")
    with Stack(resolve_redis_url(settings.redis_url), flower_auth=flower_auth, log_dir=logs) as stack:
        _write_state({"redis_url": stack.redis_url, "pid": os.getpid()})
        say(f"Redis: {masked(stack.redis_url)}")
        for name, proc in stack.procs.items():  # one line each; their banners and logs go to files
            say(f"{'Flower: http://127.0.0.1:5555' if name == 'flower' else f'worker {name}'} (pid {proc.pid}), "
                f"log: {logs / (name + '.log')}")
        say("Ctrl-C stops everything.")
        try:
            while not (ended := [n for n, p in stack.procs.items() if p.poll() is not None]):
                time.sleep(1)
            say("; ".join(f"{'Flower' if n == 'flower' else f'the {n} worker'} exited with status "
                          f"{stack.procs[n].returncode} (see {logs / (n + '.log')})" for n in ended) + "; stopping")
        except KeyboardInterrupt:
            say("stopping...")
        finally:
            STATE.unlink(missing_ok=True)


def _write_state(state: dict) -> None:
    """Tell other commands of this user where `up`'s Redis is, in a file only this user reads (its URL may hold a
    password)."""
    STATE.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(STATE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file left by an older release keeps its mode through O_CREAT
    with os.fdopen(descriptor, "w") as file:
        json.dump(state, file)


def _interrupt(*_):
    raise KeyboardInterrupt


def connect(redis_url: str | None, *, or_local: bool = False):
    """The Redis to talk to, as ``(url, client)``, with the Celery app pointed at it.

    Raises ConnectionError or ValueError (one line for the user) when there is none: see :func:`require_redis_url`.
    """
    from shared import settings
    from shared.store.client import connect as client_for
    from workers.app import use_broker

    url = require_redis_url(redis_url, or_local=or_local)
    use_broker(url)
    return url, client_for(url, settings.load().redis_retry_s)
