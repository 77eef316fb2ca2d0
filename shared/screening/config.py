"""``screening.json``: what screening scores with, and every calibration of it; read, checked and written here.

The shipped file sits in the weights directory and is never written; a
calibration or a fitted detector writes the user's own into their models
folder (``WAVESHIELD_MODELS``), which from then on is the one read. It names
the score (``disagreement``
or ``detector``), the defence and the two models whose labels a record
reports, the default threshold and how it was calibrated, and under
``sources`` each source's own calibration. Two commands write it:
``calibrate`` (the hand-made score, or one source's threshold) and
``fit-detector`` (switch to the learned detector); the screening producer
reads it.

Torch-free: a producer reads it without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.evaluation.plan import ModelPath
from shared.files import write_atomically

FILENAME = "screening.json"
DEFAULT = {"threshold": 0.5, "fpr": None, "defence": "haar", "defended_model": "haar", "raw_model": "standard",
           "score": "disagreement"}
SCORES = ("disagreement", "detector")
#: What a calibration writes into screening.json beside the score's name.
CALIBRATION_KEYS = ("threshold", "fpr", "measured_fpr", "detection", "detection_of_fooling", "calibrated_on",
                    "clean_histogram")
#: What switching to a detector copies from its card.
DETECTOR_KEYS = ("threshold", "fpr", "measured_fpr", "calibrated_on", "detection_of_fooling", "reference")


def path(weights_dir: str | Path, models_dir: str | Path | None = None) -> Path:
    """Where the screening settings in use live: the user's models folder's when it has them, else the shipped ones."""
    if models_dir is not None and (Path(models_dir) / FILENAME).is_file():
        return Path(models_dir) / FILENAME
    return Path(weights_dir) / FILENAME


def load(weights_dir: str | Path, models_dir: str | Path | None = None, *, check_score: bool = True) -> dict:
    """The screening settings in use (:func:`path`) over the defaults (the defaults alone when there is no file).

    ``check_score=False`` reads a file whose score is unknown (for a calibration that replaces it).

    Raises
    ------
    ValueError
        If the file cannot be read or parsed, or (with ``check_score``) names an unknown score.
    """
    file = path(weights_dir, models_dir)
    if not file.is_file():
        return dict(DEFAULT)
    try:
        chosen = {**DEFAULT, **json.loads(file.read_text())}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: unreadable screening settings ({exc})") from None
    if check_score and chosen["score"] not in SCORES:
        raise ValueError(f"{file}: unknown score {chosen['score']!r}; valid: {', '.join(SCORES)}")
    return chosen


def write(models_dir: str | Path, chosen: dict) -> Path:
    """Write ``chosen`` as the user's screening settings in ``models_dir``, atomically; return the file's path."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    return write_atomically(Path(models_dir) / FILENAME,
                            lambda tmp: tmp.write_text(json.dumps(chosen, indent=2) + "\n"))


def reported_path(chosen: dict) -> str:
    """The path whose label screening reports, e.g. ``haar@haar``."""
    return ModelPath(chosen["defended_model"], chosen["defence"]).name


def with_disagreement(chosen: dict, calibration: dict) -> dict:
    """Settings that screen with the hand-made score at ``calibration`` (the keys of :data:`CALIBRATION_KEYS`).

    Drops an earlier calibration of this score set aside by :func:`with_detector`, and the sources'
    calibrations of the score it replaces.
    """
    kept = {k: v for k, v in chosen.items() if k not in ("disagreement", "sources")}
    return {**kept, "score": "disagreement", **calibration}


def with_detector(chosen: dict, card: dict) -> dict:
    """Settings that screen with the detector of ``card``, the hand-made score's calibration kept aside."""
    chosen = dict(chosen)
    if chosen["score"] == "disagreement":
        chosen["disagreement"] = {k: chosen.pop(k) for k in CALIBRATION_KEYS if k in chosen}
    chosen.pop("sources", None)  # calibrations of another detector's scores
    chosen.pop("clean_histogram", None)  # and their clean images' suspicion
    # The detector's sha256 too: settings copied for one detector are never read with another.
    chosen.update(score="detector", detector_sha256=card["sha256"], **{k: card[k] for k in DETECTOR_KEYS})
    if "clean_histogram" in card:
        chosen["clean_histogram"] = card["clean_histogram"]
    return chosen


def with_source(chosen: dict, source: str, entry: dict) -> dict:
    """Settings with ``entry`` recorded as the calibration of ``source``."""
    return {**chosen, "sources": {**chosen.get("sources", {}), source: entry}}


#: What a job's plan carries of its calibration: the threshold, its rate, what its clean images looked like
#: (``reference``, for the source check) and their suspicion per bin (``clean_histogram``, for the report page).
CALIBRATION_SHOWN = ("threshold", "fpr", "reference", "clean_histogram")


def calibration_for(chosen: dict, source: str | None) -> dict:
    """The calibration to screen with: the one recorded for ``source``, or the default (None).

    Returns ``name``, ``threshold``, ``fpr`` and ``reference`` (what the
    calibration's clean images looked like, for the source check).

    Raises
    ------
    ValueError
        If ``source`` has no calibration, or one made for another score or detector.
    """
    if source is None:
        return {"name": "default", **{k: chosen.get(k) for k in CALIBRATION_SHOWN}}
    known = chosen.get("sources", {})
    if source not in known:
        raise ValueError(f"no calibration for source {source!r} in {FILENAME}"
                         + (f" (it has: {', '.join(sorted(known))})" if known else "")
                         + f"; make one from up to 1,000 clean images: waveshield calibrate --data DIR --source {source}")
    entry = known[source]
    if entry.get("score") != chosen["score"] or entry.get("detector_sha256") != chosen.get("detector_sha256"):
        raise ValueError(f"the calibration for source {source!r} was made for another score or detector; "
                         f"make it again: waveshield calibrate --data DIR --source {source}")
    return {"name": source, **{k: entry.get(k) for k in CALIBRATION_SHOWN}}
