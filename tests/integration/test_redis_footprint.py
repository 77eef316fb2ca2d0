"""Redis holds a screening job's work in flight, not its history: what a finished job leaves, where its records go."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import redis
from PIL import Image

from producers import submit as producer
from producers.screening import screen as screen_mod
from shared.images.load import load_many
from shared.pipeline import Pipeline, durable
from shared.settings import load as load_settings

from .conftest import REPO, DyingRedis, Killed, Workers, wait_for

WAVESHIELD = [sys.executable, "-m", "producers.cli"]


def _pngs(folder, sample, n: int, start: int = 0):
    folder.mkdir(parents=True)
    for i in range(start, start + n):
        Image.fromarray(sample.images[i]).save(folder / f"img{i:04d}.png")
    return folder


def _screen(env, *args, timeout=300):
    return subprocess.run(WAVESHIELD + ["screen", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _job_of(reply) -> str:
    return reply.stderr.split("job ", 1)[1].split(":", 1)[0].split(" ", 1)[0]


def _left(client, job: str) -> dict[str, int]:
    """Every key of ``job`` still in Redis (blobs included), with its MEMORY USAGE."""
    keys = [*client.scan_iter(f"ws:job:{job}:*"), *client.scan_iter(f"ws:blob:{job}:*")]
    return {k.decode().split(f"{job}:", 1)[1]: int(client.memory_usage(k)) for k in keys}


def test_a_finished_job_leaves_a_few_kib_in_redis_whatever_its_size(redis_client, workers, worker_env, sample,
                                                                       tmp_path):
    left = {}
    for n in (48, 240):
        out = tmp_path / f"out{n}"
        reply = _screen(worker_env, _pngs(tmp_path / f"in{n}", sample, n), "--batch-size", 16, "--out", out)
        assert reply.returncode == 0, reply.stderr
        assert sum(1 for _ in open(out / "records.jsonl")) == n
        left[n] = _left(redis_client, _job_of(reply))
    for n, keys in left.items():
        # Meta, plan, counts and bitmaps: no records, ids, waiting records or per-batch markers.
        assert not [k for k in keys if k.startswith(("records", "ids", "batch_records", "done:screen_dwt:"))], keys
        assert sum(keys.values()) <= 64 * 1024
    # Five times the batches leave no more than a few bytes more (the bitmaps grow a bit a batch).
    assert sum(left[240].values()) - sum(left[48].values()) < 512, left


def test_results_of_a_no_wait_job_read_the_records_that_left_redis(redis_client, workers, worker_env, sample,
                                                                     tmp_path):
    out = tmp_path / "out"
    reply = _screen(worker_env, _pngs(tmp_path / "in", sample, 80), "--batch-size", 16, "--no-wait", "--out", out)
    assert reply.returncode == 0, reply.stderr
    job = reply.stdout.split("job ", 1)[1].split(" ", 1)[0]
    wait_for(lambda: (out / "summary.json").is_file(), 300, what="the background producer's summary")
    assert not redis_client.exists(f"ws:job:{job}:records")  # every record is on disk, none in Redis
    fetched = tmp_path / "fetched"
    reply = subprocess.run(WAVESHIELD + ["results", job, "--out", str(fetched)], cwd=REPO, env=worker_env,
                           capture_output=True, text=True, timeout=120)
    assert reply.returncode == 0, reply.stderr
    assert (fetched / "records.jsonl").read_text() == (out / "records.jsonl").read_text()
    assert json.loads((fetched / "summary.json").read_text())["screened"] == 80


def test_the_collector_writes_the_records_of_a_job_nobody_follows(redis_client, redis_url, workers, worker_env,
                                                                  tiny_weights, sample, tmp_path, monkeypatch):
    for name in ("REDIS_URL", "WAVESHIELD_WEIGHTS_DIR", "WAVESHIELD_DEVICE"):
        monkeypatch.setenv(name, worker_env[name])
    from workers.app import app, use_broker

    use_broker(redis_url)
    settings = load_settings()
    image_set = load_many([str(_pngs(tmp_path / "in", sample, 64))])
    job = screen_mod.submit_screen(redis_client, app, image_set, settings, batch_size=16)  # no follower
    assert producer.wait(redis_client, job, timeout_s=300)["status"] == "complete"
    wait_for(lambda: not redis_client.exists(f"ws:job:{job}:records"), 30, what="the records to leave Redis")
    written = durable.unfollowed_path(worker_env["WAVESHIELD_OUTPUT_DIR"], job)
    on_disk = [json.loads(line) for line in open(written)]
    assert [r["id"] for r in on_disk] == image_set.ids
    local = screen_mod.screen_local(image_set, settings, batch_size=16)
    assert Pipeline(redis_client).screen_records(job) == on_disk
    assert [(r["label"], r["flagged"]) for r in on_disk] == [(r["label"], r["flagged"]) for r in local]


def _screen_job(client, batches: int = 3):
    """A screening job whose batches' records all wait for the collector, as the classify stage leaves them."""
    from shared.screening.verdicts import Record, error_record

    pipe = Pipeline(client)
    ids = [[f"b{b}-{i}.png" for i in range(4)] for b in range(batches)]
    bad = error_record("bad.png", "not an image")
    job = pipe.create_screen_job({"defence": "haar", "threshold": 0.5}, ids, [bad], ["cat"])
    found = [[Record(n, label="cat", raw_label="cat", confidence=0.9, suspicion=0.1 * i, flagged=i == 3).as_dict()
              for i, n in enumerate(names)] for names in ids]
    for b, records in enumerate(found):
        client.set(f"ws:job:{job}:batch_records:{b}", json.dumps(records))
    return pipe, job, [r for records in found for r in records] + [bad]


