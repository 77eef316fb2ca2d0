"""What a fitted detector is measured by: screened outcomes per attack, the attacker who knows it, benign changes.

Every function takes the detector, its threshold and the examples of one
source (:mod:`shared.screening.examples`), and returns rows of shares in 0..1
for the report of ``waveshield fit-detector``.
"""

from __future__ import annotations

import torch

from shared.evaluation.plan import EPS_8_255
from shared.images.image_set import iter_batches, quantise
from shared.screening import benign as benign_changes
from shared.screening.detector import Detector, auroc, roc_points
from shared.screening.evasion import evade_screening
from shared.screening.examples import BATCH, TRAINED, Examples, FeatureReader
from shared.screening.verdicts import flagged_share

#: The eps of the attacker who knows the detector (:mod:`shared.screening.evasion`).
ADAPTIVE_EPS = (0.01, EPS_8_255)


def outcome(scores: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor, threshold: float) -> dict:
    """Screened accuracy, the share of wrongly labelled images flagged, and those that went through unflagged."""
    wrong = labels != truth
    return {"screened_accuracy": float((~wrong).double().mean()),
            "flagged_of_wrong": flagged_share(scores[wrong], threshold),
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
    trained = {spec.id for spec in TRAINED}
    for attack in ex.attacked:
        scores, fooling = model.score(ex.attacked[attack]), model.score(ex.fooling(attack))
        rows.append({"attack": attack, "trained_on": attack in trained, "fooling_images": len(fooling),
                     "detected": flagged_share(fooling, threshold),
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
                evade_screening(x[s].to(device), truth[s].to(device), reader.store.get,
                                reader.options, model, eps=eps, screened_path=reader.reported_path, grey=grey,
                                **reading).cpu()
                for s in iter_batches(len(x), BATCH)]))
            f, labels = reader(adversarial)
            rows.append({"attack": f"evade eps={eps}" + (", grey" if grey else ""),
                         **outcome(model.cpu().score(f), labels, truth, threshold)})
    return rows


def flagged_after_benign_changes(model: Detector, threshold: float, reader: FeatureReader, x: torch.Tensor) -> dict:
    """The share of clean images ``x`` flagged after each of :data:`shared.screening.benign.CHANGES`."""
    return {name: flagged_share(model.score(reader(change(x))[0]), threshold)
            for name, change in benign_changes.CHANGES.items()}
