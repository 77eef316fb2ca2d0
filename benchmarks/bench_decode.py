"""Photographs into the producer: its decoding against one process looping over decode_image, at the margin.

Writes ``--n`` 1024x768 JPEG photographs (crops of scikit-image's colour
photographs, upscaled, at several qualities) into a temporary folder, then
times, alternating and best of ``--repeats``, reading the first ``--base``
and all ``--n`` of them two ways: ``load_images`` as ``waveshield screen``
does (its decoding workers, WAVESHIELD_DECODE_WORKERS), and one process
reading each file and calling ``decode_image`` on it. The rate at the margin,
(n - base) / (time(n) - time(base)), leaves start-up out.

    python benchmarks/bench_decode.py [--n 5000] [--base 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine
from shared.images.load import decode_image, load_images
from shared.settings import load as load_settings


def photographs(folder: Path, n: int) -> list[Path]:
    import skimage

    data = Path(skimage.__file__).resolve().parent / "data"
    photos = [Image.open(data / name).convert("RGB") for name in
              ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        scale = 1024 / min(photo.size) * rng.uniform(1.0, 1.5)
        big = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BILINEAR)
        left, top = rng.integers(0, big.width - 1024 + 1), rng.integers(0, big.height - 768 + 1)
        path = folder / f"{i:05d}.jpg"
        big.crop((left, top, left + 1024, top + 768)).save(path, quality=int(rng.integers(70, 96)))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--base", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"# decoding {args.base} and {args.n} photographs (1024x768 JPEG); {machine()}; "
          f"decoding workers: {load_settings().decode_workers}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = photographs(Path(tmp), args.n)
        mib = sum(p.stat().st_size for p in paths) / 2 ** 20
        print(f"{args.n} files, {mib:.0f} MiB")
        best = {}

        def loop(count):
            return np.stack([decode_image(p.read_bytes()) for p in paths[:count]])

        def producer(count):
            return load_images(tmp, limit=count, workers=load_settings().decode_workers).images

        for _ in range(args.repeats):
            for name, fn in (("one process, decode_image", loop), ("load_images (the producer)", producer)):
                for count in (args.base, args.n):
                    start = time.perf_counter()
                    images = fn(count)
                    elapsed = time.perf_counter() - start
                    assert len(images) == count
                    best[name, count] = min(best.get((name, count), float("inf")), elapsed)
        margin = {}
        for name in ("one process, decode_image", "load_images (the producer)"):
            margin[name] = (args.n - args.base) / (best[name, args.n] - best[name, args.base])
            print(f"{name:>28}: {best[name, args.base]:6.2f} s for {args.base}, {best[name, args.n]:6.2f} s for "
                  f"{args.n}; at the margin {margin[name]:6.0f} images/s")
        print(f"producer / loop at the margin: {margin['load_images (the producer)'] / margin['one process, decode_image']:.2f}")


if __name__ == "__main__":
    main()
