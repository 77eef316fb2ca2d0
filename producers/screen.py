"""`waveshield screen` and `waveshield results`: bulk screening on the workers, or in this process."""

from __future__ import annotations

import csv
import functools
import json
import sys
from pathlib import Path

import click
import numpy as np

from shared import defences, detector, screening
from shared.data import ImageSet, to_float_nchw
from shared.evaluation import MODES
from shared.models import CIFAR10_CLASSES
from shared.model_store import ModelStore
from shared.settings import Settings, resolve_device
from shared.sources import colour_roughness

FIELDS = ["id", "label", "confidence", "raw_label", "suspicion", "flagged", "error", "signal", "colour_roughness"]


def calibration_for(chosen: dict, source: str | None) -> dict:
    """The calibration to screen with: the one recorded for ``source``, or the default (None).

    Returns ``name``, ``threshold``, ``fpr`` and ``reference`` (what the
    calibration's clean images looked like, for the source check).
    """
    if source is None:
        return {"name": "default", **{k: chosen.get(k) for k in ("threshold", "fpr", "reference")}}
    known = chosen.get("sources", {})
    if source not in known:
        raise ValueError(f"no calibration for source {source!r} in screening.json"
                         + (f" (it has: {', '.join(sorted(known))})" if known else "")
                         + f"; make one from up to 1,000 clean images: waveshield calibrate --data DIR --source {source}")
    entry = known[source]
    if entry.get("score") != chosen["score"] or entry.get("detector_sha256") != chosen.get("detector_sha256"):
        raise ValueError(f"the calibration for source {source!r} was made for another score or detector; "
                         f"make it again: waveshield calibrate --data DIR --source {source}")
    return {"name": source, **{k: entry.get(k) for k in ("threshold", "fpr", "reference")}}


def screening_settings(settings: Settings, source: str | None = None) -> dict:
    """Score, threshold, defence and models to screen with; checks the weights (and detector) exist.

    ``source`` picks a calibration recorded by ``waveshield calibrate --source``
    (default: the one the score was fitted or calibrated with).
    """
    chosen = screening.load_settings(settings.weights_dir)
    if chosen["score"] not in screening.SCORES:
        raise ValueError(f"{settings.weights_dir / screening.FILENAME}: unknown score {chosen['score']!r}; "
                         f"valid: {', '.join(screening.SCORES)}")
    store = ModelStore(settings.weights_dir)
    names = (chosen["raw_model"], chosen["defended_model"])
    if chosen["score"] == "detector":
        card = store.detector()[1]
        paths = detector.reads(card)["paths"]
        names = sorted({p.split("@")[0] for p in paths})
        chosen["detector_sha256"] = card["sha256"]
        if f"{chosen['raw_model']}@raw" not in paths or f"{chosen['defended_model']}@{chosen['defence']}" not in paths:
            raise ValueError(f"the detector reads the paths {', '.join(paths)}; screening.json names "
                             f"{chosen['raw_model']}@raw and {chosen['defended_model']}@{chosen['defence']}")
    for name in names:
        store.require(name, "screening")
    defences.get(chosen["defence"], settings.weights_dir)
    calibration = calibration_for(chosen, source)
    plan = {k: chosen[k] for k in ("score", "defence", "raw_model", "defended_model", "detector_sha256") if k in chosen}
    return {**plan, "threshold": calibration["threshold"], "calibration": calibration}


def screen_local(image_set: ImageSet, settings: Settings, batch_size: int = 256, source: str | None = None,
                 chosen: dict | None = None) -> list[dict]:
    """Screen in this process; one record per item, readable or not.

    ``chosen``: the settings of :func:`screening_settings` (read here when None).
    """
    chosen = chosen or screening_settings(settings, source)
    store = ModelStore(settings.weights_dir, resolve_device(settings.device))
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, settings.weights_dir))
    out = []
    with click.progressbar(length=len(image_set), label="screening", file=sys.stderr) as bar:
        for start in range(0, len(image_set), batch_size):
            x = to_float_nchw(image_set.images[start:start + batch_size], store.device)
            p_raw, p_def, suspicion, signals = screening.screen_batch(chosen, x, store.get, options, store.detector)
            out += screening.records(image_set.ids[start:start + batch_size], p_raw, p_def, suspicion,
                                     chosen["threshold"], CIFAR10_CLASSES, signals, colour_roughness(x))
            bar.update(len(x))
    return out + [screening.error_record(e.id, e.reason) for e in image_set.errors]


def submit_screen(client, app, image_set: ImageSet, settings: Settings, batch_size: int = 256, *,
                  mode: str = "staged", source: str | None = None) -> str:
    """Put a screening job on the queues; return its id. ``source``: as for :func:`screening_settings`."""
    from producers.submit import send
    from shared.pipeline import Pipeline

    chosen = screening_settings(settings, source)
    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    starts = range(0, len(image_set), batch_size)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    job = pipe.create_screen_job({**chosen, "mode": mode}, [image_set.ids[s:s + batch_size] for s in starts],
                                 [screening.error_record(e.id, e.reason) for e in image_set.errors], CIFAR10_CLASSES)
    for b, s in enumerate(starts):
        send(app, pipe.add_screen_batch(job, b, np.ascontiguousarray(image_set.images[s:s + batch_size])))
    return job


def write_outputs(records: list[dict], out: Path, calibration: dict | None = None) -> dict:
    """records.jsonl, records.csv and summary.json in ``out``; return the summary.

    ``calibration``: the plan's (:func:`calibration_for`); the summary names
    it and says whether the flags look like a source mismatch.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "records.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    with open(out / "records.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(records)
    summary = screening.summary(records, calibration)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
