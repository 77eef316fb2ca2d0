"""Evaluate jobs through real Celery workers on a real Redis."""

import json

import numpy as np
import pytest

from producers import submit as producer
from shared.evaluation.plan import paper_plan
from shared.pipeline import Pipeline
from shared.pipeline.keys import adversarial_key
from shared.settings import load as load_settings

from .conftest import JOB_BATCH, JOB_IMAGES, local_counts, pipeline_counts, wait_for


def _plan(batch_size=JOB_BATCH):
    # Crafting on 2 threads in the workers (started with 1) and in this process alike:
    # DeepFool's images sit on the boundary, and a different thread count moves them.
    return {**paper_plan(batch_size=batch_size), "threads": 2}


def _app(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    from workers.app import app, use_broker

    use_broker(redis_url)
    return app


@pytest.fixture()
def image_set(job_images):
    return job_images


@pytest.mark.parametrize("mode", ["staged", "fused"])
def test_pipeline_counts_equal_local_and_blobs_are_cleaned(redis_client, redis_url, workers, image_set, tiny_weights,
                                                           monkeypatch, mode):
    app = _app(redis_url, monkeypatch)
    plan = {**_plan(), "mode": mode}
    memory_before = redis_client.info("memory")["used_memory"]
    job = producer.submit(redis_client, app, plan, image_set, load_settings())
    state = producer.wait(redis_client, job, timeout_s=600)
    assert state["done"] == state["expected"] == JOB_IMAGES // JOB_BATCH * 8 * 5 and not state["errors"]
    assert pipeline_counts(redis_client, job) == local_counts(plan, image_set, tiny_weights)
    assert not list(redis_client.scan_iter(match="ws:blob:*"))  # every blob released by its last consumer
    assert all(v == 0 for v in producer.queue_lengths(redis_client).values())
    assert redis_client.info("memory")["used_memory"] - memory_before < 2_000_000
    ran = {k.decode().split(":")[4] for k in redis_client.scan_iter(match=f"ws:job:{job}:done:*")}
    assert ran == ({"fused"} if mode == "fused" else {"attack", "dwt", "classify"})
    traffic = Pipeline(redis_client).traffic(job)
    kib_per_image = sum(v["in"] + v["out"] for v in traffic.values()) / 1024 / len(image_set)
    if mode == "fused":  # the clean batch in and out, nothing else
        assert set(traffic) == {"producer", "fused"} and traffic["producer"]["in"] == traffic["fused"]["out"]
        assert kib_per_image < 16
    else:
        assert set(traffic) == {"producer", "attack", "dwt", "classify"} and kib_per_image > 100


def _in_flight(client, queue: str, running: bool) -> bool:
    """Whether a worker of ``queue`` holds an unacknowledged task (that has started, if ``running``)."""
    for raw in client.hvals("unacked"):
        message, _exchange, routing_key = json.loads(raw)
        if routing_key == queue and (not running or client.exists(f"ws:deliveries:{message['headers']['id']}")):
            return True
    return False


def _redelivered(client):
    return [k for k in client.scan_iter(match="ws:deliveries:*") if int(client.get(k)) > 1]


def test_kill_9_of_attack_classify_and_collect_workers_loses_and_duplicates_nothing(redis_client, redis_url, workers,
                                                                             sample, tiny_weights, monkeypatch):
    # 200 images (8 batches), as before the other jobs here went to 100: with 4 batches one run of 5 lost a cell.
    image_set = type(sample)(sample.images[:200], sample.labels[:200], sample.ids[:200])
    app = _app(redis_url, monkeypatch)
    plan = _plan()
    job = producer.submit(redis_client, app, plan, image_set, load_settings())
    # Downstream first: with attack dead, the later stages would run dry. Collect tasks last
    # milliseconds: it is killed holding one it has received; the others, running one.
    for queue, running in (("collect", False), ("classify", True), ("attack", True)):
        wait_for(lambda: _in_flight(redis_client, queue, running), 120, 0.005, f"an unacked {queue} task")
        workers.kill(queue)
    progress_at_kill = int(redis_client.hget(f"ws:job:{job}:meta", "done"))
    for queue in ("attack", "classify", "collect"):
        workers.start(queue)
    state = producer.wait(redis_client, job, timeout_s=240)  # a lost task shows as a timeout here
    assert progress_at_kill < state["expected"]  # the kills happened mid-job
    assert state["done"] == state["expected"] and not state["errors"]
    assert pipeline_counts(redis_client, job) == local_counts(plan, image_set, tiny_weights)
    assert _redelivered(redis_client), "no task was redelivered: the kill hit no task in flight"
    assert not list(redis_client.scan_iter(match="ws:blob:*"))


def test_collect_counts_a_redelivered_cell_once(redis_client):
    pipe = Pipeline(redis_client)
    plan = _plan(batch_size=10)
    job = pipe.create_job(plan, np.zeros(10, np.int64))
    assert pipe.collect(job, 0, 1, "standard+raw", 7, 10)
    assert not pipe.collect(job, 0, 1, "standard+raw", 7, 10)  # the same message again
    cell = next(c for c in pipe.cells(job) if c.configuration == "standard+raw" and c.attack.id == "fgsm eps=0.004")
    assert (cell.correct, cell.total) == (7, 10) and pipe.progress(job)["done"] == 1


def test_a_float_batch_reaches_the_attack_stage_unrounded(redis_client, sample):
    # A third of an 8-bit level added to every pixel: rounding anywhere on the way would erase it.
    images = (sample.images[:10].astype(np.float32) / np.float32(255) + np.float32(1 / 765)).clip(0, 1)
    pipe = Pipeline(redis_client)
    job = pipe.create_job(_plan(batch_size=10), sample.labels[:10])
    messages = pipe.add_batch(job, 0, images)
    assert [name for name, _ in messages] == ["attack"] * 8
    pipe.attack(job, 0, 0)  # the clean row: the batch as the stage decoded it
    decoded = pipe.blobs.get(adversarial_key(job, 0, 0))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, images.transpose(0, 3, 1, 2))


