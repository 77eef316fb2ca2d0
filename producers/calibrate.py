"""`waveshield calibrate`: the screening threshold at a stated false-positive rate, and detection per attack."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shared import attacks, defences, screening
from shared.data import load_images
from shared.evaluation import PAPER_EPS, defend
from shared.model_store import ModelStore
from shared.settings import Settings, resolve_device


def run_calibration(*, data: str, n: int, fpr: float, settings: Settings, out: Path) -> dict:
    """Score clean and attacked images, set the threshold, write screening.json and calibration.md."""
    chosen = {**screening.load_settings(settings.weights_dir)}
    chosen.pop("disagreement", None)  # an earlier calibration of this score, set aside by fit-detector
    device = resolve_device(settings.device)
    store = ModelStore(settings.weights_dir, device)
    for name in (chosen["raw_model"], chosen["defended_model"]):
        store.require(name, "calibration")
    raw, defended = store.get(chosen["raw_model"]), store.get(chosen["defended_model"])
    options = defences.get(chosen["defence"], settings.weights_dir)
    image_set = load_images(data, limit=n)
    if image_set.labels is None:
        raise ValueError(f"{data}: calibration needs labelled images (the attacks need true classes)")
    x, y = image_set.to_tensor().to(device), torch.from_numpy(image_set.labels).to(device)

    def scores(images):
        """Suspicion per image, and whether the standard model gets the image wrong."""
        p_raw, _, suspicion = screening.score(raw, defended, images, defend(images, options))
        return suspicion.cpu().numpy(), (p_raw.argmax(1) != y).cpu().numpy()

    clean, _ = scores(x)
    threshold = screening.calibrate(clean, fpr)
    sets = {f"{a} eps={e}": (a, {"eps": e}) for a in ("fgsm", "bim") for e in PAPER_EPS}
    sets["deepfool"] = ("deepfool", {})
    detection, detection_fooling = {}, {}
    for label, (name, params) in sets.items():
        suspicion, fooled = scores(attacks.get(name)(raw, x, y, **params))
        detection[label] = float((suspicion > threshold).mean())
        # An attacked image that does not fool the standard model is no threat: the rate that matters.
        detection_fooling[label] = float((suspicion[fooled] > threshold).mean()) if fooled.any() else float("nan")
    # This command calibrates the hand-made score, and so makes screening use it again.
    result = {**chosen, "score": "disagreement", "threshold": threshold, "fpr": fpr,
              "measured_fpr": float((clean > threshold).mean()), "detection": detection, "detection_of_fooling": detection_fooling,
              "calibrated_on": {"data": str(data), "images": len(x)}}
    (settings.weights_dir / screening.FILENAME).write_text(json.dumps(result, indent=2) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Screening calibration", "",
             f"{len(x)} images from {data}; suspicion = total variation distance between the standard model's softmax "
             f"on the raw image and the {chosen['defended_model']} model's softmax on its {chosen['defence']} "
             "reconstruction; attacks crafted on the standard model.", "",
             f"Threshold {threshold:.4f}: false-positive rate on clean images {100 * result['measured_fpr']:.1f} % "
             f"(target {100 * fpr:.1f} %).", "",
             "| attack | flagged, all attacked images | flagged, those that fool the standard model |",
             "| --- | --- | --- |"]
    lines += [f"| {k} | {100 * v:.1f} % | {100 * detection_fooling[k]:.1f} % |" for k, v in detection.items()]
    (out / "calibration.md").write_text("\n".join(lines) + "\n")
    return result
