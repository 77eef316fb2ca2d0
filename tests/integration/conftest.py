"""Real Redis and real Celery workers, one subprocess per queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
from shared.pipeline import QUEUES  # the tests import it from here


class Killed(Exception):
    """The simulated kill -9."""


class DyingRedis(redis.Redis):
    """A Redis client that stops after ``after`` commands, as its process would on kill -9."""

    def __init__(self, pool, after: int):
        super().__init__(connection_pool=pool)
        self.after, self.sent = after, 0

    def execute_command(self, *args, **options):
        if self.sent >= self.after:
            raise Killed(args[0])
        self.sent += 1
        return super().execute_command(*args, **options)


@pytest.fixture()
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, sample):
    """Weights for standard/haar/daubechies: small models trained briefly by the real loop."""
    import torch

    from shared.dwt import defences
    from shared.models import network
    from shared.models.training import Recipe, train

    weights = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for name in ("standard", "haar", "daubechies"):
        options = None if name == "standard" else defences.DEFAULTS[name]
        recipe = Recipe(width=4, epochs=2, batch_size=128, precision="fp32", defence=options)
        subset = type(sample)(sample.images[::2], sample.labels[::2], sample.ids[::2])
        model, _ = train(subset, recipe, checkpoint=weights / f"ckpt-{name}.safetensors")
        network.save(model, weights / f"{name}.safetensors", {"epochs": 2})
    return weights


class Workers:
    """One `celery worker` subprocess per queue, each in its own process group."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.procs = env, log_dir, {}

    def start(self, queue: str) -> None:
        self.spawn(queue, [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-n", f"{queue}@%h",
                           "--concurrency", "1", "--pool", "prefork", "--loglevel", "WARNING", "--without-mingle",
                           "--without-gossip"])

    def spawn(self, name: str, command: list[str]) -> None:
        """Start ``command`` as the worker ``name``, logging to ``name``.log."""
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def kill(self, queue: str) -> None:
        """kill -9 the worker and its pool child."""
        proc = self.procs.pop(queue)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        """Ask every worker to stop at once (a warm shutdown each), then wait; kill one that outlives 20 s."""
        procs, self.procs = list(self.procs.values()), {}
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture()
def worker_env(redis_url, tiny_weights, tmp_path):
    return {**os.environ, "REDIS_URL": redis_url, "WAVESHIELD_WEIGHTS_DIR": str(tiny_weights),
            "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "collector-output"),
            # The shipped recovery settings (visibility timeout, task time limit, sweep): a killed
            # worker's task comes back through the workers' sweep, as it does for users.
            "WAVESHIELD_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def workers(worker_env, tmp_path):
    pool = Workers(worker_env, tmp_path)
    for queue in QUEUES:
        pool.start(queue)
    yield pool
    pool.stop_all()


#: Images of an evaluation job through the workers: 4 batches of 25, each with 8 attacks x 5 configurations.
JOB_IMAGES, JOB_BATCH = 100, 25


@pytest.fixture()
def job_images(sample):
    """The first JOB_IMAGES images of the sample: what the evaluation jobs of these tests run on."""
    return type(sample)(sample.images[:JOB_IMAGES], sample.labels[:JOB_IMAGES], sample.ids[:JOB_IMAGES])


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


_LOCAL_COUNTS: dict = {}


def local_counts(plan: dict, image_set, weights: Path) -> dict:
    """The plan's counts per (attack, configuration), computed in this process: the reference.

    Computed once per plan (its mode aside: staged and fused count the same), images and weights in a
    session; several tests check their jobs against the same reference.
    """
    import functools
    import json

    import torch

    from shared.dwt import defences
    from shared.evaluation.run import evaluate_local
    from shared.models import network

    key = (json.dumps({k: v for k, v in plan.items() if k != "mode"}, sort_keys=True), tuple(image_set.ids),
           str(weights))
    if key not in _LOCAL_COUNTS:
        get_model = functools.lru_cache(maxsize=None)(lambda name: network.load(weights / f"{name}.safetensors")[0])
        cells = evaluate_local(plan, image_set.to_tensor(), torch.from_numpy(image_set.labels), get_model,
                               lambda name: defences.get(name, weights))
        _LOCAL_COUNTS[key] = {(c.attack.id, c.configuration): (c.correct, c.total) for c in cells}
    return dict(_LOCAL_COUNTS[key])


def pipeline_counts(client, job: str) -> dict:
    """A job's counts per (attack, configuration), as the collector recorded them in Redis."""
    from shared.pipeline import Pipeline

    return {(c.attack.id, c.configuration): (c.correct, c.total) for c in Pipeline(client).cells(job)}
