"""docker-compose.yml's worker services, scaled by count: replicas share a queue, and the counts do not change.

`docker compose up --scale worker-attack=2` starts the service's command
twice, each in a container of its own hostname, which the command's ``%h``
puts in the node name. This test runs the compose file's own commands the
same way, as processes on this machine (a replica's hostname standing in
for ``%h``), so that it needs no Docker daemon: every compute service twice,
the collector once, one staged job, real Redis.
"""

from __future__ import annotations

import sys

import pytest
import yaml

from producers import submit as producer
from shared.evaluation.plan import paper_plan
from shared.settings import load as load_settings

from .conftest import JOB_BATCH, JOB_IMAGES, REPO, Workers, local_counts, pipeline_counts, wait_for

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SCALE = {"worker-attack": 2, "worker-dwt": 2, "worker-classify": 2, "collector": 1}


def _replica_command(service: str, replica: int) -> list[str]:
    """The service's command as its ``replica``-th container runs it, celery taken from this interpreter."""
    command = list(COMPOSE["services"][service]["command"])
    assert command[0] == "celery"
    command = [sys.executable, "-m", "celery", *command[1:]]
    return [part.replace("%h", f"{service}-{replica}") for part in command] + ["--loglevel", "WARNING"]


def _queue(service: str) -> str:
    command = COMPOSE["services"][service]["command"]
    return command[command.index("-Q") + 1]


def _compose_environment() -> dict:
    """What the compose file sets for every worker, but the addresses that the test's own fixtures set."""
    environment = COMPOSE["x-worker"]["environment"]
    return {k: str(v) for k, v in environment.items() if k not in ("REDIS_URL", "WAVESHIELD_WEIGHTS_DIR",
                                                                   "WAVESHIELD_OUTPUT_DIR")}


@pytest.fixture()
def scaled_services(worker_env, tmp_path):
    pool = Workers({**worker_env, **_compose_environment()}, tmp_path)
    try:
        for service, count in SCALE.items():
            for replica in range(1, count + 1):
                pool.spawn(f"{service}-{replica}", _replica_command(service, replica))
        yield [f"{_queue(service)}@{service}-{replica}" for service, count in SCALE.items()
               for replica in range(1, count + 1)]
    finally:
        pool.stop_all()


def test_scaled_services_share_their_queues_and_counts_equal_local(redis_client, redis_url, scaled_services,
                                                                   job_images, tiny_weights, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    from workers.app import app, use_broker

    use_broker(redis_url)
    # Every replica up before the job starts, so that each can take a share of it.
    wait_for(lambda: {name for reply in app.control.ping(timeout=1.0) or [] for name in reply} >= set(scaled_services),
             timeout=90, interval=1.0, what=f"replicas {scaled_services} to answer ping")
    image_set = job_images
    plan = {**paper_plan(batch_size=JOB_BATCH), "threads": 2}
    job = producer.submit(redis_client, app, plan, image_set, load_settings())
    state = producer.wait(redis_client, job, timeout_s=600, app=app)
    assert state["done"] == state["expected"] == JOB_IMAGES // JOB_BATCH * 8 * 5 and not state["errors"]
    assert pipeline_counts(redis_client, job) == local_counts(plan, image_set, tiny_weights)
    stats = app.control.inspect(timeout=2.0).stats() or {}
    for node in scaled_services:
        queue = node.split("@")[0]
        ran = stats.get(node, {}).get("total", {}).get(f"waveshield.{queue}", 0)
        assert ran > 0, f"{node} ran no task of its queue; replicas per node: {({n: s.get('total') for n, s in stats.items()})}"
