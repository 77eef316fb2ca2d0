"""Flower against the test Redis: authentication required, every queue's worker and finished tasks visible."""

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from producers import submit as producer
from shared.evaluation.plan import paper_plan
from shared.settings import load as load_settings

from .conftest import QUEUES, REPO, wait_for

AUTH = "ops:s3cret-for-tests"


def _get(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture()
def flower(worker_env, workers, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "flower.log", "wb")
    # The credentials go in the environment, as `waveshield up --flower` passes them (off the command line).
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "flower", "--address=127.0.0.1",
                             f"--port={port}"], cwd=REPO, env={**worker_env, "FLOWER_BASIC_AUTH": AUTH}, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return _get(f"{base}/api/workers?refresh=1", AUTH) is not None
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    wait_for(up, 60, 0.5, "Flower to answer")
    yield base
    proc.terminate()
    proc.wait(20)


def test_flower_requires_auth_and_shows_workers_and_finished_tasks(flower, redis_client, redis_url, sample,
                                                                    monkeypatch):
    with pytest.raises(urllib.error.HTTPError) as denied:
        _get(f"{flower}/api/workers")
    assert denied.value.code == 401

    def all_queues_seen():
        workers = _get(f"{flower}/api/workers?refresh=1", AUTH)
        return {name.split("@")[0] for name in workers} >= set(QUEUES)

    wait_for(all_queues_seen, 60, 1.0, "every queue's worker in Flower")

    monkeypatch.setenv("REDIS_URL", redis_url)
    from workers.app import app, use_broker

    use_broker(redis_url)
    small = type(sample)(sample.images[:20], sample.labels[:20], sample.ids[:20])
    plan = paper_plan(batch_size=10)
    plan["attacks"] = plan["attacks"][:2]  # clean and FGSM: enough tasks to count
    for mode in ("staged", "fused"):  # both modes' tasks show, each on its own queue
        job = producer.submit(redis_client, app, {**plan, "mode": mode}, small, load_settings())
        producer.wait(redis_client, job, timeout_s=300)

    def finished():
        tasks = _get(f"{flower}/api/tasks?state=SUCCESS", AUTH)
        names = {t["name"] for t in tasks.values()}
        return len(tasks) >= 10 and {f"waveshield.{q}" for q in QUEUES} <= names

    wait_for(finished, 60, 1.0, "finished tasks of every queue in Flower")