def test_a_redelivery_after_the_records_moved_counts_nothing(redis_client, tmp_path):
    pipe, job, expected = _screen_job(redis_client)
    for b in range(3):
        assert pipe.screen_collect(job, b, output_dir=tmp_path)  # nobody follows: the collector writes them
    assert pipe.progress(job)["status"] == "complete"
    assert not redis_client.exists(f"ws:job:{job}:records")
    before = pipe.progress(job)
    for b in range(3):  # each batch's collect message again, and its classify stage's (its bit is set)
        assert not pipe.screen_collect(job, b, output_dir=tmp_path)
        redis_client.setbit(f"ws:job:{job}:done:screen_classify", b, 1)
        assert pipe.screen_classify(job, b) == [("screen_collect", {"job": job, "batch": b})]
    after = pipe.progress(job)
    assert (after["done"], after["screened"], after["expected"]) == (before["done"], before["screened"], 3)
    assert pipe.screen_records(job) == expected


def test_a_second_follower_never_touches_the_first_ones_files_and_gets_the_same_records(redis_client, tmp_path):
    pipe, job, expected = _screen_job(redis_client)
    pipe.screen_collect(job, 0)
    first = screen_mod.JobRecords(Pipeline(redis_client), job, tmp_path / "first")
    first.drain()  # batch 0 on disk, out of Redis
    same = screen_mod.JobRecords(Pipeline(redis_client), job, tmp_path / "first")  # the command run twice
    elsewhere = screen_mod.JobRecords(Pipeline(redis_client), job, tmp_path / "elsewhere")
    assert same.other == elsewhere.other == first.mover.who
    for b in (1, 2):
        pipe.screen_collect(job, b)
        assert same.drain() == elsewhere.drain() == 0
        first.drain()
    with first:
        summary = first.close()
    with elsewhere:
        assert elsewhere.close() == summary
    with same:
        assert same.close() == summary
    for out in ("first", "elsewhere"):
        assert [json.loads(line) for line in open(tmp_path / out / "records.jsonl")] == expected
    assert summary["images"] == len(expected)


