"""Redis faults mid-job, against real workers: restarts with and without persistence, a pause, an outage.

Each test runs its own Redis server (the bundled one) so that it can crash,
restart and pause it, with one worker process per queue pointed at it.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from producers import submit as producer
from producers.redis_server import EmbeddedRedis
from shared.evaluation import paper_plan
from shared.pipeline import Pipeline
from shared.redis_client import connect
from shared.settings import load as load_settings

from .conftest import QUEUES, REPO, Workers, local_counts, pipeline_counts, wait_for

IMAGES = 50


@pytest.fixture()
def image_set(sample):
    return type(sample)(sample.images[:IMAGES], sample.labels[:IMAGES], sample.ids[:IMAGES])


@pytest.fixture()
def plan():
    return {**paper_plan(batch_size=25), "threads": 1}


@pytest.fixture()
def aof_redis():
    server = EmbeddedRedis(appendonly=True).start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)  # in case a test left it paused
    server.stop()


@pytest.fixture()
def plain_redis():
    server = EmbeddedRedis().start()
    yield server
    server.stop()


def _workers(env, redis_url, tmp_path):
    pool = Workers({**env, "REDIS_URL": redis_url}, tmp_path)
    for queue in QUEUES:
        pool.start(queue)
    return pool


@pytest.fixture()
def start_workers(worker_env, tmp_path):
    pools = []

    def start(redis_url):
        pools.append(_workers(worker_env, redis_url, tmp_path))
        return pools[-1]

    yield start
    for pool in pools:
        pool.stop_all()


def _submit(redis_url, plan, image_set, monkeypatch):
    from workers.app import app, use_broker

    monkeypatch.setenv("REDIS_URL", redis_url)
    use_broker(redis_url)
    client = connect(redis_url, retry_window_s=60)
    return client, producer.submit(client, app, plan, image_set, load_settings())


def _wait(client, job, timeout_s=240):
    """Follow the job as the CLI does: re-driving it if a crash lost a message (after 5 s with none in flight)."""
    from workers.app import app

    return producer.wait(client, job, timeout_s=timeout_s, app=app, redrive_after_s=5)


def _mid_job(client, job):
    wait_for(lambda: 0 < int(client.hget(f"ws:job:{job}:meta", "done") or 0), 120, 0.05, "the first counted cell")
    return int(client.hget(f"ws:job:{job}:meta", "done"))


def test_redis_crash_and_restart_with_aof_mid_job_completes_with_the_same_counts(
        aof_redis, start_workers, plan, image_set, tiny_weights, monkeypatch):
    start_workers(aof_redis.url)
    client, job = _submit(aof_redis.url, plan, image_set, monkeypatch)
    done_at_crash = _mid_job(client, job)
    aof_redis.kill()
    time.sleep(2)
    aof_redis.start()
    state = _wait(client, job)  # the producer's client rode out the outage
    assert done_at_crash < state["expected"] == state["done"] and not state["errors"]
    assert pipeline_counts(client, job) == local_counts(plan, image_set, tiny_weights)


def test_redis_paused_for_10_s_mid_job_completes_with_the_same_counts(
        aof_redis, start_workers, plan, image_set, tiny_weights, monkeypatch):
    start_workers(aof_redis.url)
    client, job = _submit(aof_redis.url, plan, image_set, monkeypatch)
    done_at_pause = _mid_job(client, job)
    os.kill(aof_redis.process.pid, signal.SIGSTOP)
    try:
        time.sleep(10)
    finally:
        os.kill(aof_redis.process.pid, signal.SIGCONT)
    state = _wait(client, job)
    assert done_at_pause < state["expected"] == state["done"] and not state["errors"]
    assert pipeline_counts(client, job) == local_counts(plan, image_set, tiny_weights)


def test_a_message_lost_as_in_a_crash_is_redriven_and_the_counts_are_the_same(
        plain_redis, worker_env, tmp_path, image_set, tiny_weights, monkeypatch):
    # The loss a crash causes, made deterministic: a dwt message vanishes from its queue (as
    # one popped by BRPOP just before Redis died would), with no dwt worker yet to take it.
    plan = {**paper_plan(batch_size=25), "threads": 1}
    plan["attacks"] = plan["attacks"][:2]  # clean and FGSM: the recovery, not the attacks, is under test
    pool = Workers({**worker_env, "REDIS_URL": plain_redis.url}, tmp_path)
    try:
        for queue in QUEUES:
            if queue != "dwt":
                pool.start(queue)
        client, job = _submit(plain_redis.url, plan, image_set, monkeypatch)
        wait_for(lambda: client.llen("dwt") >= 2, 120, 0.05, "dwt messages")
        lost = json.loads(client.rpop("dwt"))
        pool.start("dwt")
        state = _wait(client, job)
    finally:
        pool.stop_all()
    lost_kwargs = json.loads(base64.b64decode(lost["body"]))[1]  # Celery's body: [args, kwargs, embed]
    assert lost_kwargs["job"] == job and lost_kwargs["defence"] in ("haar", "daubechies")
    assert state["expected"] == state["done"] and not state["errors"]
    assert state["redriven"] == 1  # the one (batch, attack) whose reconstruction was lost
    assert pipeline_counts(client, job) == local_counts(plan, image_set, tiny_weights)


def _evaluate_cli(redis_url, worker_env, tmp_path, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "evaluate", "--data", "sample", "--limit", str(IMAGES),
         "--out", str(tmp_path / "report")],
        env={**worker_env, "REDIS_URL": redis_url, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _first_job(client):
    return wait_for(lambda: client.zrange("ws:jobs", 0, 0), 120, 0.1, "the job to be created")[0].decode()


def _finish(proc, timeout):
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_redis_restarted_without_persistence_the_producer_says_the_job_vanished(
        plain_redis, start_workers, worker_env, tmp_path):
    start_workers(plain_redis.url)
    proc = _evaluate_cli(plain_redis.url, worker_env, tmp_path)
    client = connect(plain_redis.url, retry_window_s=60)
    _mid_job(client, _first_job(client))
    plain_redis.kill()
    time.sleep(1)
    plain_redis.start()  # empty: nothing was persisted
    _, err = _finish(proc, 120)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "gone from Redis" in lines[0] and "run the same command again" in lines[0]
    assert "Traceback" not in err


def test_redis_gone_past_the_retry_window_is_one_line_and_a_nonzero_exit(
        plain_redis, start_workers, worker_env, tmp_path):
    start_workers(plain_redis.url)
    proc = _evaluate_cli(plain_redis.url, worker_env, tmp_path, WAVESHIELD_REDIS_RETRY="3")
    client = connect(plain_redis.url, retry_window_s=60)
    _mid_job(client, _first_job(client))
    started = time.monotonic()
    plain_redis.kill()  # and it does not come back
    _, err = _finish(proc, 60)
    assert proc.returncode == 1 and time.monotonic() - started >= 3, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "lost Redis for more than 3 s" in lines[0] and "Traceback" not in err


def test_wait_gives_up_on_a_job_that_makes_no_progress(redis_client):
    pipe = Pipeline(redis_client)
    job = pipe.create_job(paper_plan(batch_size=10), torch.zeros(10, dtype=torch.int64).numpy())  # no workers
    started = time.monotonic()
    with pytest.raises(producer.JobFailed, match="no progress for 1 s"):
        producer.wait(redis_client, job, poll_s=0.1, stall_timeout_s=1)
    assert time.monotonic() - started < 10
