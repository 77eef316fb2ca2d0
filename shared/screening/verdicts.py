"""Screening: one record per image, with a suspicion score for adversarial manipulation.

Each image is classified twice: raw by the standard model, and after DWT
reconstruction by the DWT-trained ("defended") model. An adversarial image
is built to move the standard model's output; the reconstruction removes
part of the perturbation, so the two outputs disagree more on it than on a
clean image. Two scores, both 0 to 1, higher = more suspicious:

- ``detector`` (once ``waveshield fit-detector`` has run): the learned
  detector's probability (:mod:`shared.screening.detector`), from the model paths its
  card names and, by default, how neighbouring steps of its grey levels
  follow each other;
- ``disagreement``: the total variation distance between the two softmax
  outputs, 0 (identical) to 1 (disjoint).

An image is flagged above a threshold calibrated on clean images to a stated
false-positive rate; its record names the signal that raised its score most.
A calibration may be one source's own (``screening.json``'s ``sources``, :mod:`shared.screening.config`);
:func:`source_check` says when a job's flags look like a source the
calibration never saw rather than like attacks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from shared.evaluation.plan import ModelPath

# torch (and the DWT) are imported where a batch is scored: producers read the settings and write records
# with this module, and start without loading torch.



def score(raw_model, defended_model, images, reconstructed):
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
    import torch

    with torch.no_grad():
        p_raw = raw_model(images).softmax(1)
        p_def = defended_model(reconstructed).softmax(1)
        return p_raw, p_def, 0.5 * (p_raw - p_def).abs().sum(1)


def screen_batch(plan: dict, x, get_model, defence_options, get_detector=None, reconstructed=None):
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
        name of the signal that raised the score most (None where none did).
    """
    if plan.get("score", "disagreement") == "detector":
        from shared.screening import detector

        model, card = get_detector(plan["detector_sha256"])
        f, logits = detector.features(x, get_model, defence_options, with_logits=True, **detector.reads(card))
        p_raw = logits[ModelPath(plan["raw_model"]).name].softmax(1)
        p_def = logits[ModelPath(plan["defended_model"], plan["defence"]).name].softmax(1)
        return p_raw, p_def, model.score(f), detector.strongest_signal(model, f, card["features"])
    if reconstructed is None:
        from shared.evaluation.run import defend

        reconstructed = defend(x, defence_options(plan["defence"]))
    p_raw, p_def, suspicion = score(get_model(plan["raw_model"]), get_model(plan["defended_model"]), x, reconstructed)
    return p_raw, p_def, suspicion, ["disagreement"] * len(x)


@dataclass(frozen=True)
class Record:
    """What screening says of one item: a JSON object of these fields, in this order, in Redis and in the files.

    An item that could not be read has only its ``id`` and the ``error`` (why).
    The README's "Screening records" table says what each field means, with its unit.
    """

    id: str
    label: str | None = None  # the defended path's class name
    confidence: float | None = None  # its softmax probability
    raw_label: str | None = None  # the class name on the raw image
    suspicion: float | None = None  # the score the flag thresholds
    threshold: float | None = None  # the calibration's cut-off: flagged when suspicion is above it
    flagged: bool | None = None
    error: str | None = None
    signal: str | None = None  # what raised the suspicion most; None when nothing did (a suspicion of 0)
    colour_roughness: float | None = None  # what the source check reads

    def as_dict(self) -> dict:
        # Flat fields: a plain dict, without dataclasses.asdict's deep copy (once per image screened, on the workers).
        return {name: getattr(self, name) for name in RECORD_FIELDS}


#: The fields of a record, in order: the columns of ``records.csv``.
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def records(ids: list[str], p_raw, p_def, suspicion, threshold: float, classes, signals=None,
            roughness=None) -> list[dict]:
    """One JSON-ready record per image.

    Label and confidence of the defended path, raw label, score, the
    threshold and the flag, the signal that raised the score most (None for
    a score that rounds to 0: nothing raised it), and the image's colour
    roughness (:func:`shared.images.encodings.colour_roughness`; what the
    source check reads).
    """
    conf, label = p_def.max(1)
    raw_label = p_raw.argmax(1)
    out = []
    for i, item in enumerate(ids):
        rounded = round(float(suspicion[i]), 6)
        out.append(Record(item, label=classes[int(label[i])], confidence=round(float(conf[i]), 6),
                          raw_label=classes[int(raw_label[i])], suspicion=rounded, threshold=float(threshold),
                          flagged=bool(suspicion[i] > threshold),
                          signal=signals[i] if signals is not None and rounded > 0 else None,
                          colour_roughness=round(float(roughness[i]), 4) if roughness is not None else None).as_dict())
    return out


def in_item_order(screened: list[dict], errors: list[dict], error_at: list[int] | None = None) -> list[dict]:
    """A chunk's records in the order of its items: ``errors[k]`` at place ``error_at[k]``, the images around them.

    Without ``error_at`` (a set already in memory, or a job stored before
    places were kept) the errors follow the images.
    """
    if error_at is None:
        return screened + errors
    out = list(screened)
    for place, record in sorted(zip(error_at, errors), key=lambda pair: pair[0]):
        out.insert(place, record)  # in rising order, every record before ``place`` is already where it ends
    return out


def error_record(item: str, reason: str) -> dict:
    """The record of an item that could not be read."""
    return Record(item, error=reason).as_dict()