def test_a_follower_takes_over_from_the_collector_and_the_collector_from_a_follower(redis_client, tmp_path):
    pipe, job, expected = _screen_job(redis_client, batches=4)
    follower = screen_mod.JobRecords(Pipeline(redis_client), job, tmp_path / "out")
    pipe.screen_collect(job, 0, output_dir=tmp_path / "collector")  # followed: the collector leaves it
    assert follower.drain() == 1
    follower.__exit__(None, None, None)  # the follower stops (Ctrl-C)
    pipe.screen_collect(job, 1, output_dir=tmp_path / "collector")  # nobody follows: the collector writes
    assert not redis_client.hexists(f"ws:job:{job}:records", 1)
    collected = durable.unfollowed_path(tmp_path / "collector", job)
    assert len(collected.read_text().splitlines()) == 8  # batch 0, copied from the follower's file, and batch 1
    with screen_mod.JobRecords(Pipeline(redis_client), job, tmp_path / "out") as again:  # the command run again
        for b in (2, 3):
            pipe.screen_collect(job, b, output_dir=tmp_path / "collector")
            again.drain()
        again.close()
    assert [json.loads(line) for line in open(tmp_path / "out" / "records.jsonl")] == expected
    assert pipe.screen_records(job) == expected and not redis_client.exists(f"ws:job:{job}:records")


def _fill(client) -> list[str]:
    """Fill Redis past its maxmemory, as other jobs' data would; return the keys to delete for room again.

    Redis refuses a write only while it uses more than maxmemory, and a
    refused command's buffers are freed after it: the last MiB is taken
    off maxmemory, so that no write slips through at the boundary.
    """
    keys = []
    while True:
        try:
            client.set(f"junk:{len(keys)}", b"x" * 256 * 1024)
            keys.append(f"junk:{len(keys)}")
        except redis.exceptions.OutOfMemoryError:
            break
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 2 ** 20)
    return keys


def test_a_job_failing_at_every_batch_keeps_the_first_errors_and_counts_them_all(redis_client):
    from shared import settings

    keep = settings.load().keep_errors
    pipe = Pipeline(redis_client, keep_errors=keep)
    job = pipe.create_screen_job({"defence": "haar", "threshold": 0.5}, [["a"]], [], ["cat"])
    for b in range(keep + 50):
        pipe.record_error(job, f"screen_dwt {b}", "dropped after too many redeliveries")
    state = pipe.progress(job)
    assert len(state["errors"]) == keep and state["errors_total"] == keep + 50
    assert state["errors"][0]["where"] == "screen_dwt 0"
    pipe.forget_job(job)
    pipe.record_error(job, "screen_dwt 0", "late")  # a late message of a job that is gone creates nothing
    assert not list(redis_client.scan_iter(f"ws:job:{job}:*"))


def test_a_follower_killed_at_any_point_loses_and_repeats_no_record(redis_client, tmp_path):
    after = 0
    while True:
        redis_client.flushdb()
        pipe, job, expected = _screen_job(redis_client)
        for b in range(3):
            pipe.screen_collect(job, b)
        out = tmp_path / f"after{after}"
        try:
            with screen_mod.JobRecords(Pipeline(DyingRedis(redis_client.connection_pool, after)), job, out) as dying:
                dying.close()
            survived = True
        except Killed:
            survived = False
        redis_client.delete(f"ws:job:{job}:writer")  # its lease would run out
        with screen_mod.JobRecords(Pipeline(redis_client), job, out) as again:  # the command run again
            again.close()
        assert [json.loads(line) for line in open(out / "records.jsonl")] == expected, f"killed after {after}"
        assert not redis_client.exists(f"ws:job:{job}:records")
        if survived:
            break
        after += 1
    assert after >= 5


