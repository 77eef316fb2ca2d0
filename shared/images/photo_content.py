"""Photographic content for the detector: crops of photographs, turned, recoloured, and tinted textures.

A detector learns what clean images look like; CIFAR-10 alone teaches it
one kind of content. These crops widen what it sees, and let a study hold
out whole photographs: every crop of a photograph, in every variant, is
named after its group (``<group>-<variant>-<short side>-<k>.png``), so no
crop of a held-out photograph ever reaches a fit.

The photographs and textures are those scikit-image ships (a test
dependency), read as files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from shared.images.encodings import SHORT_SIDES

#: Every colour photograph scikit-image ships, by group: a stereo pair is one scene, so one group.
PHOTOGRAPHS = {
    "astronaut": ("astronaut.png",),
    "chelsea": ("chelsea.png",),
    "coffee": ("coffee.png",),
    "hubble": ("hubble_deep_field.jpg",),
    "ihc": ("ihc.png",),
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
    "retina": ("retina.jpg",),
    "rocket": ("rocket.jpg",),
}
#: Grey textures, tinted into colour: one more group of content that is neither CIFAR-10 nor a photograph above.
TEXTURES = ("brick.png", "grass.png", "gravel.png")
#: How each crop's picture is varied: as it is, turned, or with its colours jittered.
VARIANTS = ("plain", "turned", "jittered")


def data_folder() -> Path:
    """scikit-image's folder of images."""
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def groups() -> dict[str, tuple[str, ...]]:
    """Group name -> file names: :data:`PHOTOGRAPHS`, then ``textures``."""
    return {**PHOTOGRAPHS, "textures": TEXTURES}


def turned(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``picture`` turned by a quarter turn or by 10 to 40 degrees, cut to the largest upright rectangle inside."""
    if rng.random() < 0.5:
        return picture.transpose([Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                  Image.Transpose.ROTATE_270][rng.integers(3)])
    angle = float(rng.uniform(10, 40)) * (1 if rng.random() < 0.5 else -1)
    w, h = picture.size
    rotated = picture.rotate(angle, resample=Image.BICUBIC, expand=True)
    # The largest axis-aligned rectangle of the turned picture's own pixels (no corners filled in).
    a = np.radians(abs(angle))
    long, short = max(w, h), min(w, h)
    if short <= 2 * np.sin(a) * np.cos(a) * long:
        half = 0.5 * short
        x, y = (half / np.sin(a), half / np.cos(a)) if w >= h else (half / np.cos(a), half / np.sin(a))
    else:
        c2 = np.cos(a) ** 2 - np.sin(a) ** 2
        x, y = (w * np.cos(a) - h * np.sin(a)) / c2, (h * np.cos(a) - w * np.sin(a)) / c2
    cx, cy = rotated.width / 2, rotated.height / 2
    return rotated.crop((int(np.ceil(cx - x / 2)), int(np.ceil(cy - y / 2)), int(cx + x / 2), int(cy + y / 2)))


def jittered(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``picture`` with brightness and contrast 0.7 to 1.3 times, saturation 0.5 to 1.5 times, hue shifted up to 10 %."""
    out = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.7, 1.3))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.3))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.5, 1.5))
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-0.1, 0.1) * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def tinted(grey: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A grey texture in colour: its dark and light ends mapped to two random colours."""
    levels = np.asarray(grey.convert("L"), dtype=np.float64)[..., None] / 255
    dark, light = rng.uniform(0, 0.5, 3), rng.uniform(0.5, 1, 3)
    return Image.fromarray(np.round(255 * (dark + (light - dark) * levels)).astype(np.uint8), "RGB")


def content_crops(group: str, *, seed: int = 0, per_size: int = 120, size: int = 32,
                  short_sides=SHORT_SIDES) -> list[tuple[str, np.ndarray]]:
    """``per_size`` crops of ``size`` x ``size`` pixels of a group's pictures at each short side, varied in turn.

    Each crop draws its picture (of the group's files), its variant (of
    :data:`VARIANTS`, in turn) and its place at random; the picture is
    downsampled (Lanczos) so that its short side is the given one.
    Returns ``(name, HxWx3 uint8)`` pairs named ``<group>-<variant>-<side>-<k>.png``.
    """
    files = groups()[group]
    rng = np.random.default_rng(seed)
    pictures = [Image.open(data_folder() / name) for name in files]
    crops = []
    for side in short_sides:
        for k in range(per_size):
            picture = pictures[rng.integers(len(pictures))]
            picture = tinted(picture, rng) if group == "textures" else picture.convert("RGB")
            variant = VARIANTS[k % len(VARIANTS)]
            if variant == "turned":
                picture = turned(picture, rng)
            elif variant == "jittered":
                picture = jittered(picture, rng)
            scale = side / min(picture.size)
            small = np.asarray(picture.resize((max(size, round(picture.width * scale)),
                                               max(size, round(picture.height * scale))), Image.LANCZOS))
            top, left = rng.integers(0, small.shape[0] - size + 1), rng.integers(0, small.shape[1] - size + 1)
            crops.append((f"{group}-{variant}-{side}-{k:03d}.png", small[top:top + size, left:left + size]))
    return crops


def group_of(item: str) -> str:
    """The group of a crop's name or id (``.../coffee-turned-64-007.png`` -> ``coffee``)."""
    return Path(item).name.split("-", 1)[0]