def flagged_share(scores, threshold: float) -> float:
    """The share of ``scores`` (a tensor or an array) above ``threshold``: a false-positive or detection rate.

    NaN when there are no scores (no image of that kind to flag).
    """
    return float((scores > threshold).sum()) / len(scores) if len(scores) else float("nan")


def calibrate(clean_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold whose false-positive rate on ``clean_scores`` is at most ``fpr``."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be between 0 and 1, got {fpr}")
    ordered = np.sort(np.asarray(clean_scores, dtype=np.float64))
    # flagged = score > threshold; allow floor(fpr * n) clean images above it.
    allowed = int(np.floor(fpr * len(ordered)))
    return float(ordered[len(ordered) - 1 - allowed]) if len(ordered) else 1.0


def summary(all_records: list[dict], calibration: dict | None = None) -> dict:
    """Counts per label, flagged and errors; with the plan's ``calibration``, its name and the source check."""
    return Tally(calibration).add(all_records).summary()


class Tally:
    """The summary of records that pass a batch at a time: it keeps counts, never the records.

    Parameters
    ----------
    calibration : dict, optional
        The plan's (``name``, ``threshold``, ``fpr``, ``reference``); given,
        the summary names it and carries the source check.
    """

    def __init__(self, calibration: dict | None = None):
        self.calibration = calibration
        self.images = self.flagged = self.errors = 0
        self.labels: dict[str, int] = {}
        self.deciles = list(((calibration or {}).get("reference") or {}).get("deciles") or [])
        self.checked = self.checked_flagged = 0  # screened images that carry a colour roughness
        self.at_or_under = [0] * len(self.deciles)

    @property
    def screened(self) -> int:
        """Records of images screened (not errors): the summary's ``screened``."""
        return self.images - self.errors

    def add(self, records: list[dict]) -> "Tally":
        """Count ``records``; return this tally."""
        for r in records:
            self.images += 1
            self.flagged += bool(r["flagged"])
            if r["error"] is not None:
                self.errors += 1
                continue
            self.labels[r["label"]] = self.labels.get(r["label"], 0) + 1
            if r.get("colour_roughness") is not None:
                self.checked += 1
                self.checked_flagged += bool(r["flagged"])
                for k, q in enumerate(self.deciles):
                    self.at_or_under[k] += r["colour_roughness"] <= q
        return self

    def summary(self) -> dict:
        """What summary.json holds."""
        out = {"images": self.images, "screened": sum(self.labels.values()), "flagged": self.flagged,
               "errors": self.errors, "labels": dict(sorted(self.labels.items()))}
        if self.calibration is not None:
            out["calibration"] = {k: self.calibration.get(k) for k in ("name", "threshold", "fpr")}
            out["source_check"] = self.source_check()
        return out

    def source_check(self) -> dict:
        """:func:`source_check` over the records counted so far."""
        calibration = self.calibration or {}
        fpr = calibration.get("fpr")
        out = {"images": self.checked, "mismatch": False}
        if not self.checked or not fpr or not self.deciles:
            return {**out, "reason": "not checked: the calibration records no rate or no reference statistics"
                    if self.checked else "not checked: no image screened"}
        flagged = self.checked_flagged / self.checked
        distance = max(abs(n / self.checked - (k + 1) / (len(self.deciles) + 1)) for k, n in enumerate(self.at_or_under))
        out.update(flagged_share=round(flagged, 4), calibrated_rate=fpr, distance=round(distance, 4))
        if self.checked < CHECK_MIN_IMAGES:
            return {**out, "reason": f"not checked: fewer than {CHECK_MIN_IMAGES} images screened"}
        if flagged >= CHECK_FACTOR * fpr and distance >= CHECK_DISTANCE:
            out.update(mismatch=True, message=(
                f"{100 * flagged:.1f} % of these images are flagged, {flagged / fpr:.1f}x the calibrated "
                f"{100 * fpr:.1f} %, and their colours are unlike those of the images calibration "
                f"{calibration.get('name')!r} saw: if this set is clean, it comes from a source the screening was not "
                "calibrated for. Calibrate on up to 1,000 clean images of it: waveshield calibrate --data CLEAN_IMAGES "
                "--source NAME; then waveshield screen --source NAME ..."))
        return out


#: The source check: how many screened images it needs, how far over the calibrated rate the flags must be,
#: and how far the colour roughness's distribution must be from the calibration's (largest gap between the
#: two cumulative distributions at the calibration's deciles) before it calls the images unlike.
CHECK_MIN_IMAGES = 200
CHECK_FACTOR = 3.0
CHECK_DISTANCE = 0.25


def decile_distance(values, deciles) -> float:
    """Largest gap between the share of ``values`` at or under each of ``deciles`` and that decile's 10 %, 20 %..."""
    v = np.asarray(values, dtype=np.float64)
    return float(max(abs((v <= q).mean() - (k + 1) / (len(deciles) + 1)) for k, q in enumerate(deciles)))


def source_check(all_records: list[dict], calibration: dict) -> dict:
    """Whether the flags may come from a source the calibration never saw, rather than from attacks.

    Holds when at least :data:`CHECK_MIN_IMAGES` images were screened, the
    share flagged is at least :data:`CHECK_FACTOR` times the calibrated
    false-positive rate, and the images' colour roughness is distributed
    unlike the calibration's clean images (:func:`decile_distance` at least
    :data:`CHECK_DISTANCE`). Attacks roughen colours too, so a mostly
    attacked set can also trip it; its flags stand either way.
    """
    return Tally(calibration).add(all_records).source_check()