def test_a_full_redis_makes_the_producer_wait_and_say_why(worker_env, sample, tmp_path):
    from producers.redis_server import EmbeddedRedis

    with EmbeddedRedis(maxmemory_mib=24) as server:
        client = redis.Redis.from_url(server.url)
        env = {**worker_env, "REDIS_URL": server.url}
        pool = Workers(env, tmp_path)
        try:
            for queue in ("dwt", "classify", "collect"):
                pool.start(queue)
            # Running workers ride out a full Redis; one that starts while it is full exits (its transport's
            # first lock is a write), so Redis fills up once they run.
            wait_for(lambda: len(list(client.scan_iter("ws:worker:*"))) == 3, 60, what="the workers' heartbeats")
            junk = _fill(client)
            out = tmp_path / "out"
            command = subprocess.Popen(WAVESHIELD + ["screen", str(_pngs(tmp_path / "in", sample, 64)), "--batch-size",
                                                     "32", "--out", str(out)], cwd=REPO, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            said = []
            reader = threading.Thread(target=lambda: said.extend(command.stderr), daemon=True)
            reader.start()
            try:
                wait_for(lambda: any("Redis is full (used" in line for line in said), 120,
                         what="the producer to say Redis is full")
                assert command.poll() is None  # waiting, not failed
                time.sleep(2)
                assert not (out / "summary.json").exists()
                client.delete(*junk)  # room again
                assert command.wait(180) == 0, "".join(said)
            finally:
                if command.poll() is None:
                    command.kill()
                    command.wait()
            reader.join(5)
            line = next(line for line in said if "Redis is full" in line)
            assert line.startswith("warning: Redis is full (used ") and " MiB)" in line
            records = [json.loads(r) for r in open(out / "records.jsonl")]
            assert len(records) == 64 and all(r["error"] is None for r in records)
        finally:
            pool.stop_all()


def test_a_stage_whose_result_a_full_redis_refuses_waits_and_is_not_acknowledged_meanwhile(tmp_path, monkeypatch):
    from producers.redis_server import EmbeddedRedis
    from workers import runtime

    with EmbeddedRedis(maxmemory_mib=16) as server:
        client = redis.Redis.from_url(server.url)
        pipe = Pipeline(client)
        job = pipe.create_screen_job({"defence": "haar", "threshold": 0.5}, [["a"]], [], ["cat"])
        client.set(f"ws:job:{job}:batch_records:0", json.dumps([{"id": "a", "label": "cat"}]))
        junk = _fill(client)
        monkeypatch.setattr(runtime, "pipeline", lambda: pipe)
        monkeypatch.setattr(runtime, "quick_client", lambda: client)
        sent, finished = [], threading.Event()

        class Task:
            class request:
                id = "task-1"

            class app:
                @staticmethod
                def send_task(name, kwargs, queue):
                    sent.append(name)

        def run():
            runtime.run_stage(Task, "screen_collect", job=job, batch=0, output_dir=tmp_path)
            finished.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(3)
        assert not finished.is_set() and pipe.progress(job)["done"] == 0  # still trying: no ack, nothing counted
        client.delete(*junk)
        assert finished.wait(30)
        assert pipe.progress(job)["status"] == "complete" and pipe.screen_records(job)[0]["id"] == "a"
        # Nobody follows: the collector wrote the record once there was room, and Redis holds none.
        assert [json.loads(line)["id"] for line in open(durable.unfollowed_path(tmp_path, job))] == ["a"]
        assert not client.exists(f"ws:job:{job}:records")


def test_an_evaluation_producer_waits_for_room_too(sample, caplog):
    """Every job kind's producer waits out a full Redis: here an evaluation's, with no worker (nothing frees it)."""
    from producers.redis_server import EmbeddedRedis
    from shared.evaluation.plan import paper_plan
    from workers.app import app, use_broker

    earlier = app.conf.broker_url
    with EmbeddedRedis(maxmemory_mib=16) as server:
        client = redis.Redis.from_url(server.url)
        use_broker(server.url)
        try:
            junk = _fill(client)
            image_set = type(sample)(sample.images[:10], sample.labels[:10], sample.ids[:10])
            result = {}
            thread = threading.Thread(target=lambda: result.update(job=producer.submit(
                client, app, paper_plan(batch_size=10), image_set, load_settings())), daemon=True)
            with caplog.at_level("WARNING", logger="waveshield"):
                thread.start()
                wait_for(lambda: any("Redis is full (used" in r.getMessage() for r in caplog.records), 60,
                         what="the producer to say Redis is full")
                time.sleep(1)
                assert "job" not in result and client.llen("attack") == 0  # waiting, nothing sent
                client.delete(*junk)
                thread.join(60)
            job = result["job"]
            assert Pipeline(client).batches_fed(job) == 1
            assert client.llen("attack") == len(paper_plan()["attacks"])  # the batch's messages, each once
        finally:
            use_broker(earlier)
