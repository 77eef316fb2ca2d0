"""Run an evaluation plan in this process, with shipped weights and a progress bar."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import torch

from shared import defences, models, report
from shared.data import load_images
from shared.evaluation import evaluate_local, paper_plan
from shared.settings import Settings, resolve_device


def available_plan(plan: dict, weights_dir: Path) -> tuple[dict, list[str]]:
    """Drop configurations whose model has no weights; return the plan and notes saying so."""
    notes, kept = [], []
    for config in plan["configurations"]:
        if (weights_dir / f"{config['model']}.safetensors").is_file():
            kept.append(config)
        else:
            flag = "none" if config["model"] == "standard" else config["model"]
            notes.append(f"skipped {config['model']}+{config.get('defence') or 'raw'}: no weights "
                         f"{config['model']}.safetensors (train them: waveshield train --defence {flag})")
    if not (weights_dir / f"{plan['source_model']}.safetensors").is_file() or not kept:
        raise ValueError(f"no weights for the source model {plan['source_model']!r} in {weights_dir}; "
                         "train them with: waveshield train --defence none --data PATH")
    return {**plan, "configurations": kept}, notes


def run_evaluation(*, data: str, limit: int | None, out: Path, settings: Settings, plan: dict | None = None) -> Path:
    """Evaluate ``plan`` (default: the paper's) on ``data`` and write the report; return its path."""
    device = resolve_device(settings.device)
    image_set = load_images(data, limit=limit)
    plan, notes = available_plan(plan or paper_plan(), settings.weights_dir)
    if image_set.labels is None or len(image_set) == 0:
        raise ValueError(f"{data}: evaluation needs labelled images (class sub-folders, or 'y' in an npz)")
    loaded: dict = {}

    def get_model(name):
        if name not in loaded:
            loaded[name] = models.load(settings.weights_dir / f"{name}.safetensors", device=device)[0]
        return loaded[name]

    def defence_options(name):
        return defences.get(name, settings.weights_dir)

    x, y = image_set.to_tensor(), torch.from_numpy(image_set.labels)
    started = time.perf_counter()
    with click.progressbar(length=len(x), label="evaluating", file=sys.stderr) as bar:
        cells = evaluate_local(plan, x, y, get_model, defence_options, device=device, progress=bar.update)
    seconds = time.perf_counter() - started
    notes = [f"data: {data} ({len(x)} images, {len(image_set.errors)} unreadable)", f"device: {device}",
             f"attacks crafted on {plan['source_model']!r} (transfer setting)", f"{seconds:.1f} s"] + notes
    meta = {"data": str(data), "images": len(x), "device": device, "seconds": seconds,
            "models": {n: loaded[n].width for n in loaded}}
    return report.write(cells, out, plan=plan, meta=meta, notes=notes)
