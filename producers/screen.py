"""`waveshield screen` and `waveshield results`: bulk screening on the workers, or in this process."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
import numpy as np

from shared import defences, screening
from shared.data import ImageSet, to_float_nchw
from shared.evaluation import MODES, defend
from shared.models import CIFAR10_CLASSES
from shared.model_store import ModelStore
from shared.settings import Settings, resolve_device

FIELDS = ["id", "label", "confidence", "raw_label", "suspicion", "flagged", "error"]


def screening_settings(settings: Settings) -> dict:
    """Threshold, defence and models to screen with; checks the weights exist."""
    chosen = screening.load_settings(settings.weights_dir)
    store = ModelStore(settings.weights_dir)
    for name in (chosen["raw_model"], chosen["defended_model"]):
        store.require(name, "screening")
    defences.get(chosen["defence"], settings.weights_dir)
    return {k: chosen[k] for k in ("threshold", "defence", "raw_model", "defended_model")}


def screen_local(image_set: ImageSet, settings: Settings, batch_size: int = 256) -> list[dict]:
    """Screen in this process; one record per item, readable or not."""
    chosen = screening_settings(settings)
    device = resolve_device(settings.device)
    load = ModelStore(settings.weights_dir, device).get
    options = defences.get(chosen["defence"], settings.weights_dir)
    out = []
    with click.progressbar(length=len(image_set), label="screening", file=sys.stderr) as bar:
        for start in range(0, len(image_set), batch_size):
            x = to_float_nchw(image_set.images[start:start + batch_size], device)
            p_raw, p_def, suspicion = screening.score(load(chosen["raw_model"]), load(chosen["defended_model"]), x,
                                                      defend(x, options))
            out += screening.records(image_set.ids[start:start + batch_size], p_raw, p_def, suspicion,
                                     chosen["threshold"], CIFAR10_CLASSES)
            bar.update(len(x))
    return out + [screening.error_record(e.id, e.reason) for e in image_set.errors]


def submit_screen(client, app, image_set: ImageSet, settings: Settings, batch_size: int = 256, *,
                  mode: str = "staged") -> str:
    """Put a screening job on the queues; return its id."""
    from producers.submit import send
    from shared.pipeline import Pipeline

    chosen = screening_settings(settings)
    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    starts = range(0, len(image_set), batch_size)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    job = pipe.create_screen_job({**chosen, "mode": mode}, [image_set.ids[s:s + batch_size] for s in starts],
                                 [screening.error_record(e.id, e.reason) for e in image_set.errors], CIFAR10_CLASSES)
    for b, s in enumerate(starts):
        send(app, pipe.add_screen_batch(job, b, np.ascontiguousarray(image_set.images[s:s + batch_size])))
    return job


def write_outputs(records: list[dict], out: Path) -> dict:
    """records.jsonl, records.csv and summary.json in ``out``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "records.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    with open(out / "records.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(records)
    summary = screening.summary(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
