"""Screening throughput: the learned detector against the disagreement score, side by side.

What ``waveshield screen --local`` does, timed in one process on the same
images: decoding the files once, then screen_local() with screening.json set
to each score in turn (alternating, best of ``--repeats``). The weights are
the shipped ones, linked into two temporary folders that differ only in
screening.json.

    python benchmarks/bench_screening.py [--n 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from _common import CIFAR_TEST, REPO, machine
from producers.screen import screen_local
from shared import screening
from shared.data import load_images
from shared.settings import load as load_settings


def weights_with(score: str, root: Path) -> Path:
    """A folder of links to the shipped weights whose screening.json selects ``score``."""
    folder = root / score
    folder.mkdir()
    for path in (REPO / "weights").iterdir():
        if path.is_file() and path.name != screening.FILENAME:
            (folder / path.name).symlink_to(path)
    chosen = json.loads((REPO / "weights" / screening.FILENAME).read_text())
    if score == "disagreement":  # the hand-made score's own calibration, kept beside the detector's
        chosen = {**chosen, **chosen.get("disagreement", {})}
    (folder / screening.FILENAME).write_text(json.dumps({**chosen, "score": score}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = CIFAR_TEST if CIFAR_TEST.is_file() else "sample"
    start = time.perf_counter()
    images = load_images(source, limit=args.n)
    decode_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        settings = {score: load_settings({"WAVESHIELD_WEIGHTS_DIR": str(weights_with(score, Path(tmp))),
                                          "WAVESHIELD_DEVICE": "cpu"}) for score in screening.SCORES}
        best = {score: float("inf") for score in screening.SCORES}
        for _ in range(args.repeats):
            for score in screening.SCORES:
                start = time.perf_counter()
                with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
                    records = screen_local(images, settings[score])
                best[score] = min(best[score], time.perf_counter() - start)
                assert len(records) == len(images)
    print(f"# screening, {len(images)} images from {source}; {machine()}")
    print(f"decoding the files: {decode_s:.1f} s ({len(images) / decode_s:.0f} images/s)")
    for score, seconds in best.items():
        print(f"{score:12s} screen_local {seconds:6.1f} s = {len(images) / seconds:6.0f} images/s; "
              f"with decoding {len(images) / (seconds + decode_s):6.0f} images/s")
    ratio = best["disagreement"] / best["detector"]
    whole = (best["disagreement"] + decode_s) / (best["detector"] + decode_s)
    print(f"detector / disagreement images/s: {ratio:.2f} (screening alone), {whole:.2f} (with decoding, as the command)")


if __name__ == "__main__":
    main()
