"""Screening per source: which features hold on every source, and what a source nobody fitted on gets.

    python scripts/detector_sources.py [--sources waveshield-out/sources] [--mirror ../shared/datasets/cifar10-jpeg]
        [--n-fit 2000] [--n-photos 4200] [--n-held 2100] [--cache waveshield-out/detector-sources] [--out DIR]

Run ``scripts/make_sources.py`` first. For every source, the features of its
clean images and of each attack's fooling 8-bit images are computed once,
over every model path and the ``chroma`` statistic (cached as
safetensors), with each image's colour roughness; then detectors reading
different columns are fitted on different choices of sources, each source
weighing the same. Each held-out source is split by position: the even half
sets thresholds (for the sources a detector is calibrated on; the threshold
is the highest of theirs), the odd half measures, and no fit nor threshold
sees it. Leaving a source out drops its fit part *and* its calibration
half, so its row shows what a source nobody fitted nor calibrated on gets.

Writes ``sources.json`` (every number) and ``sources.md`` (its tables) into
``--out``; ``--render DIR`` writes the tables again from a ``sources.json``.
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
from shared.screening import detector, verdicts, examples as ss  # noqa: E402
from shared.images import encodings
from shared.images.load import load_images  # noqa: E402
from shared.models.store import ModelStore  # noqa: E402
from shared.settings import load as load_settings, resolve_device  # noqa: E402

#: name -> (fit data, held-out data), as make_sources.py writes them; the mirror's come from --mirror.
SOURCES = {
    "mirror": ("train.zip", "test.zip"),
    "canonical": ("canonical-fit.npz", "canonical-held.npz"),
    "jpeg-q95-444": ("jpeg-q95-444-fit.zip", "jpeg-q95-444-held.zip"),
    "jpeg-q50": ("jpeg-q50-fit.zip", "jpeg-q50-held.zip"),
    "webp-q90": ("webp-q90-fit.zip", "webp-q90-held.zip"),
    "photos": ("photos-fit.zip", "photos-held.zip"),
}
#: The held-out canonical pixels again as PNG files: the same pixels as the npz (checked), so the same row.
PNG_TWIN = "canonical-held-png"
#: Feature sets compared: name -> (paths, statistics). The first is the one the leave-one-out rows use.
#: Two paths are what screening computes anyway; five cost three more model passes per image.
FEATURE_SETS = {
    "2 paths + steps": (("standard@raw", "haar@haar"), ("steps",)),
    "2 paths": (("standard@raw", "haar@haar"), ()),
    "2 paths + chroma": (("standard@raw", "haar@haar"), ("chroma",)),
    "2 paths + chroma + steps": (("standard@raw", "haar@haar"), ("chroma", "steps")),
    "5 paths": (detector.PATHS, ()),
    "5 paths + chroma + steps": (detector.PATHS, ("chroma", "steps")),
}
ALL_COLUMNS = detector.feature_names(paths=detector.PATHS, statistics=detector.STATISTICS)
#: Which attacks' fooling images a fit learns from: the paper's seven, or those at eps 0.01 and DeepFool.
TRAINING = {"paper": None, "eps 0.01 and deepfool": ("fgsm eps=0.01", "bim eps=0.01", "deepfool")}
#: A source's own calibration reads at most this many of its clean images (as `waveshield calibrate --source`).
OWN_CALIBRATION = 1000


def _index(item: str) -> int:
    """The canonical image's index in an id: ``canonical/02034`` or ``cat/02034.png``."""
    return int(Path(item).stem)


def same_pixels(a, b) -> bool:
    """Whether two image sets hold the same images under the same canonical indices."""
    order_a = sorted(range(len(a)), key=lambda i: _index(a.ids[i]))
    order_b = sorted(range(len(b)), key=lambda i: _index(b.ids[i]))
    return ([_index(a.ids[i]) for i in order_a] == [_index(b.ids[i]) for i in order_b]
            and bool((a.images[order_a] == b.images[order_b]).all()))


def cached(cache: Path, key: str, make):
    """(examples, colour roughness per key) from ``cache``, or made and saved there."""
    file = cache / f"{key}.safetensors"
    if not file.is_file():
        ex, rough = make()
        cache.mkdir(parents=True, exist_ok=True)
        save_file({**ss.to_tensors(ex), **{f"rough/{k}": v.contiguous() for k, v in rough.items()}}, str(file))
    tensors = load_file(str(file))
    rough = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("rough/")}
    return ss.from_tensors(key, {k: v for k, v in tensors.items() if not k.startswith("rough/")}), rough


def build(reader, data: str, n: int, attack_list, key: str):
    image_set = load_images(data, limit=n, workers=load_settings().decode_workers)
    labels = None if image_set.labels is None else torch.from_numpy(image_set.labels)
    print(f"{key}: {len(image_set)} images", flush=True)
    rough = {}
    ex = ss.examples(reader, key, image_set.to_tensor(), labels, attack_list,
                     on_images=lambda k, images: rough.__setitem__(k, encodings.colour_roughness(images)))
    return ex, rough


