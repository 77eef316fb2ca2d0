"""The size a model reads its images at, and how an image of any size gets there.

Pillow-only (no torch): decoding workers import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

RESIZE_POLICIES = ("shorter-side", "squash")


@dataclass(frozen=True)
class InputSize:
    """A model's input: ``height`` x ``width`` pixels, reached by ``resize``.

    ``squash`` resizes to the exact size (the aspect ratio may change: the
    shipped CIFAR-10 models, whose images are all 32x32). ``shorter-side``
    resizes the shorter side to fit, keeping the aspect ratio, then crops the
    centre, as torchvision's ``Resize(side)`` + ``CenterCrop((height, width))``
    do, with the smallest ``side`` that covers the input (``side = size`` for
    a square input, the usual ``Resize(224)`` + ``CenterCrop(224)``).
    """

    height: int
    width: int
    resize: str = "squash"

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")
        if not (isinstance(self.height, int) and isinstance(self.width, int)) or min(self.height, self.width) < 1:
            raise ValueError(f"an input size is positive whole pixels, got {self.height!r} x {self.width!r}")

    @classmethod
    def of(cls, size: "int | tuple[int, int] | InputSize") -> "InputSize":
        """An :class:`InputSize` from one: an int is a square image squashed to it (the historical ``size``)."""
        if isinstance(size, InputSize):
            return size
        if isinstance(size, int):
            return cls(size, size)
        height, width = size
        return cls(int(height), int(width))

    @property
    def text(self) -> str:
        """``224x224``."""
        return f"{self.height}x{self.width}"

    @property
    def pixels(self) -> int:
        """Pixels per channel of one image."""
        return self.height * self.width

    def as_dict(self) -> dict:
        """For a JSON message or a plan."""
        return {"height": self.height, "width": self.width, "resize": self.resize}

    def draft_box(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a ``width`` x ``height`` JPEG may be decoded at (Pillow's draft mode, which keeps at
        least this size) and still give this input at full resolution, whichever way EXIF turns it afterwards."""
        side = max(self.width, self.height)
        if self.resize == "squash":
            return (side, side)
        scale = side / max(1, min(width, height))
        return (math.ceil(width * scale), math.ceil(height * scale))

    def fit(self, img: Image.Image, resample=Image.Resampling.LANCZOS, reducing_gap: float | None = 3.0) -> Image.Image:
        """``img`` at this size, by this policy (antialiased; the crop rounds as torchvision's ``CenterCrop``)."""
        if self.resize == "squash":
            return img.resize((self.width, self.height), resample, reducing_gap=reducing_gap)
        width, height = img.size
        portrait = width <= height
        short, long_ = (width, height) if portrait else (height, width)
        need_short, need_long = (self.width, self.height) if portrait else (self.height, self.width)
        # torchvision's Resize(side): the shorter side becomes `side`, the longer int(side * long / short). The
        # smallest side whose result covers this input (for a square input, the input's side itself).
        side = max(need_short, math.ceil(need_long * short / long_))
        while int(side * long_ / short) < need_long:
            side += 1
        new = (side, int(side * long_ / short)) if portrait else (int(side * long_ / short), side)
        if new != (width, height):
            img = img.resize(new, resample, reducing_gap=reducing_gap)
        left = int(round((new[0] - self.width) / 2.0))
        top = int(round((new[1] - self.height) / 2.0))
        return img.crop((left, top, left + self.width, top + self.height))


#: The shipped models' input: CIFAR-10's 32x32.
CIFAR = InputSize(32, 32)
