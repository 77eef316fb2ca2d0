"""The zip reader of the intake against Python's zipfile: the same members, the same bytes, in every layout."""

import io
import zipfile

import pytest

from shared.images.zips import entries, zip_members


def _members(path, **kw):
    return {m.name: m.read() for m in zip_members(path, **kw)}


def _zipfile(path):
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


def test_every_compression_and_a_folder_entry_read_as_zipfile_reads_them(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("stored.bin", b"abc" * 100, compress_type=zipfile.ZIP_STORED)
        archive.writestr("deflated.bin", b"abc" * 1000, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("bzip2.bin", b"xyz" * 1000, compress_type=zipfile.ZIP_BZIP2)
        archive.writestr("folder/", b"")
        archive.writestr("folder/naïve.txt", "utf-8 name".encode())
    assert _members(path) == _zipfile(path) and len(_members(path)) == 4


def test_zip64_with_more_members_than_sixteen_bits_count(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(70_000):
            archive.writestr(f"{i:05d}", str(i))
        with archive.open("forced64", "w", force_zip64=True) as member:
            member.write(b"zip64 extra field")
    with zipfile.ZipFile(path) as archive:
        expected = [(i.filename, i.file_size, i.compress_size, i.CRC) for i in archive.infolist()]
    assert [(e.name, e.file_size, e.compress_size, e.crc) for e in entries(path)] == expected
    assert _members(path)["69999"] == b"69999" and _members(path)["forced64"] == b"zip64 extra field"


def test_data_prepended_to_the_archive_is_skipped_as_zipfile_skips_it(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("x.txt", b"hello")
    path = tmp_path / "sfx.zip"
    path.write_bytes(b"#!/bin/sh\nexit 0\n" * 10 + buf.getvalue())
    assert _members(path) == _zipfile(path) == {"x.txt": b"hello"}


def test_corrupt_and_encrypted_members_get_reasons(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("flip.bin", b"0123456789" * 10, compress_type=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.index(b"0123456789") + 3] ^= 0xFF  # one byte of the member's data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        next(zip_members(path)).read()
    (tmp_path / "cut.zip").write_bytes(bytes(data[:40]))
    with pytest.raises(ValueError, match="not a zip"):
        list(zip_members(tmp_path / "cut.zip"))
    lying = bytearray(path.read_bytes())
    lying[7] |= 0x01  # the local header's flag; the central directory's flag at its own place
    central = lying.index(b"PK\x01\x02")
    lying[central + 8] |= 0x01
    (tmp_path / "enc.zip").write_bytes(bytes(lying))
    with pytest.raises(ValueError, match="encrypted"):
        next(zip_members(tmp_path / "enc.zip")).read()


def test_the_per_item_limit_holds_for_stored_and_deflated_members(tmp_path):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("stored", b"a" * 5000, compress_type=zipfile.ZIP_STORED)
        archive.writestr("deflated", b"a" * 5000, compress_type=zipfile.ZIP_DEFLATED)
    for member in zip_members(path, max_bytes=1000):
        with pytest.raises(ValueError, match="per-item limit"):
            member.read()
