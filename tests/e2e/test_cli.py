"""The `waveshield` command as a user runs it: a real subprocess, real files."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.pipeline.keys import QUEUES
from shared.pipeline.meta import running

WAVESHIELD = [sys.executable, "-m", "producers.cli"]


def gone(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` (not our child: a detached producer) has ended; kill it if it outlives ``timeout``."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"process {pid} still running after {timeout} s (killed)")
        time.sleep(0.2)


def run(args, env_extra, timeout=600):
    env = {**os.environ, **env_extra}
    return subprocess.run(WAVESHIELD + args, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, redis_url):
    root = tmp_path_factory.mktemp("cli")
    return {"WAVESHIELD_WEIGHTS_DIR": str(root / "weights"), "WAVESHIELD_MODELS": str(root / "models"),
            "WAVESHIELD_OUTPUT_DIR": str(root / "out"),
            "WAVESHIELD_CHECKPOINT_DIR": str(root / "ckpt"), "WAVESHIELD_DEVICE": "cpu", "REDIS_URL": redis_url}


def test_config_prints_settings_and_masks_password(workdir):
    secrets = {"REDIS_URL": "redis://user:hunter2@example:6379/0", "FLOWER_BASIC_AUTH": "ops:swordfish"}
    result = run(["config"], {**workdir, **secrets})
    assert result.returncode == 0
    assert "hunter2" not in result.stdout and "redis://user:***@example:6379/0" in result.stdout
    assert "swordfish" not in result.stdout and "flower_basic_auth = ops:***" in result.stdout
    shown = run(["config", "--json"], {**workdir, **secrets}).stdout
    as_json = json.loads(shown)
    assert as_json["weights_dir"] == workdir["WAVESHIELD_WEIGHTS_DIR"]
    assert "hunter2" not in shown and "swordfish" not in shown and as_json["flower_basic_auth"] == "ops:***"


def test_demo_without_weights_says_how_to_train(workdir):
    result = run(["demo", "--limit", "10"], workdir)
    assert result.returncode == 2
    assert "waveshield train" in result.stderr and "Traceback" not in result.stderr


def test_bad_data_is_one_line_error(workdir):
    shipped = str(Path(__file__).resolve().parents[2] / "weights")  # weights first: they are checked before data
    result = run(["evaluate", "--data", "/no/such/place", "--local"], {**workdir, "WAVESHIELD_WEIGHTS_DIR": shipped})
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "no such file or directory" in result.stderr


def test_train_interrupt_resume_then_demo_writes_report(workdir):
    args = ["train", "--data", "sample", "--test-data", "sample", "--limit", "256", "--epochs", "2", "--width", "4"]
    first = run(args + ["--stop-after", "1"], workdir)
    assert first.returncode == 0, first.stderr
    assert "rerun the same command to resume" in first.stdout
    second = run(args, workdir)
    assert second.returncode == 0, second.stderr
    assert "epoch 2/2" in second.stdout and "epoch 1/2" not in second.stdout  # resumed, not restarted
    card = json.loads((Path(workdir["WAVESHIELD_WEIGHTS_DIR"]) / "standard.json").read_text())
    assert card["epochs"] == 2 and card["width"] == 4 and 0 <= card["test_accuracy"] <= 1
    assert card["convolutions"] == "native"  # width 4: not on oneDNN, which hangs there on AVX2

    demo = run(["demo", "--limit", "20"], workdir)
    assert demo.returncode == 0, demo.stderr
    report = Path(workdir["WAVESHIELD_OUTPUT_DIR"]) / "demo" / "report.md"
    text = report.read_text()
    assert "Table 1" in text and "bim eps=0.007 (1.8/255)" in text and "skipped haar+haar" in text
    assert "runner: Celery workers" in text
    cells = json.loads(report.with_suffix(".json").read_text())["cells"]
    assert {c["configuration"] for c in cells} == {"standard+raw", "standard+haar", "standard+daubechies"}
    assert all(c["total"] == 20 for c in cells)


def test_tune_writes_table_and_settings_that_train_reads(workdir):
    weights = Path(workdir["WAVESHIELD_WEIGHTS_DIR"])
    if not (weights / "standard.safetensors").is_file():  # tune crafts its attacks on the standard model
        trained = run(["train", "--data", "sample", "--test-data", "sample", "--limit", "128", "--epochs", "1",
                       "--width", "4"], workdir)
        assert trained.returncode == 0, trained.stderr
    out = Path(workdir["WAVESHIELD_OUTPUT_DIR"]) / "tune16"
    result = run(["tune", "--n", "16", "--wavelets", "haar,db2", "--out", str(out)], workdir)
    assert result.returncode == 0, result.stderr
    table = (out / "tune.md").read_text()
    assert "**haar**" in table and "**daubechies**" in table
    rows = (out / "tune.csv").read_text().splitlines()
    assert len(rows) - 1 == (5 + 3) * 2 * 2 * 3 * 2  # (haar 5 + db2 3 levels) x mode x method x scale x colour
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = json.loads((weights / "defences.json").read_text())
    assert chosen["defences"]["haar"]["wavelet"] == "haar" and chosen["defences"]["daubechies"]["wavelet"] == "db2"
    assert chosen["scores"]["haar"]["clean_psnr"] >= 30

    trained = run(["train", "--defence", "haar", "--data", "sample", "--test-data", "sample", "--limit", "64",
                   "--epochs", "1", "--width", "4"], workdir)
    assert trained.returncode == 0, trained.stderr
    card = json.loads((weights / "haar.json").read_text())
    assert card["defence"] == chosen["defences"]["haar"] and card["training_data"]["dwt_copies"]
    assert "test_accuracy_dwt_input" in card


def test_status_shows_a_backlog_no_worker_consumes(workdir, redis_url):
    import redis

    from workers.app import app, use_broker

    redis.Redis.from_url(redis_url).delete("dwt")
    use_broker(redis_url)
    for _ in range(3):
        app.send_task("waveshield.dwt", kwargs={"job": "none", "batch": 0, "attack": 0, "defence": "haar"}, queue="dwt")
    result = run(["status"], workdir)
    redis.Redis.from_url(redis_url).delete("dwt")
    assert result.returncode == 0, result.stderr
    assert "dwt 3" in result.stdout and "workers: none" in result.stdout


def test_resume_resends_a_stalled_jobs_unfinished_units_and_status_counts_them(workdir, redis_url):
    import numpy as np
    import redis

    from shared.evaluation.plan import paper_plan
    from shared.pipeline import Pipeline

    client = redis.Redis.from_url(redis_url)
    client.delete("attack")
    pipe = Pipeline(client)
    plan = {**paper_plan(batch_size=5), "configurations": [{"model": "standard", "defence": None}]}
    job = pipe.create_job(plan, np.zeros(10, np.int64))  # 2 batches x 8 attacks
    for batch in range(2):
        for attack in range(len(plan["attacks"])):
            if (batch, attack) != (1, 4):
                pipe.collect(job, batch, attack, "standard+raw", 1, 5)
    resumed = run(["resume", job], workdir)
    status = run(["status", job], workdir)
    queued = [json.loads(m) for m in client.lrange("attack", 0, -1)]
    client.delete("attack")
    assert resumed.returncode == 0, resumed.stderr
    assert f"job {job}: 1 unfinished unit(s) re-sent" in resumed.stdout
    assert len(queued) == 1 and queued[0]["headers"]["task"] == "waveshield.attack"
    assert "15/16 cells" in status.stdout and "1 unit(s) re-sent after lost messages" in status.stdout
    missing = run(["resume", "nosuchjob"], workdir)
    # A job id Redis never held is a user's mistake, said as status, report and results say it (test_job_usage.py)
    assert missing.returncode == 2 and "no job 'nosuchjob' in Redis" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_unreachable_redis_is_one_line(workdir):
    result = run(["evaluate", "--limit", "5"], {**workdir, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2 and "does not answer" in result.stderr and "Traceback" not in result.stderr


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_up_with_embedded_redis_serves_status_and_stops_without_orphans(workdir, tmp_path, stop_signal):
    import signal
    import time

    env = {**os.environ, **workdir, "HOME": str(tmp_path)}  # up.json goes under this HOME
    env.pop("REDIS_URL")  # no Redis given: `up` starts the bundled one
    # As a non-interactive shell starts a background job: SIGINT ignored from the start.
    proc = subprocess.Popen(WAVESHIELD + ["up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[2],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines, children = [], []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        assert any("Redis: redis://127.0.0.1:" in l for l in lines), "".join(lines)
        # One line per worker on the terminal; Celery's banners and warnings in each worker's log file.
        logs = Path(workdir["WAVESHIELD_OUTPUT_DIR"]) / "up" / "logs"
        for queue in QUEUES:
            assert sum(l.startswith(f"worker {queue} (pid ") and str(logs / f"{queue}.log") in l for l in lines) == 1
        assert not any("SecurityWarning" in l or "celery@" in l or "[config]" in l for l in lines), "".join(lines)
        assert sum("warning: running as root" in l for l in lines) == (1 if os.geteuid() == 0 else 0)
        state = tmp_path / ".cache" / "waveshield" / "up.json"  # its Redis URL may hold a password
        assert state.stat().st_mode & 0o777 == 0o600
        children = _children(proc.pid)
        status = subprocess.run(WAVESHIELD + ["status"], env=env, capture_output=True, text=True, timeout=60,
                                cwd=Path(__file__).resolve().parents[2])
        assert status.returncode == 0, status.stderr
        assert len(QUEUES) == 5
        for queue in QUEUES:
            assert f"{queue} <- {queue}@" in status.stdout
        assert len(children) >= 1 + len(QUEUES)  # redis-server + one worker per queue
        proc.send_signal(getattr(signal, stop_signal))
        proc.wait(60)
    finally:
        if proc.poll() is None:  # it did not stop: take it and what it started down, then fail
            for pid in {*map(int, children), *map(int, _children(proc.pid))}:
                for kill in (os.killpg, os.kill):  # a worker leads its own group; redis-server is in up's
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10  # the workers stop with their parent, within moments
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in children if running(pid)]
    assert not alive, f"orphans left: {alive}"
    assert "stopping..." in proc.stdout.read()
    assert all((logs / f"{queue}.log").stat().st_size > 0 for queue in QUEUES)
    assert not (tmp_path / ".cache" / "waveshield" / "up.json").exists()


def test_calibrate_then_screen_local_and_no_wait_results(workdir, tmp_path):
    weights = Path(workdir["WAVESHIELD_WEIGHTS_DIR"])
    for name, flag in (("standard", "none"), ("haar", "haar")):
        if not (weights / f"{name}.safetensors").is_file():
            trained = run(["train", "--defence", flag, "--data", "sample", "--test-data", "sample", "--limit", "64",
                           "--epochs", "1", "--width", "4"], workdir)
            assert trained.returncode == 0, trained.stderr
    calibrated = run(["calibrate", "--n", "60", "--fpr", "0.1"], workdir)
    assert calibrated.returncode == 0, calibrated.stderr
    assert not (weights / "screening.json").exists()  # the weights directory is read, never written
    settings = json.loads((Path(workdir["WAVESHIELD_MODELS"]) / "screening.json").read_text())
    assert settings["measured_fpr"] <= 0.1 and set(settings["detection"]) >= {"fgsm eps=0.004", "deepfool"}
    assert settings["score"] == "disagreement"  # calibrating the hand-made score selects it
    assert set(settings["detection_of_fooling"]) == set(settings["detection"])

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    local = run(["screen", str(tmp_path / "in"), "sample", "--local", "--out", str(out)], workdir)
    assert local.returncode == 0, local.stderr
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1001 and sum(1 for l in lines if json.loads(l)["error"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1001 and summary["errors"] == 1 and sum(summary["labels"].values()) == 1000
    assert (out / "records.csv").read_text().count("\n") == 1002

    submitted = run(["screen", str(tmp_path / "in"), "--no-wait"], workdir)  # no worker runs: the job waits
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.split()[1]
    producer = int(re.search(r"pid (\d+)", submitted.stdout).group(1))
    gone(producer, timeout=120)  # only an unreadable item: its producer seals the job and ends
    fetched = run(["results", job, "--out", str(tmp_path / "fetched")], workdir)
    assert fetched.returncode == 0 and "partial" not in fetched.stdout  # only an unreadable item: nothing to wait for
    assert json.loads((tmp_path / "fetched" / "summary.json").read_text())["errors"] == 1


def test_watch_screens_files_as_they_land_and_resumes_without_repeats(workdir, tmp_path, sample):
    import signal
    import time

    from PIL import Image

    weights = Path(workdir["WAVESHIELD_WEIGHTS_DIR"])
    for name, flag in (("standard", "none"), ("haar", "haar")):
        if not (weights / f"{name}.safetensors").is_file():
            assert run(["train", "--defence", flag, "--data", "sample", "--test-data", "sample", "--limit", "64",
                        "--epochs", "1", "--width", "4"], workdir).returncode == 0
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    env = {**os.environ, **workdir}

    def start():
        return subprocess.Popen(WAVESHIELD + ["screen", "--watch", str(inbox), "--local", "--out", str(out),
                                              "--max-wait", "0.5", "--batch-size", "4"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=Path(__file__).resolve().parents[2])

    def drop(first, count):
        for i in range(first, first + count):
            Image.fromarray(sample.images[i]).save(inbox / f"img{i:03d}.png")

    def records():
        path = out / "records.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(l)["id"] for l in lines if l.endswith("}")]  # a torn line is still being repaired

    def wait_count(n, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(records()) < n:
            time.sleep(0.2)
        return len(records())

    proc = start()
    try:
        drop(0, 6)
        assert wait_count(6) == 6
        drop(6, 3)
        (inbox / "notes.txt").write_text("not an image")
        assert wait_count(10) == 10
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    drop(10, 5)  # land while nothing watches
    with open(out / "records.jsonl", "a") as fh:
        fh.write('{"id": "torn')  # a crash mid-write
    proc = start()
    try:
        assert wait_count(15) == 15
        time.sleep(1.5)  # a second look must add nothing
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    ids = [json.loads(l)["id"] for l in (out / "records.jsonl").read_text().splitlines()]  # every line whole
    assert len(ids) == len(set(ids)) == 15
    assert {Path(i).name for i in ids} == {f"img{i:03d}.png" for i in [*range(9), *range(10, 15)]} | {"notes.txt"}
    # The page counts the first run's records too, and says the watch stopped.
    index = (out / "report_files" / "index.js").read_text()
    index = json.loads(index[len("wsIndex("):index.rindex(")")])
    assert (out / "report.html").is_file() and index["status"] == "stopped"
    assert (index["summary"]["images"], index["summary"]["errors"]) == (15, 1)


def test_fit_detector_on_a_corpus_and_a_source_then_screening_uses_it_and_names_signals(workdir, tmp_path, sample,
                                                                                        photo_crops_zip):
    import shutil

    import numpy as np
    import torch

    from shared import attacks
    from shared.evaluation import corpus as corpus_files
    from shared.models.store import ModelStore
    from shared.screening import benign as benign_changes
    from shared.screening import detector

    repo = Path(__file__).resolve().parents[2]
    weights = tmp_path / "weights"
    shutil.copytree(repo / "weights", weights, ignore=shutil.ignore_patterns("ablation"))
    models = tmp_path / "models"
    env = {**workdir, "WAVESHIELD_WEIGHTS_DIR": str(weights), "WAVESHIELD_MODELS": str(models)}
    shipped = {p.name: p.read_bytes() for p in weights.iterdir()}
    # A corpus as `waveshield corpus` writes it: FGSM on 300 sample images; the other 200 are held out.
    standard = ModelStore(weights).get("standard")
    x, y = sample.to_tensor()[:300], torch.from_numpy(sample.labels[:300])
    attack = {"name": "fgsm", "params": {"eps": 0.01}}
    adversarial = attacks.get("fgsm")(standard, x, y, eps=0.01)
    lines = corpus_files.manifest_lines(standard, x, adversarial, y, sample.ids[:300], attack, seed=0,
                                        model_sha256="0" * 64)
    corpus_files.write_shard(tmp_path / "corpus", attack, 0, adversarial.numpy(), y.numpy(), sample.ids[:300], lines,
                             "float32")
    held = tmp_path / "held.npz"
    np.savez(held, x=sample.images[300:500], y=sample.labels[300:500])
    # And a second source, unlabelled: its clean crops and the paper's attacks crafted on them here.
    fitted = run(["fit-detector", "--corpus", str(tmp_path / "corpus"), "--clean", "sample", "--n-clean", "300",
                  "--source", f"crops={photo_crops_zip}", "--n-source", "40",
                  "--calibration", str(held), "--n-calibration", "80", "--out", str(tmp_path / "report")], env)
    assert fitted.returncode == 0, fitted.stderr
    # The fitted detector and the settings that select it are the user's; the shipped files stay as they were.
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == shipped
    _, card = detector.load(models / "detector.safetensors")
    # It names the weights its paths read: screening with other weights under these names is refused.
    assert card["models"] == {n: json.loads((weights / f"{n}.json").read_text())["sha256"] for n in ("haar", "standard")}
    # By default: the two paths screening computes anyway, and the steps statistic.
    assert card["features"] == detector.feature_names(paths=("standard@raw", "haar@haar"), statistics=("steps",))
    source, = card["trained_on"]["sources"]
    assert source["name"] == "crops" and source["images"] == 40 and source["fooling_images"] > 40
    assert card["calibrated_on"]["sources"]["held"]["images"] == 40 and set(card["per_source"]) == {"held"}
    assert sum(card["clean_histogram"]) == 40  # the calibration images' suspicion, for the screening page
    assert json.loads((models / "screening.json").read_text())["score"] == "detector"
    assert card["auroc"]["fgsm eps=0.01"] > 0.6  # it learned something that carries over to unseen images
    table = (tmp_path / "report" / "detector.md").read_text()
    assert "| pgd eps=0.01 | no (held out) |" in table and (tmp_path / "report" / "roc.png").stat().st_size > 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["kind"] == "detector"  # `report` redraws it
    assert "| held | evade eps=0.01, grey |" in table
    benign = card["flagged_after_benign_changes"]
    assert list(benign) == list(benign_changes.CHANGES) and all(0 <= v <= 1 for v in benign.values())
    # Noise of one grey level on every pixel is what an FGSM image shows the steps statistic: flagged far more.
    assert benign["random +-1 grey level on every pixel"] > card["measured_fpr"] + 0.15

    attacked = tmp_path / "attacked.npz"  # FGSM on the held-out images, delivered in 8 bits
    held_x, held_y = sample.to_tensor()[300:500], torch.from_numpy(sample.labels[300:500])
    np.savez(attacked, x=(attacks.get("fgsm")(standard, held_x, held_y, eps=0.01) * 255).round().byte()
             .permute(0, 2, 3, 1).numpy(), y=held_y.numpy())
    rates = {}
    for name, path in (("clean", held), ("attacked", attacked)):
        screened = run(["screen", str(path), "--local", "--out", str(tmp_path / name)], env)
        assert screened.returncode == 0, screened.stderr
        records = [json.loads(l) for l in (tmp_path / name / "records.jsonl").read_text().splitlines()]
        groups = set(detector.signal_groups(card["features"]))
        # A signal is named where one raised the suspicion; none where the suspicion is 0.
        assert len(records) == 200 and all(r["signal"] in groups | {None} and 0 <= r["suspicion"] <= 1
                                           for r in records)
        assert all(r["signal"] is None for r in records if r["suspicion"] == 0)
        assert name == "clean" or any(r["signal"] in groups for r in records if r["flagged"])
        rates[name] = sum(r["flagged"] for r in records) / len(records)
    assert rates["attacked"] > rates["clean"] + 0.5, rates
    index = (tmp_path / "attacked" / "report_files" / "index.js").read_text()
    assert json.loads(index[len("wsIndex("):index.rindex(")")])["clean_histogram"] == card["clean_histogram"]


def test_calibrate_a_source_then_screen_picks_it_by_name_and_the_summary_says_which(workdir, tmp_path,
                                                                                     photo_crops_zip):
    import shutil

    repo = Path(__file__).resolve().parents[2]
    weights = tmp_path / "weights"
    shutil.copytree(repo / "weights", weights, ignore=shutil.ignore_patterns("ablation"))
    env = {**workdir, "WAVESHIELD_WEIGHTS_DIR": str(weights), "WAVESHIELD_MODELS": str(tmp_path / "models")}
    shipped_file = (weights / "screening.json").read_text()
    shipped = json.loads(shipped_file)
    # Unlabelled clean images of the user's own source: photographs' crops; 100 of them set its threshold.
    calibrated = run(["calibrate", "--source", "photos", "--data", str(photo_crops_zip), "--n", "100",
                      "--out", str(tmp_path / "cal")], env)
    assert calibrated.returncode == 0, calibrated.stderr
    assert (weights / "screening.json").read_text() == shipped_file  # a calibration never dirties the install
    settings = json.loads((tmp_path / "models" / "screening.json").read_text())
    entry = settings["sources"]["photos"]
    assert settings["threshold"] == shipped["threshold"] and settings["score"] == shipped["score"]  # default kept
    assert entry["calibrated_on"] == {"data": str(photo_crops_zip), "images": 100, "labels_used": False}
    assert entry["measured_fpr"] <= 0.05 and entry["reference"]["images"] == 100 and sum(entry["clean_histogram"]) == 100
    assert all(len(entry["reference"]["statistics"][name]) == 9 for name in ("coarse_contrast", "coarse_colour"))
    assert set(entry["detection_of_fooling"]) == {"fgsm eps=0.01", "bim eps=0.01", "pgd eps=0.01", "deepfool"}
    assert "screen --source photos" in calibrated.stdout
    assert (tmp_path / "cal" / "calibration-photos.md").is_file()

    picked = run(["screen", str(photo_crops_zip), "--local", "--source", "photos", "--out", str(tmp_path / "own")], env)
    assert picked.returncode == 0, picked.stderr
    summary = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert summary["calibration"] == {"name": "photos", "threshold": entry["threshold"], "fpr": 0.05}
    check = summary["source_check"]
    assert check["images"] == 300 and check["nearest_source"] == "photos" and set(check["distance"]) == {
        "coarse_contrast", "coarse_colour"}
    records = [json.loads(l) for l in (tmp_path / "own" / "records.jsonl").read_text().splitlines()]
    # (suspicion is rounded to 6 decimals in the record; the flag was set before rounding)
    assert all(r["flagged"] == (r["suspicion"] > entry["threshold"]) for r in records
               if abs(r["suspicion"] - entry["threshold"]) > 1e-6)
    assert any(r["flagged"] for r in records) and not all(r["flagged"] for r in records)
    assert all(isinstance(r["coarse_contrast"], float) and r["coarse_colour"] >= 0 for r in records)

    default = run(["screen", "sample", "--local", "--out", str(tmp_path / "default")], env)
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "default" / "summary.json").read_text())["calibration"]["name"] == "default"

    unknown = run(["screen", "sample", "--local", "--source", "phones", "--out", str(tmp_path / "x")], env)
    assert unknown.returncode != 0 and "no calibration for source 'phones'" in unknown.stderr
    assert "waveshield calibrate" in unknown.stderr and not (tmp_path / "x").exists()


def test_fit_detector_refuses_a_source_rate_it_cannot_use_in_one_line(workdir):
    env = {**workdir, "WAVESHIELD_WEIGHTS_DIR": str(Path(__file__).resolve().parents[2] / "weights")}
    base = ["fit-detector", "--clean", "sample", "--n-clean", "10", "--source", "s=sample", "--calibration", "held=sample"]
    bad = run(base + ["--source-fpr", "held=2"], env)
    assert bad.returncode == 2 and "--source-fpr" in bad.stderr and "between 0 and 1" in bad.stderr
    unknown = run(base + ["--source-fpr", "photos=0.04"], env)
    assert unknown.returncode != 0 and "no --calibration source is" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    # An attack to measure that does not exist, or out of range, fails before any image is read or attacked.
    typo = run(base + ["--measure-attack", "torchattacks:Squar:eps=0.01"], env)
    assert typo.returncode != 0 and "unknown torchattacks attack 'Squar'; valid: APGD" in typo.stderr
    assert "Square" in typo.stderr and len(typo.stderr.strip().splitlines()) == 1, typo.stderr
    scale = run(base + ["--measure-attack", "torchattacks:Square:eps=8"], env)
    assert scale.returncode != 0 and "8/255 = 0.0314 on that scale" in scale.stderr
