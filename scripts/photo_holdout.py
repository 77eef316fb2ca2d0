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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from producers.detector.report import content_lines  # noqa: E402
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
#: Images per part, as the shipped detector's fit reads them (`--n-source 5400`, every photograph crop; the other
#: CIFAR-10 sources hold 2,034).
N_FIT = {"mirror": 5400}
N_FIT_OTHERS = 2034
N_HELD = 3051
DETECTION = "fgsm eps=0.01"
#: Grey photographs scikit-image ships: content no fit reads (the textures are tinted).
NEVER_FITTED_GREY = ("camera.png", "coins.png", "moon.png", "page.png", "clock_motion.png", "cell.png")
RECIPES = ("crops of fitted photographs", "each photograph unseen")
#: The photographs' own false-positive rates the curve moves through.
CURVE_RATES = (0.05, 0.04, 0.03, 0.02, 0.015, 0.01, 0.005)


def cached(cache: ss.FeatureCache, key: str, data: str, n: int) -> tuple[ss.Examples, list[str]]:
    """Features of ``data``'s first ``n`` images, clean and under the paper's attacks, and the images' ids.

    From ``cache`` where it has them: it is ``waveshield fit-detector --cache``'s, so that a fit on the same
    data reuses these features.
    """
    image_set = load_images(data, limit=n, workers=load_settings().decode_workers)
    labels = None if image_set.labels is None else torch.from_numpy(image_set.labels)
    return cache.examples(key, data, image_set.to_tensor(), labels, ss.TRAINED, on_attack=lambda attack: print(
        f"{key}: {len(image_set)} images, {attack}", flush=True)), list(image_set.ids)


def by_group(ex: ss.Examples, ids: list[str]) -> dict[str, ss.Examples]:
    """Every photograph crop's examples split by its group (:func:`shared.images.photo_content.group_of`)."""
    groups = [photo_content.group_of(item) for item in ids]
    return {g: ex.subset(torch.tensor([i for i, h in enumerate(groups) if h == g])) for g in photo_content.groups()}


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


def fit_all_but(cifar_fit, photo_fit, left: list[str], args) -> detector.Detector:
    """The shipped recipe's fit without the groups ``left``: the CIFAR-10 sources and the other groups as one source."""
    others = [g for g in photo_fit if g not in left]
    return fit_on(list(cifar_fit.values()) + [joined([photo_fit[g] for g in others], "photos")], args.epochs,
                  args.hidden)


def run(cifar_fit, cifar_held, photo_fit, photo_held, never_fitted, args) -> dict:
    """Every left-out group under each recipe, the curve's points, and the detector fitted on every group."""
    calibration = {n: ex.clean[0::2] for n, ex in cifar_held.items()}
    measured = {n: ex.subset(slice(1, None, 2)) for n, ex in cifar_held.items()}
    groups = list(photo_fit)
    out = {"recipes": {}, "curve": {}}
    for recipe in args.recipes:
        rows, curve = {}, {rate: {"flagged": [], "detected": []} for rate in CURVE_RATES}
        for left in groups:
            others = [g for g in groups if g != left]
            model = fit_all_but(cifar_fit, photo_fit, [left], args)
            if recipe == "crops of fitted photographs":
                photo_scores = model.score(torch.cat([photo_held[g].clean for g in others])).numpy()
            else:  # each fitted group scored by a detector that never saw it
                photo_scores = np.concatenate([fit_all_but(cifar_fit, photo_fit, [left, g], args).score(
                    photo_held[g].clean).numpy() for g in others])
            cifar_threshold = max(calibrate(model.score(f).numpy(), args.fpr) for f in calibration.values())
            unseen = model.score(torch.cat([photo_fit[left].clean, photo_held[left].clean]))
            for rate in CURVE_RATES:
                threshold = max(cifar_threshold, calibrate(photo_scores, rate))
                curve[rate]["flagged"].append(flagged_share(unseen, threshold))
                curve[rate]["detected"].append({n: flagged_share(model.score(m.fooling(DETECTION)), threshold)
                                                for n, m in measured.items()})
            rows[left] = measure_at(model, max(cifar_threshold, calibrate(photo_scores, args.photo_fpr)), unseen,
                                    measured)
            print(f"{recipe:>28} | left out {left:>10} | flagged {100 * rows[left]['flagged']:5.1f} % | "
                  + " ".join(f"{n} {100 * d:4.1f}" for n, d in rows[left]["detected"].items()), flush=True)
        out["recipes"][recipe] = rows
        out["curve"][recipe] = {str(rate): {"flagged_mean": float(np.mean(p["flagged"])),
                                            "flagged_max": float(np.max(p["flagged"])),
                                            "detected_min": float(min(min(d.values()) for d in p["detected"])),
                                            "detected_max": float(max(max(d.values()) for d in p["detected"])),
                                            "detected_mean": {n: float(np.mean([d[n] for d in p["detected"]]))
                                                              for n in measured}}
                                for rate, p in curve.items()}
    model = fit_all_but(cifar_fit, photo_fit, [], args)  # what the recipe ships
    photo_scores = model.score(torch.cat([photo_held[g].clean for g in groups])).numpy()
    threshold = max([calibrate(model.score(f).numpy(), args.fpr) for f in calibration.values()]
                    + [calibrate(photo_scores, args.photo_fpr)])
    out["every_group"] = {name: measure_at(model, threshold, model.score(f), measured)["flagged"]
                          for name, f in never_fitted.items()}
    out["every_group_detected"] = measure_at(model, threshold, model.score(photo_held[groups[0]].clean),
                                             measured)["detected"]
    out["every_group_threshold"] = threshold
    return out


