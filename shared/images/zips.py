"""The members of a zip, one at a time from its central directory, each checked before it is read.

Python's :mod:`zipfile` builds a ``ZipInfo`` for every member when it opens
an archive: for 200,000 members, 2.6 s and 122 MiB before the first member
can be read, growing with the archive. An intake must neither wait for that
nor hold it, so this module walks the central directory entry by entry (the
layout of PKWARE's APPNOTE, Zip64 included) and reads each member through
its local header. Members come in the order the archive lists them, which
is the same on every run.

Before a member is read, its declared size is held against the per-item
limit and its compression ratio against :data:`MAX_COMPRESSION_RATIO`; while
it is read, no more than the limit is inflated, whatever the header says,
and its CRC is checked. Stored, deflated and bzip2 members are read;
another method or an encrypted member gets a reason.
"""

from __future__ import annotations

import bz2
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.images.members import Member, is_skipped, too_large
from shared.settings import DEFAULT_MAX_ITEM_BYTES

#: A member expanding more than this is a bomb ...
MAX_COMPRESSION_RATIO = 100
#: ... once it is large enough to matter (a flat 32 x 32 BMP compresses a hundredfold, harmlessly).
RATIO_APPLIES_FROM = 1024 * 1024

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # one central directory entry
_LOCAL = struct.Struct("<4s5H3L2H")  # a member's local header
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF
_STORED, _DEFLATED, _BZIP2 = 0, 8, 12
_UTF8_NAME, _ENCRYPTED = 0x800, 0x1


@dataclass(frozen=True)
class Entry:
    """One member as the central directory describes it."""

    name: str
    offset: int  # of its local header in the file
    compress_size: int
    file_size: int
    method: int
    flags: int
    crc: int


def zip_members(path: str | Path, max_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> Iterator[Member]:
    """The files of the zip at ``path`` (no folders, no archiver clutter), lazily, each read only if it passes."""
    for entry in entries(path):
        if not entry.name.endswith("/") and not is_skipped(entry.name):
            yield Member(entry.name, reader(path, entry, max_bytes))


def entries(path: str | Path) -> Iterator[Entry]:
    """The central directory's entries of the zip at ``path``, in order, one at a time.

    Raises
    ------
    ValueError
        If the file is not a zip or its central directory is cut short.
    """
    with open(path, "rb") as fh:
        start, cd_size, concat = _directory(fh)
        fh.seek(start)
        while fh.tell() < start + cd_size:  # by size, not count: some archivers wrap the count at 65,536
            raw = fh.read(_CENTRAL.size)
            if len(raw) < _CENTRAL.size or raw[:4] != b"PK\x01\x02":
                raise ValueError(f"{path}: the zip's central directory is cut short or corrupt")
            (_, _, _, flags, method, _, _, crc, csize, size, name_len, extra_len, comment_len, _, _, _,
             offset) = _CENTRAL.unpack(raw)
            name = fh.read(name_len).decode("utf-8" if flags & _UTF8_NAME else "cp437", errors="replace")
            extra = fh.read(extra_len)
            fh.seek(comment_len, 1)
            size, csize, offset = _zip64(extra, size, csize, offset)
            yield Entry(name, offset + concat, csize, size, method, flags, crc)


def _directory(fh) -> tuple[int, int, int]:
    """Where the central directory starts, its size, and the length of data prepended to the zip."""
    fh.seek(0, 2)
    length = fh.tell()
    tail_start = max(0, length - _EOCD.size - _FULL16)
    fh.seek(tail_start)
    tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ValueError("not a zip file")
    _, _, _, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    eocd = tail_start + at
    extra = 0
    if count == _FULL16 or cd_size == _FULL32 or cd_offset == _FULL32:  # Zip64: the real numbers are further up
        locator = tail_start + at - _EOCD64_LOCATOR.size
        fh.seek(locator)
        sig, _, _, _ = _EOCD64_LOCATOR.unpack(fh.read(_EOCD64_LOCATOR.size))
        if sig != b"PK\x06\x07":
            raise ValueError("a Zip64 archive without its end record locator")
        fh.seek(locator - _EOCD64.size)
        record = fh.read(_EOCD64.size)
        if record[:4] != b"PK\x06\x06":
            raise ValueError("a Zip64 archive without its end record")
        _, _, _, _, _, _, _, count, cd_size, cd_offset = _EOCD64.unpack(record)
        extra = _EOCD64.size + _EOCD64_LOCATOR.size
    concat = eocd - extra - cd_size - cd_offset
    if concat < 0:
        raise ValueError("not a zip file: its central directory lies outside it")
    return cd_offset + concat, cd_size, concat


def _zip64(extra: bytes, size: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset from the Zip64 extra field, for those the entry marks as too large for 32 bits."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        if kind == 1:
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            size = next(values) if size == _FULL32 else size
            csize = next(values) if csize == _FULL32 else csize
            offset = next(values) if offset == _FULL32 else offset
            break
        at += 4 + length
    return size, csize, offset


def reader(path: str | Path, entry: Entry, max_bytes: int) -> Callable[[], bytes]:
    """A function that reads ``entry``'s bytes, or raises ValueError with the reason it is refused."""

    def read() -> bytes:
        if entry.file_size > max_bytes:
            raise ValueError(too_large(entry.file_size, max_bytes))
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size >= RATIO_APPLIES_FROM and ratio > MAX_COMPRESSION_RATIO:
            raise ValueError(f"a zip bomb: {entry.compress_size:,} bytes that expand {ratio:,.0f}-fold to "
                             f"{entry.file_size:,} (at most {MAX_COMPRESSION_RATIO}-fold): refused without reading")
        if entry.flags & _ENCRYPTED:
            raise ValueError("an encrypted zip member: not read")
        if entry.method not in (_STORED, _DEFLATED, _BZIP2):
            raise ValueError(f"zip compression method {entry.method} is not read (stored, deflate and bzip2 are): "
                             "recompress the archive")
        if entry.compress_size > max_bytes + 1024:  # even stored, nothing past the limit is read
            raise ValueError(too_large(entry.compress_size, max_bytes))
        with open(path, "rb") as fh:
            fh.seek(entry.offset)
            header = fh.read(_LOCAL.size)
            if len(header) < _LOCAL.size or header[:4] != b"PK\x03\x04":
                raise ValueError("a zip member whose local header is missing: corrupt archive")
            name_len, extra_len = _LOCAL.unpack(header)[-2:]
            fh.seek(name_len + extra_len, 1)
            packed = fh.read(entry.compress_size)
        data = _inflate(entry.method, packed, max_bytes)
        if len(data) > max_bytes:
            raise ValueError(f"expands past the per-item limit of {max_bytes:,} bytes, more than its header "
                             f"declares ({entry.file_size:,}): refused")
        if zlib.crc32(data) != entry.crc:
            raise ValueError("a corrupt zip member: its CRC does not match")
        return data

    return read


def _inflate(method: int, packed: bytes, max_bytes: int) -> bytes:
    """Decompress at most ``max_bytes + 1`` bytes (one past the limit says it was exceeded)."""
    try:
        if method == _DEFLATED:
            return zlib.decompressobj(-15).decompress(packed, max_bytes + 1)
        if method == _BZIP2:
            return bz2.BZ2Decompressor().decompress(packed, max_bytes + 1)
    except (zlib.error, OSError, EOFError) as exc:
        raise ValueError(f"a corrupt zip member: {exc}") from None
    return packed
