"""Changes to clean images that are not attacks: what else would a detector flag?

A detector of adversarial images learns what clean images of its training
source look like. These changes move a clean image's pixels the way an
ordinary source might (sensor noise, another JPEG encoder, a resampling)
without any attack, so the share of them flagged shows how far the
detector's notion of "clean" reaches beyond its source.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from shared.images.image_set import quantise


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _from_uint8(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def jpeg(x: torch.Tensor, quality: int, subsampling: int) -> torch.Tensor:
    """Encode each image as a JPEG and decode it (Pillow; ``subsampling`` 0 is 4:4:4, 2 is 4:2:0)."""
    decoded = []
    for image in _to_uint8(x):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
        decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return _from_uint8(np.stack(decoded))


def noise(x: torch.Tensor, kind: str, *, seed: int = 0) -> torch.Tensor:
    """Add noise of one grey level and deliver in 8 bits: ``gaussian`` (sigma 1/255) or ``sign`` (+-1/255 at random)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        delta = torch.randn(x.shape, generator=generator)
    elif kind == "sign":
        delta = torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1
    else:
        raise ValueError(f"unknown noise {kind!r}; valid: gaussian, sign")
    return quantise(x + delta / 255)


def resampled(x: torch.Tensor) -> torch.Tensor:
    """Up to twice the size (bilinear) and back (area averaging), in 8 bits."""
    h, w = x.shape[-2:]
    up = torch.nn.functional.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)
    return quantise(torch.nn.functional.interpolate(up, size=(h, w), mode="area"))


#: Name -> change, in the order a report lists them.
CHANGES = {
    "JPEG again, quality 75, 4:2:0": lambda x: jpeg(x, 75, 2),
    "JPEG again, quality 95, 4:4:4 (no chroma subsampling)": lambda x: jpeg(x, 95, 0),
    "resampled (2x up, bilinear; down, area)": resampled,
    "brighter by 3 grey levels": lambda x: quantise(x + 3 / 255),
    "Gaussian noise, sigma 1 grey level": lambda x: noise(x, "gaussian"),
    "random +-1 grey level on every pixel": lambda x: noise(x, "sign"),
}
