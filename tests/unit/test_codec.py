import numpy as np
import pytest
import torch

from shared.images.image_set import quantise
from shared.store import codec


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32", "float64", "int64", "bool"])
def test_round_trip_keeps_dtype_shape_and_values(dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((3, 4, 5, 2)) * 200).astype(dtype)
    out = codec.decode(codec.encode(array))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    out[0] = 0  # decoded arrays are writable
    assert out.flags.c_contiguous


def test_float_perturbation_survives_but_uint8_rounding_would_erase_it():
    clean = np.full((1, 3, 8, 8), 100 / 255, np.float32)
    # A perturbation under half a grey level (1/510) vanishes when rounded to uint8.
    adversarial = clean + 0.0015 * np.sign(np.random.default_rng(1).standard_normal(clean.shape)).astype(np.float32)
    decoded = codec.decode(codec.encode(adversarial))
    np.testing.assert_array_equal(decoded, adversarial)
    # The reason floats travel as floats: delivered in 8 bits, as a sender's image, the perturbation is gone.
    in_8_bits = quantise(torch.from_numpy(adversarial)).numpy()
    np.testing.assert_allclose(in_8_bits, clean, atol=1e-7)
    assert np.abs(decoded - clean).max() == pytest.approx(0.0015, rel=1e-3)


def test_empty_and_scalar_arrays():
    for array in (np.zeros((0, 3, 32, 32), np.uint8), np.array(3.5)):
        np.testing.assert_array_equal(codec.decode(codec.encode(array)), array)


def test_non_contiguous_input():
    array = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(codec.decode(codec.encode(array)), array)


def test_object_dtype_refused():
    with pytest.raises(codec.CodecError, match="dtype"):
        codec.encode(np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "truncated"),
        (b"XXXXXX\x01\x00\x10\x00\x00\x00", "magic"),
        (codec.encode(np.zeros(10))[:-3], "truncated or corrupt"),
        (codec.encode(np.zeros(10))[:20], "truncated or corrupt"),
    ],
)
def test_malformed_blobs_raise(blob, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(blob)


def test_corrupt_payload_raises():
    blob = bytearray(codec.encode(np.arange(1000, dtype=np.float32)))
    blob[-10:] = b"\x00" * 10
    with pytest.raises(codec.CodecError):
        codec.decode(bytes(blob))


def test_wrong_version_raises():
    blob = bytearray(codec.encode(np.zeros(3)))
    blob[6] = 99
    with pytest.raises(codec.CodecError, match="version"):
        codec.decode(bytes(blob))


def test_oversized_declared_shape_refused_before_inflating():
    blob = codec.encode(np.zeros(4, np.uint8))
    forged = blob.replace(b"[4]", b"[100000, 100000, 1000]".ljust(3))
    header_len = len(forged) - len(blob) + int.from_bytes(blob[8:12], "little")
    forged = forged[:8] + header_len.to_bytes(4, "little") + forged[12:]
    with pytest.raises(codec.CodecError, match="limit"):
        codec.decode(forged)


def test_header_shape_must_match_payload():
    blob = codec.encode(np.zeros(4, np.uint8))
    forged = blob.replace(b"[4]", b"[5]")
    with pytest.raises(codec.CodecError, match="truncated or corrupt"):
        codec.decode(forged)
