"""Image sets: every source a user may hand in, decoded to one NHWC batch.

Encoded image files decode to uint8. A float ``.npz`` (an adversarial corpus
shard, say) stays float32: rounding it to 8 bits would erase a perturbation
of less than 1/255, and the set evaluated would not be the set generated.

``load_images`` reads a directory (class sub-folders = labels, or flat), a
``.zip`` of the same layouts (read in place, never extracted), a ``.npz``
(``x`` uint8 or float in [0, 1], NHWC or NCHW as a corpus shard stores it;
optional ``y`` labels and ``ids``), a single image file, a label list
(``.csv`` of ``path,label`` or ``.jsonl``, :mod:`.label_lists`), or canonical CIFAR-10 through torchvision (``cifar10:test`` /
``cifar10:train``; downloaded only when asked). An item that cannot be read
becomes an :class:`ItemError` and the rest of the set goes on; a class folder
or label that names no class of the model is refused in one line, and an
empty class folder is a warning.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from shared.images.arrays import load_npz, load_torchvision_cifar10
from shared.images.decode import DECODE_CHUNK, decode_image
from shared.images.geometry import InputSize
from shared.images.image_set import CIFAR10_CLASSES, ImageSet, ItemError, iter_batches, to_float_nchw
from shared.images.intake import NOT_A_ZIP, SAMPLE_ZIP, decode_items, iter_chunks, iter_items, stack_images
from shared.images.label_lists import is_label_list, read_label_list
from shared.images.members import Member, file_member, folder_members, is_skipped
from shared.images.zips import zip_members
from shared.settings import load as load_settings

log = logging.getLogger(__name__)

__all__ = ["ImageSet", "ItemError", "decode_image", "iter_batches", "load_images", "load_many", "to_float_nchw"]

def load_images(source, *, size: int | InputSize = 32, classes=None, limit: int | None = None, download: bool = False,
                workers: int = 1) -> ImageSet:
    """Read an image set from a directory, zip, npz, image file or ``cifar10:SPLIT``.

    Parameters
    ----------
    source : str or Path
        What to read; ``"sample"`` is the embedded 1,000-image demo set.
    size : int or InputSize
        Every image is converted to RGB and brought (antialiased) to this size: an int
        resizes to size x size, an :class:`InputSize` by its own policy.
    classes : sequence of str, optional
        Class names that folder names map to. Default: CIFAR-10's names when
        every folder is one of them, else the sorted folder names.
    limit : int, optional
        Read at most this many items (in a stable order, round-robin over
        classes so a limited set stays balanced).
    download : bool
        Allow torchvision to download canonical CIFAR-10 when it is missing.
    workers : int
        Decoding processes (see :mod:`shared.images.decode`); 1 decodes in this
        process. The commands pass ``WAVESHIELD_DECODE_WORKERS``.

    Returns
    -------
    ImageSet

    Raises
    ------
    ValueError
        If the source does not exist, is a ``.zip`` file that is not a zip archive, or is of an unknown kind
        (one clear line).
    """
    size = InputSize.of(size)  # an int: a square image, squashed (the shipped models' 32)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit is a number of images (at least 1), got {limit!r}")
    text = str(source)
    if text == "sample":
        source = text = str(SAMPLE_ZIP)
    if text.startswith("cifar10:"):
        return load_torchvision_cifar10(text.split(":", 1)[1], size, limit, download)
    path = Path(source)
    max_bytes = load_settings().max_item_bytes
    if path.is_dir():
        members = folder_members(path, max_bytes)
        _warn_of_empty_class_folders(path, members)
        return _from_members(members, size, classes, limit, workers)
    if not path.is_file():
        raise ValueError(f"no such file or directory: {path}")
    if is_label_list(path):
        members, labels = read_label_list(path, max_bytes)
        return _from_members(members, size, classes, limit, workers, labels=labels)
    if path.suffix.lower() == ".npz":
        return load_npz(path, size, limit)
    if zipfile.is_zipfile(path):
        members = sorted(zip_members(path, max_bytes), key=lambda m: m.name)
        return _from_members(members, size, classes, limit, workers)
    if path.suffix.lower() == ".zip":  # the wrong file, named: one line, not a set of one unreadable "image"
        raise ValueError(f"{path}: {NOT_A_ZIP}")
    return _from_members([file_member(path, max_bytes)], size, classes, limit, workers)


def _from_members(members: list[Member], size, classes, limit, workers: int = 1, labels=None) -> ImageSet:
    """Decode the members; class sub-folders (or ``labels``, one class name per member) become labels, an ``.npz``
    member adds its rows.

    Encoded images are decoded ``workers`` at a time, :data:`~shared.images.decode.DECODE_CHUNK`
    items after another (:func:`shared.images.intake.decode_items`), so that memory
    holds one chunk's encoded bytes besides the decoded set.
    """
    folders = list(labels) if labels is not None else [m.name.split("/")[-2] if "/" in m.name else None
                                                        for m in members]
    labelled = bool(members) and all(f is not None for f in folders)
    names = _class_names(sorted(set(folders)), classes) if labelled else list(classes or CIFAR10_CLASSES)
    if labelled and (unknown := sorted(set(folders) - set(names))):
        what = "labels" if labels is not None else "class folders"
        raise ValueError(f"{what} {', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} name no "
                         f"class of the model (its classes: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''})")
    if limit is not None:
        members, folders = _balanced_prefix(members, folders, limit)
    items, item_labels = [], []  # the labels ride along with the items
    for member, folder in zip(members, folders):
        label = (names.index(folder) if folder in names else -1) if labelled else None
        if not member.name.lower().endswith(".npz"):
            items.append(("member", member.name, member))
            item_labels.append(label)
            continue
        try:  # an array set among the files: its rows are items
            rows = load_npz(io.BytesIO(member.read()), size, None, name=member.name)
        except (ValueError, OSError, zipfile.BadZipFile, RuntimeError) as exc:
            items.append(("error", member.name, str(exc) or type(exc).__name__))
            item_labels.append(None)
            continue
        items += [("row", item, image) for item, image in zip(rows.ids, rows.images)]
        item_labels += list(rows.labels) if rows.labels is not None else [label] * len(rows)
    images, labels, ids, errors = [], [], [], []
    for chunk in iter_batches(len(items), DECODE_CHUNK):
        group = items[chunk]
        for (_, item, _), label, (image, reason) in zip(group, item_labels[chunk], decode_items(group, size, workers)):
            if image is None:
                errors.append(ItemError(item, reason))
                continue
            images.append(image)
            ids.append(item)
            labels.append(label)
    return ImageSet(stack_images(images, size), np.asarray(labels, np.int64) if labelled else None, ids, errors,
                    names)


def _warn_of_empty_class_folders(root: Path, members: list[Member]) -> None:
    """A class sub-folder without a single image is a line of its own, not a class that silently has none."""
    if not members or any("/" not in m.name for m in members):
        return  # a flat folder: no classes
    seen = {m.name.split("/")[0] for m in members}
    empty = sorted(e.name for e in root.iterdir() if e.is_dir() and e.name not in seen and not is_skipped(e.name))
    if empty:
        log.warning("%s: class folder%s %s hold%s no images", root, "s" if len(empty) > 1 else "",
                    ", ".join(empty), "" if len(empty) > 1 else "s")


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


def load_many(sources, *, size: int | InputSize = 32, workers: int = 1) -> ImageSet:
    """Read several sources (folders, zips, npz files, image files or glob patterns) as one unlabelled set.

    The in-memory form of :func:`shared.images.intake.iter_items`: ids are prefixed
    with their source so they stay unique; a pattern that matches nothing,
    a path that does not exist or a ``.zip`` file that is not one becomes an
    error record (``--watch`` reads files that may vanish before they are
    read; a command refuses the inputs a user named with
    :func:`shared.images.intake.check_inputs` first).
    """
    chunks = list(iter_chunks(iter_items(sources, size=size), DECODE_CHUNK, size=size, workers=workers))
    images = stack_images([image for c in chunks for image in c.images], size)
    return ImageSet(images, None, [i for c in chunks for i in c.ids], [e for c in chunks for e in c.errors])
