"""`waveshield screen` as a new user meets it: its exit status, its lines, and records that need no manual.

Each test runs the command as a subprocess on the shipped weights (read, never written) and a small
folder of the embedded sample's images, with unreadable items among them.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from PIL import Image

from shared.pipeline.keys import JOBS_KEY

from .test_cli import run

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights"
#: The sample images of the folder, and the unreadable items between them (named to sort where they stand).
IMAGES = [f"img{i}.png" for i in range(6)]
UNREADABLE = {"img1b.jpg": b"\xff\xd8\xff garbage", "img3b.zip": b"a text file, not an archive"}


@pytest.fixture()
def env(tmp_path, redis_url):
    return {"WAVESHIELD_WEIGHTS_DIR": str(WEIGHTS), "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out"),
            "WAVESHIELD_DEVICE": "cpu", "REDIS_URL": redis_url, "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def folder(tmp_path, sample):
    """Six sample images with an unreadable JPEG and a text file named .zip between them."""
    root = tmp_path / "in"
    root.mkdir()
    for k, name in enumerate(IMAGES):
        Image.fromarray(sample.images[k]).save(root / name)
    for name, data in UNREADABLE.items():
        (root / name).write_bytes(data)
    return root


def _listing(root: Path) -> list[str]:
    """The items of a flat folder, in the order screening reads them (sorted names)."""
    return [str(root / name) for name in sorted(os.listdir(root))]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def _printed_summary(stdout: str) -> tuple[dict, str]:
    """The summary printed on stdout and its last line (where the records are)."""
    lines = stdout.rstrip("\n").split("\n")
    return json.loads("\n".join(lines[:-1])), lines[-1]


def _jobs(redis_url: str) -> set[bytes]:
    return set(redis.Redis.from_url(redis_url).zrange(JOBS_KEY, 0, -1))


@pytest.mark.parametrize("where", ["--local", "queue"])
@pytest.mark.parametrize("bad, reason", [("missing/dir", "no such file or directory"),
                                         ("*.nothing", "no file matches this pattern"),
                                         ("fake.zip", "not a zip archive")])
def test_a_named_input_that_cannot_be_read_is_one_line_and_status_2(env, tmp_path, folder, redis_url, where, bad,
                                                                      reason):
    (tmp_path / "fake.zip").write_text("a text file")
    named = str(tmp_path / bad)
    jobs = _jobs(redis_url)
    result = run(["screen", str(folder), named, *([where] if where == "--local" else [])], env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {named}: {reason}\n" and result.stdout == ""
    # Refused before anything started: no output folder, no job in Redis (no worker runs; none was needed).
    assert not (tmp_path / "out").exists() and _jobs(redis_url) == jobs


def test_unreadable_items_inside_an_input_stay_records_in_their_place(env, tmp_path, folder):
    # A glob that matches a fake zip met it as an item, not as a name: a record, as in a folder.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "fake.zip").write_text("a text file")
    out = tmp_path / "records"
    result = run(["screen", str(folder), str(tmp_path / "other" / "*.zip"), "--local", "--batch-size", "3",
                  "--out", str(out)], env, timeout=300)
    assert result.returncode == 0, result.stderr
    records = _records(out)
    assert [r["id"] for r in records] == [*_listing(folder), str(tmp_path / "other" / "fake.zip")]
    reasons = {Path(r["id"]).name: r["error"] for r in records if r["error"]}
    assert reasons["img3b.zip"] == reasons["fake.zip"] == "not a zip archive"
    assert reasons["img1b.jpg"] == "not an image Pillow can identify"
    with open(out / "records.csv", newline="") as fh:  # the CSV in the same order
        assert [row["id"] for row in csv.DictReader(fh)] == [r["id"] for r in records]


def test_local_records_carry_their_threshold_a_signal_only_when_raised_and_a_readable_summary(env, tmp_path, folder):
    from shared.screening import detector

    result = run(["screen", str(folder), "--local", "--batch-size", "4"], env, timeout=300)
    assert result.returncode == 0, result.stderr
    summary, last = _printed_summary(result.stdout)
    out = Path(last.removeprefix("records: ")).parent
    # The default --out is this input's own folder, said on stderr, under $WAVESHIELD_OUTPUT_DIR/screen.
    assert out.parent == tmp_path / "out" / "screen" and out.name.startswith("local-")
    assert f"writing {out} " in result.stderr
    assert result.stdout.count("\n") > 10 and summary == json.loads((out / "summary.json").read_text())
    assert (summary["screened"], summary["errors"]) == (len(IMAGES), len(UNREADABLE))
    # The progress line counts as the summary does: images screened, and items that could not be read.
    progress = re.findall(r"(\d+) screened, (\d+) error\(s\)", result.stderr)
    assert progress[-1] == (str(summary["screened"]), str(summary["errors"]))

    records = _records(out)
    threshold = summary["calibration"]["threshold"]
    card = json.loads((WEIGHTS / "detector.json").read_text())
    groups = set(detector.signal_groups(card["features"]))
    for r in records:
        if r["error"]:
            assert r["threshold"] is None and r["signal"] is None
            continue
        assert r["threshold"] == threshold
        if abs(r["suspicion"] - threshold) > 1e-6:  # the flag was set before the suspicion was rounded
            assert r["flagged"] == (r["suspicion"] > threshold)
        assert r["signal"] in groups or r["signal"] is None
        assert r["suspicion"] > 0 or r["signal"] is None
    with open(out / "records.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(row["threshold"]) for row in rows if not row["error"]] == [threshold] * len(IMAGES)

    # Other inputs get a folder of their own; the first job's records stay as they were.
    before = (out / "records.jsonl").read_bytes()
    one = tmp_path / "one.png"
    shutil.copy(folder / IMAGES[0], one)
    other = run(["screen", str(one), "--local"], env, timeout=300)
    assert other.returncode == 0, other.stderr
    other_out = Path(_printed_summary(other.stdout)[1].removeprefix("records: ")).parent
    assert other_out != out and len(_records(other_out)) == 1
    assert (out / "records.jsonl").read_bytes() == before


@pytest.fixture()
def fused_worker(env, tmp_path):
    """One Celery worker on the fused and collect queues: all a ``--mode fused`` screening job needs."""
    log = open(tmp_path / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "fused,collect",
                             "-n", f"screen-usage-{os.getpid()}@%h", "--concurrency", "1", "--loglevel", "WARNING",
                             "--without-mingle", "--without-gossip"], cwd=REPO, env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def test_a_job_on_the_workers_writes_its_own_folder_in_input_order_with_progress_as_the_summary(
        env, tmp_path, folder, fused_worker):
    result = run(["screen", str(folder), "--mode", "fused", "--batch-size", "3"], env, timeout=280)
    assert result.returncode == 0, result.stderr
    job = re.search(r"job (\w+): started", result.stderr).group(1)
    summary, last = _printed_summary(result.stdout)
    out = tmp_path / "out" / "screen" / job  # the default --out: one folder per job
    assert last == f"records: {out / 'records.jsonl'}"
    assert summary == json.loads((out / "summary.json").read_text())
    assert [r["id"] for r in _records(out)] == _listing(folder)  # unreadable items where they stood
    done = re.findall(rf"job {job}: (\d+) item\(s\) read, (\d+) enqueued, (\d+) of \d+ screened, (\d+) error\(s\)",
                      result.stderr)
    assert done, result.stderr
    read, enqueued, screened, errors = map(int, done[-1])
    assert (read, screened, errors) == (summary["images"], summary["screened"], summary["errors"]) == (8, 6, 2)
    assert enqueued == screened

    # Another job (other inputs) writes its own folder; the first one's stays.
    (tmp_path / "two").mkdir()
    shutil.copy(folder / IMAGES[0], tmp_path / "two" / "a.png")
    second = run(["screen", str(tmp_path / "two"), "--mode", "fused"], env, timeout=200)
    assert second.returncode == 0, second.stderr
    other = re.search(r"job (\w+): started", second.stderr).group(1)
    assert other != job and len(_records(tmp_path / "out" / "screen" / other)) == 1
    assert len(_records(out)) == 8

    # `results` never writes into the folder the job's own producer may still be appending to.
    before = (out / "records.jsonl").stat().st_mtime_ns
    fetched = run(["results", job], env, timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    assert _records(tmp_path / "out" / job) == _records(out) and (out / "records.jsonl").stat().st_mtime_ns == before


def test_a_background_producer_reads_on_past_an_input_gone_since_as_an_error_record(env, tmp_path, redis_url):
    from producers.screening import ingest
    from producers.screening.screen import screening_settings
    from shared.settings import load as load_settings

    gone = tmp_path / "was-here"  # named when the job started, deleted before its producer read it
    chosen = screening_settings(load_settings(env))
    job, _ = ingest.start_job(redis.Redis.from_url(redis_url), [str(gone)], {**chosen, "mode": "staged"}, 4,
                              fresh=True)
    out = tmp_path / "records"
    started = time.monotonic()
    result = run(["screen", str(gone), "--job", job, "--batch-size", "4", "--out", str(out)], env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 100
    assert [(r["id"], r["error"]) for r in _records(out)] == [(str(gone), "no such file or directory")]