def columns(ex: ss.Examples, paths, statistics) -> ss.Examples:
    """The examples with only the columns of a detector reading ``paths`` and ``statistics``."""
    idx = torch.tensor([ALL_COLUMNS.index(c) for c in detector.feature_names(paths=paths, statistics=statistics)])
    return ss.Examples(ex.source, ex.clean[:, idx], ex.clean_labels, ex.truth, ex.labelled,
                       {a: f[:, idx] for a, f in ex.attacked.items()}, ex.attacked_labels, ex.fooled)


def fit_on(fit: dict, names, hidden: int, epochs: int, attacks=None) -> detector.Detector:
    """A detector fitted on the sources ``names``, each weighing the same; ``attacks``: whose fooling images."""
    negatives = [fit[n].clean for n in names]
    positives = [torch.cat([fit[n].fooling(a) for a in fit[n].attacked if attacks is None or a in attacks])
                 for n in names]
    return detector.fit(torch.cat(negatives), torch.cat(positives), hidden=hidden, epochs=epochs,
                        clean_sources=torch.cat([torch.full((len(f),), i) for i, f in enumerate(negatives)]),
                        adversarial_sources=torch.cat([torch.full((len(f),), i) for i, f in enumerate(positives)]))


def variant(fit, calibration, measured, chosen, shown, args) -> dict:
    model = fit_on(fit, chosen, args.hidden, args.epochs, TRAINING[args.train])
    per_source = ss.thresholds(model, {n: calibration[n].clean for n in chosen}, args.fpr)
    threshold = max(per_source.values())
    return {"fitted_on": list(chosen), "threshold": threshold, "thresholds": per_source,
            "measured": {n: ss.measure(model, threshold, measured[n]) for n in shown}}, model


def show(title: str, result: dict) -> None:
    for n, m in result["measured"].items():
        print(f"{title:>28} | {n:>13} | fp {100 * m['false_positives']:5.1f} % | " + " ".join(
            f"{100 * m['detected'].get(c, float('nan')):5.1f}" for c in COLUMNS), flush=True)


COLUMNS = ("fgsm eps=0.004", "fgsm eps=0.01", "bim eps=0.01", "pgd eps=0.01", "deepfool", "fgsm eps=0.031373")


def _pct(v) -> str:
    return "-" if v != v else f"{100 * v:.1f}"


