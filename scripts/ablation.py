"""Why the undefended model resists: train the ablation's models, then attack each one.

Each variant changes one factor of the recipe the first shipped models used
(width 16, 30 epochs, label smoothing 0.1, random crop + flip); the variant
without label smoothing is the recipe shipped since. Training goes through
``waveshield train``, so it resumes after an interruption (rerun the same
command); finished models are skipped.

    python scripts/ablation.py train                      # every variant not yet in weights/ablation/
    python scripts/ablation.py evaluate --limit 2000      # attack each one, write docs/results/ablation.json
    python scripts/ablation.py table                      # the markdown table of docs/results.md

``evaluate`` crafts the paper's attacks (FGSM, BIM at 0.004/0.007/0.01,
DeepFool) with waveshield on each model itself, classifies the raw images,
and checks FGSM against torchattacks on the same images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAVESHIELD = [sys.executable, "-m", "producers.cli"]
MIRROR = Path(os.path.relpath(ROOT.parent / "shared/datasets/cifar10-jpeg", ROOT))  # the data the shipped models were trained and tested on
TRAIN_DATA = os.environ.get("WAVESHIELD_TRAIN_DATA", str(MIRROR / "train.zip"))
TEST_DATA = os.environ.get("WAVESHIELD_TEST_DATA", str(MIRROR / "test.zip"))

#: The variants' weights and cards, beside (not among) the shipped models.
ABLATION_WEIGHTS = ROOT / "weights" / "ablation"
SMOOTHED = ["--label-smoothing", "0.1"]  # the base recipe of the ablation
#: name -> (what changes, `waveshield train` options).
VARIANTS = {
    "standard-smooth": ("label smoothing 0.1 (shipped until 2026-11-30)", SMOOTHED),
    "standard-short": ("6 epochs instead of 30", [*SMOOTHED, "--epochs", "6"]),
    "standard-noaug": ("no crop / flip", [*SMOOTHED, "--no-augment"]),
    "standard-ls0": ("no label smoothing (shipped since as `standard`)", ["--label-smoothing", "0"]),
}


def waveshield(args: list[str]) -> None:
    """Run a waveshield command with the ablation's weights folder."""
    env = {**os.environ, "WAVESHIELD_WEIGHTS_DIR": str(ABLATION_WEIGHTS)}
    subprocess.run(WAVESHIELD + args, cwd=ROOT, env=env, check=True)


def train(names: list[str]) -> None:
    """Train every named variant whose weights are missing (resuming a checkpoint when one matches)."""
    ABLATION_WEIGHTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (ABLATION_WEIGHTS / f"{name}.safetensors").exists():
            print(f"{name}: already trained", flush=True)
            continue
        _, options = VARIANTS[name]
        args = ["train", "--defence", "none", "--name", name, "--data", TRAIN_DATA, "--test-data", TEST_DATA, *options]
        print("waveshield " + " ".join(args), flush=True)
        waveshield(args)


def spec_for(name: str) -> dict:
    """The paper's attacks crafted on ``name``, and ``name`` on raw input as the one configuration."""
    return {"source_model": name, "batch_size": 250, "threads": os.cpu_count(),
            "attacks": [{"name": "fgsm", "eps": [0.004, 0.007, 0.01]}, {"name": "bim", "eps": [0.004, 0.007, 0.01]},
                        {"name": "deepfool"}],
            "configurations": [{"model": name}]}


def evaluate(names: list[str], limit: int, out: Path) -> dict:
    """Attack each variant on ``limit`` test images; return (and write) its accuracies and card facts."""
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in names:
        card = json.loads((ABLATION_WEIGHTS / f"{name}.json").read_text())
        folder = out.parent / "ablation" / name
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / "spec.json"
        spec.write_text(json.dumps(spec_for(name), indent=2))
        started = time.perf_counter()
        waveshield(["evaluate", "--local", "--spec", str(spec), "--data", TEST_DATA, "--limit", str(limit),
                    "--out", str(folder)])
        report = json.loads((folder / "report.json").read_text())
        cells = {c["attack"]: c for c in report["cells"]}
        results[name] = {
            "change": VARIANTS[name][0], "recipe": card["recipe"], "card_test_accuracy": card["test_accuracy"],
            "images": limit, "seconds": round(time.perf_counter() - started, 1),
            "accuracy": {attack: round(100 * c["correct"] / c["total"], 2) for attack, c in cells.items()},
            "torchattacks_fgsm": torchattacks_fgsm(name, limit),
        }
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results[name]), flush=True)
    return results


def torchattacks_fgsm(name: str, limit: int) -> dict:
    """FGSM accuracy by torchattacks and by waveshield on the same images, and how many crafted pixels differ."""
    import torch
    import torchattacks

    from shared.attacks import fgsm
    from shared.images.load import load_images
    from shared.models.store import ModelStore
    from shared.settings import load as load_settings

    model = ModelStore(ABLATION_WEIGHTS).get(name)
    images = load_images(TEST_DATA, limit=limit, workers=load_settings().decode_workers)  # as evaluate takes them
    x, y = images.to_tensor(), torch.from_numpy(images.labels)
    out = {}
    for eps in (0.004, 0.007, 0.01):
        ours = torch.cat([fgsm(model, x[s:s + 500], y[s:s + 500], eps=eps) for s in range(0, len(x), 500)])
        theirs = torch.cat([torchattacks.FGSM(model, eps=eps)(x[s:s + 500], y[s:s + 500]) for s in range(0, len(x), 500)])
        with torch.no_grad():
            acc = [(model(a).argmax(1) == y).float().mean().item() * 100 for a in (ours, theirs)]
        out[f"fgsm eps={eps}"] = {"waveshield": round(acc[0], 2), "torchattacks": round(acc[1], 2),
                                  "pixels_differing": int((ours != theirs).sum()),
                                  "max_pixel_change": round(float((ours - x).abs().max()), 6)}
    return out


ATTACK_COLUMNS = ["fgsm eps=0.004", "fgsm eps=0.007", "fgsm eps=0.01", "bim eps=0.004", "bim eps=0.007", "bim eps=0.01",
                  "deepfool"]


def table(results: dict) -> str:
    """The ablation as a markdown table: clean and attacked accuracy (%), and the average drop in points."""
    head = ["model", "change", "clean", *[c.replace(" eps=", " ") for c in ATTACK_COLUMNS], "average drop"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        acc = r["accuracy"]
        drop = sum(acc["clean"] - acc[c] for c in ATTACK_COLUMNS) / len(ATTACK_COLUMNS)
        rows.append("| " + " | ".join([name, r["change"], f"{acc['clean']:.1f}", *(f"{acc[c]:.1f}" for c in ATTACK_COLUMNS),
                                       f"**{drop:.1f}**"]) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["train", "evaluate", "table"])
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--limit", type=int, default=2000, help="test images per model (class-balanced)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/ablation.json")
    args = parser.parse_args()
    if args.step == "train":
        train(args.only)
    elif args.step == "evaluate":
        evaluate(args.only, args.limit, args.out)
    else:
        print(table(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
