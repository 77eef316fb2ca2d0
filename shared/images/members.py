"""The items of an input, each checked before it is read: files of a folder (members of a zip: :mod:`.zips`).

An item is a name and a way to read its bytes. Whatever the input holds, each
item ends as data or as a reason, never silently dropped:

* a zip member is checked before reading: its declared size against the
  per-item limit, its compression ratio (a small member that expands a
  hundredfold is a bomb), and the bytes read are capped at the limit whatever
  the header declares, so a bomb costs nothing;
* a member named ``../x.png`` or ``/etc/x.png`` is read in place, by its name,
  since nothing is ever extracted;
* a nested archive gets a reason instead of a confusing decoder error;
* a symbolic link that leaves the input's folder is refused (a watched inbox
  must not read ``/etc``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.settings import DEFAULT_MAX_ITEM_BYTES

# Folders that archivers and file managers add; never images.
_SKIP_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
# Leading bytes of archive formats: a member that starts so is an archive, not an image.
_ARCHIVE_MAGIC = {b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x1f\x8b": "gzip", b"7z\xbc\xaf\x27\x1c": "7z",
                  b"Rar!\x1a\x07": "rar", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


@dataclass(frozen=True)
class Member:
    """One item of an input: ``read()`` gives its bytes, or raises ValueError with the reason."""

    name: str
    read: Callable[[], bytes]


def is_skipped(name: str) -> bool:
    """Archiver and file-manager clutter (``__MACOSX``, ``.DS_Store``, hidden files); ``..`` is not hidden."""
    return any(p in _SKIP_NAMES or (p.startswith(".") and p not in (".", "..")) for p in name.split("/"))


def folder_members(root: Path, max_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> list[Member]:
    """The files below ``root`` in sorted order (a list of :func:`walk_folder`)."""
    return list(walk_folder(root, max_bytes))


def walk_folder(root: Path, max_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> Iterator[Member]:
    """The files below ``root``, lazily, one directory at a time; a link out of ``root`` is a refused item.

    Each directory's entries are sorted by name and a sub-folder is walked
    where it sorts, so the order is the same on every run and file system
    (what resuming an interrupted intake counts on). Only one directory's
    names are held at a time: a folder of a million files in sub-folders is
    never listed whole before its first file is read.
    """
    top = root.resolve()
    stack = [iter(_sorted_entries(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path = Path(entry.path)
        name = path.relative_to(root).as_posix()
        if is_skipped(name):
            continue
        if entry.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(top):
                yield Member(name, _refuse(f"a symbolic link that leaves the input folder (to {target}): refused"))
            elif target.is_file():
                yield Member(name, _file_reader(path, max_bytes))
            elif not target.is_dir():
                yield Member(name, _refuse(f"a symbolic link to nothing (to {target})"))
            continue  # a link to a folder inside: its files are read where they really are
        if entry.is_dir(follow_symlinks=False):
            stack.append(iter(_sorted_entries(path)))
        elif entry.is_file(follow_symlinks=False):
            yield Member(name, _file_reader(path, max_bytes))


def _sorted_entries(directory: Path) -> list[os.DirEntry]:
    with os.scandir(directory) as entries:
        return sorted(entries, key=lambda e: e.name)


def file_member(path: Path, max_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> Member:
    """A single file given as the input, under the same per-item limit."""
    return Member(path.name, _file_reader(path, max_bytes))


def archive_kind(data: bytes) -> str | None:
    """The archive format of ``data`` (``"zip"``, ``"gzip"``, ...), or None for anything else."""
    for magic, kind in _ARCHIVE_MAGIC.items():
        if data.startswith(magic):
            return kind
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar"
    return None


def _refuse(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise ValueError(reason)
    return read


def too_large(size: int, max_bytes: int) -> str:
    """The reason given for an item over the per-item limit."""
    return (f"{size:,} bytes, over the per-item limit of {max_bytes:,} (WAVESHIELD_MAX_ITEM_BYTES): refused "
            "without reading")


def _file_reader(path: Path, max_bytes: int) -> Callable[[], bytes]:
    def read() -> bytes:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(too_large(size, max_bytes))
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # it may have grown since
        if len(data) > max_bytes:
            raise ValueError(too_large(len(data), max_bytes))
        return data
    return read
