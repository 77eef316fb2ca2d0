"""What a new user trips on (issue 38), through the `waveshield` command as a subprocess.

A Redis URL's password never shows; Redis advice leads somewhere real; a
job with no worker says so at once and keeps waiting; every job command
says "no such job" alike, with exit status 2.

These tests run on a Redis server of their own (the embedded one): other
sessions on this machine share the tests' database of the local server,
and the no-worker test needs a Redis that no worker of theirs serves.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from producers.redis_server import EmbeddedRedis, _free_port
from producers.submit import NO_WORKER
from shared.pipeline.keys import JOBS_KEY

REPO = Path(__file__).resolve().parents[2]
WAVESHIELD = [sys.executable, "-m", "producers.cli"]
SECRET = "s3cret-9d1f"
NO_SUCH_JOB = "no job 'nosuchjob' in Redis"


@pytest.fixture(scope="module")
def server():
    """A Redis of this module's own, stopped at its end."""
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.fixture()
def env(server, tmp_path):
    """The environment of a command: this module's Redis, a HOME of its own (no `waveshield up` of the user's)."""
    yield {"HOME": str(tmp_path), "REDIS_URL": server.url, "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out"),
           "WAVESHIELD_WEIGHTS_DIR": str(REPO / "weights"), "WAVESHIELD_DEVICE": "cpu", "WAVESHIELD_DECODE_WORKERS": "1"}
    redis.Redis.from_url(server.url).flushdb()  # no job or queue of one test meets the next


