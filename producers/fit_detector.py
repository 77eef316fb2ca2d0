"""`waveshield fit-detector`: train the learned detector on corpora and sources, calibrate it per source, measure it,
switch screening to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from shared import benign_changes, detector, figures, screening, sources as sources_mod
from shared.adaptive_screening import evade_screening
from shared.data import load_images
from shared.model_store import ModelStore
from shared.checkpoints import sha256_file
from shared.image_set import quantise
from shared.screening_sources import (BATCH, HELD_OUT, TRAINED, Examples, FeatureReader, examples, label, measure,
                                      thresholds)
from shared.settings import Settings, resolve_device

#: The eps of the attacker who knows the detector (:mod:`shared.adaptive_screening`).
ADAPTIVE_EPS = (0.01, round(8 / 255, 6))
#: The pixel statistics a detector reads unless told otherwise (with, by default, only the two model paths
#: screening computes anyway, so that it costs no extra pass). ``steps`` holds on every source measured;
#: ``chroma`` only on sources with subsampled chroma (docs/calibration/sources.md).
DEFAULT_STATISTICS = ("steps",)
#: Deciles of a statistic: what a calibration records of its clean images, for the mismatch guard.
DECILES = np.linspace(0.1, 0.9, 9)


def parse_source(text: str) -> tuple[str, str]:
    """``NAME=DATA`` -> (NAME, DATA); a bare DATA is named after its file (``test.zip`` -> ``test``)."""
    name, sep, data = str(text).partition("=")
    if not sep:
        data, name = name, Path(name.rstrip("/")).stem or name
    if not name or not data:
        raise ValueError(f"a source is NAME=DATA or DATA, got {text!r}")
    return name, data


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


def _corpus_positives(reader: FeatureReader, folder: Path) -> tuple[list[torch.Tensor], dict]:
    """Features of a corpus's attacks that fool the standard model once delivered in 8 bits, and its record."""
    positives, used = [], 0
    for x, y, before in corpus_shards(folder):
        x = quantise(x)
        fooled = (before == y) & (reader.predict(x) != y)
        if fooled.any():
            positives.append(reader(x[fooled])[0])
            used += int(fooled.sum())
    manifest = Path(folder) / "manifest.jsonl"
    return positives, {"corpus": str(folder), "attacks": sorted(p.name for p in Path(folder).iterdir() if p.is_dir()),
                       "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
                       "successful_images_used": used}


