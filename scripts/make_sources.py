"""Build the image sources that screening is fitted and measured on, each split into fit and held-out parts.

    python scripts/make_sources.py [--datasets ../shared/datasets] [--out waveshield-out/sources]

Writes, from the canonical CIFAR-10 pixels (never JPEG) and the photographs
that come with scikit-image:

- ``canonical-fit.npz`` / ``canonical-held.npz``: the canonical pixels as
  arrays; ``canonical-held-png/``: the held-out part again as PNG files;
- ``{jpeg-q95-444,jpeg-q50,webp-q90}-{fit,held}.zip``: the same pixels
  encoded so (``<class>/<index>.<suffix>``, so labels travel);
- ``photos-{fit,held}.zip``: 32x32 crops of each group of photographs (and
  of tinted textures), downsampled to several sizes, as they are, turned or
  recoloured (:mod:`shared.images.photo_content`), in each encoding in turn,
  group after group; the two parts hold different crops of the same
  pictures, and each crop's name starts with its group.

The canonical images are training images of the mirror's classifiers (their
JPEG twins), so they measure screening's flags, never classification. The
fit part is data_batch_1 and 2's prefix, the held-out part batches 3 to 5's:
the detector's mirror images (the first 1,000 of each class) include twins
of the first, never of the second.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.images import photo_content  # noqa: E402
from shared.images.encodings import ENCODINGS, SUFFIX, encode  # noqa: E402
from shared.models.network import CIFAR10_CLASSES  # noqa: E402

#: The canonical prefix holds 1,017 images of each of the five training batches.
PER_BATCH = 1017
FIT_BATCHES = 2
#: Crops per group of photographs and short side, in the fit and the held-out part
#: (:func:`shared.images.photo_content.content_crops`).
CROPS = {"fit": 120, "held": 60}
DATE = (2020, 1, 1, 0, 0, 0)  # reproducible zip bytes


def _write_zip(path: Path, files: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=DATE), data)


def _encoded(name: str, crop, encoding: str) -> tuple[str, bytes]:
    """A crop's file in ``encoding``: its name with that encoding's suffix, and its bytes."""
    return str(Path(name).with_suffix(SUFFIX[ENCODINGS[encoding]["format"]])), encode(crop, encoding)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("waveshield-out/sources"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with np.load(args.datasets / "cifar10-canonical-prefix" / "train-prefix.npz") as arrays:
        x, y = arrays["x"], arrays["y"]
    cut = FIT_BATCHES * PER_BATCH
    parts = {"fit": (x[:cut], y[:cut], 0), "held": (x[cut:], y[cut:], cut)}
    for part, (images, labels, offset) in parts.items():
        ids = np.array([f"canonical/{offset + i:05d}" for i in range(len(images))])
        np.savez(args.out / f"canonical-{part}.npz", x=images, y=labels, ids=ids)
        for encoding in ENCODINGS:
            if encoding == "png":
                continue
            suffix = SUFFIX[ENCODINGS[encoding]["format"]]
            _write_zip(args.out / f"{encoding}-{part}.zip",
                       [(f"{CIFAR10_CLASSES[c]}/{offset + i:05d}{suffix}", encode(image, encoding))
                        for i, (image, c) in enumerate(zip(images, labels))])
    png = args.out / "canonical-held-png"
    for i, (image, c) in enumerate(zip(*parts["held"][:2])):
        (png / CIFAR10_CLASSES[c]).mkdir(parents=True, exist_ok=True)
        (png / CIFAR10_CLASSES[c] / f"{cut + i:05d}.png").write_bytes(encode(image, "png"))
    for part, per_size in CROPS.items():
        every = []
        for i, group in enumerate(photo_content.groups()):
            # Each group and part draws from a seed of its own: the parts hold different crops.
            crops = photo_content.content_crops(group, seed=2 * i + (part == "held"), per_size=per_size)
            # Every encoding in turn, crossed with the variants: photographs reach users as PNG, JPEG and WebP.
            files = [_encoded(name, crop, list(ENCODINGS)[k // len(photo_content.VARIANTS) % len(ENCODINGS)])
                     for k, (name, crop) in enumerate(crops)]
            every += files
        _write_zip(args.out / f"photos-{part}.zip", every)
    for path in sorted(args.out.iterdir()):
        size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
        print(f"{path}  {size // 1024} KiB")


if __name__ == "__main__":
    main()
