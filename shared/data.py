"""Image sets: every source a user may hand in, decoded to one NHWC batch.

Encoded image files decode to uint8. A float ``.npz`` (an adversarial corpus
shard, say) stays float32: rounding it to 8 bits would erase a perturbation
of less than 1/255, and the set evaluated would not be the set generated.

``load_images`` reads a directory (class sub-folders = labels, or flat), a
``.zip`` of the same layouts (read in place, never extracted), a ``.npz``
(``x`` uint8 or float in [0, 1], NHWC or NCHW as a corpus shard stores it;
optional ``y`` labels and ``ids``), a single image file,
or canonical CIFAR-10 through torchvision (``cifar10:test`` /
``cifar10:train``; downloaded only when asked). An item that cannot be read
becomes an :class:`ItemError` and the rest of the set goes on.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .array_sources import load_npz, load_torchvision_cifar10
from .image_set import ImageSet, ItemError, iter_batches, to_float_nchw
from .members import Member, archive_kind, file_member, folder_members, zip_members
from .models import CIFAR10_CLASSES
from .settings import load as load_settings

__all__ = ["ImageSet", "ItemError", "decode_image", "iter_batches", "load_images", "load_many", "to_float_nchw"]

#: Where the embedded demo set lives: 100 test images per CIFAR-10 class.
SAMPLE_ZIP = Path(__file__).resolve().parent / "assets" / "cifar10-test-sample.zip"


def load_images(source, *, size: int = 32, classes=None, limit: int | None = None, download: bool = False) -> ImageSet:
    """Read an image set from a directory, zip, npz, image file or ``cifar10:SPLIT``.

    Parameters
    ----------
    source : str or Path
        What to read; ``"sample"`` is the embedded 1,000-image demo set.
    size : int
        Every image is converted to RGB and resized (antialiased) to size x size.
    classes : sequence of str, optional
        Class names that folder names map to. Default: CIFAR-10's names when
        every folder is one of them, else the sorted folder names.
    limit : int, optional
        Read at most this many items (in a stable order, round-robin over
        classes so a limited set stays balanced).
    download : bool
        Allow torchvision to download canonical CIFAR-10 when it is missing.

    Returns
    -------
    ImageSet

    Raises
    ------
    ValueError
        If the source does not exist or is of an unknown kind (one clear line).
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    text = str(source)
    if text == "sample":
        source = text = str(SAMPLE_ZIP)
    if text.startswith("cifar10:"):
        return load_torchvision_cifar10(text.split(":", 1)[1], size, limit, download)
    path = Path(source)
    max_bytes = load_settings().max_item_bytes
    if path.is_dir():
        return _from_members(folder_members(path, max_bytes), size, classes, limit)
    if not path.is_file():
        raise ValueError(f"no such file or directory: {path}")
    if path.suffix.lower() == ".npz":
        return load_npz(path, size, limit)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return _from_members(zip_members(archive, max_bytes), size, classes, limit)
    return _from_members([file_member(path, max_bytes)], size, classes, limit)


