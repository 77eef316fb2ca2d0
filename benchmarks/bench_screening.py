"""Screening throughput: the learned detector against the disagreement score, side by side.

What ``waveshield screen --local`` does, timed in one process on the same
images: decoding the files once, then screen_local() with screening.json set
to each score in turn (alternating, best of ``--repeats``). The weights are
the shipped ones, linked into temporary folders that differ only in
screening.json; ``--detector DIR`` adds the detector fitted into another
weights folder (``fit-detector --paths ...``, say).

    python benchmarks/bench_screening.py [--n 10000] [--repeats 3] [--detector DIR]
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
from producers.screening.screen import screen_local
from shared.screening import config as screening_config
from shared.images.load import load_images
from shared.settings import load as load_settings


def weights_with(score: str, root: Path, source: Path = REPO / "weights", name: str | None = None) -> Path:
    """A folder of links to the weights in ``source`` whose screening.json selects ``score``."""
    folder = root / (name or score)
    folder.mkdir()
    for path in source.iterdir():
        if path.is_file() and path.name != screening_config.FILENAME:
            (folder / path.name).symlink_to(path.resolve())
    chosen = json.loads((source / screening_config.FILENAME).read_text())
    if score == "disagreement":  # the hand-made score's own calibration, kept beside the detector's
        chosen = {**chosen, **chosen.get("disagreement", {})}
    (folder / screening_config.FILENAME).write_text(json.dumps({**chosen, "score": score}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detector", type=Path, default=None, help="Another weights folder with a detector.")
    args = parser.parse_args()
    source = CIFAR_TEST if CIFAR_TEST.is_file() else "sample"
    start = time.perf_counter()
    images = load_images(source, limit=args.n, workers=load_settings().decode_workers)
    decode_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        folders = {score: weights_with(score, Path(tmp)) for score in screening_config.SCORES}
        if args.detector:
            paths = json.loads((args.detector / "detector.json").read_text())["paths"]
            folders[f"detector on {len(paths)} paths"] = weights_with("detector", Path(tmp), args.detector, "other")
        settings = {k: load_settings({"WAVESHIELD_WEIGHTS_DIR": str(v), "WAVESHIELD_DEVICE": "cpu"})
                    for k, v in folders.items()}
        best = {k: float("inf") for k in settings}
        for _ in range(args.repeats):
            for k in settings:
                start = time.perf_counter()
                with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
                    records = screen_local(images, settings[k])
                best[k] = min(best[k], time.perf_counter() - start)
                assert len(records) == len(images)
    print(f"# screening, {len(images)} images from {source}; {machine()}")
    print(f"decoding the files: {decode_s:.1f} s ({len(images) / decode_s:.0f} images/s)")
    for k, seconds in best.items():
        print(f"{k:22s} screen_local {seconds:6.1f} s = {len(images) / seconds:6.0f} images/s; "
              f"with decoding {len(images) / (seconds + decode_s):6.0f} images/s")
    for k in best:
        if k != "disagreement":
            print(f"{k} / disagreement images/s: {best['disagreement'] / best[k]:.2f} (screening alone), "
                  f"{(best['disagreement'] + decode_s) / (best[k] + decode_s):.2f} (with decoding, as the command)")


if __name__ == "__main__":
    main()
