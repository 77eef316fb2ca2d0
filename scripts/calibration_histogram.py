"""The shipped detector's calibration images' suspicion per bin, for the screening page, measured again.

    python scripts/make_sources.py              # the calibration sources' files, if waveshield-out/ lacks them
    python scripts/calibration_histogram.py

``waveshield fit-detector`` now records ``clean_histogram`` (its calibration
sources' clean images, even positions, scored by the detector) in the card
and in ``screening.json``; the shipped detector was fitted before. This
scores the same images the fit calibrated on (each source's first images,
even positions) with the shipped detector, checks that each source's
threshold comes out as the card recorded it, and writes the histogram into
``weights/detector.json`` and ``weights/screening.json``. It refuses to
write anything if a threshold does not reproduce.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.detector.fit import _load  # noqa: E402
from producers.screening.screen import screening_settings  # noqa: E402
from shared.dwt import defences  # noqa: E402
from shared.images.image_set import iter_batches  # noqa: E402
from shared.models.store import ModelStore  # noqa: E402
from shared.screening import verdicts  # noqa: E402
from shared.settings import load as load_settings  # noqa: E402

#: How far a re-measured threshold may sit from the card's (float32 features on another machine).
TOLERANCE = 1e-3


def main() -> int:
    settings = load_settings()
    weights = settings.weights_dir
    card = json.loads((weights / "detector.json").read_text())
    plan = screening_settings(settings)
    store = ModelStore(weights)
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, weights))
    calibrated = card["calibrated_on"]
    scores = []
    for name, source in calibrated["sources"].items():
        n = source["images"] + card["measured_on"]["images"][name]
        x = _load(source["data"], n)[0][0::2]
        assert len(x) == source["images"], (name, len(x))
        found = torch.cat([verdicts.screen_batch(plan, x[s], store.get, options, store.detector)[2]
                           for s in iter_batches(len(x), 256)]).numpy()
        threshold = verdicts.calibrate(found, calibrated["rates"][name])
        recorded = calibrated["thresholds"][name]
        print(f"{name}: {len(x)} images, threshold {threshold:.6f} (card {recorded:.6f})")
        if abs(threshold - recorded) > TOLERANCE:
            print(f"{name}: the threshold does not reproduce; nothing written", file=sys.stderr)
            return 1
        scores.append(found)
    import numpy as np

    histogram = verdicts.suspicion_histogram(np.concatenate(scores))
    for file in ("detector.json", "screening.json"):
        payload = json.loads((weights / file).read_text())
        payload["clean_histogram"] = histogram
        (weights / file).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"clean_histogram of {sum(histogram)} images written to detector.json and screening.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
