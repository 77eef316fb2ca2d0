"""Streaming intake as a user runs it: `screen --no-wait` hands the input to a background producer that
keeps a bounded number of batches in Redis, survives being killed (the same command reads on), and
leaves one record per item once workers arrive."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from shared.pipeline.meta import running

from .conftest import QUEUES, REPO, Workers, wait_for

WAVESHIELD = [sys.executable, "-m", "producers.cli"]


def run(args, env):
    return subprocess.run(WAVESHIELD + args, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


alive = running


def stop(pid: int) -> None:
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 30, what=f"process {pid} to end")


def started(result) -> tuple[str, int]:
    """The job id and the background producer's pid that `screen --no-wait` printed."""
    assert result.returncode == 0, result.stderr
    job = re.search(r"job (\w+)", result.stdout).group(1)
    return job, int(re.search(r"pid (\d+)", result.stdout).group(1))


@pytest.fixture()
def five_thousand(tmp_path, cifar_test_zip):
    """5,000 JPEGs of the mirror's test split in a zip: 20 batches of the default 256."""
    path = tmp_path / "incoming.zip"
    with zipfile.ZipFile(cifar_test_zip) as source, zipfile.ZipFile(path, "w") as target:
        names = sorted(n for n in source.namelist() if n.endswith(".jpg"))[::2][:5000]
        for name in names:
            target.writestr(name, source.read(name))
    return path, names


