"""Image sources: how a set of images was encoded, and what that does to their pixels.

Screening's pixel statistics see the encoding as well as any attack: a
JPEG with subsampled chroma has smooth colour differences, a PNG of a
camera's pixels or a render does not. Measuring screening per source
(``scripts/make_sources.py`` builds them) needs the same images in several
encodings, and one number per image that says how rough its colours are.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: Encoding name -> Pillow ``save`` arguments. ``png`` is lossless: the pixels stay as they were.
ENCODINGS = {
    "png": {"format": "PNG"},
    "jpeg-q95-444": {"format": "JPEG", "quality": 95, "subsampling": 0},
    "jpeg-q50": {"format": "JPEG", "quality": 50},  # Pillow's default chroma subsampling, 4:2:0
    "webp-q90": {"format": "WEBP", "quality": 90},
}
#: File suffix per Pillow format.
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def encode(image: np.ndarray, encoding: str) -> bytes:
    """One HxWx3 uint8 image as the bytes of a file in ``encoding`` (:data:`ENCODINGS`)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, **ENCODINGS[encoding])
    return buffer.getvalue()


def reencode(images: np.ndarray, encoding: str) -> np.ndarray:
    """NxHxWx3 uint8 images, each encoded in ``encoding`` and decoded again."""
    return np.stack([np.asarray(Image.open(io.BytesIO(encode(image, encoding))).convert("RGB")) for image in images])


def colour_roughness(x: torch.Tensor) -> torch.Tensor:
    """(N,) how rough an image's colours are against its detail: log((colour step + 0.5) / (luminance step + 0.5)).

    A step is the absolute change, in grey levels, from a pixel to its right
    or lower neighbour, averaged over the image: of the colour differences
    (red minus green, green minus blue) for the numerator, of the mean of
    the three channels for the denominator. A JPEG or WebP with subsampled
    chroma has smooth colours for its detail (low); canonical pixels,
    photographs and JPEGs without subsampling do not (higher). An attack's
    colour noise raises it too, so it cannot tell an attacked set from a new
    source; the screening guard reads :mod:`shared.images.coarse` instead.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"colour roughness needs (N, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    levels = (x.detach().float().clamp(0, 1) * 255).round()
    colour = torch.stack([levels[:, 0] - levels[:, 1], levels[:, 1] - levels[:, 2]], 1)
    luminance = levels.mean(1, keepdim=True)

    def mean_step(t):
        return torch.cat([t.diff(dim=-1).abs().flatten(1), t.diff(dim=-2).abs().flatten(1)], 1).mean(1)

    return torch.log((mean_step(colour) + 0.5) / (mean_step(luminance) + 0.5))


#: Short sides photographs are downsampled to before :func:`photo_crops` cuts them.
SHORT_SIDES = (48, 64, 96, 128, 192)


def photo_crops(paths: list[Path], *, seed: int = 0, per_size: int = 140, size: int = 32,
                short_sides=SHORT_SIDES) -> list[tuple[str, np.ndarray]]:
    """``size`` x ``size`` crops at random places of each photograph, downsampled (Lanczos) to each short side.

    Returns ``(name, HxWx3 uint8)`` pairs named ``<photo>-<short side>-<k>.png``.
    """
    rng = np.random.default_rng(seed)
    crops = []
    for path in paths:
        photo = Image.open(path).convert("RGB")
        for side in short_sides:
            scale = side / min(photo.size)
            small = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS))
            for k in range(per_size):
                top, left = rng.integers(0, small.shape[0] - size + 1), rng.integers(0, small.shape[1] - size + 1)
                crops.append((f"{Path(path).stem}-{side}-{k:03d}.png", small[top:top + size, left:left + size]))
    return crops
