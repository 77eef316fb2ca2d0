"""Which work a stalled job re-sends (exactly its unfinished units, for every job kind), and which stranded
messages the workers' sweep hands out again (real Redis, no workers)."""

import json
import time

import numpy as np
import pytest

from producers import submit as producer
from shared.evaluation.plan import paper_plan
from shared.pipeline import Pipeline, orphans
from shared.pipeline.recovery import UNACKED_KEY

from .conftest import wait_for

CONFIGS = ("standard+raw", "haar+haar")


def _plan(mode="staged"):
    plan = {**paper_plan(batch_size=10), "configurations": [{"model": "standard", "defence": None},
                                                            {"model": "haar", "defence": "haar"}], "mode": mode}
    plan["attacks"] = plan["attacks"][:3]
    return plan


def _collect(pipe, job, batch, attack, configuration):
    assert pipe.collect(job, batch, attack, configuration, 5, 10)


@pytest.mark.parametrize("mode", ["staged", "fused"])
def test_an_evaluation_resends_the_units_with_a_missing_cell(redis_client, mode):
    pipe = Pipeline(redis_client)
    job = pipe.create_job(_plan(mode), np.zeros(30, np.int64))  # 3 batches x 3 attacks x 2 configurations
    for batch in range(3):
        for attack in range(3):
            for configuration in CONFIGS:
                if (batch, attack, configuration) not in {(0, 1, "haar+haar"), (2, 0, "standard+raw"),
                                                          (2, 2, "standard+raw"), (2, 2, "haar+haar")}:
                    _collect(pipe, job, batch, attack, configuration)
    if mode == "staged":
        assert pipe.unfinished(job) == [("attack", {"job": job, "batch": b, "attack": a}) for b, a in
                                        [(0, 1), (2, 0), (2, 2)]]
    else:
        assert pipe.unfinished(job) == [("fused", {"job": job, "batch": b}) for b in (0, 2)]
    for cell in [(0, 1, "haar+haar"), (2, 0, "standard+raw"), (2, 2, "standard+raw"), (2, 2, "haar+haar")]:
        _collect(pipe, job, *cell)
    assert pipe.progress(job)["status"] == "complete" and pipe.unfinished(job) == []


@pytest.mark.parametrize("mode,first", [("staged", "screen_dwt"), ("fused", "screen_fused")])
def test_a_screening_job_resends_its_uncollected_batches(redis_client, mode, first):
    pipe = Pipeline(redis_client)
    job = pipe.create_screen_job({"defence": "haar", "threshold": 0.5, "mode": mode}, [["a"], ["b"], ["c"]], [],
                                 ["cat"])
    redis_client.set(f"ws:job:{job}:batch_records:1", "[]")
    assert pipe.screen_collect(job, 1)
    assert pipe.unfinished(job) == [(first, {"job": job, "batch": 0}), (first, {"job": job, "batch": 2})]


def test_a_corpus_resends_only_the_shards_it_was_given_and_has_not_written(redis_client, tmp_path):
    pipe = Pipeline(redis_client)
    plan = {"source_model": "standard", "attacks": [{"name": "fgsm", "params": {"eps": 0.01}}] * 2, "shard_size": 1,
            "dtype": "float32", "seed": 0, "out": "corp", "corpus_key": "k", "source_model_sha256": "0" * 64}
    # An earlier run wrote (0, 0) and (0, 1): this job was given the other four; (1, 1) is collected.
    job = pipe.create_corpus_job(plan, np.array([1, 2, 3]), [["a"], ["b"], ["c"]], [(1, 0), (1, 1), (2, 0), (2, 1)])
    redis_client.hset(f"ws:job:{job}:cells", "1|1", 1)
    assert pipe.unfinished(job) == [("corpus_attack", {"job": job, "shard": s, "attack": a})
                                    for s, a in [(1, 0), (2, 0), (2, 1)]]


