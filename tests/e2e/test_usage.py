"""What a new user trips on, run as the user runs it: the command as a subprocess, its exit status, its one line."""

import json
import os
from pathlib import Path

import pytest

from tests.e2e.test_cli import run

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


@pytest.fixture()
def env(tmp_path, redis_url):
    """Shipped weights, outputs under ``tmp_path``, no canonical CIFAR-10 downloaded."""
    return {"WAVESHIELD_WEIGHTS_DIR": str(SHIPPED_WEIGHTS), "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out"),
            "WAVESHIELD_DATA_DIR": str(tmp_path / "data"), "WAVESHIELD_DEVICE": "cpu", "REDIS_URL": redis_url}


def one_line_error(result) -> str:
    """The command's stderr, checked to be one ``error:`` line and exit status 2; the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def spec(tmp_path, text: str, name: str = "spec.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


FGSM = '[[attacks]]\nname = "fgsm"\neps = 0.01\n'
STANDARD = '[[configurations]]\nmodel = "standard"\n'


@pytest.mark.parametrize("args, named", [
    (["evaluate", "--local", "--limit", "0"], "'--limit': 0 is not in the range x>=1"),
    (["evaluate", "--local", "--limit", "-5"], "'--limit': -5 is not in the range x>=1"),
    (["demo", "--limit", "0"], "'--limit': 0"),
    (["train", "--data", "sample", "--epochs", "0"], "'--epochs': 0"),
    (["calibrate", "--fpr", "1.5"], "'--fpr': 1.5 is not in the range 0<x<1"),
    (["tune", "--n", "0"], "'--n': 0"),
    (["corpus", "--data", "sample", "--out", "x", "--shard-size", "0"], "'--shard-size': 0"),
    (["screen", "sample", "--local", "--batch-size", "0"], "'--batch-size': 0"),
    (["evaluate", "--no-such-option"], "No such option '--no-such-option'"),
])
def test_numbers_out_of_range_and_bad_options_are_one_line_before_anything_runs(env, args, named):
    line = one_line_error(run(args, env, timeout=60))
    assert named in line and f"waveshield {args[0]} --help" in line


@pytest.mark.parametrize("text, named", [
    (f"limit = 0\n{FGSM}{STANDARD}", "spec.toml: limit is a number of images (at least 1), got 0"),
    (f"limit = -5\n{FGSM}{STANDARD}", "spec.toml: limit is a number of images (at least 1), got -5"),
    (f'[[attacks]]\nname = "fgsm"\neps = -0.01\n{STANDARD}', "spec.toml: fgsm: eps is a perturbation budget, at least 0"),
    (f'[[attacks]]\nname = "fgsm"\neps = 4\n{STANDARD}', "eps is in [0, 1] pixel units; 4/255 = 0.0157"),
    (f'[[attacks]]\nname = "fgsm"\neps = "small"\n{STANDARD}', "eps is a number in [0, 1] pixel units, got 'small'"),
    (FGSM, "spec.toml: the plan has no configurations: give at least one, e.g. [[configurations]]"),
    (STANDARD, "spec.toml: no attacks given"),
    (f"batch_size = 0\n{FGSM}{STANDARD}", "batch_size is a number of images (at least 1), got 0"),
])
def test_a_spec_with_a_bad_number_or_a_missing_part_says_which(env, tmp_path, text, named):
    line = one_line_error(run(["evaluate", "--local", "--spec", spec(tmp_path, text)], env, timeout=60))
    assert named in line


def test_a_misspelled_model_is_a_mistake_naming_it_the_folder_and_the_models_there(env, tmp_path):
    beside = spec(tmp_path, f'limit = 20\n{FGSM}{STANDARD}[[configurations]]\nmodel = "standrd"\n')
    line = one_line_error(run(["evaluate", "--local", "--spec", beside], env, timeout=120))
    assert "model 'standrd': no weights standrd.safetensors in " + str(SHIPPED_WEIGHTS) in line
    assert "did you mean 'standard'?" in line and "(models there: daubechies, haar, standard)" in line
    assert not (Path(env["WAVESHIELD_OUTPUT_DIR"]) / "evaluate").exists()  # nothing ran, nothing written

    only_bad = spec(tmp_path, f'{FGSM}[[configurations]]\nmodel = "hair"\ndefence = "haar"\n', "bad.toml")
    line = one_line_error(run(["evaluate", "--local", "--spec", only_bad], env, timeout=120))
    assert "model 'hair': no weights hair.safetensors in " + str(SHIPPED_WEIGHTS) in line
    assert "did you mean 'haar'?" in line

    through = spec(tmp_path, f'{STANDARD}[[attacks]]\nname = "pgd"\neps = 0.01\nthrough = {{model = "haar2"}}\n',
                   "through.toml")
    assert "model 'haar2': no weights" in one_line_error(run(["evaluate", "--local", "--spec", through], env))


def test_no_default_points_at_data_that_is_not_there(env):
    helps = {command: run([command, "--help"], env, timeout=60).stdout for command in ("train", "fit-detector")}
    assert all("cifar10:t" not in text.replace("cifar10:train (", "") for text in helps.values()), helps
    assert "Missing option '--data'" in one_line_error(run(["train", "--defence", "haar"], env, timeout=60))
    assert "Missing option '--clean'" in one_line_error(run(["fit-detector", "--source", "a=sample"], env, timeout=60))
    line = one_line_error(run(["evaluate", "--local", "--data", "cifar10:test", "--limit", "5"], env, timeout=120))
    data_dir = env["WAVESHIELD_DATA_DIR"]
    assert f"canonical CIFAR-10 is not in {data_dir} (WAVESHIELD_DATA_DIR)" in line
    assert f"CIFAR10('{data_dir}', download=True)" in line and "--download" not in line


def test_a_report_rendered_again_keeps_its_picture_and_how_it_ran(env, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    evaluated = run(["evaluate", "--local", "--limit", "20", "--out", str(first)], env)
    assert evaluated.returncode == 0, evaluated.stderr
    rendered = run(["report", str(first / "report.json"), "--out", str(again)], env, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    text = (again / "report.md").read_text()
    assert text == (first / "report.md").read_text()
    for line in ("- data: sample (20 images, 0 unreadable)", "- runner: one process (--local)", " images/s",
                 "examples.png (clean / attacked / reconstructed)", "on one page: report.html"):
        assert line in text
    assert (again / "examples.png").read_bytes() == (first / "examples.png").read_bytes()
    page = (again / "report.html").read_text()
    assert all(f'src="{name}"' in page for name in ("accuracy.png", "drops.png", "examples.png"))


def test_a_report_from_redis_names_its_data_and_no_picture_it_cannot_make(env, tmp_path, redis_url):
    import numpy as np
    import redis

    from shared.evaluation.plan import paper_plan
    from shared.pipeline import Pipeline

    pipe = Pipeline(redis.Redis.from_url(redis_url))
    plan = {**paper_plan(batch_size=5), "configurations": [{"model": "standard", "defence": None}]}
    job = pipe.create_job(plan, np.zeros(5, np.int64), data="uploads/batch.zip", unreadable=2)
    for attack in range(len(plan["attacks"])):
        pipe.collect(job, 0, attack, "standard+raw", 3, 5)
    rendered = run(["report", job, "--out", str(tmp_path / "again")], env, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    text = (tmp_path / "again" / "report.md").read_text()
    assert "- data: uploads/batch.zip (5 images, 2 unreadable)" in text
    assert f"- runner: Celery workers, staged (job {job})" in text and f"job {job}: complete, 8/8 cells" in text
    assert "examples.png" not in text and not (tmp_path / "again" / "examples.png").exists()
    assert "| standard+raw | 60.00 |" in text  # 3 of 5 correct, read back from the job's counts
    assert os.path.getsize(tmp_path / "again" / "accuracy.png") > 0
    assert 'src="examples.png"' not in (tmp_path / "again" / "report.html").read_text()
    assert json.loads((tmp_path / "again" / "report.json").read_text())["meta"]["data"] == "uploads/batch.zip"
