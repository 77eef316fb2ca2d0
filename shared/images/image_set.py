"""A decoded image set, the float tensor the models take from it, and CIFAR-10's class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: CIFAR-10's classes, in label order: the names a set without class folders, and the shipped models, use.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ItemError:
    """An item of a set that could not be read, and why."""

    id: str
    reason: str


@dataclass
class ImageSet:
    """A decoded image set.

    Attributes
    ----------
    images : numpy.ndarray
        N x size x size x 3 (NHWC, RGB): uint8, or float32 in [0, 1] for a
        float source, kept at its precision.
    labels : numpy.ndarray or None
        int64 indices into ``classes``, or None for an unlabelled set.
    ids : list of str
        One id per image (path inside the source, or ``file.npz[i]``).
    errors : list of ItemError
        Items that could not be read; they are not in ``images``.
    classes : list of str
        Class names the labels index.
    """

    images: np.ndarray
    labels: np.ndarray | None
    ids: list[str]
    errors: list[ItemError] = field(default_factory=list)
    classes: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))

    def __len__(self) -> int:
        return len(self.images)

    def to_tensor(self):
        """The images as a float32 N x 3 x H x W torch tensor in [0, 1]."""
        return to_float_nchw(self.images)


def to_float_nchw(images: np.ndarray, device="cpu"):
    """A batch of NHWC images (uint8, or float32 in [0, 1]) as a float32 NCHW torch tensor in [0, 1].

    uint8 is divided by 255; float32 passes unchanged, so a perturbation
    finer than one 8-bit level survives.

    Raises
    ------
    ValueError
        For another dtype.
    """
    import torch

    if images.dtype not in (np.uint8, np.float32):
        raise ValueError(f"images must be uint8 or float32 NHWC, got {images.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
    return (x.float().div_(255.0) if images.dtype == np.uint8 else x).contiguous()


def quantise(x):
    """A float tensor in [0, 1] to whole grey levels and back, as a sender delivers an image in 8 bits.

    An eps under 1/255 becomes one grey level, or none.
    """
    return x.clamp(0, 1).mul(255).round().div(255)


def iter_batches(n: int, batch_size: int):
    """Yield ``slice`` objects that cover ``range(n)`` in batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
