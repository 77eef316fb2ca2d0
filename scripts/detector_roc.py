"""The shipped detector's ROC curves, measured again, and its report.json, so that roc.png can be redrawn.

    python scripts/detector_roc.py [--data ../shared/datasets/cifar10-jpeg/test.zip] [--out docs/calibration/detector]
    waveshield report docs/calibration/detector/report.json

``waveshield fit-detector`` draws its ROC from curves it never saved, and
refitting takes an hour. The curves need only the detector, the models and
the first calibration source: the script loads the same images the fit
loaded (the first ``n`` of ``--data``, ``n`` = the card's even plus odd
images of that source), crafts the attacks the ROC shows on the standard
model in the same batches (so PGD's random start is the same), delivers
them in 8 bits and measures them on the odd-positioned images, as
:func:`shared.screening.measures.attack_rows` does. Every other number of
the report comes from the card. Before writing, the detection rate at the
card's threshold is checked against the card's, attack by attack: the
script refuses to write curves that do not reproduce the fit's numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.detector.fit import chosen_paths  # noqa: E402
from producers.detector.report import SOURCE_ATTACKS, SOURCE_COLUMNS, write_report  # noqa: E402
from shared.images.load import load_images  # noqa: E402
from shared.models.store import ModelStore  # noqa: E402
from shared.screening import detector, measures  # noqa: E402
from shared.screening.examples import TRAINED, FeatureReader, examples  # noqa: E402
from shared.settings import load as load_settings  # noqa: E402
from shared.settings import resolve_device  # noqa: E402

#: How far a re-measured detection rate may sit from the card's (float32 features on another machine).
TOLERANCE = 0.005


def rows_from_card(card: dict, first: str) -> list[dict]:
    """The rows of :func:`shared.screening.measures.attack_rows` for ``first``, as the card recorded them."""
    trained = {spec.id for spec in TRAINED}
    fooling = card["per_source"][first]["fooling_images"]
    rows = [{"attack": "clean", "trained_on": True, "fooling_images": 0, "detected": math.nan, "auroc": math.nan,
             **card["screened"]["clean"]}]
    rows += [{"attack": attack, "trained_on": attack in trained, "fooling_images": fooling[attack], "detected": rate,
              "auroc": card["auroc"][attack], **card["screened"][attack]}
             for attack, rate in card["detection_of_fooling"].items()]
    return rows


def adaptive_from_card(card: dict) -> dict:
    """Source -> the rows of :func:`shared.screening.measures.adaptive_rows`, as the card recorded them."""
    return {name: [{"attack": attack, **values} for attack, values in found.items()]
            for name, found in card["adaptive"].items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/cifar10-jpeg/test.zip"),
                        help="the first calibration source's images (the fit's --calibration mirror=...)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/calibration/detector")
    args = parser.parse_args(argv)
    settings = load_settings()
    model, card = detector.load(settings.weights_dir / detector.WEIGHTS_NAME)
    first = next(iter(card["calibrated_on"]["sources"]))
    n = card["calibrated_on"]["sources"][first]["images"] + card["measured_on"]["images"][first]
    started = time.perf_counter()
    image_set = load_images(args.data, limit=n, workers=settings.decode_workers)
    x, labels = image_set.to_tensor(), torch.from_numpy(image_set.labels)
    reading = detector.reads(card)
    store = ModelStore(settings.weights_dir, resolve_device(settings.device))
    reader = FeatureReader(store, settings.weights_dir, reading, chosen_paths(settings, reading["paths"]))
    ex = examples(reader, first, x, labels, SOURCE_ATTACKS,
                  on_attack=lambda a: print(f"{time.perf_counter() - started:6.0f} s  {a}", flush=True))
    measured, curves = measures.attack_rows(model, card["threshold"], ex.subset(slice(1, None, 2)))
    expected = card["per_source"][first]["detected"]
    for row in measured[1:]:
        off = abs(row["detected"] - expected[row["attack"]])
        print(f"{row['attack']}: detected {100 * row['detected']:.2f} %, card {100 * expected[row['attack']]:.2f} %")
        if off > TOLERANCE:
            print(f"{row['attack']}: {100 * off:.2f} points from the card's rate; not written", file=sys.stderr)
            return 1
    curves = {k: v for k, v in curves.items() if k in SOURCE_COLUMNS}
    write_report(args.out, rows_from_card(card, first), adaptive_from_card(card), curves, card, first)
    print(f"{time.perf_counter() - started:.0f} s; wrote {args.out / 'report.json'}, detector.md, roc.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
