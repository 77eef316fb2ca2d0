"""Screening on content no fit saw: each group of photographs left out in turn, and what it costs in detection.

    python scripts/photo_holdout.py [--sources waveshield-out/sources] [--mirror ../shared/datasets/cifar10-jpeg]
        [--cache waveshield-out/photo-holdout] [--out docs/calibration/photographs]

Run ``scripts/make_sources.py`` first. The detector reads what the shipped
one reads (its card's paths and statistics). Features of the clean images
and of the paper's attacks are computed once per part and cached.

For each group of :mod:`shared.images.photo_content` (a photograph with all
its turned and recoloured crops, or the textures), a detector is fitted on
the CIFAR-10 sources and every *other* group, its threshold set as the
shipped recipe sets it (the highest of the sources' thresholds for
``--fpr`` on their calibration images), and the left-out group's crops,
which neither the fit nor a threshold saw, are screened. Detection is
measured on the odd-positioned held-out images of the CIFAR-10 sources (the
even ones set thresholds). Recipes differ in how the photographs' own
threshold is set:

- ``crops of fitted photographs``: other crops of the fitted groups, at ``--fpr``;
- ``each photograph unseen``: every fitted group's crops scored by a detector
  fitted without that group (cross-fitting), at ``--fpr``; the final detector is
  the one fitted on all the groups.

The curve moves the photographs' rate from 5 % down, and shows clean crops
of the left-out groups flagged against detection.

Writes ``photographs.json`` (every number), ``photographs.md`` and
``tradeoff.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.images import photo_content  # noqa: E402
from shared.images.load import load_images  # noqa: E402
from shared.models.store import ModelStore  # noqa: E402
from shared.screening import detector  # noqa: E402
from shared.screening import examples as ss  # noqa: E402
from shared.screening.verdicts import calibrate, flagged_share  # noqa: E402
from shared.settings import load as load_settings  # noqa: E402
from shared.settings import resolve_device  # noqa: E402

#: CIFAR-10 sources: name -> (fit data, held-out data), as make_sources.py writes them; the mirror's from --mirror.
CIFAR = {
    "mirror": ("train.zip", "test.zip"),
    "canonical": ("canonical-fit.npz", "canonical-held.npz"),
    "jpeg-q95-444": ("jpeg-q95-444-fit.zip", "jpeg-q95-444-held.zip"),
    "jpeg-q50": ("jpeg-q50-fit.zip", "jpeg-q50-held.zip"),
    "webp-q90": ("webp-q90-fit.zip", "webp-q90-held.zip"),
}
#: Images per part, as the shipped detector's fit reads them (the mirror's fit part is larger).
N_FIT = {"mirror": 4200}
N_FIT_OTHERS = 2034
N_HELD = 3051
DETECTION = "fgsm eps=0.01"
#: The photographs' own false-positive rates the curve moves through.
CURVE_RATES = (0.05, 0.04, 0.03, 0.02, 0.015, 0.01, 0.005)


def cached(cache: Path, key: str, data: str, n: int, reader) -> ss.Examples:
    """Features of ``data``'s first ``n`` images, clean and under the paper's attacks, from ``cache`` or made there."""
    file = cache / f"{key}-{n}.safetensors"
    if not file.is_file():
        image_set = load_images(data, limit=n, workers=load_settings().decode_workers)
        labels = None if image_set.labels is None else torch.from_numpy(image_set.labels)
        print(f"{key}: {len(image_set)} images", flush=True)
        ex = ss.examples(reader, key, image_set.to_tensor(), labels, ss.TRAINED)
        cache.mkdir(parents=True, exist_ok=True)
        save_file(ss.to_tensors(ex), str(file))
    return ss.from_tensors(key, load_file(str(file)))


def fit_on(parts: list[ss.Examples], epochs: int, hidden: int) -> detector.Detector:
    """A detector fitted on ``parts``, each weighing the same within its class (as ``waveshield fit-detector``)."""
    negatives = [p.clean for p in parts]
    positives = [p.positives() for p in parts]
    return detector.fit(torch.cat(negatives), torch.cat(positives), hidden=hidden, epochs=epochs,
                        clean_sources=torch.cat([torch.full((len(f),), i) for i, f in enumerate(negatives)]),
                        adversarial_sources=torch.cat([torch.full((len(f),), i) for i, f in enumerate(positives)]))


def joined(parts: list[ss.Examples], name: str) -> ss.Examples:
    """Several groups' examples as one source."""
    out = ss.Examples(name, torch.cat([p.clean for p in parts]), torch.cat([p.clean_labels for p in parts]),
                      torch.cat([p.truth for p in parts]), False)
    for attack in parts[0].attacked:
        out.attacked[attack] = torch.cat([p.attacked[attack] for p in parts])
        out.attacked_labels[attack] = torch.cat([p.attacked_labels[attack] for p in parts])
        out.fooled[attack] = torch.cat([p.fooled[attack] for p in parts])
    return out