def render(report: dict) -> str:
    """The tables of ``sources.md`` from a ``sources.json``."""
    names = list(report["images"])
    attacks = ("fgsm eps=0.004", "fgsm eps=0.01", "bim eps=0.01", "pgd eps=0.01", "deepfool", "fgsm eps=0.031373")
    head = "| false positives | " + " | ".join(attacks) + " |"
    rule = "| --- " * (len(attacks) + 1) + "|"
    first = next(iter(report["feature_sets"]))
    lines = ["# Screening per source: the study", "",
             f"`scripts/detector_sources.py` ({report['trained_on_attacks']} attacks in the fits, a "
             f"{report['hidden']}-wide MLP, {report['epochs']} epochs, each source weighing the same; threshold: "
             f"the highest of the fitted sources' thresholds for {100 * report['fpr']:.0f} % on their even-positioned "
             "held-out clean images; every rate on the odd-positioned ones, in %). Images per source, fit / held out: "
             + ", ".join(f"{n} {v['fit']} / {v['held']}" for n, v in report["images"].items())
             + f". Canonical pixels as PNG files equal the npz's: {report['png_identical_to_npz']}.", "",
             "## Feature sets, fitted on every source", ""]
    for set_name, runs in report["feature_sets"].items():
        for run_name, result in runs.items():
            lines += [f"### {set_name}, fitted on {run_name}", "", "| source " + head, "| --- " + rule]
            lines += [f"| {n} | {_pct(m['false_positives'])} | " + " | ".join(_pct(m["detected"].get(a, float("nan")))
                                                                           for a in attacks) + " |"
                      for n, m in result["measured"].items()]
            lines.append("")
    lines += [f"## {first}: each source left out of the fit and the threshold", "",
              "| source left out " + head, "| --- " + rule]
    lines += [f"| {n} | {_pct(r['measured'][n]['false_positives'])} | "
              + " | ".join(_pct(r["measured"][n]["detected"].get(a, float("nan"))) for a in attacks) + " |"
              for n, r in report["leave_one_out"].items()]
    lines += ["", f"## {first}, fitted on every source, with each source's own calibration", "",
              "The threshold from the first 1,000 even-positioned clean images of the source alone (what "
              "`waveshield calibrate --source NAME` does), measured on its odd-positioned ones.", "",
              "| source " + head, "| --- " + rule]
    lines += [f"| {n} | {_pct(r['false_positives'])} | " + " | ".join(_pct(r["detected"].get(a, float("nan")))
                                                                      for a in attacks) + " |"
              for n, r in report["own_calibration"].items()]
    lines += ["", "## What the source check sees", "",
              "Distance between the colour roughness of each source's odd-positioned images (clean, or attacked) "
              "and a calibration's clean images (`shared.screening.verdicts.decile_distance`; the check calls a set "
              "unlike its calibration from 0.25): the default calibration (every source's even-positioned clean "
              "images together) and one made on the mirror alone.", "",
              "| source | images | against the default | against the mirror's |", "| --- | --- | --- | --- |"]
    for n, row in report["source_check"].items():
        for key in ("clean", "fgsm eps=0.01", "deepfool"):
            if key in row:
                lines.append(f"| {n} | {key} | {row[key]['default']:.2f} | {row[key]['mirror']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path("waveshield-out/sources"))
    parser.add_argument("--mirror", type=Path, default=Path("../shared/datasets/cifar10-jpeg"))
    parser.add_argument("--n-fit", type=int, default=2000)
    parser.add_argument("--n-photos", type=int, default=4200, help="Fit images of the photographs.")
    parser.add_argument("--n-held", type=int, default=2100)
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--train", choices=list(TRAINING), default="paper", help="Which attacks a fit learns from.")
    parser.add_argument("--cache", type=Path, default=Path("waveshield-out/detector-sources"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render", type=Path, default=None, help="Only write sources.md from DIR/sources.json.")
    args = parser.parse_args()
    if args.render:
        (args.render / "sources.md").write_text(render(json.loads((args.render / "sources.json").read_text())))
        return
    settings = load_settings()
    store = ModelStore(settings.weights_dir, resolve_device(settings.device))
    reader = ss.FeatureReader(store, settings.weights_dir, {"paths": detector.PATHS, "statistics": detector.STATISTICS},
                              "haar@haar")

    def path(data: str) -> str:
        return str((args.mirror if data in ("train.zip", "test.zip") else args.sources) / data)

    tag = f"{args.n_fit}-{args.n_photos}-{args.n_held}"
    fit_all = {n: cached(args.cache, f"fit-{n}-{tag}", lambda n=n: build(
        reader, path(SOURCES[n][0]), args.n_photos if n == "photos" else args.n_fit, ss.TRAINED, n))[0]
        for n in SOURCES}
    held_all, rough = {}, {}
    for n in SOURCES:
        held_all[n], rough[n] = cached(args.cache, f"held-{n}-{tag}", lambda n=n: build(
            reader, path(SOURCES[n][1]), args.n_held, ss.TRAINED + ss.HELD_OUT, n))
    same = same_pixels(load_images(path(SOURCES["canonical"][1]), workers=settings.decode_workers),
                       load_images(str(args.sources / PNG_TWIN), workers=settings.decode_workers))
    print(f"canonical pixels identical as npz and as PNG files: {same}")
    names = list(SOURCES)
    report = {"png_identical_to_npz": same, "fpr": args.fpr, "hidden": args.hidden, "epochs": args.epochs,
              "trained_on_attacks": args.train,
              "images": {n: {"fit": len(fit_all[n].clean), "held": len(held_all[n].clean)} for n in names},
              "feature_sets": {}, "leave_one_out": {}, "own_calibration": {}, "source_check": {}}
    models = {}
    for set_name, (paths, statistics) in FEATURE_SETS.items():
        fit = {n: columns(ex, paths, statistics) for n, ex in fit_all.items()}
        held = {n: columns(ex, paths, statistics) for n, ex in held_all.items()}
        calibration = {n: ex.subset(slice(0, None, 2)) for n, ex in held.items()}
        measured = {n: ex.subset(slice(1, None, 2)) for n, ex in held.items()}
        runs = {"all sources": names, "mirror only": ["mirror"]}
        for run_name, chosen in runs.items():
            result, model = variant(fit, calibration, measured, chosen, names, args)
            report["feature_sets"].setdefault(set_name, {})[run_name] = result
            models[(set_name, run_name)] = (model, calibration, measured)
            show(f"{set_name}, {run_name}", result)
        if set_name != next(iter(FEATURE_SETS)):
            continue
        for n in names:  # leave each source out of the fit and the threshold
            result, _ = variant(fit, calibration, measured, [m for m in names if m != n], [n], args)
            report["leave_one_out"][n] = result
            show(f"{set_name}, all but {n}", result)
        model = models[(set_name, "all sources")][0]
        for n in names:  # a source's own calibration: its first 1,000 calibration images set its threshold
            own = verdicts.calibrate(model.score(calibration[n].clean[:OWN_CALIBRATION]).numpy(), args.fpr)
            report["own_calibration"][n] = {"images": min(OWN_CALIBRATION, len(calibration[n].clean)),
                                            "threshold": own, **ss.measure(model, own, measured[n])}
        # What the source check sees: the default calibration's colours against each source's, clean and attacked.
        pooled = torch.cat([rough[n]["clean"][0::2] for n in names]).double().numpy()
        mirror_only = rough["mirror"]["clean"][0::2].double().numpy()
        for n in names:
            row = {}
            for key, values in rough[n].items():
                v = values[1::2].double().numpy()
                row[key] = {"default": verdicts.decile_distance(v, np.quantile(pooled, np.linspace(0.1, 0.9, 9))),
                            "mirror": verdicts.decile_distance(v, np.quantile(mirror_only, np.linspace(0.1, 0.9, 9)))}
            report["source_check"][n] = row
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sources.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "sources.md").write_text(render(report))


if __name__ == "__main__":
    main()
