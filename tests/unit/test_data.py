import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from shared.images.load import SAMPLE_ZIP, decode_image, load_images, load_many
from shared.models.network import CIFAR10_CLASSES


def _png(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture()
def odd_set(tmp_path):
    """A flat folder with every colour mode and every kind of broken file."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    files = {
        "rgb.png": _png(rgb),
        "gray.jpg": _png(rgb.convert("L"), "JPEG"),
        "la.png": _png(rgb.convert("LA")),
        "palette.gif": _png(rgb.convert("P")),
        "rgba.png": _png(rgb.convert("RGBA")),
        "cmyk.jpg": _png(rgb.convert("CMYK"), "JPEG"),
        "sixteen.png": _png(Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16))),
        "animated.gif": _png(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P").rotate(90)]),
        "tiny.bmp": _png(Image.new("RGB", (1, 1), (10, 20, 30)), "BMP"),
        "huge.png": _png(Image.new("RGB", (3000, 2000), (200, 100, 50))),
        "empty.jpg": b"",
        "notes.txt": b"these are not pixels\n",
        "truncated.jpg": _png(rgb, "JPEG")[:200],
        ".hidden.png": _png(rgb),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_every_mode_decodes_and_broken_files_become_errors(odd_set):
    result = load_images(odd_set)
    assert result.labels is None
    assert result.images.shape == (len(result.ids), 32, 32, 3) and result.images.dtype == np.uint8
    readable = {"rgb.png", "gray.jpg", "la.png", "palette.gif", "rgba.png", "cmyk.jpg", "sixteen.png", "animated.gif",
                "tiny.bmp", "huge.png"}
    assert set(result.ids) == readable
    reasons = {e.id: e.reason for e in result.errors}
    assert set(reasons) == {"empty.jpg", "notes.txt", "truncated.jpg"}
    assert reasons["empty.jpg"] == "empty file"
    assert "identify" in reasons["notes.txt"]
    huge = result.images[result.ids.index("huge.png")]
    assert np.abs(huge.astype(int) - [200, 100, 50]).max() <= 1  # a flat image stays flat when shrunk


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    out = decode_image(_png(Image.fromarray(ramp)))
    assert out[..., 0].min() <= 2 and out[..., 0].max() >= 250  # clipping would saturate at 255 almost everywhere
    assert (out[..., 0] == 255).mean() < 0.1


def test_transparency_composited_on_white():
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert (decode_image(_png(clear)) == 255).all()


def test_decompression_bomb_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_image(_png(Image.new("RGB", (40, 40))))  # 1,600 pixels: over the limit, under 2x
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_image(_png(Image.new("RGB", (100, 100))))


def test_exif_orientation_applied():
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 32, 32))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(_png(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out[2, 16, 2] > 200 and out[30, 16, 0] > 200  # top blue, bottom red after rotation


def test_class_folders_in_zip_read_in_place(tmp_path):
    path = tmp_path / "set.zip"
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as zf:
        for cls in ("cat", "dog", "ship"):
            for i in range(3):
                zf.writestr(f"incoming/{cls}/{i}.png", _png(Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))))
        zf.writestr("incoming/dog/broken.png", b"\x89PNG\r\n\x1a\n garbage")
        zf.writestr("__MACOSX/incoming/cat/._0.png", b"resource fork")
    result = load_images(path)
    assert len(result) == 9 and [e.id for e in result.errors] == ["incoming/dog/broken.png"]
    assert result.classes == list(CIFAR10_CLASSES)  # known names map to CIFAR-10 indices
    assert sorted(set(result.labels.tolist())) == [CIFAR10_CLASSES.index(c) for c in ("cat", "dog", "ship")]
    assert list(tmp_path.iterdir()) == [path]  # nothing extracted


def test_unknown_class_names_sorted(tmp_path):
    for cls in ("zebra", "aardvark"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "a.png").write_bytes(_png(Image.new("RGB", (8, 8))))
    result = load_images(tmp_path)
    assert result.classes == ["aardvark", "zebra"] and result.labels.tolist() == [0, 1]


def test_npz_uint8_and_float_and_resize(tmp_path):
    rng = np.random.default_rng(2)
    x8 = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x8, y=np.arange(5))
    got = load_images(tmp_path / "a.npz")
    np.testing.assert_array_equal(got.images, x8)
    assert got.labels.tolist() == [0, 1, 2, 3, 4] and got.ids[0] == "a.npz[0]"
    np.savez(tmp_path / "c.npz", x=rng.random((2, 64, 48)))
    resized = load_images(tmp_path / "c.npz").images
    assert resized.shape == (2, 32, 32, 3) and resized.dtype == np.float32 and 0 <= resized.min() <= resized.max() <= 1


def test_float_npz_keeps_its_precision(tmp_path):
    # A perturbation of a third of an 8-bit level: rounding to uint8 would erase it.
    rng = np.random.default_rng(3)
    x8 = rng.integers(1, 254, (4, 32, 32, 3), dtype=np.uint8)
    clean = x8.astype(np.float32) / np.float32(255)
    attacked = np.clip(clean + np.float32(1 / 765) * rng.choice([-1, 1], clean.shape), 0, 1).astype(np.float32)
    for dtype in (np.float32, np.float16):
        np.savez(tmp_path / "f.npz", x=attacked.astype(dtype))
        got = load_images(tmp_path / "f.npz")
        assert got.images.dtype == np.float32
        np.testing.assert_array_equal(got.images, attacked.astype(dtype).astype(np.float32))
        np.testing.assert_array_equal(got.to_tensor().permute(0, 2, 3, 1).numpy(), attacked.astype(dtype).astype(np.float32))
    assert not np.array_equal(np.rint(attacked * 255).astype(np.uint8), attacked * 255)  # the test's premise


def test_corpus_shard_layout_nchw_with_ids_loads(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.random((3, 3, 32, 32)).astype(np.float16)
    np.savez(tmp_path / "shard-00000.npz", x=x, y=np.array([1, 2, 3]), ids=np.array(["a.png", "b.png", "c.png"]))
    got = load_images(tmp_path / "shard-00000.npz")
    np.testing.assert_array_equal(got.images, x.astype(np.float32).transpose(0, 2, 3, 1))
    assert got.labels.tolist() == [1, 2, 3] and got.ids == [f"shard-00000.npz[{i}]:{n}" for i, n in enumerate(["a.png", "b.png", "c.png"])]


def test_mixed_8bit_and_float_sources_become_float_without_rounding(tmp_path):
    x8 = np.random.default_rng(5).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    xf = np.full((1, 32, 32, 3), 0.1234567, np.float32)
    np.savez(tmp_path / "a.npz", x=x8)
    np.savez(tmp_path / "b.npz", x=xf)
    both = load_many([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert both.images.dtype == np.float32
    np.testing.assert_array_equal(both.to_tensor()[:2], load_images(tmp_path / "a.npz").to_tensor())
    np.testing.assert_array_equal(both.images[2:], xf)


@pytest.mark.parametrize(
    "arrays, message",
    [({"images": np.zeros((1, 8, 8, 3))}, "needs an array 'x'"), ({"x": np.full((1, 8, 8, 3), 255.0)}, r"\[0, 1\]"),
     ({"x": np.full((1, 8, 8, 3), np.nan)}, "NaN"), ({"x": np.zeros((1, 8, 8, 3)), "ids": np.array(["a", "b"])}, "'ids'"),
     ({"x": np.zeros((1, 8, 8, 3), np.uint8), "y": np.arange(2)}, "2 labels for 1 images")],
)
def test_bad_npz_raises_one_clear_error(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_images(tmp_path / "bad.npz")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        load_images(tmp_path / "obj.npz")


def test_missing_source_and_torchvision_without_download(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no such file"):
        load_images(tmp_path / "nope")
    monkeypatch.setenv("WAVESHIELD_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"not in .*: fetch it once with python -c .*CIFAR10\(.*download=True\)"):
        load_images("cifar10:test")
    with pytest.raises(ValueError, match="limit is a number of images"):
        load_images("sample", limit=0)
    with pytest.raises(ValueError, match="valid: train, test"):
        load_images("cifar10:validation")


def test_embedded_sample_is_balanced_cifar(sample):
    assert SAMPLE_ZIP.stat().st_size < 2 * 2**20
    assert sample.images.shape == (1000, 32, 32, 3) and not sample.errors
    assert np.bincount(sample.labels).tolist() == [100] * 10


def test_real_test_split_limit_is_class_balanced(cifar_test_zip):
    result = load_images(cifar_test_zip, limit=50)
    assert len(result) == 50 and np.bincount(result.labels, minlength=10).tolist() == [5] * 10
    with zipfile.ZipFile(cifar_test_zip) as zf:
        raw = np.asarray(Image.open(io.BytesIO(zf.read(result.ids[0]))).convert("RGB"))
    np.testing.assert_array_equal(result.images[0], raw)  # 32x32 JPEGs pass through unresized
