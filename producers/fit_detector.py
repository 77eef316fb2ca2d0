"""`waveshield fit-detector`: train the learned detector on corpora, calibrate it, measure it, switch screening to it."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from shared import attacks, benign_changes, defences, detector, figures, screening
from shared.adaptive_screening import evade_screening
from shared.data import load_images
from shared.evaluation import PAPER_EPS, attack_id
from shared.model_store import ModelStore
from shared.models import sha256_file
from shared.settings import Settings, resolve_device

#: What the detector is measured on: the attacks it trains on, and some it never sees.
TRAINED = [("fgsm", {"eps": e}) for e in PAPER_EPS] + [("bim", {"eps": e}) for e in PAPER_EPS] + [("deepfool", {})]
HELD_OUT = [("pgd", {"eps": 0.01}), ("fgsm", {"eps": round(8 / 255, 6)}), ("bim", {"eps": round(8 / 255, 6)})]
#: The eps of the attacker who knows the detector (:mod:`shared.adaptive_screening`).
ADAPTIVE_EPS = (0.01, round(8 / 255, 6))
BATCH = 500
#: The pixel statistics a detector reads unless told otherwise (with, by default, only the two model paths
#: screening computes anyway, so that it costs no extra pass).
DEFAULT_STATISTICS = ("chroma",)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """To 8 bits and back, as a sender delivers an image (an eps under 1/255 becomes one grey level)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def _batches(x: torch.Tensor, fn) -> torch.Tensor:
    return torch.cat([fn(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


def corpus_shards(folder: Path):
    """Yield ``(x, y, pred_before)`` of every shard of a corpus written by `waveshield corpus`."""
    shards = sorted(Path(folder).glob("*/shard-*.npz"))
    if not shards:
        raise ValueError(f"{folder}: no corpus shards (<attack>/shard-NNNNN.npz) found; generate one with waveshield corpus")
    for npz in shards:
        with np.load(npz, allow_pickle=False) as arrays:
            x, y = torch.from_numpy(arrays["x"].astype(np.float32)), torch.from_numpy(arrays["y"])
        lines = [json.loads(line) for line in npz.with_suffix(".jsonl").read_text().splitlines()]
        yield x, y, torch.tensor([line["pred_before"] for line in lines])


def run_fit(*, corpora: list[Path], clean: str, n_clean: int, calibration: str, n_calibration: int, fpr: float,
            settings: Settings, out: Path, hidden: int = 64, epochs: int = 300, paths=None,
            statistics=DEFAULT_STATISTICS) -> dict:
    """Train on the corpora's successful attacks and clean images, calibrate and measure on held-back images.

    The calibration images are split in two: the threshold comes from the
    clean scores of the images at even positions, and every rate reported
    (false positives, detection, AUROC, screened accuracy) is measured on the
    others, which the threshold never saw.
    Writes ``detector.safetensors`` and its card into the weights directory,
    switches ``screening.json`` to the detector, and writes ``detector.md``
    and ``roc.png`` into ``out``. ``paths`` chooses the model paths the
    detector reads (more, slower screening; default: ``standard@raw`` and
    the path whose label screening reports), ``statistics`` the pixel
    statistics (:data:`shared.detector.STATISTICS`).
    """
    paths = detector.check_paths(paths or ("standard@raw", reported_path(settings)))
    statistics = detector.check_statistics(statistics)
    reading = {"paths": paths, "statistics": statistics}
    screened_path = chosen_paths(settings, paths)
    device = resolve_device(settings.device)
    store = ModelStore(settings.weights_dir, device)
    for name in sorted({p.split("@")[0] for p in paths}):
        store.require(name, "the detector")
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, settings.weights_dir))
    standard = store.get("standard")

    def feats(x):
        return _batches(x.to(device), lambda b: detector.features(b, store.get, options, **reading).cpu())

    def predict(x):
        with torch.no_grad():
            return _batches(x.to(device), lambda b: standard(b).argmax(1).cpu())

    positives, sources = [], []
    for folder in corpora:
        used = 0
        for x, y, before in corpus_shards(folder):
            x = quantise(x)
            fooled = (before == y) & (predict(x) != y)  # the attacks that work, once delivered in 8 bits
            if fooled.any():
                positives.append(feats(x[fooled]))
                used += int(fooled.sum())
        manifest = Path(folder) / "manifest.jsonl"
        sources.append({"corpus": str(folder), "attacks": sorted(p.name for p in Path(folder).iterdir() if p.is_dir()),
                        "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
                        "successful_images_used": used})
    clean_set = load_images(clean, limit=n_clean)
    negatives = feats(clean_set.to_tensor())
    if not positives:
        raise ValueError("no corpus image fools the standard model once quantised to 8 bits: nothing to learn from")
    model = detector.fit(negatives, torch.cat(positives), hidden=hidden, epochs=epochs)

    held = load_images(calibration, limit=n_calibration)
    if held.labels is None:
        raise ValueError(f"{calibration}: measuring the detector needs labelled images (the attacks need true classes)")
    x, y = held.to_tensor(), torch.from_numpy(held.labels)

    def screened(images):
        """The detector's scores and the label screening reports (the defended path's)."""
        f, labels = [], []
        for i in range(0, len(images), BATCH):
            fb, logits = detector.features(images[i:i + BATCH].to(device), store.get, options, with_logits=True,
                                           **reading)
            f.append(fb.cpu())
            labels.append(logits[screened_path].argmax(1).cpu())
        return model.score(torch.cat(f)), torch.cat(labels)

    def outcome(scores, labels):
        wrong = labels != y
        return {"screened_accuracy": float((~wrong).float().mean()),
                "flagged_of_wrong": float((scores[wrong] > threshold).float().mean()) if wrong.any() else float("nan"),
                "evaded": float((wrong & (scores <= threshold)).float().mean())}

    # Every other image sets the threshold, the rest measure: sources come in class order, so two
    # halves would hold different classes; alternating keeps both balanced.
    clean_scores, clean_labels = screened(x)
    threshold = screening.calibrate(clean_scores[0::2].numpy(), fpr)
    calibrated_on = len(clean_scores[0::2])
    x, y, test_clean = x[1::2], y[1::2], clean_scores[1::2]  # what follows never saw the threshold being set
    right = predict(x) == y
    rows, curves = [{"attack": "clean", "trained_on": True, "fooling_images": 0, "detected": float("nan"),
                     "auroc": float("nan"), **outcome(test_clean, clean_labels[1::2])}], {}
    for name, params in TRAINED + HELD_OUT:
        adversarial = quantise(torch.cat([attacks.get(name)(standard, x[i:i + BATCH].to(device), y[i:i + BATCH].to(device),
                                                            **params).cpu() for i in range(0, len(x), BATCH)]))
        scores, labels = screened(adversarial)
        fooled = right & (predict(adversarial) != y)
        label = attack_id({"name": name, "params": params})
        rows.append({"attack": label, "trained_on": (name, params) in TRAINED, "fooling_images": int(fooled.sum()),
                     "detected": float((scores[fooled] > threshold).float().mean()) if fooled.any() else float("nan"),
                     "auroc": detector.auroc(test_clean, scores[fooled]), **outcome(scores, labels)})
        curves[label] = _roc_points(test_clean, scores[fooled])
    adaptive = []
    for eps in ADAPTIVE_EPS:
        for grey in (False, True):
            adversarial = quantise(torch.cat([
                evade_screening(x[i:i + BATCH].to(device), y[i:i + BATCH].to(device), store.get, options, model,
                                eps=eps, screened_path=screened_path, grey=grey, **reading).cpu()
                for i in range(0, len(x), BATCH)]))
            label = f"evade eps={eps}" + (", grey" if grey else "")
            adaptive.append({"attack": label, **outcome(*screened(adversarial))})
    benign = {name: float((screened(change(x))[0] > threshold).float().mean())
              for name, change in benign_changes.CHANGES.items()}
    measured_fpr = float((test_clean > threshold).float().mean())
    card = {"features": detector.feature_names(paths=paths, statistics=statistics), "paths": list(paths),
            "statistics": list(statistics), "epochs": epochs,
            "trained_on": {"corpora": sources, "clean": {"data": str(clean), "images": len(clean_set)}},
            "threshold": threshold, "fpr": fpr, "measured_fpr": measured_fpr,
            "calibrated_on": {"data": str(calibration), "images": calibrated_on, "which": "even positions"},
            "measured_on": {"data": str(calibration), "images": len(x), "which": "odd positions",
                            "quantised_to_uint8": True},
            "detection_of_fooling": {r["attack"]: r["detected"] for r in rows[1:]},
            "auroc": {r["attack"]: r["auroc"] for r in rows[1:]},
            "screened": {r["attack"]: {k: r[k] for k in ("screened_accuracy", "flagged_of_wrong", "evaded")}
                         for r in rows + adaptive},
            "flagged_after_benign_changes": benign}
    card = detector.save(model, settings.weights_dir / detector.WEIGHTS_NAME, card)
    select_detector(settings.weights_dir, card)
    _write_report(out, rows, adaptive, curves, card)
    return card


def select_detector(weights_dir: Path, card: dict) -> dict:
    """Make screening.json select the detector of ``card``, keeping the hand-made score's calibration aside."""
    chosen = screening.load_settings(weights_dir)
    if chosen["score"] == "disagreement":
        chosen["disagreement"] = {k: chosen.pop(k) for k in screening.CALIBRATION_KEYS if k in chosen}
    chosen.update(score="detector", **{k: card[k] for k in ("threshold", "fpr", "measured_fpr", "calibrated_on",
                                                              "detection_of_fooling")})
    (Path(weights_dir) / screening.FILENAME).write_text(json.dumps(chosen, indent=2) + "\n")
    return chosen


def reported_path(settings: Settings) -> str:
    """The path whose label screening reports, e.g. ``haar@haar``, from screening.json."""
    chosen = screening.load_settings(settings.weights_dir)
    return f"{chosen['defended_model']}@{chosen['defence']}"


def chosen_paths(settings: Settings, paths) -> str:
    """:func:`reported_path`, checked to be one of ``paths``."""
    path = reported_path(settings)
    if path not in paths:
        raise ValueError(f"screening reports the label of {path}; the detector's paths must include it "
                         f"(they are {', '.join(paths)})")
    return path


def _roc_points(clean: torch.Tensor, adversarial: torch.Tensor, points: int = 60) -> list[tuple[float, float]]:
    """(false-positive rate, detection rate) at thresholds spread over the scores, in percent."""
    if len(adversarial) == 0:
        return []
    cuts = torch.quantile(torch.cat([clean, adversarial]).double(), torch.linspace(0, 1, points, dtype=torch.float64))
    return [(100 * float((clean > t).double().mean()), 100 * float((adversarial > t).double().mean())) for t in cuts]


def _write_report(out: Path, rows: list[dict], adaptive: list[dict], curves: dict, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in curves.items() if k in {"fgsm eps=0.004", "fgsm eps=0.01", "bim eps=0.01", "deepfool",
                                                      "pgd eps=0.01", f"fgsm eps={round(8 / 255, 6)}"}}
    figures.scatter(shown, out / "roc.png", xlabel="clean images flagged (%)", ylabel="fooling images flagged (%)",
                    title="Learned detector, 8-bit attacked test images", vline=100 * card["fpr"])
    clean = card["trained_on"]["clean"]

    def pct(v):
        return "-" if v != v else f"{100 * v:.1f} %"

    lines = ["# Learned detector", "",
             f"Trained on {sum(s['successful_images_used'] for s in card['trained_on']['corpora'])} successful attacked "
             f"images from {len(card['trained_on']['corpora'])} corpus folder(s) and {clean['images']} clean images "
             f"({clean['data']}); a {card['hidden']}-wide MLP on {card['n_features']} features of the standard and "
             f"DWT-trained models' outputs ({', '.join(card['paths'])})"
             + (f" and of the pixels ({', '.join(card['statistics'])})" if card["statistics"] else "") + ".", "",
             f"Threshold {card['threshold']:.4f}, set on {card['calibrated_on']['images']} clean images of "
             f"{card['calibrated_on']['data']} for {100 * card['fpr']:.1f} % false positives; measured on the other "
             f"{card['measured_on']['images']}: {100 * card['measured_fpr']:.1f} % false positives. Attacks are crafted "
             "on the standard model and quantised to 8 bits before scoring.", "",
             "*Flagged* and *AUROC* count the images that fool the standard model; *screened accuracy* is the "
             "accuracy of the label screening reports (the DWT-trained model on the reconstruction) on all images; "
             "*evaded* is the share of all images whose reported label is wrong and which are not flagged.", "",
             "| attack | in training | fooling images | flagged | AUROC | screened accuracy | evaded |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['attack']} | {'yes' if r['trained_on'] else 'no (held out)'} | {r['fooling_images']} | "
              f"{pct(r['detected'])} | {'-' if r['auroc'] != r['auroc'] else format(r['auroc'], '.3f')} | "
              f"{pct(r['screened_accuracy'])} | {pct(r['evaded'])} |" for r in rows]
    lines += ["", "## The attacker who knows the detector", "",
              "PGD (random start, 20 steps of eps/4) through the detector's DWTs with BPDA, ascending the "
              "cross-entropy of the reported label plus the log-probability the detector gives *clean* "
              "(`shared/adaptive_screening.py`); 8-bit delivery as above. *Grey*: the same step on all three channels "
              "of a pixel, which leaves the colour differences as they were.", "",
              "| attack | screened accuracy | flagged, of the wrongly labelled | evaded |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['attack']} | {pct(r['screened_accuracy'])} | {pct(r['flagged_of_wrong'])} | {pct(r['evaded'])} |"
              for r in adaptive]
    lines += ["", "## Clean images, changed without an attack", "",
              "The measured clean images again, after a change an ordinary source might make "
              "(`shared/benign_changes.py`); the share flagged at the same threshold. Far above the false-positive "
              "rate, the detector sees that change as manipulation: calibrate and fit it on clean images of your "
              "own source.", "",
              "| change | flagged |", "| --- | --- |"]
    lines += [f"| {name} | {pct(rate)} |" for name, rate in card["flagged_after_benign_changes"].items()]
    lines += ["", "![ROC](roc.png)", ""]
    (out / "detector.md").write_text("\n".join(lines))
