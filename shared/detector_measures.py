"""What a fitted detector is measured by: screened outcomes per attack, the attacker who knows it, benign changes.

Every function takes the detector, its threshold and the examples of one
source (:mod:`shared.screening_sources`), and returns rows of shares in 0..1
for the report of ``waveshield fit-detector``.
"""

from __future__ import annotations

import torch

from . import benign_changes
from .adaptive_screening import evade_screening
from .detector import Detector, auroc, roc_points
from .image_set import quantise
from .screening_sources import BATCH, TRAINED, Examples, FeatureReader, label

#: The eps of the attacker who knows the detector (:mod:`shared.adaptive_screening`).
ADAPTIVE_EPS = (0.01, round(8 / 255, 6))


def outcome(scores: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor, threshold: float) -> dict:
    """Screened accuracy, the share of wrongly labelled images flagged, and those that went through unflagged."""
    wrong = labels != truth
    return {"screened_accuracy": float((~wrong).double().mean()),
            "flagged_of_wrong": float((scores[wrong] > threshold).double().mean()) if wrong.any() else float("nan"),
            "evaded": float((wrong & (scores <= threshold)).double().mean())}


def attack_rows(model: Detector, threshold: float, ex: Examples) -> tuple[list[dict], dict]:
    """One source's table: clean and each attack, and the ROC points of each attack's fooling images.

    Returns
    -------
    rows : list of dict
        ``attack``, ``trained_on``, ``fooling_images``, ``detected`` (share of
        fooling images flagged), ``auroc`` and the :func:`outcome` keys.
    curves : dict
        Attack -> (false-positive rate, detection rate) points in percent.
    """
    clean = model.score(ex.clean)
    rows = [{"attack": "clean", "trained_on": True, "fooling_images": 0, "detected": float("nan"),
             "auroc": float("nan"), **outcome(clean, ex.clean_labels, ex.truth, threshold)}]
    curves = {}
    trained = {label(n, p) for n, p in TRAINED}
    for attack in ex.attacked:
        scores, fooling = model.score(ex.attacked[attack]), model.score(ex.fooling(attack))
        rows.append({"attack": attack, "trained_on": attack in trained, "fooling_images": len(fooling),
                     "detected": float((fooling > threshold).double().mean()) if len(fooling) else float("nan"),
                     "auroc": auroc(clean, fooling),
                     **outcome(scores, ex.attacked_labels[attack], ex.truth, threshold)})
        curves[attack] = roc_points(clean, fooling)
    return rows, curves


def adaptive_rows(model: Detector, threshold: float, reader: FeatureReader, x: torch.Tensor, truth: torch.Tensor,
                  reading: dict) -> list[dict]:
    """The attacker who knows the detector, at each of :data:`ADAPTIVE_EPS`, colour and grey, delivered in 8 bits."""
    device, rows = reader.store.device, []
    for eps in ADAPTIVE_EPS:
        for grey in (False, True):
            model.to(device)  # the attacker differentiates through it, beside the images
            adversarial = quantise(torch.cat([
                evade_screening(x[i:i + BATCH].to(device), truth[i:i + BATCH].to(device), reader.store.get,
                                reader.options, model, eps=eps, screened_path=reader.reported_path, grey=grey,
                                **reading).cpu()
                for i in range(0, len(x), BATCH)]))
            f, labels = reader(adversarial)
            rows.append({"attack": f"evade eps={eps}" + (", grey" if grey else ""),
                         **outcome(model.cpu().score(f), labels, truth, threshold)})
    return rows


def flagged_after_benign_changes(model: Detector, threshold: float, reader: FeatureReader, x: torch.Tensor) -> dict:
    """The share of clean images ``x`` flagged after each of :data:`shared.benign_changes.CHANGES`."""
    return {name: float((model.score(reader(change(x))[0]) > threshold).double().mean())
            for name, change in benign_changes.CHANGES.items()}
