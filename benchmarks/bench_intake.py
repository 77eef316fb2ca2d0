"""The screening producer as a user starts it: time to the first queued batch, and memory as the input grows.

``waveshield screen INPUT --no-wait --fresh`` runs as a subprocess against a
Redis (``REDIS_URL``, else database 15 of the local server, flushed). It
hands the intake to a background producer; this script follows that
producer's whole process tree (it and its decoding workers) in /proc.

* **First batch**: seconds from starting the command to the first message
  on the ``dwt`` queue, start-up included (no worker runs; the producer is
  stopped once it has been measured).
* **Memory**: the peak of the tree's summed RSS while it streams the whole
  input. In place of the workers, a sink finishes each batch as soon as it is
  queued (it deletes the batch's images and records one plausible record per
  id through the collector's own script), so the producer runs at its own
  speed, waits on backpressure as it would, and writes every record to disk.

Inputs are built under ``--scratch``: from the CIFAR-10 JPEG mirror, its
``train.zip`` (50,000 images), a folder of 100,000 files, and zips of
100,000 and 200,000 members (the training images repeated under new names);
and a folder of 2,000 photographs (1024x768 JPEG, as ``bench_decode.py``
makes them), whose batches take far longer to decode.

Usage::

    python benchmarks/bench_intake.py [--mirror ../shared/datasets/cifar10-jpeg] [--scratch /tmp/bench-intake]
                                      [--only "photographs 2,000"]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.pipeline import Pipeline  # noqa: E402
from shared.pipeline.keys import clean_key, job_key  # noqa: E402
from shared.pipeline.meta import running  # noqa: E402

WAVESHIELD = [sys.executable, "-m", "producers.cli"]


def build_inputs(mirror: Path, scratch: Path) -> dict[str, Path]:
    """The inputs, made once: the mirror's train.zip, a 100,000-file folder, 100,000- and 200,000-member zips."""
    scratch.mkdir(parents=True, exist_ok=True)
    train = mirror / "train.zip"
    with zipfile.ZipFile(train) as source:
        names = sorted(n for n in source.namelist() if n.endswith(".jpg"))
        data = {n: source.read(n) for n in names}
    folder = scratch / "folder-100k"
    if not (folder / "done").is_file():
        for copy in range(2):
            for name in names:
                path = folder / f"copy{copy}" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data[name])
        (folder / "done").write_text("")
    zips = {}
    for copies in (2, 4):
        path = scratch / f"zip-{copies * 50}k.zip"
        if not path.is_file():
            with zipfile.ZipFile(path.with_suffix(".tmp"), "w") as target:
                for copy in range(copies):
                    for name in names:
                        target.writestr(f"copy{copy}/{name}", data[name])
            path.with_suffix(".tmp").rename(path)
        zips[copies * 50] = path
    photos = scratch / "photographs-2k"
    if not (photos / "done").is_file():
        sys.path.insert(0, str(REPO / "benchmarks"))
        from bench_decode import photographs

        photos.mkdir(parents=True, exist_ok=True)
        photographs(photos, 2000)
        (photos / "done").write_text("")
    return {"zip 50,000 (train.zip)": train, "folder 100,000": folder, "zip 100,000": zips[100],
            "zip 200,000": zips[200], "photographs 2,000": photos}


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) if match else 0
    return total / 1024


def kill_tree(pid: int) -> None:
    for p in reversed(tree(pid)):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def start(source: Path, env: dict, out: Path) -> tuple[float, subprocess.Popen]:
    t0 = time.monotonic()
    command = subprocess.Popen(WAVESHIELD + ["screen", str(source), "--no-wait", "--fresh", "--out", str(out)],
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return t0, command


def producer_pid(command: subprocess.Popen) -> int:
    stdout, stderr = command.communicate(timeout=120)
    match = re.search(r"pid (\d+)", stdout)
    if not match:
        raise RuntimeError(f"no producer started: {stdout} {stderr}")
    return int(match.group(1))


def first_batch(source: Path, env: dict, client: redis.Redis, scratch: Path) -> float:
    """Seconds from the command's start to its first message on the dwt queue."""
    client.flushdb()
    t0, command = start(source, env, scratch / "out-first")
    while client.llen("dwt") == 0:
        if time.monotonic() - t0 > 120:
            raise RuntimeError("no batch after 120 s")
        time.sleep(0.002)
    elapsed = time.monotonic() - t0
    kill_tree(producer_pid(command))
    return elapsed


class Sink(threading.Thread):
    """Stands in for the workers: finishes each queued screening batch at once (see the module's docstring)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.pipe = Pipeline(self.client)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            popped = self.client.brpop("dwt", timeout=0.2)
            if popped is None:
                continue
            kwargs = json.loads(base64.b64decode(json.loads(popped[1])["body"]))[1]
            job, batch = kwargs["job"], kwargs["batch"]
            for consumer in ("screen_dwt", "screen_classify"):
                self.pipe.blobs.release(clean_key(job, batch), consumer)
            ids = json.loads(self.client.hget(job_key(job, "ids"), batch))
            found = [{"id": i, "label": "cat", "confidence": 0.9, "raw_label": "cat", "suspicion": 0.01,
                      "threshold": 0.5, "flagged": False, "error": None, "signal": "standard@raw",
                      "colour_roughness": -1.0}
                     for i in ids]
            self.pipe._collect_screen_records(job, batch, json.dumps(found))


def memory(source: Path, env: dict, client: redis.Redis, url: str, scratch: Path) -> dict:
    """Peak RSS of the producer's tree while it streams ``source`` to the sink, and its images/s."""
    client.flushdb()
    sink = Sink(url)
    sink.start()
    t0, command = start(source, env, scratch / "out-memory")
    pid = producer_pid(command)
    peak = 0.0
    try:
        while running(pid):
            peak = max(peak, rss_mib(tree(pid)))
            time.sleep(0.05)
    finally:
        sink.stop.set()
        kill_tree(pid)
    seconds = time.monotonic() - t0
    lines = sum(1 for _ in open(scratch / "out-memory" / "records.jsonl"))
    return {"peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1), "records": lines,
            "items_per_s": round(lines / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, default=REPO.parent / "shared" / "datasets" / "cifar10-jpeg")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench-intake"))
    parser.add_argument("--skip-first", action="store_true")
    parser.add_argument("--only", default=None, help="Measure this input alone (its name as printed).")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    client = redis.Redis.from_url(url)
    env = {**os.environ, "REDIS_URL": url, "WAVESHIELD_OUTPUT_DIR": str(args.scratch / "output")}
    inputs = build_inputs(args.mirror, args.scratch)
    print(f"cpus: {os.cpu_count()}; decode workers: {os.environ.get('WAVESHIELD_DECODE_WORKERS', os.cpu_count())}")
    try:
        chosen = [args.only] if args.only else list(inputs)
        if not args.skip_first:
            for name in chosen:
                path = inputs[name]
                times = sorted(first_batch(path, env, client, args.scratch) for _ in range(3))
                print(f"first batch, {name}: {times[1]:.2f} s (median of 3; {times[0]:.2f}-{times[2]:.2f})",
                      flush=True)
        for name in [n for n in ("zip 50,000 (train.zip)", "zip 200,000", "photographs 2,000") if n in chosen]:
            print(f"memory, {name}: {memory(inputs[name], env, client, url, args.scratch)}", flush=True)
    finally:
        client.flushdb()


if __name__ == "__main__":
    main()
