"""Tune each comparison defence to the clean-accuracy cost of the shipped Haar setting, on images no grid uses.

The comparison grid (docs/comparison) sets JPEG, bit depth, the median filter
and random resize-and-pad beside the DWT. For a fair comparison each is set
to cost the standard model what the shipped Haar reconstruction costs it on
clean images, within 1 point where a setting lands there. The grid measures
test images 0-999; the costs here are measured on test images 1,000-4,999.

    python scripts/tune_comparison.py [--data ../shared/datasets/cifar10-jpeg/test.zip] [--out docs/comparison]

Writes ``tuning.json`` and ``tuning.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shared.dwt import defences
from shared.images.load import load_images
from shared.models import training
from shared.models.store import ModelStore

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = {
    "jpeg": [f"jpeg:quality={q}" for q in (90, 75, 60, 50, 40, 30, 25, 20, 15, 10)],
    "bit-depth": [f"bit-depth:bits={b}" for b in (6, 5, 4, 3, 2)],
    "median": [f"median:size={s}" for s in (2, 3)],
    "resize-pad": [f"resize-pad:shrink={f}" for f in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "cifar10-jpeg" / "test.zip"))
    parser.add_argument("--first", type=int, default=1000, help="first test image used (the grid uses those before)")
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--weights", default=str(REPO / "weights"))
    parser.add_argument("--out", default=str(REPO / "docs" / "comparison"))
    args = parser.parse_args()
    started = time.perf_counter()
    image_set = load_images(args.data, limit=args.first + args.count)
    x = image_set.to_tensor()[args.first:]
    y = torch.from_numpy(image_set.labels[args.first:])
    model = ModelStore(args.weights).get("standard")

    def accuracy(name: str | None) -> float:
        options = None if name is None else defences.get(name, args.weights)
        return 100 * training.accuracy(model, x, y, batch_size=500,
                                       defence=None if options is None else lambda t: defences.apply(t, options))

    raw = accuracy(None)
    target = raw - accuracy("haar")
    rows, chosen = [], {}
    for kind, names in CANDIDATES.items():
        best = None
        for name in names:
            cost = raw - accuracy(name)
            rows.append((name, cost))
            if best is None or abs(cost - target) < abs(best[1] - target):
                best = (name, cost)
        chosen[kind] = {"defence": best[0], "cost": round(best[1], 2), "within_1_point": abs(best[1] - target) <= 1}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"data": args.data, "images": f"test images {args.first}-{args.first + len(x) - 1}",
               "model": "standard", "raw_accuracy": round(raw, 2), "haar_cost": round(target, 2),
               "costs": {name: round(cost, 2) for name, cost in rows}, "chosen": chosen,
               "seconds": round(time.perf_counter() - started, 1)}
    (out / "tuning.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# Comparison defences tuned to the Haar setting's clean cost\n",
             f"The standard model on {summary['images']} of `{Path(args.data).name}` ({len(x)} images, none of "
             f"them in the comparison grid): {raw:.2f} % raw; the shipped Haar reconstruction costs it "
             f"**{target:.2f} points**. Each kind's setting closest to that cost is chosen "
             "(`python scripts/tune_comparison.py`).\n",
             "| defence | clean cost (points) | chosen |", "| --- | --- | --- |"]
    picked = {c["defence"] for c in chosen.values()}
    lines += [f"| {name} | {cost:.2f} | {'yes' if name in picked else ''} |" for name, cost in rows]
    lines.append("")
    for kind, c in chosen.items():
        if not c["within_1_point"]:
            lines.append(f"- {kind}: no setting lands within 1 point of {target:.2f}; the closest, "
                         f"{c['defence']}, costs {c['cost']:.2f}.")
    (out / "tuning.md").write_text("\n".join(lines) + "\n")
    print((out / "tuning.md").read_text())


if __name__ == "__main__":
    main()