def waveshield(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the command with ``env`` over this process's environment, less a REDIS_URL ``env`` does not set."""
    full = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | env
    return subprocess.run(WAVESHIELD + args, capture_output=True, text=True, env=full, timeout=timeout, cwd=REPO)


def one_error_line(result: subprocess.CompletedProcess, status: int = 2) -> str:
    """The single ``error: ...`` line of a failed command (asserting its status, and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def screening_job(url: str) -> str:
    from producers.screening.ingest import start_job

    return start_job(redis.Redis.from_url(url), ["sample"], {"calibration": {"name": "default"}}, 256)[0]


def evaluation_job(url: str) -> str:
    import numpy as np

    from shared.evaluation.plan import paper_plan
    from shared.pipeline import Pipeline

    return Pipeline(redis.Redis.from_url(url)).create_job(paper_plan(batch_size=5), np.zeros(10, np.int64))


# Every command that talks to Redis, as a user would first type it (JOB: a job id).
REDIS_COMMANDS = [["status"], ["status", "JOB"], ["evaluate", "--limit", "20"], ["screen", "sample"],
                  ["screen", "--watch", "WATCH"], ["results", "JOB"], ["resume", "JOB"], ["report", "JOB"],
                  ["corpus", "--data", "sample", "--out", "c"], ["up"], ["demo", "--limit", "10"]]


def _expand(command: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "watched").mkdir(exist_ok=True)
    return [{"JOB": "0123456789ab", "WATCH": str(tmp_path / "watched")}.get(a, a) for a in command]


@pytest.mark.parametrize("case", ["closed port", "refused login", "no scheme", "port not a number"])
def test_a_password_in_redis_url_shows_on_no_error_path(case, env, server, tmp_path):
    urls = {"closed port": (f"redis://:{SECRET}@127.0.0.1:{_free_port()}/12", "which does not answer"),
            "refused login": (f"redis://nobody:{SECRET}@127.0.0.1:{server.port}/0", "which refuses the login"),
            "no scheme": (f"nobody:{SECRET}@127.0.0.1:{server.port}",
                          "is not a Redis URL (redis://, rediss:// or unix://)"),
            "port not a number": (f"redis://:{SECRET}@127.0.0.1:63x9/0", "is not a Redis URL")}
    url, says = urls[case]
    for command in REDIS_COMMANDS:
        result = waveshield(_expand(command, tmp_path), {**env, "REDIS_URL": url})
        assert SECRET not in result.stdout + result.stderr, (command, result.stdout, result.stderr)
        line = one_error_line(result)
        assert says in line and "***" in line, (command, line)
    shown = waveshield(["config"], {**env, "REDIS_URL": url})
    assert SECRET not in shown.stdout + shown.stderr
    if case in ("closed port", "refused login"):  # a URL that parses is printed, masked
        assert shown.returncode == 0 and f"redis_url = {url.replace(SECRET, '***')}" in shown.stdout
    else:  # a URL that does not is refused here too
        assert says in one_error_line(shown)


def test_redis_url_without_a_scheme_is_malformed_not_unanswered(env):
    for command in (["status"], ["config"]):
        line = one_error_line(waveshield(command, {**env, "REDIS_URL": "localhost:6379"}))
        assert line == ("error: REDIS_URL localhost:6379 is not a Redis URL (redis://, rediss:// or unix://); "
                        "e.g. redis://localhost:6379")


def test_a_redis_url_that_does_not_answer_names_what_to_do(env):
    url = f"redis://127.0.0.1:{_free_port()}/0"
    line = one_error_line(waveshield(["status"], {**env, "REDIS_URL": url}))
    assert line.startswith(f"error: REDIS_URL is set to {url}, which does not answer (")
    assert "start that server, or fix REDIS_URL" in line and "unset REDIS_URL and run `waveshield up`" in line


def test_without_redis_url_the_advice_is_waveshield_up_and_it_leads_there(env, server, tmp_path):
    unset = {k: v for k, v in env.items() if k != "REDIS_URL"}
    advice = "error: no Redis: start one with `waveshield up` in another terminal, or set REDIS_URL"
    for command, tail in ((["status"], ""), (["results", "nosuchjob"], ""), (["resume", "nosuchjob"], ""),
                          (["evaluate", "--limit", "20"], ", or pass --local")):
        assert one_error_line(waveshield(command, unset)) == advice + tail, command
    # What `waveshield up` leaves for the other commands (tests/e2e/test_cli.py runs `up` itself): they find it.
    state = tmp_path / ".cache" / "waveshield" / "up.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"redis_url": server.url, "pid": os.getpid()}))
    found = waveshield(["status"], unset)
    assert found.returncode == 0 and "workers: none" in found.stdout, found.stderr


def _read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def test_evaluate_with_no_worker_warns_at_once_and_keeps_waiting(env, server):
    proc = subprocess.Popen(WAVESHIELD + ["evaluate", "--limit", "20"], cwd=REPO, text=True, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"} | env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 120  # a producer's start (torch, the sample, the plan); the stall timeout is 600 s
        while not any(NO_WORKER in line for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        warning = next(line for line in seen if NO_WORKER in line)
        job = warning.split()[2]
        assert warning.strip() == f"warning: job {job} waits: {NO_WORKER} (it goes on when they come)"
        time.sleep(3)
        assert proc.poll() is None, "".join(seen)  # warned, and still waiting for a worker
        status = waveshield(["status"], env)
        assert status.returncode == 0, status.stderr
        out = status.stdout.splitlines()
        assert out[out.index("workers: none") + 1] == NO_WORKER
        assert any(line.startswith(f"job {job}: running, 0/") for line in out), status.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()


def test_every_job_command_says_no_such_job_alike_with_status_2(env):
    lines = {tuple(command): one_error_line(waveshield(command, env))
             for command in (["status", "nosuchjob"], ["report", "nosuchjob"], ["results", "nosuchjob"],
                             ["resume", "nosuchjob"])}
    assert len(set(lines.values())) == 1, lines
    assert next(iter(lines.values())).startswith(f"error: {NO_SUCH_JOB}: ")


def test_status_lists_the_newest_jobs_leaving_out_one_that_expired(env, server):
    job = evaluation_job(server.url)
    redis.Redis.from_url(server.url).zadd(JOBS_KEY, {"expiredjob1": time.time()})  # its keys gone, its listing not
    listed = waveshield(["status"], env)
    assert listed.returncode == 0, listed.stderr
    assert f"job {job}: running" in listed.stdout and "expiredjob1" not in listed.stdout


def test_results_and_report_refuse_a_job_of_the_other_kind_naming_the_right_command(env, server, tmp_path):
    evaluation, screening = evaluation_job(server.url), screening_job(server.url)
    out = tmp_path / "fetched"
    refused = one_error_line(waveshield(["results", evaluation, "--out", str(out)], env))
    assert refused == (f"error: job {evaluation} is an evaluation job, not a screening job: "
                       f"`waveshield report {evaluation}`")
    assert not out.exists()  # no empty records written
    refused = one_error_line(waveshield(["report", screening, "--out", str(out)], env))
    assert refused == (f"error: job {screening} is a screening job, not an evaluation job: "
                       f"`waveshield results {screening}`")
    assert not out.exists()
    fetched = waveshield(["results", screening, "--out", str(out)], env)  # the right command still works
    assert fetched.returncode == 0 and "partial" in fetched.stdout, fetched.stderr
