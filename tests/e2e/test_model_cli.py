"""`waveshield model`: a user registers a torchvision classifier and reads its card, as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]


def waveshield(args, models: Path, *, subprocess_run: bool = False):
    """`waveshield model ARGS` with ``models`` as the user's folder: in a real subprocess, or (for the many one-line
    mistakes, each of which would pay torch's import again) through click's runner in this process."""
    env = {"WAVESHIELD_MODELS": str(models), "WAVESHIELD_WEIGHTS_DIR": str(REPO / "weights")}
    if subprocess_run:
        return subprocess.run([sys.executable, "-m", "producers.cli", "model", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=300, cwd=REPO)
    from click.testing import CliRunner

    from producers.cli import main

    result = CliRunner().invoke(main, ["model", *args], env=env)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_add_list_show_and_one_line_mistakes(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(model.state_dict(), tmp_path / "w.pth")
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\ngrey\n\n")
    models = tmp_path / "models"
    common = ["--arch", "torchvision:mobilenet_v3_small", "--input-size", "64x48", "--classes", str(tmp_path / "classes.txt"),
              "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]

    pickled = waveshield(["add", "colours", *common, "--arch-args", "num_classes=4", "--weights", str(tmp_path / "w.pth")],
                         models, subprocess_run=True)
    assert pickled.returncode == 2 and pickled.stderr.count("\n") == 1 and "never unpickles" in pickled.stderr
    wrong = waveshield(["add", "colours", *common, "--weights", str(tmp_path / "w.safetensors")], models)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "classifier.3.weight is 4x1024 in the file, 1000x1024 in the architecture" in wrong.stderr
    bad_size = waveshield(["add", "colours", *common[:-6], "--input-size", "64x", "--classes", "x"], models)
    assert bad_size.returncode == 2 and "Traceback" not in bad_size.stderr
    assert not models.exists()

    added = waveshield(["add", "colours", *common, "--arch-args", "num_classes=4", "--weights",
                        str(tmp_path / "w.safetensors")], models, subprocess_run=True)
    assert added.returncode == 0, added.stderr
    assert "registered colours: torchvision:mobilenet_v3_small, 64x48, 4 classes" in added.stdout
    listed = json.loads(waveshield(["list", "--json"], models, subprocess_run=True).stdout)
    assert [m["name"] for m in listed] == ["daubechies", "haar", "standard", "colours"]
    assert listed[-1] == {"name": "colours", "shipped": False, "architecture": "torchvision:mobilenet_v3_small",
                          "input_size": [64, 48], "classes": 4, "defended_by": None, "twin": None, "twin_of": None}
    shown = waveshield(["show", "colours"], models).stdout
    assert "classes (4): red, green, blue, grey" in shown and "input: 64x48, resize shorter-side" in shown
    assert json.loads(waveshield(["show", "colours", "--json"], models).stdout)["arch_args"] == {"num_classes": 4}
    again = waveshield(["add", "colours", *common, "--arch-args", "num_classes=4", "--weights",
                        str(tmp_path / "w.safetensors")], models)
    assert again.returncode == 2 and "a model 'colours' exists" in again.stderr
    missing = waveshield(["show", "colors"], models)
    assert missing.returncode == 2 and "did you mean 'colours'?" in missing.stderr
    assert "waveshield model remove colours" in again.stderr
    removed = waveshield(["remove", "colours"], models)
    assert removed.returncode == 0 and "removed colours" in removed.stdout and list(models.iterdir()) == []
    shipped = waveshield(["remove", "standard"], models)
    assert shipped.returncode == 2 and "read-only" in shipped.stderr


def test_evaluate_runs_the_papers_grid_on_a_registered_model_at_its_size_with_its_classes(tmp_path, sample):
    """`evaluate --model` on an ImageFolder of the card's classes; mistakes in the options or labels are one line."""
    from PIL import Image

    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "classes.txt").write_text("cat\ndog\nfrog\n")
    models = tmp_path / "models"
    added = waveshield(["add", "pets", "--arch", "torchvision:shufflenet_v2_x0_5", "--arch-args", "num_classes=3",
                        "--weights", str(tmp_path / "w.safetensors"), "--input-size", "56x40", "--classes",
                        str(tmp_path / "classes.txt"), "--defended-by", "median:size=2"], models)
    assert added.returncode == 0, added.stderr
    folder = tmp_path / "pets"
    for index in (3, 5, 6):  # cat, dog, frog in CIFAR-10's order
        (folder / ["cat", "dog", "frog"][[3, 5, 6].index(index)]).mkdir(parents=True)
        for i in [i for i in range(len(sample)) if sample.labels[i] == index][:4]:
            Image.fromarray(sample.images[i]).save(folder / ["cat", "dog", "frog"][[3, 5, 6].index(index)] / f"{i}.png")
    env = {**os.environ, "WAVESHIELD_MODELS": str(models), "WAVESHIELD_WEIGHTS_DIR": str(REPO / "weights"),
           "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out")}

    def evaluate(*args):
        return subprocess.run([sys.executable, "-m", "producers.cli", "evaluate", *args], capture_output=True,
                              text=True, env=env, timeout=600, cwd=REPO)

    ran = evaluate("--model", "pets", "--data", str(folder), "--local", "--out", str(tmp_path / "report"))
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {c["configuration"] for c in report["cells"]} == {"pets+raw", "pets+median:size=2"}
    assert report["meta"]["images"] == 12 and all(c["total"] == 12 for c in report["cells"])
    assert report["plan"]["source_model"] == "pets"

    (folder / "horse").mkdir()
    (folder / "horse" / "0.png").write_bytes((folder / "cat" / next(p.name for p in (folder / "cat").iterdir())).read_bytes())
    wrong = evaluate("--model", "pets", "--data", str(folder), "--local", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "class folders 'horse' name no class of the model (its classes: cat, dog, frog)" \
        in wrong.stderr and wrong.stderr.count("\n") == 1
    from click.testing import CliRunner

    from producers.cli import main

    for args, message in ((["--twin", "pets"], "--twin and --defence go with --model"),
                          (["--model", "pets", "--spec", str(tmp_path / "s.toml")], "a spec names its models itself"),
                          (["--model", "pest"], "did you mean 'pets'?")):
        (tmp_path / "s.toml").write_text('data = "sample"\n[[configurations]]\nmodel = "standard"\n')
        refused = CliRunner().invoke(main, ["evaluate", *args, "--local"], env={
            k: env[k] for k in ("WAVESHIELD_MODELS", "WAVESHIELD_WEIGHTS_DIR", "WAVESHIELD_OUTPUT_DIR")})
        assert refused.exit_code == 2 and message in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
