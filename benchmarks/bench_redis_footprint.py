"""Redis's memory through long screenings: its peak while they run, and what a finished job leaves behind.

On the stack ``waveshield up`` starts (the bundled Redis with its shipped
``maxmemory``, one worker per queue, the shipped defaults), two runs of
``--images`` images each:

- ``screen --no-wait`` of the mirror's zips (train, test, and the train zip
  again under another name, until there are enough images);
- ``screen --watch`` of a folder the same images are dropped into while it
  runs, 1,000 files at a time (the JPEG bytes of the zips' members).

A thread samples Redis's ``used_memory`` every 0.25 s. After each run the
job's keys are counted and sized (``MEMORY USAGE``), and the decisions of the
two runs are compared image by image: the same bytes must get the same
record (label, confidence, suspicion, flag).

    python benchmarks/bench_redis_footprint.py [--images 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import redis
from _common import REPO, machine

from producers.stack import Stack
from shared import settings as settings_mod

MIRROR = REPO.parent / "shared" / "datasets" / "cifar10-jpeg"
WAVESHIELD = [sys.executable, "-m", "producers.cli"]
MIB = 2 ** 20


class Sampler(threading.Thread):
    """Redis's used_memory every 0.25 s: the peak, and the samples."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.client, self.stop, self.peak, self.samples = redis.Redis.from_url(url), threading.Event(), 0, []

    def run(self):
        while not self.stop.is_set():
            used = int(self.client.info("memory")["used_memory"])
            self.peak = max(self.peak, used)
            self.samples.append((time.monotonic(), used))
            time.sleep(0.25)


def build_input(images: int, scratch: Path) -> Path:
    """A zip of ``images`` JPEG files, ``p000000.jpg``..., the bytes of the mirror's members (train, then test,
    then train again)."""
    target = scratch / "images.zip"
    written = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        while written < images:
            for path in (MIRROR / "train.zip", MIRROR / "test.zip"):
                with zipfile.ZipFile(path) as archive:
                    for member in sorted(n for n in archive.namelist() if n.lower().endswith((".jpg", ".jpeg"))):
                        if written >= images:
                            return target
                        out.writestr(f"p{written:06d}.jpg", archive.read(member))
                        written += 1
    return target


def job_keys(client: redis.Redis, job: str) -> tuple[int, int]:
    """How many keys a job has in Redis, blobs included, and their MEMORY USAGE in bytes."""
    keys = list(client.scan_iter(f"ws:job:{job}:*", count=1000)) + list(client.scan_iter(f"ws:blob:{job}:*",
                                                                                       count=1000))
    return len(keys), sum(int(client.memory_usage(k) or 0) for k in keys)


def no_wait(source: Path, env: dict, out: Path, client: redis.Redis) -> dict:
    before = int(client.info("memory")["used_memory"])
    start = time.monotonic()
    reply = subprocess.run(WAVESHIELD + ["screen", str(source), "--no-wait", "--fresh", "--out", str(out)], env=env,
                           capture_output=True, text=True, check=True)
    job = reply.stdout.split("job ", 1)[1].split(" ", 1)[0]
    while not (out / "summary.json").is_file():
        time.sleep(1)
    took = time.monotonic() - start
    time.sleep(2)
    keys, size = job_keys(client, job)
    summary = json.loads((out / "summary.json").read_text())
    return {"job": job, "seconds": took, "records": summary["images"], "keys_left": keys, "bytes_left": size,
            "used_before": before, "used_after": int(client.info("memory")["used_memory"])}


def dropper(source: Path, inbox: Path, stop: threading.Event) -> None:
    """Write the zip's members into ``inbox`` 1,000 files a folder, pausing 0.5 s after each thousand."""
    with zipfile.ZipFile(source) as archive:
        for i, member in enumerate(archive.namelist()):
            if stop.is_set():
                return
            folder = inbox / f"{i // 1000:04d}"
            folder.mkdir(exist_ok=True)
            tmp = folder / f".{member}"
            tmp.write_bytes(archive.read(member))
            os.replace(tmp, folder / member)
            if (i + 1) % 1000 == 0:
                time.sleep(0.5)


def watch(images: int, source: Path, env: dict, inbox: Path, out: Path, client: redis.Redis, earlier: str) -> dict:
    """``earlier``: the job of the run before, whose keys are not the watch's."""
    inbox.mkdir()
    before = int(client.info("memory")["used_memory"])
    stop = threading.Event()
    drop = threading.Thread(target=dropper, args=(source, inbox, stop), daemon=True)
    start = time.monotonic()
    proc = subprocess.Popen(WAVESHIELD + ["screen", "--watch", str(inbox), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    drop.start()
    records = out / "records.jsonl"
    try:
        while not (records.is_file() and sum(1 for _ in open(records)) >= images):
            if proc.poll() is not None:
                raise RuntimeError(f"the watch exited with status {proc.returncode}")
            time.sleep(2)
    finally:
        stop.set()
        took = time.monotonic() - start
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    time.sleep(2)
    left = [k for k in client.scan_iter("ws:job:*", count=1000) if not k.startswith(f"ws:job:{earlier}:".encode())]
    return {"seconds": took, "records": sum(1 for _ in open(records)), "job_keys_left": len(left),
            "bytes_left": sum(int(client.memory_usage(k) or 0) for k in left), "used_before": before,
            "used_after": int(client.info("memory")["used_memory"])}


def decisions(records: Path, key) -> dict:
    out = {}
    with open(records) as fh:
        for line in fh:
            r = json.loads(line)
            out[key(r["id"])] = (r["label"], r["confidence"], r["suspicion"], r["flagged"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    cfg = settings_mod.load()
    print(f"# Redis footprint, {args.images} images a run; in-flight limit {cfg.in_flight_mib} MiB, bundled Redis "
          f"maxmemory {cfg.redis_maxmemory_mib} MiB; {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        source = build_input(args.images, scratch)
        env = {**os.environ, "WAVESHIELD_OUTPUT_DIR": str(scratch / "outputs")}
        with Stack(env=env, log_dir=scratch / "logs") as stack:
            env["REDIS_URL"] = stack.redis_url
            client = redis.Redis.from_url(stack.redis_url)
            results = {}
            for name, run in (("no-wait", lambda: no_wait(source, env, scratch / "nowait", client)),
                              ("watch", lambda: watch(args.images, source, env, scratch / "inbox", scratch / "watch",
                                                      client, results["no-wait"]["job"]))):
                sampler = Sampler(stack.redis_url)
                sampler.start()
                try:
                    result = run()
                finally:
                    sampler.stop.set()
                    sampler.join()
                result.update(peak=sampler.peak, samples=len(sampler.samples))
                results[name] = result
                print(f"{name:>8}: {result['records']} records in {result['seconds']:.0f} s "
                      f"({result['records'] / result['seconds']:.0f}/s); used_memory before {result['used_before'] / MIB:.1f} "
                      f"MiB, peak {result['peak'] / MIB:.1f} MiB, after {result['used_after'] / MIB:.1f} MiB; "
                      f"the job's keys left: {json.dumps({k: v for k, v in result.items() if 'left' in k})}",
                      flush=True)
        queued = decisions(scratch / "nowait" / "records.jsonl", lambda i: Path(i).name)
        watched = decisions(scratch / "watch" / "records.jsonl", lambda i: Path(i).name)
        common = set(queued) & set(watched)
        same = sum(queued[k] == watched[k] for k in common)
        print(f"decisions: {same} of {len(common)} images alike in both runs "
              f"({len(queued)} queued, {len(watched)} watched)", flush=True)
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
