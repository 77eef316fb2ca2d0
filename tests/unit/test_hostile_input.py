"""Hostile and odd input: every item gets a record, and a bomb costs nothing."""

import io
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from shared.images.load import load_images, load_many


@pytest.fixture()
def png(sample):
    buf = io.BytesIO()
    Image.fromarray(sample.images[0]).save(buf, "PNG")
    return buf.getvalue()


def _lying_png(png: bytes, width: int, height: int) -> bytes:
    """The PNG with an IHDR that claims ``width`` x ``height`` (its CRC fixed, so only the size lies)."""
    start = 8  # after the signature: length, b"IHDR", 13 bytes of data, CRC
    data = bytearray(png[start + 8:start + 8 + 13])
    data[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(data)))
    return png[:start + 8] + bytes(data) + crc + png[start + 8 + 13 + 4:]


def _records(image_set):
    return {**{i: "ok" for i in image_set.ids}, **{e.id: e.reason for e in image_set.errors}}


def test_a_zip_bomb_is_refused_unread_in_bounded_memory(tmp_path, png):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fine.png", png)
        with archive.open("huge.png", "w", force_zip64=True) as member:  # 1 GiB of zeros, about 1 MB on disk
            chunk = bytes(1 << 20)
            for _ in range(1024):
                member.write(chunk)
        with archive.open("dense.png", "w") as member:  # 64 MiB of zeros: under the size limit, a bomb by ratio
            for _ in range(64):
                member.write(chunk)
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        image_set = load_images(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    records = _records(image_set)
    assert records["fine.png"] == "ok" and len(records) == 3
    assert "over the per-item limit" in records["huge.png"] and "without reading" in records["huge.png"]
    assert "zip bomb" in records["dense.png"] and "without reading" in records["dense.png"]
    assert peak < 16 * 2**20  # neither member was decompressed


def test_a_member_whose_header_understates_its_size_is_not_read_past_it(tmp_path, png, monkeypatch):
    monkeypatch.setenv("WAVESHIELD_MAX_ITEM_BYTES", str(1 << 20))
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("liar.png", bytes(4 << 20))
    raw = bytearray(path.read_bytes())
    declared = struct.pack("<I", 4 << 20)
    for at in [i for i in range(len(raw) - 3) if raw[i:i + 4] == declared]:
        raw[at:at + 4] = struct.pack("<I", 1000)  # local and central headers now say 1,000 bytes
    path.write_bytes(bytes(raw))
    image_set = load_images(path)
    assert len(image_set) == 0 and [e.id for e in image_set.errors] == ["liar.png"]


def test_traversal_and_absolute_member_names_are_read_in_place_never_dropped(tmp_path, png):
    path = tmp_path / "names.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("../../escape.png", "/abs/evil.png", "ok.png"):
            info = zipfile.ZipInfo("x")
            info.filename = name  # ZipInfo("…") would strip the '/' and '..'
            archive.writestr(info, png)
    image_set = load_images(path)
    assert sorted(image_set.ids) == ["../../escape.png", "/abs/evil.png", "ok.png"] and not image_set.errors
    assert not (tmp_path.parent / "escape.png").exists()  # nothing was extracted


def test_nested_archives_get_a_reason(tmp_path, png):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("a.png", png)
    path = tmp_path / "outer.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inner.zip", inner.getvalue())
        archive.writestr("disguised.png", inner.getvalue())
        archive.writestr("b.png", png)
    records = _records(load_images(path))
    assert records["b.png"] == "ok"
    for name in ("inner.zip", "disguised.png"):
        assert "nested zip archive is not read" in records[name]


def test_an_npz_inside_a_folder_or_a_zip_is_read_as_an_array_set(tmp_path, png, sample):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.png").write_bytes(png)
    np.savez(folder / "rows.npz", x=sample.images[:3])
    np.savez(folder / "floats.npz", x=sample.images[3:5] / np.float32(255))
    image_set = load_images(folder)
    assert image_set.ids == ["a.png", "floats.npz[0]", "floats.npz[1]", "rows.npz[0]", "rows.npz[1]", "rows.npz[2]"]
    assert image_set.images.dtype == np.float32  # one float set among them: none rounded
    np.testing.assert_allclose(image_set.images[3:] * 255, sample.images[:3], atol=1e-4)
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(folder / "rows.npz", "sub/rows.npz")
    zipped = load_many([path])
    assert zipped.ids == [f"{path}/sub/rows.npz[{i}]" for i in range(3)] and zipped.images.dtype == np.uint8


def test_a_symlink_out_of_the_folder_is_refused_one_inside_is_read(tmp_path, png):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png)
    inbox = tmp_path / "inbox"
    (inbox / "real").mkdir(parents=True)
    (inbox / "real" / "a.png").write_bytes(png)
    (inbox / "out.png").symlink_to(outside / "secret.png")
    (inbox / "outdir").symlink_to(outside)
    (inbox / "in.png").symlink_to(inbox / "real" / "a.png")
    records = _records(load_images(inbox))
    assert records["in.png"] == records["real/a.png"] == "ok"
    for name in ("out.png", "outdir"):
        assert "leaves the input folder" in records[name]
    assert len(records) == 4


def test_a_png_header_that_claims_a_huge_image_is_refused_as_a_bomb(tmp_path, png):
    (tmp_path / "liar.png").write_bytes(_lying_png(png, 60_000, 60_000))
    records = _records(load_images(tmp_path))
    assert "decompression bomb refused" in records["liar.png"]


def test_a_file_over_the_item_limit_is_refused_unread(tmp_path, png, monkeypatch):
    monkeypatch.setenv("WAVESHIELD_MAX_ITEM_BYTES", "1000")
    (tmp_path / "big.png").write_bytes(png + bytes(2000))
    (tmp_path / "small.png").write_bytes(png[:900])
    records = _records(load_images(tmp_path))
    assert "over the per-item limit of 1,000" in records["big.png"] and "limit" not in records["small.png"]
