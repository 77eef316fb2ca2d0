"""Image sets that arrive as arrays: ``.npz`` files (corpus shards among them) and canonical CIFAR-10."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from shared.images.geometry import CIFAR, InputSize
from shared.images.image_set import ImageSet


def load_npz(path, size: int | InputSize, limit, *, name: str | None = None) -> ImageSet:
    """Read ``x`` (uint8, or float in [0, 1] kept as float32; NHWC or NCHW) with optional ``y`` and ``ids``.

    ``path`` is a file's path, or an open binary file named ``name`` (an npz
    inside a folder or a zip); ids are ``NAME[i]``.

    Raises
    ------
    ValueError
        For an unreadable file, a missing ``x``, a bad shape or dtype, NaN or
        values outside [0, 1], or ``y`` / ``ids`` of another length (one line).
    """
    shown = name or Path(path).name
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz:
                raise ValueError(f"{shown}: an npz image set needs an array 'x' (found {', '.join(npz.files) or 'none'})")
            x = npz["x"][:limit]
            y = npz["y"][:limit] if "y" in npz else None
            names = [str(i) for i in npz["ids"][:limit]] if "ids" in npz else None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{shown}: not a readable npz file ({exc})") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim == 4 and x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
        x = x.transpose(0, 2, 3, 1)  # N x C x H x W, as a corpus shard stores it
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{shown}: 'x' must be N x H x W x C or N x C x H x W (C = 1, 3 or 4), got shape {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{shown}: 'x' must be uint8 or float in [0, 1], got {x.dtype}")
        if x.size and not np.isfinite(x).all():
            raise ValueError(f"{shown}: 'x' holds NaN or infinite values")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{shown}: 'x' must be uint8 or float in [0, 1], got values from {x.min()} to {x.max()}")
        x = x.astype(np.float32)  # exact from float16; float64 rounds to the precision the models compute in
    x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]
    geometry = InputSize.of(size)
    if x.shape[1:3] != (geometry.height, geometry.width):
        x = np.stack([_resize(im, geometry) for im in x])
    if y is not None and len(y) != len(x):
        raise ValueError(f"{shown}: 'y' has {len(y)} labels for {len(x)} images")
    if names is not None and len(names) != len(x):
        raise ValueError(f"{shown}: 'ids' has {len(names)} entries for {len(x)} images")
    ids = [f"{shown}[{i}]" + (f":{names[i]}" if names else "") for i in range(len(x))]
    labels = None if y is None else np.asarray(y, np.int64)
    return ImageSet(np.ascontiguousarray(x), labels, ids)


def _resize(image: np.ndarray, geometry: InputSize) -> np.ndarray:
    """One HWC image, uint8 or float32, brought (Lanczos) to ``geometry`` in its own dtype."""
    if image.dtype == np.uint8:
        return np.asarray(geometry.fit(Image.fromarray(image), reducing_gap=None))
    planes = [Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)) for c in range(image.shape[-1])]
    planes = [np.asarray(geometry.fit(p, reducing_gap=None)) for p in planes]  # mode "F": float32
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def load_torchvision_cifar10(split: str, size: int | InputSize, limit, download: bool) -> ImageSet:
    """Canonical CIFAR-10 (``train`` or ``test``) through torchvision, downloaded only when ``download``."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown CIFAR-10 split {split!r}; valid: train, test")
    from torchvision.datasets import CIFAR10

    from shared.settings import load as load_settings

    root = load_settings().data_dir
    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError:
        raise ValueError(
            f"canonical CIFAR-10 is not in {root} (WAVESHIELD_DATA_DIR): fetch it once with "
            f"python -c \"from torchvision.datasets import CIFAR10; CIFAR10('{root}', download=True)\", "
            "or give a folder, zip or npz of labelled images instead (see the README's Data section)"
        ) from None
    x, y = ds.data[:limit], np.asarray(ds.targets[:limit], np.int64)
    if InputSize.of(size) != CIFAR:
        x = np.stack([_resize(im, InputSize.of(size)) for im in x])
    ids = [f"cifar10-{split}[{i}]" for i in range(len(x))]
    return ImageSet(np.ascontiguousarray(x), y, ids)
