"""`waveshield calibrate`: the screening threshold at a stated false-positive rate, and detection per attack."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from shared import attacks
from shared.dwt import defences
from shared.evaluation.plan import DEFAULT_BATCH_SIZE as BATCH
from shared.evaluation.plan import AttackSpec, paper_attacks
from shared.evaluation.run import defend
from shared.images import coarse
from shared.images.image_set import iter_batches
from shared.images.load import load_images
from shared.models.store import ModelStore
from shared.screening import config as screening_config
from shared.screening import verdicts
from shared.screening.verdicts import flagged_share
from shared.settings import Settings, resolve_device


def run_calibration(*, data: str, n: int, fpr: float, settings: Settings, out: Path) -> dict:
    """Score clean and attacked images, set the threshold, write screening.json and calibration.md."""
    chosen = screening_config.load(settings.weights_dir, settings.models_dir, check_score=False)  # replaces the score
    device = resolve_device(settings.device)
    store = ModelStore(settings.weights_dir, device, settings.models_dir)
    for name in (chosen["raw_model"], chosen["defended_model"]):
        store.require(name, "calibration")
    raw, defended = store.get(chosen["raw_model"]), store.get(chosen["defended_model"])
    options = defences.get(chosen["defence"], settings.weights_dir)
    image_set = load_images(data, limit=n, workers=settings.decode_workers)
    if image_set.labels is None:
        raise ValueError(f"{data}: calibration needs labelled images (the attacks need true classes)")
    x, y = image_set.to_tensor().to(device), torch.from_numpy(image_set.labels).to(device)

    def scores(images):
        """Suspicion per image, and whether the standard model gets the image wrong."""
        p_raw, _, suspicion = verdicts.score(raw, defended, images, defend(images, options))
        return suspicion.cpu().numpy(), (p_raw.argmax(1) != y).cpu().numpy()

    clean, _ = scores(x)
    threshold = verdicts.calibrate(clean, fpr)
    detection, detection_fooling = {}, {}
    for spec in map(AttackSpec.of, paper_attacks()):
        suspicion, fooled = scores(attacks.get(spec.name)(raw, x, y, **spec.kwargs))
        detection[spec.id] = flagged_share(suspicion, threshold)
        # An attacked image that does not fool the standard model is no threat: the rate that matters.
        detection_fooling[spec.id] = flagged_share(suspicion[fooled], threshold)
    # This command calibrates the hand-made score, and so makes screening use it again.
    result = screening_config.with_disagreement(chosen, {
        "threshold": threshold, "fpr": fpr, "measured_fpr": flagged_share(clean, threshold), "detection": detection,
        "detection_of_fooling": detection_fooling, "calibrated_on": {"data": str(data), "images": len(x)},
        "clean_histogram": verdicts.suspicion_histogram(clean)})
    screening_config.write(settings.models_dir, result)
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


#: What a source's calibration measures detection on: the attacks of the issue's bar, crafted on its own images.
SOURCE_ATTACKS = [AttackSpec.named("fgsm", eps=0.01), AttackSpec.named("bim", eps=0.01), AttackSpec.named("pgd", eps=0.01),
                  AttackSpec.named("deepfool")]
#: A source's calibration reads at most this many clean images.
MAX_SOURCE_IMAGES = 1000


def run_source_calibration(*, data: str, source: str, n: int, fpr: float, settings: Settings, out: Path,
                           progress=lambda message: None) -> dict:
    """Set the threshold of the current score for one source, from clean images of it; labels are not needed.

    Keeps the score and its detector; records under ``sources[source]`` in
    screening.json the threshold at ``fpr`` on ``data``'s first ``n``
    images, what their colours looked like (for the source check), and the
    share flagged of the images of :data:`SOURCE_ATTACKS` that fool the
    standard model, crafted on these images away from its own labels.
    Writes ``calibration-SOURCE.md`` into ``out``.
    """
    from producers.screening.screen import screening_settings
    from shared.images.image_set import quantise

    if not source or not all(c.isalnum() or c in "-_." for c in source):
        raise ValueError(f"a source name is letters, digits, '-', '_' and '.'; got {source!r}")
    if not 0 < n <= MAX_SOURCE_IMAGES:
        raise ValueError(f"a source's calibration reads 1 to {MAX_SOURCE_IMAGES} images, got --n {n}")
    plan = screening_settings(settings)
    device = resolve_device(settings.device)
    store = ModelStore(settings.weights_dir, device, settings.models_dir)
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, settings.weights_dir))
    image_set = load_images(data, limit=n, workers=settings.decode_workers)
    if len(image_set) == 0:
        raise ValueError(f"{data}: no readable images to calibrate on")
    x = image_set.to_tensor()

    def scores(images):
        return torch.cat([verdicts.screen_batch(plan, images[s].to(device), store.get, options, store.detector)[2].cpu()
                          for s in iter_batches(len(images), BATCH)])

    progress(f"scoring {len(x)} clean images of {source}")
    clean = scores(x)
    threshold = verdicts.calibrate(clean.numpy(), fpr)
    standard = store.get("standard")
    with torch.no_grad():
        own = torch.cat([standard(x[s].to(device)).argmax(1).cpu() for s in iter_batches(len(x), BATCH)])
    detection = {}
    for spec in SOURCE_ATTACKS:
        progress(f"{spec.id} on {source}")
        adversarial = quantise(torch.cat([attacks.get(spec.name)(standard, x[s].to(device), own[s].to(device),
                                                                 **spec.kwargs).cpu() for s in iter_batches(len(x), BATCH)]))
        with torch.no_grad():
            fooled = torch.cat([standard(adversarial[s].to(device)).argmax(1).cpu()
                                for s in iter_batches(len(x), BATCH)]) != own
        detection[spec.id] = flagged_share(scores(adversarial[fooled]), threshold) if fooled.any() else float("nan")
    entry = {"score": plan["score"], "threshold": threshold, "fpr": fpr,
             "measured_fpr": flagged_share(clean, threshold), "detection_of_fooling": detection,
             "calibrated_on": {"data": str(data), "images": len(x), "labels_used": False},
             "reference": coarse.reference(x), "clean_histogram": verdicts.suspicion_histogram(clean.numpy())}
    if plan["score"] == "detector":
        entry["detector_sha256"] = plan["detector_sha256"]
    current = screening_config.load(settings.weights_dir, settings.models_dir)
    screening_config.write(settings.models_dir, screening_config.with_source(current, source, entry))
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Screening calibration for source {source}", "",
             f"{len(x)} clean images of {data}, score {plan['score']}: threshold {threshold:.4f} for "
             f"{100 * fpr:.1f} % false positives on them. Screen with it: `waveshield screen --source {source} ...`.", "",
             "Attacks crafted on the same images (away from the standard model's own label, so no labels are "
             "needed) and delivered in 8 bits; the share of those that fool the standard model flagged. These "
             "images also set the threshold, so the rates are those of this sample.", "",
             "| attack | flagged |", "| --- | --- |"]
    lines += [f"| {k} | {'-' if v != v else f'{100 * v:.1f} %'} |" for k, v in detection.items()]
    (out / f"calibration-{source}.md").write_text("\n".join(lines) + "\n")
    return entry