def _load(data: str, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    image_set = load_images(data, limit=n)
    if len(image_set) == 0:
        raise ValueError(f"{data}: no readable images")
    return image_set.to_tensor(), None if image_set.labels is None else torch.from_numpy(image_set.labels)


def reference(x: torch.Tensor) -> dict:
    """What a calibration records of its clean images for the mismatch guard: deciles of their colour roughness."""
    rough = sources_mod.colour_roughness(x).double().numpy()
    return {"statistic": "colour_roughness", "deciles": [round(float(q), 6) for q in np.quantile(rough, DECILES)],
            "images": len(rough)}


def run_fit(*, corpora: list[Path], clean: str, n_clean: int, calibration, n_calibration: int, fpr: float,
            settings: Settings, out: Path, hidden: int = 64, epochs: int = 300, paths=None,
            statistics=DEFAULT_STATISTICS, fit_sources=(), n_source: int = 2000,
            progress=lambda message: None) -> dict:
    """Train on clean images and fooling attacks of every source, calibrate per source, measure on held-back images.

    Parameters
    ----------
    corpora : list of Path
        Corpus folders (`waveshield corpus`): their fooling images are positives.
    clean, n_clean : str, int
        Clean training images (negatives).
    calibration : str or sequence of str
        Held-out sources, each ``NAME=DATA`` or ``DATA``. Each is split by
        position: the even half sets that source's threshold at ``fpr``, the
        odd half measures false positives and detection, and never sees a
        threshold being set. The threshold screening uses by default is the
        highest of them, so that no calibrated source goes over ``fpr``.
    fit_sources : sequence of str
        More training sources, ``NAME=DATA`` or ``DATA``: up to ``n_source``
        of their clean images are negatives, and the paper's attacks crafted
        on them in this process (:data:`shared.screening_sources.TRAINED`)
        positives, so that the detector learns clean images of each.
    paths, statistics
        What the detector reads (default: ``standard@raw``, the path whose
        label screening reports, and ``chroma``).
    progress : callable
        Called with a line of text as each stage starts.

    Writes ``detector.safetensors`` and its card into the weights directory,
    switches ``screening.json`` to the detector, and writes ``detector.md``
    and ``roc.png`` into ``out``.
    """
    paths = detector.check_paths(paths or ("standard@raw", reported_path(settings)))
    statistics = detector.check_statistics(statistics)
    reading = {"paths": paths, "statistics": statistics}
    screened_path = chosen_paths(settings, paths)
    store = ModelStore(settings.weights_dir, resolve_device(settings.device))
    for name in sorted({p.split("@")[0] for p in paths}):
        store.require(name, "the detector")
    reader = FeatureReader(store, settings.weights_dir, reading, screened_path)
    held = [parse_source(c) for c in ([calibration] if isinstance(calibration, str) else calibration)]
    extra = [parse_source(s) for s in fit_sources]
    if len({n for n, _ in held}) != len(held) or len({n for n, _ in extra}) != len(extra):
        raise ValueError("each calibration source, and each fit source, needs a name of its own (NAME=DATA)")

    # Each source's examples weigh the same in the fit (the corpora and --clean count as the first source).
    positives, negatives, corpus_records = [], [], []
    for folder in corpora:
        progress(f"corpus {folder}")
        found, record = _corpus_positives(reader, Path(folder))
        positives += [(0, f) for f in found]
        corpus_records.append(record)
    progress(f"clean images {clean}")
    clean_x, _ = _load(clean, n_clean)
    negatives.append((0, reader(clean_x)[0]))
    fitted_sources = []
    for i, (name, data) in enumerate(extra, start=1):
        x, labels = _load(data, n_source)
        ex = examples(reader, name, x, labels, TRAINED, on_attack=lambda a, n=name: progress(f"fit source {n}: {a}"))
        group = 0 if data == clean else i  # the --clean images' own source: one group
        negatives.append((group, ex.clean))
        positives.append((group, ex.positives()))
        fitted_sources.append({"name": name, "data": str(data), "images": len(x), "fooling_images": len(ex.positives())})
    if not any(len(f) for _, f in positives):
        raise ValueError("no corpus or source image fools the standard model once quantised to 8 bits: "
                         "nothing to learn from")
    progress("fitting")

    def stacked(parts):
        return torch.cat([f for _, f in parts]), torch.cat([torch.full((len(f),), i) for i, f in parts])

    (neg, neg_sources), (pos, pos_sources) = stacked(negatives), stacked(positives)
    model = detector.fit(neg, pos, hidden=hidden, epochs=epochs, clean_sources=neg_sources,
                         adversarial_sources=pos_sources)

    measured, calibrating, pixels, evens = {}, {}, {}, []
    for name, data in held:
        x, labels = _load(data, n_calibration)
        ex = examples(reader, name, x, labels, TRAINED + HELD_OUT,
                      on_attack=lambda a, n=name: progress(f"measuring on {n}: {a}"))
        calibrating[name] = {"data": str(data), "images": len(x[0::2]), "which": "even positions",
                             "reference": reference(x[0::2])}
        measured[name], pixels[name] = ex.subset(slice(1, None, 2)), (x[1::2], labels)
        evens.append(x[0::2])
        calibrating[name]["features"] = ex.clean[0::2]
    per_source = thresholds(model, {n: c.pop("features") for n, c in calibrating.items()}, fpr)
    threshold = max(per_source.values())
    results = {n: measure(model, threshold, ex) for n, ex in measured.items()}
    first = held[0][0]
    rows, curves = _rows(model, threshold, measured[first])
    adaptive = {}
    for name in measured:
        progress(f"the attacker who knows the detector, on {name}")
        adaptive[name] = _adaptive(model, threshold, reader, pixels[name][0], measured[name].truth, reading)
    x = pixels[first][0]
    benign = {change_name: float((model.score(reader(change(x))[0]) > threshold).double().mean())
              for change_name, change in benign_changes.CHANGES.items()}
    worst = max(results, key=lambda n: results[n]["false_positives"])
    card = {"features": detector.feature_names(paths=paths, statistics=statistics), "paths": list(paths),
            "statistics": list(statistics), "epochs": epochs,
            "trained_on": {"corpora": corpus_records, "clean": {"data": str(clean), "images": len(clean_x)},
                           "sources": fitted_sources},
            "threshold": threshold, "fpr": fpr, "measured_fpr": results[worst]["false_positives"],
            "calibrated_on": {"sources": calibrating, "thresholds": per_source,
                              "rule": "the highest of the sources' thresholds"},
            "reference": reference(torch.cat(evens)),
            "measured_on": {"which": "odd positions", "quantised_to_uint8": True,
                            "images": {n: r["clean_images"] for n, r in results.items()}},
            "per_source": results,
            "detection_of_fooling": {r["attack"]: r["detected"] for r in rows[1:]},
            "auroc": {r["attack"]: r["auroc"] for r in rows[1:]},
            "screened": {r["attack"]: {k: r[k] for k in ("screened_accuracy", "flagged_of_wrong", "evaded")}
                         for r in rows + adaptive[first]},
            "adaptive": {name: {r["attack"]: {k: r[k] for k in ("screened_accuracy", "flagged_of_wrong", "evaded")}
                                for r in found} for name, found in adaptive.items()},
            "flagged_after_benign_changes": benign}
    card = detector.save(model, settings.weights_dir / detector.WEIGHTS_NAME, card)
    select_detector(settings.weights_dir, card)
    _write_report(out, rows, adaptive, curves, card, first)
    return card


def _outcome(scores, labels, truth, threshold) -> dict:
    """Screened accuracy, the share of wrongly labelled images flagged, and those that went through unflagged."""
    wrong = labels != truth
    return {"screened_accuracy": float((~wrong).double().mean()),
            "flagged_of_wrong": float((scores[wrong] > threshold).double().mean()) if wrong.any() else float("nan"),
            "evaded": float((wrong & (scores <= threshold)).double().mean())}


def _rows(model, threshold, ex: Examples) -> tuple[list[dict], dict]:
    """The first calibration source's table: clean and each attack, with ROC points per attack."""
    clean = model.score(ex.clean)
    rows = [{"attack": "clean", "trained_on": True, "fooling_images": 0, "detected": float("nan"),
             "auroc": float("nan"), **_outcome(clean, ex.clean_labels, ex.truth, threshold)}]
    curves = {}
    trained = {label(n, p) for n, p in TRAINED}
    for attack in ex.attacked:
        scores, fooling = model.score(ex.attacked[attack]), model.score(ex.fooling(attack))
        rows.append({"attack": attack, "trained_on": attack in trained, "fooling_images": len(fooling),
                     "detected": float((fooling > threshold).double().mean()) if len(fooling) else float("nan"),
                     "auroc": detector.auroc(clean, fooling),
                     **_outcome(scores, ex.attacked_labels[attack], ex.truth, threshold)})
        curves[attack] = _roc_points(clean, fooling)
    return rows, curves


def _adaptive(model, threshold, reader: FeatureReader, x, truth, reading) -> list[dict]:
    """The attacker who knows the detector, at each of :data:`ADAPTIVE_EPS`, colour and grey."""
    device, rows = reader.store.device, []
    model.to(device)  # the attacker differentiates through it, beside the images
    for eps in ADAPTIVE_EPS:
        for grey in (False, True):
            adversarial = quantise(torch.cat([
                evade_screening(x[i:i + BATCH].to(device), truth[i:i + BATCH].to(device), reader.store.get,
                                reader.options, model, eps=eps, screened_path=reader.reported_path, grey=grey,
                                **reading).cpu()
                for i in range(0, len(x), BATCH)]))
            f, labels = reader(adversarial)
            rows.append({"attack": f"evade eps={eps}" + (", grey" if grey else ""),
                         **_outcome(model.cpu().score(f), labels, truth, threshold)})
            model.to(device)
    model.cpu()
    return rows


def select_detector(weights_dir: Path, card: dict) -> dict:
    """Make screening.json select the detector of ``card``, keeping the hand-made score's calibration aside."""
    chosen = screening.load_settings(weights_dir)
    if chosen["score"] == "disagreement":
        chosen["disagreement"] = {k: chosen.pop(k) for k in screening.CALIBRATION_KEYS if k in chosen}
    chosen.pop("sources", None)  # calibrations of another detector's scores
    chosen.update(score="detector", **{k: card[k] for k in ("threshold", "fpr", "measured_fpr", "calibrated_on",
                                                              "detection_of_fooling", "reference")})
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


#: The attacks of the per-source table, in its column order.
SOURCE_COLUMNS = ("fgsm eps=0.004", "fgsm eps=0.01", "bim eps=0.01", "pgd eps=0.01", "deepfool", f"fgsm eps={round(8 / 255, 6)}")


def source_table(per_source: dict, fitted: set[str] = frozenset()) -> list[str]:
    """Markdown rows: per source, clean images flagged and the share of each attack's fooling images flagged."""
    def pct(v):
        return "-" if v != v else f"{100 * v:.1f} %"

    lines = ["| source | clean images | flagged (false positives) | " + " | ".join(SOURCE_COLUMNS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in SOURCE_COLUMNS) + " |"]
    for name, r in per_source.items():
        lines.append(f"| {name}{' (fitted)' if name in fitted else ''} | {r['clean_images']} | "
                     f"{pct(r['false_positives'])} | "
                     + " | ".join(pct(r["detected"].get(c, float("nan"))) for c in SOURCE_COLUMNS) + " |")
    return lines


def _write_report(out: Path, rows: list[dict], adaptive: dict, curves: dict, card: dict, first: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in curves.items() if k in SOURCE_COLUMNS}
    figures.scatter(shown, out / "roc.png", xlabel="clean images flagged (%)", ylabel="fooling images flagged (%)",
                    title=f"Learned detector, 8-bit attacked images of {first}", vline=100 * card["fpr"])
    trained = card["trained_on"]
    clean = trained["clean"]
    calibrated = card["calibrated_on"]
    fitted = {s["name"] for s in trained["sources"]}

    def pct(v):
        return "-" if v != v else f"{100 * v:.1f} %"

    per_source = ", ".join(f"{n} {t:.4f} on {calibrated['sources'][n]['images']}"
                           for n, t in calibrated["thresholds"].items())
    sources = "".join(f", {s['images']} of {s['name']} ({s['data']}; {s['fooling_images']} fooling)"
                      for s in trained["sources"])
    lines = ["# Learned detector", "",
             (f"Trained on {sum(s['successful_images_used'] for s in trained['corpora'])} successful attacked "
              f"images from {len(trained['corpora'])} corpus folder(s) and " if trained["corpora"] else "Trained on ")
             + f"{clean['images']} clean images ({clean['data']})" + (f"; and on clean images and the paper's attacks of each source{sources}"
                                     if sources else "")
             + f"; a {card['hidden']}-wide MLP on {card['n_features']} features of the standard and "
             f"DWT-trained models' outputs ({', '.join(card['paths'])})"
             + (f" and of the pixels ({', '.join(card['statistics'])})" if card["statistics"] else "") + ".", "",
             f"Threshold {card['threshold']:.4f}: the highest of the thresholds that give {100 * card['fpr']:.1f} % "
             "false positives on each calibration source's even-positioned clean images "
             f"({per_source}). "
             "Every rate below is measured on the odd-positioned images, which no fit and no threshold used; "
             "attacks are crafted on the standard model, on that source's pixels, and delivered in 8 bits. "
             "A source marked *fitted* gave the fit other images of its own; the others, none.", "",
             "## Per source", "",
             "False positives, and the share of each attack's images that fool the standard model flagged:", "",
             *source_table(card["per_source"], fitted), "",
             f"## On {first}, attack by attack", "",
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
              "(`shared/adaptive_screening.py`); 8-bit delivery as above, on each source's measured images (an "
              "unlabelled source's labels are the standard model's own). *Grey*: the same step on all three channels "
              "of a pixel, which leaves the colour differences as they were.", "",
              "| source | attack | screened accuracy | flagged, of the wrongly labelled | evaded |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['attack']} | {pct(r['screened_accuracy'])} | {pct(r['flagged_of_wrong'])} | "
              f"{pct(r['evaded'])} |" for name, found in adaptive.items() for r in found]
    lines += ["", "## Clean images, changed without an attack", "",
              "The measured clean images again, after a change an ordinary source might make "
              "(`shared/benign_changes.py`); the share flagged at the same threshold. Far above the false-positive "
              "rate, the detector sees that change as manipulation: calibrate it on clean images of your own source "
              "(`waveshield calibrate --source NAME`).", "",
              "| change | flagged |", "| --- | --- |"]
    lines += [f"| {name} | {pct(rate)} |" for name, rate in card["flagged_after_benign_changes"].items()]
    lines += ["", "![ROC](roc.png)", ""]
    (out / "detector.md").write_text("\n".join(lines))
