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
:func:`source_check` warns when a job's flags run far over the calibrated
rate, and says whether images unlike the calibration's or an attack is the
likelier cause.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from shared.evaluation.plan import ModelPath
from shared.images import coarse

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


#: Bins of a suspicion histogram (the report page's, and a calibration's clean images').
HISTOGRAM_BINS = 50


def suspicion_histogram(values, bins: int = HISTOGRAM_BINS) -> list[int]:
    """Counts of ``values`` (suspicion, 0 to 1) in ``bins`` equal bins over 0 to 1; 1.0 falls in the last."""
    values = np.clip(np.asarray(values, float).reshape(-1), 0, 1)
    return np.histogram(values, bins=bins, range=(0.0, 1.0))[0].astype(int).tolist()


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
    coarse_contrast: float | None = None  # what the source check compares with the calibration's images
    coarse_colour: float | None = None

    def as_dict(self) -> dict:
        # Flat fields: a plain dict, without dataclasses.asdict's deep copy (once per image screened, on the workers).
        return {name: getattr(self, name) for name in RECORD_FIELDS}


#: The fields of a record, in order: the columns of ``records.csv``.
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def records(ids: list[str], p_raw, p_def, suspicion, threshold: float, classes, signals=None,
            content: dict | None = None) -> list[dict]:
    """One JSON-ready record per image.

    Label and confidence of the defended path, raw label, score, the
    threshold and the flag, the signal that raised the score most (None for
    a score that rounds to 0: nothing raised it), and the image's
    ``content``: its coarse statistics (:func:`shared.images.coarse.coarse_statistics`;
    what the source check compares).
    """
    conf, label = p_def.max(1)
    raw_label = p_raw.argmax(1)
    content = {name: values.tolist() for name, values in (content or {}).items()}
    out = []
    for i, item in enumerate(ids):
        rounded = round(float(suspicion[i]), 6)
        out.append(Record(item, label=classes[int(label[i])], confidence=round(float(conf[i]), 6),
                          raw_label=classes[int(raw_label[i])], suspicion=rounded, threshold=float(threshold),
                          flagged=bool(suspicion[i] > threshold),
                          signal=signals[i] if signals is not None and rounded > 0 else None,
                          **{name: round(values[i], 4) for name, values in content.items()}).as_dict())
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
        # Source -> statistic -> deciles; none for a calibration of an earlier release (its flags are still checked).
        self.deciles = coarse.compared((calibration or {}).get("reference"), (calibration or {}).get("name"))
        self.measured = 0  # screened images whose records carry the coarse statistics
        self.at_or_under = {source: {name: [0] * len(q) for name, q in deciles.items()}
                            for source, deciles in self.deciles.items()}

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
            if self.deciles and all(r.get(name) is not None for name in coarse.NAMES):
                self.measured += 1
                for source, deciles in self.deciles.items():
                    for name, qs in deciles.items():
                        counts, value = self.at_or_under[source][name], r[name]
                        for k, q in enumerate(qs):
                            counts[k] += value <= q
        return self

    def summary(self) -> dict:
        """What summary.json holds."""
        out = {"images": self.images, "screened": self.screened, "flagged": self.flagged,
               "errors": self.errors, "labels": dict(sorted(self.labels.items()))}
        if self.calibration is not None:
            out["calibration"] = {k: self.calibration.get(k) for k in ("name", "threshold", "fpr")}
            out["source_check"] = self.source_check()
        return out

    def distances(self) -> dict[str, dict[str, float]]:
        """Per source of the calibration and coarse statistic, :func:`decile_distance` of the images counted.

        {} when unknown (no image measured, or a calibration of an earlier release).
        """
        if not self.measured:
            return {}
        return {source: {name: round(max(abs(n / self.measured - (k + 1) / (len(qs) + 1))
                                         for k, n in enumerate(self.at_or_under[source][name])), 4)
                         for name, qs in deciles.items()}
                for source, deciles in self.deciles.items()}

    def source_check(self) -> dict:
        """:func:`source_check` over the records counted so far."""
        calibration = self.calibration or {}
        fpr, n = calibration.get("fpr"), self.screened
        out = {"images": n, "warning": False}
        if not n or not fpr:
            return {**out, "reason": "not checked: no image screened" if not n
                    else "not checked: the calibration records no false-positive rate"}
        share, p_value = self.flagged / n, binomial_tail(self.flagged, n, fpr)
        distances = self.distances()
        # The nearest of the calibration's sources: the images are like the calibration's if like any one of them.
        nearest = min(distances, key=lambda s: max(distances[s].values())) if distances else None
        out.update(flagged_share=round(share, 4), calibrated_rate=fpr, times_calibrated=round(share / fpr, 2),
                   p_value=float(f"{p_value:.3g}"), nearest_source=nearest,
                   distance=distances[nearest] if nearest else {})
        if n < CHECK_MIN_IMAGES:
            return {**out, "reason": f"not checked: fewer than {CHECK_MIN_IMAGES} images screened"}
        if share < CHECK_FACTOR * fpr or p_value >= CHECK_P_VALUE:
            return {**out, "reason": f"quiet: the share flagged is not {CHECK_FACTOR:g}x the calibrated rate "
                                     f"at p < {CHECK_P_VALUE:g}"}
        likelier = (None if not nearest else
                    "unlike the calibration" if max(distances[nearest].values()) >= CHECK_DISTANCE else "attack")
        return {**out, "warning": True, "likelier": likelier,
                "message": _warning(share, fpr, p_value, calibration.get("name"), likelier, nearest)}