def run(cifar_fit, cifar_held, photo_fit, photo_held, args) -> dict:
    """Every left-out group under each recipe, with the curve's points."""
    calibration = {n: ex.clean[0::2] for n, ex in cifar_held.items()}
    measured = {n: ex.subset(slice(1, None, 2)) for n, ex in cifar_held.items()}
    groups = list(photo_fit)
    out = {"recipes": {}, "curve": {}}
    for recipe in ("crops of fitted photographs", "each photograph unseen"):
        rows, curve = {}, {rate: {"flagged": [], "detected": []} for rate in CURVE_RATES}
        for left in groups:
            others = [g for g in groups if g != left]
            model = fit_on(list(cifar_fit.values()) + [joined([photo_fit[g] for g in others], "photos")],
                           args.epochs, args.hidden)
            if recipe == "crops of fitted photographs":
                photo_scores = model.score(torch.cat([photo_held[g].clean for g in others])).numpy()
            else:  # each fitted group scored by a detector that never saw it
                photo_scores = np.concatenate([
                    fit_on(list(cifar_fit.values()) + [joined([photo_fit[h] for h in others if h != g], "photos")],
                           args.epochs, args.hidden).score(photo_held[g].clean).numpy() for g in others])
            cifar_threshold = max(calibrate(model.score(f).numpy(), args.fpr) for f in calibration.values())
            unseen = model.score(torch.cat([photo_fit[left].clean, photo_held[left].clean]))
            for rate in CURVE_RATES:
                threshold = max(cifar_threshold, calibrate(photo_scores, rate))
                curve[rate]["flagged"].append(flagged_share(unseen, threshold))
                curve[rate]["detected"].append({n: flagged_share(model.score(m.fooling(DETECTION)), threshold)
                                                for n, m in measured.items()})
            threshold = max(cifar_threshold, calibrate(photo_scores, args.fpr))
            rows[left] = {"threshold": threshold, "images": len(unseen), "flagged": flagged_share(unseen, threshold),
                          "cifar_false_positives": {n: flagged_share(model.score(m.clean), threshold)
                                                    for n, m in measured.items()},
                          "detected": {n: flagged_share(model.score(m.fooling(DETECTION)), threshold)
                                       for n, m in measured.items()}}
            print(f"{recipe:>28} | left out {left:>10} | flagged {100 * rows[left]['flagged']:5.1f} % | "
                  + " ".join(f"{n} {100 * d:4.1f}" for n, d in rows[left]["detected"].items()), flush=True)
        out["recipes"][recipe] = rows
        out["curve"][recipe] = {str(rate): {"flagged_mean": float(np.mean(p["flagged"])),
                                            "flagged_max": float(np.max(p["flagged"])),
                                            "detected_min": float(min(min(d.values()) for d in p["detected"])),
                                            "detected_mean": float(np.mean([np.mean(list(d.values()))
                                                                            for d in p["detected"]]))}
                                for rate, p in curve.items()}
    return out


def shipped(photo_fit, photo_held, cifar_held, weights_dir: Path) -> dict:
    """What the shipped detector flags of each group's crops, and its detection on the CIFAR-10 sources."""
    model, card = detector.load(weights_dir / detector.WEIGHTS_NAME)
    threshold = card["threshold"]
    measured = {n: ex.subset(slice(1, None, 2)) for n, ex in cifar_held.items()}
    return {"threshold": threshold,
            "flagged": {g: flagged_share(model.score(torch.cat([photo_fit[g].clean, photo_held[g].clean])), threshold)
                        for g in photo_fit},
            "detected": {n: flagged_share(model.score(m.fooling(DETECTION)), threshold) for n, m in measured.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path("waveshield-out/sources"))
    parser.add_argument("--mirror", type=Path, default=Path("../shared/datasets/cifar10-jpeg"))
    parser.add_argument("--cache", type=Path, default=Path("waveshield-out/photo-holdout"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    settings = load_settings()
    card = json.loads((settings.weights_dir / "detector.json").read_text())
    store = ModelStore(settings.weights_dir, resolve_device(settings.device))
    reader = ss.FeatureReader(store, settings.weights_dir, detector.reads(card), "haar@haar")

    def path(name: str) -> str:
        return str((args.mirror if name in ("train.zip", "test.zip") else args.sources) / name)

    photo_fit, photo_held = {}, {}
    for group in photo_content.groups():
        photo_fit[group] = cached(args.cache, f"photo-{group}-fit", path(f"photo-{group}-fit.zip"), 10 ** 6, reader)
        photo_held[group] = cached(args.cache, f"photo-{group}-held", path(f"photo-{group}-held.zip"), 10 ** 6, reader)
    cifar_fit = {n: cached(args.cache, f"{n}-fit", path(fit), N_FIT.get(n, N_FIT_OTHERS), reader)
                 for n, (fit, _) in CIFAR.items()}
    cifar_held = {n: cached(args.cache, f"{n}-held", path(held), N_HELD, reader) for n, (_, held) in CIFAR.items()}
    report = {"fpr": args.fpr, "epochs": args.epochs, "hidden": args.hidden, "detection_of": DETECTION,
              "reads": detector.reads(card),
              "images": {g: {"fit": len(photo_fit[g].clean), "held": len(photo_held[g].clean)} for g in photo_fit},
              "shipped": shipped(photo_fit, photo_held, cifar_held, settings.weights_dir),
              **run(cifar_fit, cifar_held, photo_fit, photo_held, args)}
    print(json.dumps(report["shipped"], indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "photographs.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