def test_backpressure_kill_and_the_same_command_reads_on_without_repeats(redis_client, worker_env, tmp_path,
                                                                       five_thousand):
    from shared.pipeline import Pipeline
    from shared.pipeline.keys import job_key

    source, names = five_thousand
    env = {**worker_env, "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out")}
    command = ["screen", str(source), "--no-wait", "--out", str(tmp_path / "records")]
    pids = []
    pool = Workers(worker_env, tmp_path)
    try:
        job, pid = started(run(command, env))
        pids.append(pid)
        # No worker runs: the producer stops at the shipped limit (64 MiB of a batch's peak blobs: its 8-bit
        # images and their float32 reconstruction), well short of the input.
        allowed = (64 * 2 ** 20) // (256 * 32 * 32 * 3 * (1 + 4))
        meta = job_key(job, "meta")
        wait_for(lambda: int(redis_client.hget(meta, "batches") or 0) >= allowed, 120, what="the first batches")
        wait_for(lambda: redis_client.hget(meta, "producer_seen"), 10, what="the producer to wait")
        seen = float(redis_client.hget(meta, "producer_seen"))
        wait_for(lambda: float(redis_client.hget(meta, "producer_seen")) > seen + 1, 10, what="a second of waiting")
        assert int(redis_client.hget(meta, "batches")) == allowed
        assert redis_client.llen("dwt") == allowed
        blobs = list(redis_client.scan_iter(match=f"ws:blob:{job}:*", count=1000))
        assert len([b for b in blobs if not b.endswith(b":consumers")]) == allowed
        state = Pipeline(redis_client).progress(job)
        assert state["ingesting"] and state["read"] == state["enqueued"] == allowed * 256 and state["screened"] == 0

        os.kill(pid, signal.SIGKILL)  # the producer dies mid-intake
        stop(pid)
        again, pid = started(run(command, env))  # the same command finds the job and reads on
        pids.append(pid)
        assert again == job

        for queue in QUEUES:
            pool.start(queue)
        wait_for(lambda: not alive(pid), 240, interval=1, what="the producer to finish the job")
        state = Pipeline(redis_client).progress(job)
        assert state["status"] == "complete" and not state["ingesting"]
        assert state["read"] == state["enqueued"] == state["screened"] == 5000  # no item enqueued or screened twice
        assert int(redis_client.hget(meta, "batches")) == math.ceil(5000 / 256)
        records = [json.loads(line) for line in (tmp_path / "records" / "records.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == [f"{source}/{n}" for n in names]  # in input order, each once
        assert all(r["error"] is None for r in records)
        assert json.loads((tmp_path / "records" / "summary.json").read_text())["screened"] == 5000
        log = (tmp_path / "out" / "producers" / f"{job}.log").read_text()
        assert f"reading from item {allowed * 256}" in log  # the second producer skipped what the first counted
    finally:
        pool.stop_all()
        for pid in pids:
            stop(pid)


def test_resume_restarts_an_intake_whose_producer_is_gone(redis_client, worker_env, tmp_path, sample, monkeypatch):
    from PIL import Image

    from producers.screening import ingest
    from producers.submit import send
    from shared.images.intake import iter_chunks, iter_items
    from shared.pipeline import Pipeline
    from shared.pipeline.keys import job_key

    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    for i in range(40):
        Image.fromarray(sample.images[i]).save(folder / ("a" if i % 2 else "") / f"{i:02d}.png")
    env = {**worker_env, "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out")}
    client = redis_client
    # A job whose producer counted one chunk of 16 and was killed: opened and fed as the command does.
    monkeypatch.setenv("WAVESHIELD_WEIGHTS_DIR", worker_env["WAVESHIELD_WEIGHTS_DIR"])
    from producers.screening.screen import screening_settings
    from shared.settings import load as load_settings
    from workers.app import app, use_broker

    use_broker(worker_env["REDIS_URL"])
    cfg = load_settings()
    job, found = ingest.start_job(client, [str(folder)], screening_settings(cfg), 16)
    assert not found
    first = next(iter_chunks(iter_items([str(folder)]), 16))
    send(app, Pipeline(client).add_screen_chunk(job, 0, first.ids, first.images, []))
    client.hset(job_key(job, "meta"), "producer_seen", 0)  # ... and then its producer was killed

    pool = Workers(worker_env, tmp_path)
    pid = None
    try:
        for queue in QUEUES:
            pool.start(queue)
        resumed = run(["resume", job], env)
        assert resumed.returncode == 0, resumed.stderr
        assert "a new one (pid" in resumed.stdout
        pid = int(re.search(r"pid (\d+)", resumed.stdout).group(1))
        wait_for(lambda: not alive(pid), 240, interval=1, what="the restarted producer to finish")
        records = Pipeline(client).screen_records(job)
        assert sorted(r["id"] for r in records) == sorted(f"{folder}/{p.relative_to(folder).as_posix()}"
                                                          for p in folder.rglob("*.png"))
        assert Pipeline(client).progress(job)["status"] == "complete"
    finally:
        pool.stop_all()
        if pid:
            stop(pid)


def test_a_corpus_keeps_its_bounded_shards_in_redis_while_no_worker_runs(redis_client, worker_env, tmp_path,
                                                                        cifar_test_zip):
    from shared.pipeline.keys import job_key

    env = {**worker_env, "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out")}
    result = run(["corpus", "--data", str(cifar_test_zip), "--out", "bounded"], env)  # the paper's 7 attacks
    job, pid = started(result)
    try:
        assert "140 (shard, attack) pair(s) to compute" in result.stdout  # 20 shards of 500, 7 attacks
        # A shard of 500 at its peak: 8-bit images and 7 float16 adversarial copies, 23 MB; 64 MiB hold 2.
        allowed = (64 * 2 ** 20) // (500 * 32 * 32 * 3 * (1 + 7 * 2))
        meta = job_key(job, "meta")
        wait_for(lambda: int(redis_client.hget(meta, "fed") or 0) >= allowed, 120, what="the first shards")
        time.sleep(3)  # the producer waits: nothing more arrives
        assert int(redis_client.hget(meta, "fed")) == allowed
        assert redis_client.llen("attack") == allowed * 7
        assert len([k for k in redis_client.scan_iter(match=f"ws:blob:{job}:*:clean")]) == allowed
    finally:
        stop(pid)