def measure_at(model, threshold: float, unseen: torch.Tensor, measured: dict) -> dict:
    """Clean unseen scores flagged, and the CIFAR-10 sources' false positives and detection, at ``threshold``."""
    return {"threshold": threshold, "images": len(unseen), "flagged": flagged_share(unseen, threshold),
            "cifar_false_positives": {n: flagged_share(model.score(m.clean), threshold) for n, m in measured.items()},
            "detected": {n: flagged_share(model.score(m.fooling(DETECTION)), threshold) for n, m in measured.items()}}


def never_fitted_content(reader) -> dict[str, torch.Tensor]:
    """Features of crops of content no fit reads: scikit-image's grey photographs, and matplotlib's photograph."""
    import matplotlib

    from shared.images import encodings

    pictures = {"grey photographs": [photo_content.data_folder() / n for n in NEVER_FITTED_GREY],
                "another collection's photograph": [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]}
    out = {}
    for name, paths in pictures.items():
        crops = np.stack([c for _, c in encodings.photo_crops(paths, seed=9, per_size=60 // len(paths) or 1)])
        out[name] = reader(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)[0]
    return out


def shipped(photo_fit, photo_held, cifar_held, never_fitted, weights_dir: Path) -> dict:
    """What the shipped detector flags of each group's crops, and its detection on the CIFAR-10 sources."""
    model, card = detector.load(weights_dir / detector.WEIGHTS_NAME)
    threshold = card["threshold"]
    measured = {n: ex.subset(slice(1, None, 2)) for n, ex in cifar_held.items()}
    return {"threshold": threshold, "sha256": card["sha256"],
            "flagged": {g: flagged_share(model.score(torch.cat([photo_fit[g].clean, photo_held[g].clean])), threshold)
                        for g in photo_fit},
            "detected": {n: flagged_share(model.score(m.fooling(DETECTION)), threshold) for n, m in measured.items()},
            "never_fitted": {name: flagged_share(model.score(f), threshold) for name, f in never_fitted.items()}}


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _span(values) -> str:
    values = list(values)
    return f"{100 * min(values):.1f}-{100 * max(values):.1f} %"


def render(report: dict) -> str:
    """photographs.md from a photographs.json."""
    today = report["shipped"]
    lines = ["# Screening on content no fit saw: each group of photographs left out in turn", "",
             f"`scripts/photo_holdout.py`: the shipped detector's features ({', '.join(report['reads']['paths'])}; "
             f"{', '.join(report['reads']['statistics']) or 'no statistic'}), a {report['hidden']}-wide MLP, "
             f"{report['epochs']} epochs, fitted on the five CIFAR-10 sources and every group of photographs but "
             f"one; threshold: the highest of the sources' thresholds for {100 * report['fpr']:.0f} % false "
             "positives.", "", *content_lines(report)]
    lines += ["", "## Content no fit reads", "",
              "Crops of scikit-image's grey photographs and of matplotlib's sample photograph, screened by the "
              f"detector the recipe fits on every group, at its threshold ({report['every_group_threshold']:.4f}), "
              f"and by detector {today['sha256'][:12]}.", "",
              f"| content | flagged | flagged by {today['sha256'][:12]} |", "| --- | --- | --- |"]
    for name, value in report["every_group"].items():
        lines.append(f"| {name} | {_pct(value)} | {_pct(today['never_fitted'][name])} |")
    lines += ["", "## The trade-off", "",
              "The photographs' threshold set for a lower rate on their calibration crops: the left-out groups' "
              "clean crops flagged against detection (`tradeoff.png`).", "",
              "| recipe | photographs' rate | flagged, mean | flagged, worst group | detected, CIFAR-10 sources |",
              "| --- | --- | --- | --- | --- |"]
    for name, curve in report["curve"].items():
        for rate, point in curve.items():
            lines.append(f"| {name} | {100 * float(rate):g} % | {_pct(point['flagged_mean'])} | "
                         f"{_pct(point['flagged_max'])} | {_pct(point['detected_min'])}-{_pct(point['detected_max'])} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """The trade-off: mean and worst left-out group's clean crops flagged against the lowest detection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, curve in report["curve"].items():
        rates = list(curve)
        for key, style in (("flagged_mean", "-o"), ("flagged_max", "--s")):
            xs = [100 * curve[r][key] for r in rates]
            ys = [100 * curve[r]["detected_min"] for r in rates]
            ax.plot(xs, ys, style, label=f"{name}: {'mean' if key == 'flagged_mean' else 'worst'} group")
            for r, x, y in zip(rates, xs, ys):
                ax.annotate(f"{100 * float(r):g} %", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        shipped = curve.get(str(report["photo_fpr"]))
        if shipped:
            ax.plot([100 * shipped["flagged_mean"]], [100 * shipped["detected_min"]], "k*", ms=12,
                    label=f"shipped: the photographs at {100 * report['photo_fpr']:g} %")
    ax.axvline(10, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("clean crops of the left-out photographs flagged (%)")
    ax.set_ylabel(f"lowest detection of {report['detection_of']} (%)")
    ax.set_title("Photographs' threshold rate: flags on new content against detection", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path("waveshield-out/sources"))
    parser.add_argument("--mirror", type=Path, default=Path("../shared/datasets/cifar10-jpeg"))
    parser.add_argument("--cache", type=Path, default=Path("waveshield-out/features"),
                        help="The features' cache, shared with waveshield fit-detector --cache.")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--photo-fpr", type=float, default=0.04,
                        help="The photographs' own rate for their threshold (fit-detector --source-fpr photos=RATE).")
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=RECIPES[:1],
                        help="How the photographs' threshold is set (cross-fitting costs a fit per group and group).")
    parser.add_argument("--render", type=Path, default=None, help="Only write photographs.md and tradeoff.png from "
                        "DIR/photographs.json.")
    args = parser.parse_args()
    if args.render:
        report = json.loads((args.render / "photographs.json").read_text())
        (args.render / "photographs.md").write_text(render(report))
        plot(report, args.render / "tradeoff.png")
        return
    settings = load_settings()
    card = json.loads((settings.weights_dir / "detector.json").read_text())
    store = ModelStore(settings.weights_dir, resolve_device(settings.device))
    reader = ss.FeatureReader(store, settings.weights_dir, detector.reads(card), "haar@haar")
    cache = ss.FeatureCache(args.cache, reader)

    def path(name: str) -> str:
        return str((args.mirror if name in ("train.zip", "test.zip") else args.sources) / name)

    # The photographs as the shipped fit reads them (every group in one file per part), split by group here.
    photo_fit = by_group(*cached(cache, "photos-fit", path("photos-fit.zip"), 10 ** 6))
    photo_held = by_group(*cached(cache, "photos-held", path("photos-held.zip"), 10 ** 6))
    cifar_fit = {n: cached(cache, f"{n}-fit", path(fit), N_FIT.get(n, N_FIT_OTHERS))[0] for n, (fit, _) in CIFAR.items()}
    cifar_held = {n: cached(cache, f"{n}-held", path(held), N_HELD)[0] for n, (_, held) in CIFAR.items()}
    never_fitted = never_fitted_content(reader)
    report = {"fpr": args.fpr, "photo_fpr": args.photo_fpr, "epochs": args.epochs, "hidden": args.hidden, "detection_of": DETECTION,
              "reads": detector.reads(card),
              "images": {g: {"fit": len(photo_fit[g].clean), "held": len(photo_held[g].clean)} for g in photo_fit},
              "shipped": shipped(photo_fit, photo_held, cifar_held, never_fitted, settings.weights_dir),
              **run(cifar_fit, cifar_held, photo_fit, photo_held, never_fitted, args)}
    print(json.dumps(report["shipped"], indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "photographs.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "photographs.md").write_text(render(report))
        plot(report, args.out / "tradeoff.png")


if __name__ == "__main__":
    main()
