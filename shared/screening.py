"""Screening: one record per image, with a suspicion score for adversarial manipulation.

Each image is classified twice: raw by the standard model, and after DWT
reconstruction by the DWT-trained ("defended") model. An adversarial image
is built to move the standard model's output; the reconstruction removes
part of the perturbation, so the two outputs disagree more on it than on a
clean image. Two scores, both 0 to 1, higher = more suspicious:

- ``detector`` (once ``waveshield fit-detector`` has run): the learned
  detector's probability (:mod:`shared.detector`), from the model paths its
  card names and, by default, the smoothness of the image's colours;
- ``disagreement``: the total variation distance between the two softmax
  outputs, 0 (identical) to 1 (disjoint).

An image is flagged above a threshold calibrated on clean images to a stated
false-positive rate; its record names the signal that raised its score most.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .evaluation import defend


FILENAME = "screening.json"
DEFAULT = {"threshold": 0.5, "fpr": None, "defence": "haar", "defended_model": "haar", "raw_model": "standard",
           "score": "disagreement"}
SCORES = ("disagreement", "detector")
#: What a calibration writes into screening.json beside the score's name.
CALIBRATION_KEYS = ("threshold", "fpr", "measured_fpr", "detection", "detection_of_fooling", "calibrated_on")


@torch.no_grad()
def score(raw_model, defended_model, images: torch.Tensor, reconstructed: torch.Tensor):
    """Softmax outputs of both paths and the suspicion score, per image.

    ``reconstructed`` is ``images`` after the DWT defence.

    Returns
    -------
    p_raw, p_defended : torch.Tensor
        (N, K) probabilities of the standard model on the raw image and of the
        defended model on the reconstruction.
    suspicion : torch.Tensor
        (N,) total variation distance between the two.
    """
    p_raw = raw_model(images).softmax(1)
    p_def = defended_model(reconstructed).softmax(1)
    return p_raw, p_def, 0.5 * (p_raw - p_def).abs().sum(1)


def screen_batch(plan: dict, x: torch.Tensor, get_model, defence_options, get_detector=None,
                 reconstructed: torch.Tensor | None = None):
    """Both paths, the score and the strongest signal of a batch, with the plan's score.

    Parameters
    ----------
    plan : dict
        Screening settings: ``score``, ``defence``, ``raw_model``,
        ``defended_model`` and, for the detector, ``detector_sha256``.
    get_model, defence_options : callable
        Model name -> network; defence name -> reconstruct() options.
    get_detector : callable, optional
        sha256 -> the detector with that hash (needed for ``score = detector``).
    reconstructed : torch.Tensor, optional
        ``x`` after the plan's defence, when a DWT stage has already made it.

    Returns
    -------
    p_raw, p_defended, suspicion, signals
        Probabilities (N, K) of both paths, the score (N,) and, per image, the
        name of the signal that raised the score most.
    """
    if plan.get("score", "disagreement") == "detector":
        from . import detector

        model, card = get_detector(plan["detector_sha256"])
        f, logits = detector.features(x, get_model, defence_options, with_logits=True, **detector.reads(card))
        p_raw = logits[f"{plan['raw_model']}@raw"].softmax(1)
        p_def = logits[f"{plan['defended_model']}@{plan['defence']}"].softmax(1)
        return p_raw, p_def, model.score(f), detector.strongest_signal(model, f, card["features"])
    if reconstructed is None:
        reconstructed = defend(x, defence_options(plan["defence"]))
    p_raw, p_def, suspicion = score(get_model(plan["raw_model"]), get_model(plan["defended_model"]), x, reconstructed)
    return p_raw, p_def, suspicion, ["disagreement"] * len(x)


def records(ids: list[str], p_raw, p_def, suspicion, threshold: float, classes, signals=None) -> list[dict]:
    """One JSON-ready record per image: label and confidence of the defended path, raw label, score, flag, signal."""
    conf, label = p_def.max(1)
    raw_label = p_raw.argmax(1)
    out = []
    for i, item in enumerate(ids):
        out.append({"id": item, "label": classes[int(label[i])], "confidence": round(float(conf[i]), 6),
                    "raw_label": classes[int(raw_label[i])], "suspicion": round(float(suspicion[i]), 6),
                    "flagged": bool(suspicion[i] > threshold), "error": None,
                    "signal": signals[i] if signals is not None else None})
    return out


def error_record(item: str, reason: str) -> dict:
    """The record of an item that could not be read."""
    return {"id": item, "label": None, "confidence": None, "raw_label": None, "suspicion": None, "flagged": None,
            "error": reason, "signal": None}


def calibrate(clean_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold whose false-positive rate on ``clean_scores`` is at most ``fpr``."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be between 0 and 1, got {fpr}")
    ordered = np.sort(np.asarray(clean_scores, dtype=np.float64))
    # flagged = score > threshold; allow floor(fpr * n) clean images above it.
    allowed = int(np.floor(fpr * len(ordered)))
    return float(ordered[len(ordered) - 1 - allowed]) if len(ordered) else 1.0


def load_settings(weights_dir: str | Path) -> dict:
    """``screening.json`` of the weights directory (written by ``waveshield calibrate``), else defaults."""
    path = Path(weights_dir) / FILENAME
    if not path.is_file():
        return dict(DEFAULT)
    try:
        return {**DEFAULT, **json.loads(path.read_text())}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable screening settings ({exc})") from None


def summary(all_records: list[dict]) -> dict:
    """Counts per label, flagged and errors."""
    labels: dict[str, int] = {}
    for r in all_records:
        if r["error"] is None:
            labels[r["label"]] = labels.get(r["label"], 0) + 1
    return {"images": len(all_records), "screened": sum(labels.values()),
            "flagged": sum(1 for r in all_records if r["flagged"]), "errors": sum(1 for r in all_records if r["error"]),
            "labels": dict(sorted(labels.items()))}
