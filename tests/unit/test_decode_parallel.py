"""Decoding in worker processes gives what decoding in this process gives, item for item."""

import io
import zipfile

import numpy as np
from PIL import Image

from shared import decode
from shared.data import load_images


def test_a_zip_decoded_by_two_workers_equals_one_decoded_here(tmp_path, monkeypatch, sample):
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, image in enumerate(sample.images[:300]):
            buffer = io.BytesIO()
            Image.fromarray(np.kron(image, np.ones((8, 8, 1), np.uint8))).save(buffer, "JPEG", quality=90)
            archive.writestr(f"cat/{i:04d}.jpg", buffer.getvalue())  # 256x256: resized, in draft mode
        archive.writestr("cat/broken.jpg", b"\xff\xd8\xff not a jpeg")
        archive.writestr("cat/empty.png", b"")
    monkeypatch.setenv("WAVESHIELD_DECODE_WORKERS", "1")
    here = load_images(path)
    monkeypatch.setenv("WAVESHIELD_DECODE_WORKERS", "2")
    pooled = load_images(path)
    assert len(here) == 300 and here.ids == pooled.ids and np.array_equal(here.images, pooled.images)
    assert [(e.id, e.reason) for e in here.errors] == [(e.id, e.reason) for e in pooled.errors]
    assert {e.id for e in pooled.errors} == {"cat/broken.jpg", "cat/empty.png"}
    assert decode._pool is not None and decode._pool_workers == 2  # the pool did the work, and stays for the next
    decode.close_pool()


def test_a_bomb_is_refused_in_a_worker_process_as_in_this_one(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    small = buffer.getvalue()
    limit = Image.MAX_IMAGE_PIXELS
    buffer = io.BytesIO()
    Image.new("1", (int(limit ** 0.5) * 2 + 8, int(limit ** 0.5) + 8)).save(buffer, "PNG")  # over 2x the pixel limit
    results = decode.decode_all([small] * 70 + [buffer.getvalue()], workers=2)
    assert all(reason is None for _, reason in results[:70])
    assert results[70][0] is None and "decompression bomb" in results[70][1]
