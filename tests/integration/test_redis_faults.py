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
from shared.evaluation.plan import paper_plan
from shared.pipeline import Pipeline, orphans
from shared.settings import load as load_settings
from shared.store.client import connect

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
    """Follow the job as the CLI does, with the shipped stall timeout and re-drive."""
    from workers.app import app

    cfg = load_settings()
    return producer.wait(client, job, timeout_s=timeout_s, app=app, stall_timeout_s=cfg.stall_timeout_s,
                         redrive_after_s=cfg.redrive_after_s)


def _mid_job(client, job):
    wait_for(lambda: 0 < int(client.hget(f"ws:job:{job}:meta", "done") or 0), 120, 0.05, "the first counted cell")
    return int(client.hget(f"ws:job:{job}:meta", "done"))


def _running(client):
    """Whether a worker runs a task now (it holds a lease on an unacknowledged message)."""
    return any(d.running for d in orphans.deliveries(client))


def test_redis_kill_9_with_aof_everysec_mid_job_completes_within_180_s_of_the_restart(
        aof_redis, start_workers, plan, image_set, tiny_weights, monkeypatch):
    # The shipped defaults throughout: visibility timeout 3600 s, stall timeout, re-drive.
    start_workers(aof_redis.url)
    client, job = _submit(aof_redis.url, plan, image_set, monkeypatch)
    done_at_crash = _mid_job(client, job)
    wait_for(lambda: _running(client), 120, 0.05, "a task running on a worker")  # so that one is cancelled
    aof_redis.kill()
    time.sleep(2)
    aof_redis.start()
    restarted = time.monotonic()
    state = _wait(client, job)  # the producer's client rode out the outage
    assert time.monotonic() - restarted < 180
    assert done_at_crash < state["expected"] == state["done"] and not state["errors"]
    counts = pipeline_counts(client, job)
    assert counts == local_counts(plan, image_set, tiny_weights)
    # A message the crash stranded (restored from the AOF as delivered, its task cancelled) can
    # outlive the job when the producer's re-drive finished its units first: the workers' sweep
    # hands it out once it is an orphan, and its repeat changes nothing.
    wait_for(lambda: not client.hlen(orphans.UNACKED_KEY), orphans.ORPHAN_AFTER_S + 3 * orphans.SWEEP_EVERY_S, 0.5,
             "the stranded messages to be handed out again and acknowledged")
    assert pipeline_counts(client, job) == counts and not Pipeline(client).progress(job)["errors"]


def _submit_screen(redis_url, image_set, monkeypatch):
    from producers.screening import screen as screen_mod
    from workers.app import app, use_broker

    monkeypatch.setenv("REDIS_URL", redis_url)
    use_broker(redis_url)
    client = connect(redis_url, retry_window_s=60)
    return client, screen_mod.submit_screen(client, app, image_set, load_settings(), batch_size=25)


@pytest.mark.parametrize("kind", ["evaluate", "screen"])
def test_a_message_stranded_unacknowledged_goes_out_again_within_a_minute(
        plain_redis, worker_env, tmp_path, image_set, tiny_weights, monkeypatch, kind):
    # What a lost connection leaves (the worker cancelled its task and forgot the message, which
    # still sits in the transport's unacked hash), made deterministic: a dwt message is moved
    # there as delivered 40 s ago, with no worker holding it. The visibility timeout is an hour.
    plan = {**paper_plan(batch_size=25), "threads": 1}
    plan["attacks"] = plan["attacks"][:2]
    pool = Workers({**worker_env, "REDIS_URL": plain_redis.url}, tmp_path)
    monkeypatch.setenv("WAVESHIELD_WEIGHTS_DIR", str(tiny_weights))
    try:
        for queue in QUEUES:
            if queue != "dwt":
                pool.start(queue)
        if kind == "evaluate":
            client, job = _submit(plain_redis.url, plan, image_set, monkeypatch)
        else:
            client, job = _submit_screen(plain_redis.url, image_set, monkeypatch)
        wait_for(lambda: client.llen("dwt") >= 2, 120, 0.05, "dwt messages")
        message = json.loads(client.rpop("dwt"))
        client.hset(orphans.UNACKED_KEY, "stranded-tag", json.dumps([message, "dwt", "dwt"]))
        client.zadd(orphans.UNACKED_INDEX_KEY, {"stranded-tag": time.time() - 40})
        pool.start("dwt")
        started = time.monotonic()
        state = _wait(client, job)
        took = time.monotonic() - started
    finally:
        pool.stop_all()
    assert took < 60 and state["expected"] == state["done"] and not state["errors"]
    assert state["redriven"] == 0  # the sweep handed the message out; no re-drive was needed
    assert not client.hexists(orphans.UNACKED_KEY, "stranded-tag")
    assert int(client.get(f"ws:deliveries:{message['headers']['id']}")) == 1
    if kind == "evaluate":
        assert pipeline_counts(client, job) == local_counts(plan, image_set, tiny_weights)
    else:
        assert len(Pipeline(client).screen_records(job)) == len(image_set)


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


def test_wait_gives_up_on_a_job_that_makes_no_progress_and_says_what_it_saw(redis_client):
    pipe = Pipeline(redis_client)
    job = pipe.create_job(paper_plan(batch_size=10), torch.zeros(10, dtype=torch.int64).numpy())  # no workers
    redis_client.lpush("attack", "m1", "m2")
    started = time.monotonic()
    with pytest.raises(producer.JobFailed, match="no progress for 1 s") as failed:
        producer.wait(redis_client, job, poll_s=0.1, stall_timeout_s=1)
    assert time.monotonic() - started < 10
    assert "attack: 2 queued, 0 unacknowledged (0 running), 0 workers" in str(failed.value)
    assert "no worker is alive" in str(failed.value)


def test_the_stall_message_names_a_queue_without_a_worker_or_else_resume(redis_client):
    state = {"done": 73, "expected": 80}
    orphans.beat(redis_client, "attack@host", ["attack"])
    redis_client.lpush("classify", "m1")
    message = producer.stall_message(redis_client, "j1", state, 600)
    assert "(73/80 done)" in message and "attack: 0 queued, 0 unacknowledged (0 running), 1 worker;" in message
    assert "no worker consumes classify" in message and "resume" not in message
    for queue in QUEUES:
        orphans.beat(redis_client, f"{queue}@host", [queue])
    assert "waveshield resume j1" in producer.stall_message(redis_client, "j1", state, 600)
