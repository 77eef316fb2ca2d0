"""Streaming intake: the items of many sources, read and decoded one chunk at a time.

:func:`iter_items` walks the sources lazily (folders one directory at a time,
zip members in order, the rows of ``.npz`` files) and reads nothing;
:func:`iter_chunks` reads and decodes ``batch_size`` items at a time. Memory
holds one chunk (and what :func:`prefetch` keeps ready), however large the
input. Every item ends in a chunk as an image or as an error, in the same
order on every run, so an interrupted intake resumes by skipping the items
it already counted (``skip``), without reading them.
"""

from __future__ import annotations

import glob
import queue
import threading
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from shared.images.arrays import load_npz
from shared.images.decode import DECODE_CHUNK_BYTES, decode_all
from shared.images.geometry import InputSize
from shared.images.image_set import ItemError
from shared.images.members import Member, archive_kind, file_member, walk_folder
from shared.images.zips import zip_members

#: The embedded demo set (``"sample"`` as a source): 100 test images per CIFAR-10 class.
SAMPLE_ZIP = Path(__file__).resolve().parent / "assets" / "cifar10-test-sample.zip"

# An item: ("member", id, Member) to read and decode, ("row", id, array) already decoded, or ("error", id, reason).
Item = tuple


@dataclass
class Chunk:
    """Consecutive items of an intake, decoded.

    Attributes
    ----------
    index : int
        Its place in the intake: chunk ``i`` holds items ``i * batch_size`` onwards.
    ids : list of str
        One per image.
    images : numpy.ndarray
        N x H x W x 3 (the input size): uint8, or float32 when a float array set is among them.
    errors : list of ItemError
        The items that could not be read.
    error_at : list of int, optional
        Where each of ``errors`` stood among the chunk's items (0 is its
        first item), so that records come out in the items' order; None
        when unknown (a set already in memory), the errors then follow the
        images.
    """

    index: int
    ids: list[str]
    images: np.ndarray
    errors: list[ItemError]
    error_at: list[int] | None = None

    @property
    def items(self) -> int:
        """Items this chunk consumed: its images and its errors."""
        return len(self.ids) + len(self.errors)


#: Why a named input cannot be read at all: the reason of its error item, or of the refusal of :func:`check_inputs`.
NO_MATCH = "no file matches this pattern"
NO_SUCH_PATH = "no such file or directory"
NOT_A_ZIP = "not a zip archive"


def check_inputs(sources: Iterable) -> None:
    """Refuse a named input that cannot be read at all, before anything is read or any job starts.

    A path that does not exist, a glob pattern that matches nothing and a
    file named ``.zip`` that is not a zip archive are a user's mistake (a
    typo, the wrong file), which a script must be able to catch. What
    :func:`iter_items` meets later (an input gone by the time it is read,
    an unreadable item inside an input) stays an error item.

    Raises
    ------
    ValueError
        Naming the first such input and why, in one line.
    """
    for source in sources:
        text = _source_text(source)
        if _is_pattern(text):
            if next(glob.iglob(text, recursive=True), None) is None:  # the first match is enough
                raise ValueError(f"{text}: {NO_MATCH}")
        elif not Path(text).exists():
            raise ValueError(f"{text}: {NO_SUCH_PATH}")
        elif _not_a_zip(Path(text)):
            raise ValueError(f"{text}: {NOT_A_ZIP}")


def iter_items(sources: Iterable, *, size: int | InputSize = 32, max_bytes: int | None = None) -> Iterator[Item]:
    """The items of folders, zips, npz files, image files and glob patterns, lazily, in a stable order.

    Ids are prefixed with their source (``DIR/name``, ``ZIP/member``) so they
    stay unique; an npz file's rows are ``NAME.npz[i]``. A pattern that
    matches nothing, a path that does not exist, a ``.zip`` file that is not
    a zip archive or an unreadable npz file is one error item (a command
    refuses the inputs it was named first: :func:`check_inputs`).
    """
    from shared.settings import load as load_settings

    max_bytes = max_bytes or load_settings().max_item_bytes
    for source in sources:
        text = _source_text(source)
        matches = sorted(glob.glob(text, recursive=True)) if _is_pattern(text) else [text]
        if not matches:
            yield ("error", text, NO_MATCH)
        for match in matches:
            yield from _source_items(Path(match), match, size, max_bytes)


def _source_text(source) -> str:
    """A source as its path text; ``sample`` is the embedded set's zip."""
    return str(SAMPLE_ZIP) if str(source) == "sample" else str(source)


def _is_pattern(text: str) -> bool:
    """A glob pattern, unless a file or folder has that very name (``cat[1].png`` is a file, if there is one)."""
    return glob.has_magic(text) and not Path(text).exists()


def _not_a_zip(path: Path) -> bool:
    """A file named ``.zip`` that is not a zip archive (which Pillow would otherwise be asked to decode)."""
    return path.is_file() and path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path)