def _warning(share: float, fpr: float, p_value: float, name: str | None, likelier: str | None,
             nearest: str | None) -> str:
    """The guard's message: the flags, which cause is likelier, and what to run."""
    head = (f"{100 * share:.1f} % of these images are flagged, {share / fpr:.1f}x the calibrated {100 * fpr:.1f} % "
            f"(binomial p = {p_value:.2g}). The flags stand. ")
    calibrate = ("If this set is known to be clean, calibrate on up to 1,000 of its images: waveshield calibrate "
                 "--data CLEAN_IMAGES --source NAME; then waveshield screen --source NAME ...")
    seen = f"calibration {name!r}" + (f" (nearest: its source {nearest!r})" if nearest and nearest != name else "")
    if likelier == "unlike the calibration":
        why = (f"What these images show is unlike the images {seen} saw (their coarse contrast and colour, which an "
               "attack of a few grey levels does not move): images unlike the calibration's are likelier than an "
               "attack. ")
    elif likelier == "attack":
        why = (f"What these images show is like the images {seen} saw (their coarse contrast and colour): an attack "
               "is likelier than images unlike the calibration's; look at the flagged images. The same content "
               "from another camera or encoder can also raise the flags. ")
    else:
        why = (f"Calibration {name!r} records nothing of what its images show (an earlier release made it), so "
               "nothing says whether an attack or images unlike the calibration's are likelier. ")
    return head + why + calibrate


#: The guard: how many screened images it needs, how far over the calibrated rate the flags must be, and the
#: binomial test's level, below which so many flags at the calibrated rate would be chance. These alone decide
#: whether it warns. The distance (largest gap between the cumulative distributions at the calibration's
#: deciles, of either coarse statistic) from which images are called unlike the calibration's only picks the
#: wording.
CHECK_MIN_IMAGES = 200
CHECK_FACTOR = 3.0
CHECK_P_VALUE = 0.001
CHECK_DISTANCE = 0.2
#: How many of the latest records ``screen --watch`` checks.
WATCH_WINDOW = 1000


class RecentCheck:
    """The guard over the latest records only, as ``screen --watch`` runs it: a warning when it starts to hold.

    Parameters
    ----------
    calibration : dict
        The plan's calibration (:class:`Tally`).
    window : int
        How many of the latest records it reads.
    """

    def __init__(self, calibration: dict | None, window: int = WATCH_WINDOW):
        self.calibration, self.recent, self.warning = calibration, deque(maxlen=window), False

    def add(self, records: list[dict]) -> str | None:
        """Count ``records``; the warning's line when the guard starts to hold with them, else None."""
        self.recent.extend(records)
        result = source_check(list(self.recent), self.calibration)
        started = result["warning"] and not self.warning
        self.warning = result["warning"]
        return f"warning (last {len(self.recent)} images): {result['message']}" if started else None


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X binomial with ``n`` trials of probability ``p``: how likely ``k`` flags are by chance.

    Summed in log space from ``k`` up (or, below the mode, ``1 -`` the sum
    from ``k - 1`` down), each way along terms that only fall, stopping once
    they no longer count.
    """
    if k <= 0 or p >= 1:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def log_term(i: int) -> float:
        return log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q

    def falling_sum(start: int, step: int, stop: int) -> float:
        first, total = log_term(start), 0.0
        for i in range(start, stop, step):
            term = math.exp(log_term(i) - first)
            total += term
            if term < 1e-17 * total:
                break
        return math.exp(first) * total

    mode = math.floor((n + 1) * p)
    if k > mode:
        return min(1.0, falling_sum(k, 1, n + 1))
    return max(0.0, 1.0 - falling_sum(k - 1, -1, -1))


def decile_distance(values, deciles) -> float:
    """Largest gap between the share of ``values`` at or under each of ``deciles`` and that decile's 10 %, 20 %..."""
    v = np.asarray(values, dtype=np.float64)
    return float(max(abs((v <= q).mean() - (k + 1) / (len(deciles) + 1)) for k, q in enumerate(deciles)))


def source_check(all_records: list[dict], calibration: dict) -> dict:
    """Whether the flags run far over the calibrated rate, and which cause is likelier.

    Warns when at least :data:`CHECK_MIN_IMAGES` images were screened, the
    share flagged is at least :data:`CHECK_FACTOR` times the calibrated
    false-positive rate, and so many flags at that rate would be chance at
    p < :data:`CHECK_P_VALUE` (a binomial test). The flags alone decide. The
    coarse statistics (:mod:`shared.images.coarse`) then say which cause is
    likelier: images unlike the calibration's (either statistic's
    :func:`decile_distance` from the calibration's images at least
    :data:`CHECK_DISTANCE`) or an attack (which does not move them).
    """
    return Tally(calibration).add(all_records).source_check()