def test_pickled_message_is_refused(redis_client, redis_url, workers, monkeypatch):
    app = _app(redis_url, monkeypatch)
    pipe = Pipeline(redis_client)
    plan = {**paper_plan(batch_size=1), "configurations": [{"model": "standard", "defence": None}]}
    job = pipe.create_job(plan, np.zeros(2, np.int64))  # a real job: the cell below would count if run
    cell = {"job": job, "attack": 0, "configuration": "standard+raw", "correct": 1, "total": 1}
    app.send_task("waveshield.collect", kwargs={**cell, "batch": 0}, queue="collect", serializer="pickle")
    log = workers.log_dir / "collect.log"
    wait_for(lambda: log.exists() and b"pickle" in log.read_bytes().lower(), 60, 0.2, "the worker to refuse pickle")
    app.send_task("waveshield.collect", kwargs={**cell, "batch": 1}, queue="collect")  # the same cell, as JSON
    wait_for(lambda: redis_client.hexists(f"ws:job:{job}:cells", "1|0|standard+raw"), 60, 0.2, "the JSON cell")
    assert not redis_client.hexists(f"ws:job:{job}:cells", "0|0|standard+raw")  # the pickled one never ran


def test_a_job_whose_meta_a_heartbeat_recreated_after_redis_lost_it_is_gone_in_one_line(redis_client):
    from producers.submit import JobFailed, followed
    from shared.pipeline.meta import JobNotFound

    pipe = Pipeline(redis_client)
    job = pipe.create_job(_plan(batch_size=10), np.zeros(10, np.int64))
    redis_client.flushdb()  # Redis restarted without its data ...
    pipe.note_producer(job, "host:1")  # ... and a producer's heartbeat wrote one field again
    with pytest.raises(JobNotFound, match=f"no job '{job}' in Redis"):
        pipe.progress(job)
    with pytest.raises(JobFailed, match="is gone from Redis"), followed(job):
        pipe.progress(job)