def decode_image(data: bytes, size: int = 32) -> np.ndarray:
    """Decode one encoded image to a size x size x 3 uint8 RGB array.

    Any format and mode Pillow reads is accepted: the first frame of an
    animation, EXIF orientation applied, 16-bit and float scaled to 8 bits,
    transparency composited on white, CMYK/palette/LA converted.

    Raises
    ------
    ValueError
        With the reason, if the bytes are not a readable image or exceed
        Pillow's decompression-bomb limit.
    """
    if not data:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its pixel limit and raises above;
            # treat both as a bomb so no oversized image is ever decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.seek(0)
                img.draft("RGB", (size, size))  # JPEG: decode at reduced scale
                rgb = _to_rgb(ImageOps.exif_transpose(img))
                rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
                return np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"decompression bomb refused: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ValueError("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow reports truncated or corrupt data with any of these.
        raise ValueError(f"unreadable image: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB without clipping high bit depths."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and arr.max(initial=0) <= 1.0 else (65535.0 if arr.max(initial=0) > 255 else 255.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def _from_members(members: list[Member], size, classes, limit) -> ImageSet:
    """Decode the members; class sub-folders become labels, an ``.npz`` member adds its rows."""
    folders = [m.name.split("/")[-2] if "/" in m.name else None for m in members]
    labelled = bool(members) and all(f is not None for f in folders)
    names = _class_names(sorted(set(folders)), classes) if labelled else list(classes or CIFAR10_CLASSES)
    if limit is not None:
        members, folders = _balanced_prefix(members, folders, limit)
    images, labels, ids, errors = [], [], [], []
    for member, folder in zip(members, folders):
        label = (names.index(folder) if folder in names else -1) if labelled else None
        try:
            data = member.read()
            if member.name.lower().endswith(".npz"):  # an array set among the files: its rows are items
                part = load_npz(io.BytesIO(data), size, None, name=member.name)
                images += list(part.images)
                ids += part.ids
                labels += list(part.labels) if part.labels is not None else [label] * len(part)
                continue
            if kind := archive_kind(data):
                raise ValueError(f"a nested {kind} archive is not read: unpack it, or pass it as a source of its own")
            images.append(decode_image(data, size))
        except (ValueError, OSError, zipfile.BadZipFile, RuntimeError) as exc:
            errors.append(ItemError(member.name, str(exc) or type(exc).__name__))
            continue
        ids.append(member.name)
        labels.append(label)
    if any(i.dtype != np.uint8 for i in images):  # a float array set among them: all float, none rounded
        images = [i.astype(np.float32) / np.float32(255) if i.dtype == np.uint8 else i for i in images]
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return ImageSet(stacked, np.asarray(labels, np.int64) if labelled else None, ids, errors, names)


def _class_names(folders, classes):
    if classes is not None:
        return list(classes)
    if set(folders) <= set(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return folders


def _balanced_prefix(members, folders, limit):
    """The first ``limit`` items taken round-robin over folders, in order."""
    by_folder: dict = {}
    for member, folder in zip(members, folders):
        by_folder.setdefault(folder, []).append(member)
    picked, keys = [], sorted(by_folder, key=str)
    for i in range(max((len(v) for v in by_folder.values()), default=0)):
        for k in keys:
            if i < len(by_folder[k]) and len(picked) < limit:
                picked.append((by_folder[k][i], k))
    picked.sort(key=lambda mf: mf[0].name)
    return [m for m, _ in picked], [f for _, f in picked]


def load_many(sources, *, size: int = 32) -> ImageSet:
    """Read several sources (folders, zips, npz files, image files or glob patterns) as one unlabelled set.

    Ids are prefixed with their source so they stay unique; a pattern that
    matches nothing, or a path that does not exist, becomes an error record.
    """
    import glob

    parts, errors = [], []
    for source in sources:
        text = str(source)
        if text == "sample":
            text = str(SAMPLE_ZIP)
        matches = sorted(glob.glob(text, recursive=True)) if glob.has_magic(text) else [text]
        if not matches:
            errors.append(ItemError(text, "no file matches this pattern"))
        for match in matches:
            path = Path(match)
            if not path.exists():
                errors.append(ItemError(match, "no such file or directory"))
                continue
            part = load_images(path, size=size)
            prefix = match.rstrip("/") + "/" if path.is_dir() or zipfile.is_zipfile(path) else ""
            part.ids = [prefix + i if prefix else i if path.suffix == ".npz" else match for i in part.ids]
            errors += [ItemError(prefix + e.id if prefix else match, e.reason) for e in part.errors]
            parts.append(part)
    images = [p.images for p in parts if len(p)]
    if len({i.dtype for i in images}) > 1:  # 8-bit and float sources together: all float, none rounded
        images = [i.astype(np.float32) / np.float32(255) if i.dtype == np.uint8 else i for i in images]
    return ImageSet(np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8), None,
                    [i for p in parts for i in p.ids], errors)