def test_in_flight_counts_queued_and_unacknowledged_messages(redis_client):
    pipe = Pipeline(redis_client)
    assert pipe.in_flight() == 0
    redis_client.lpush("dwt", "m1", "m2")
    redis_client.hset(UNACKED_KEY, "tag", "m3")
    assert pipe.in_flight() == 3


def test_redrive_sends_the_unfinished_units_and_counts_them(redis_client):
    sent = []

    class App:  # records what would go on the queues
        def send_task(self, name, kwargs, queue):
            sent.append((name, kwargs, queue))

    pipe = Pipeline(redis_client)
    job = pipe.create_job(_plan(), np.zeros(10, np.int64))
    for attack in (0, 2):
        for configuration in CONFIGS:
            _collect(pipe, job, 0, attack, configuration)
    assert producer.redrive(pipe, App(), job) == [("attack", {"job": job, "batch": 0, "attack": 1})]
    assert sent == [("waveshield.attack", {"job": job, "batch": 0, "attack": 1}, "attack")]
    assert pipe.progress(job)["redriven"] == 1
    with pytest.raises(producer.JobFailed, match="gone from Redis"):
        producer.redrive(pipe, App(), "nosuchjob")


def _deliver(client, tag, task_id, queue, age_s):
    """Put a message in the transport's unacked hash as if a worker took it ``age_s`` ago."""
    message = {"body": "", "headers": {"id": task_id, "task": f"waveshield.{queue}"}, "properties": {}}
    client.hset(orphans.UNACKED_KEY, tag, json.dumps([message, queue, queue]))
    client.zadd(orphans.UNACKED_INDEX_KEY, {tag: time.time() - age_s})


def test_an_orphan_is_an_old_delivery_of_our_queues_whose_task_holds_no_lease(redis_client):
    _deliver(redis_client, "t-old", "task-old", "attack", 120)  # stranded
    _deliver(redis_client, "t-running", "task-running", "attack", 120)  # a long task, still running
    _deliver(redis_client, "t-new", "task-new", "dwt", 2)  # just taken: its task has not started yet
    _deliver(redis_client, "t-other", "task-other", "celery", 120)  # not a waveshield queue
    redis_client.set(orphans.lease_key("task-running"), 1, ex=30)
    assert [d.tag for d in orphans.orphans(redis_client)] == ["t-old"]
    running = {d.tag: d.running for d in orphans.deliveries(redis_client)}
    assert running == {"t-old": False, "t-running": True, "t-new": False, "t-other": False}
    counts = orphans.census(redis_client)
    assert counts["attack"] == {"queued": 0, "unacked": 2, "running": 1, "workers": 0}
    assert counts["dwt"]["unacked"] == 1


def test_a_lease_outlives_its_lifetime_while_renewed_and_lapses_after(redis_client):
    key = orphans.lease_key("t1")
    with orphans.Lease(redis_client, "t1", ttl_s=1.0, renew_s=0.2):
        time.sleep(2.0)  # twice its lifetime
        assert redis_client.exists(key)
    ttl_ms = redis_client.pttl(key)
    assert 0 < ttl_ms <= 1000  # left to expire, not deleted: the ack follows the task
    wait_for(lambda: not redis_client.exists(key), 3, 0.05, "the released lease to lapse")


def test_the_shipped_lease_is_renewed_well_inside_its_lifetime_and_outlasts_the_orphan_age():
    # A live task's message is never handed out twice: it misses five renewals before its lease
    # lapses, and a delivery younger than the lease's lifetime is never an orphan.
    assert orphans.LEASE_TTL_S >= 5 * orphans.LEASE_RENEW_S
    assert orphans.ORPHAN_AFTER_S >= orphans.LEASE_TTL_S
    assert orphans.ORPHAN_AFTER_S + orphans.LEASE_TTL_S + orphans.SWEEP_EVERY_S <= 90  # back within 1.5 min


def test_one_worker_sweeps_per_interval(redis_client):
    assert orphans.take_sweep_turn(redis_client, "a@h")
    assert not orphans.take_sweep_turn(redis_client, "b@h")