def _source_items(path: Path, shown: str, size: int | InputSize, max_bytes: int) -> Iterator[Item]:
    if not path.exists():
        yield ("error", shown, NO_SUCH_PATH)
    elif path.is_dir():
        yield from _members(walk_folder(path, max_bytes), shown.rstrip("/") + "/", size)
    elif path.suffix.lower() == ".npz":
        yield from _npz_rows(lambda: load_npz(path, size, None, name=shown), "", shown)  # ids: the path as named
    elif zipfile.is_zipfile(path):
        yield from _members(zip_members(path, max_bytes), shown.rstrip("/") + "/", size)
    elif _not_a_zip(path):
        yield ("error", shown, NOT_A_ZIP)
    else:
        yield ("member", shown, file_member(path, max_bytes))


def _members(members: Iterator[Member], prefix: str, size: int | InputSize) -> Iterator[Item]:
    import io

    for member in members:
        if member.name.lower().endswith(".npz"):  # an array set among the files: its rows are items
            yield from _npz_rows(lambda m=member: load_npz(io.BytesIO(m.read()), size, None, name=m.name), prefix,
                                 prefix + member.name)
        else:
            yield ("member", prefix + member.name, member)


def _npz_rows(load, prefix: str, shown: str) -> Iterator[Item]:
    try:
        rows = load()
    except (ValueError, OSError) as exc:
        yield ("error", shown, str(exc))
        return
    for i, image in zip(rows.ids, rows.images):
        yield ("row", prefix + i, image)


def iter_chunks(items: Iterable[Item], batch_size: int, *, size: int | InputSize = 32, workers: int = 1,
                skip: int = 0) -> Iterator[Chunk]:
    """Read and decode ``batch_size`` items at a time; the first ``skip`` items are passed over unread.

    ``skip`` is a whole number of chunks (what an interrupted intake counted);
    the chunks keep their indices. Encoded images decode ``workers`` at a
    time (:func:`shared.images.decode.decode_all`), at most
    :data:`~shared.images.decode.DECODE_CHUNK_BYTES` of them held at once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if skip % batch_size:
        raise ValueError(f"skip ({skip}) must be a whole number of chunks of {batch_size}")
    stream, index = islice(iter(items), skip, None), skip // batch_size
    while group := list(islice(stream, batch_size)):
        yield decode_chunk(index, group, size, workers)
        index += 1


def decode_chunk(index: int, group: list[Item], size: int | InputSize = 32, workers: int = 1) -> Chunk:
    """One chunk from its items, in their order: members read and decoded, rows kept, errors kept with their place."""
    outcomes = decode_items(group, size, workers)
    ids = [item[1] for item, (image, _) in zip(group, outcomes) if image is not None]
    images = [image for image, _ in outcomes if image is not None]
    failed = [(k, ItemError(item[1], reason)) for k, (item, (image, reason)) in enumerate(zip(group, outcomes))
              if image is None]
    return Chunk(index, ids, stack_images(images, size), [e for _, e in failed], [k for k, _ in failed])


def decode_items(group: list[Item], size: int | InputSize = 32, workers: int = 1) -> list[tuple[np.ndarray | None, str | None]]:
    """Per item of ``group``, in order: ``(image, None)``, or ``(None, reason)`` for one that cannot be read.

    Members are read in order and decoded ``workers`` at a time; the encoded
    bytes held stay under :data:`~shared.images.decode.DECODE_CHUNK_BYTES` (plus one item).
    """
    outcomes: list = [None] * len(group)
    pending: list[tuple[int, bytes]] = []
    held = 0

    def flush():
        nonlocal pending, held
        for (i, _), outcome in zip(pending, decode_all([data for _, data in pending], size, workers)):
            outcomes[i] = outcome
        pending, held = [], 0

    for i, (kind, _, payload) in enumerate(group):
        if kind == "row":
            outcomes[i] = (payload, None)
        elif kind == "error":
            outcomes[i] = (None, payload)
        else:
            try:
                data = payload.read()
                if nested := archive_kind(data):
                    raise ValueError(f"a nested {nested} archive is not read: unpack it, or pass it as a source "
                                     "of its own")
                if payload.name.lower().endswith(".zip"):  # named as an archive, but none: say so, not Pillow's
                    raise ValueError(NOT_A_ZIP)
            except (ValueError, OSError, zipfile.BadZipFile, RuntimeError) as exc:
                outcomes[i] = (None, str(exc) or type(exc).__name__)
                continue
            pending.append((i, data))
            held += len(data)
            if held >= DECODE_CHUNK_BYTES:  # bound the encoded bytes held, whatever the batch size
                flush()
    flush()
    return outcomes


def stack_images(images: list[np.ndarray], size: int | InputSize = 32) -> np.ndarray:
    """One NHWC array; 8-bit images among float ones become float (/255), none rounded."""
    if any(i.dtype != np.uint8 for i in images):
        images = [i.astype(np.float32) / np.float32(255) if i.dtype == np.uint8 else i for i in images]
    geometry = InputSize.of(size)
    return np.stack(images) if images else np.zeros((0, geometry.height, geometry.width, 3), np.uint8)


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a thread, ``depth`` results ahead of the consumer (reading overlaps sending).

    An exception in the thread is raised in the consumer; closing the
    generator stops the thread at its next result.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def run():
        try:
            for value in iterator:
                while not stop.is_set():
                    try:
                        ready.put(("value", value), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(("end", end))
        except BaseException as exc:  # handed to the consumer
            ready.put(("error", exc))

    thread = threading.Thread(target=run, name="intake", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)
