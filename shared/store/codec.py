"""Array codec: numpy arrays to compact bytes and back, for Redis blobs.

Layout: an 8-byte magic+version, a little-endian header length, a JSON
header (dtype, shape, compression) and the zlib-compressed C-order payload.
Only plain numeric dtypes are accepted, so decoding never runs code.
Floats keep their dtype: an adversarial image must not be rounded to uint8,
which would erase a perturbation of 0.004 (about 1/255).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

MAGIC = b"WSARR\x00"
VERSION = 1
_PREFIX = struct.Struct("<6sBxI")  # magic, version, pad, header length
#: dtypes a blob may hold; anything else (object, void, ...) is refused.
ALLOWED_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "bool", "float16", "float32", "float64")
#: Decoded arrays larger than this are refused (guards against zip bombs).
MAX_DECODED_BYTES = 2**31
_MAX_HEADER = 4096
# Level 1: images compress little past it and encoding stays far above
# network speed; level 6+ costs 3-5x the time for about 2 % smaller blobs.
_ZLIB_LEVEL = 1


class CodecError(ValueError):
    """A blob is malformed, truncated, or too large."""


def encode(array: np.ndarray) -> bytes:
    """Encode an array into a self-describing compressed blob.

    Parameters
    ----------
    array : numpy.ndarray
        A numeric array of a dtype in :data:`ALLOWED_DTYPES`.

    Returns
    -------
    bytes
        The blob; :func:`decode` gives back an equal array of the same dtype.
    """
    array = np.asarray(array)
    dtype = array.dtype.name
    if dtype not in ALLOWED_DTYPES:
        raise CodecError(f"cannot encode dtype {dtype!r}; allowed: {', '.join(ALLOWED_DTYPES)}")
    header = json.dumps({"dtype": dtype, "shape": list(array.shape), "compression": "zlib"}).encode()
    payload = zlib.compress(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes(), _ZLIB_LEVEL)
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + payload


def decode(blob: bytes) -> np.ndarray:
    """Decode a blob written by :func:`encode`.

    Raises
    ------
    CodecError
        If the magic, version or header is wrong, the payload is truncated or
        corrupt, or the array would exceed :data:`MAX_DECODED_BYTES`.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _PREFIX.size:
        raise CodecError(f"blob truncated: {len(blob)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CodecError("not a waveshield array blob (bad magic)")
    if version != VERSION:
        raise CodecError(f"unsupported blob version {version}; this build reads version {VERSION}")
    if header_len > _MAX_HEADER or _PREFIX.size + header_len > len(blob):
        raise CodecError("blob truncated or corrupt: header length out of range")
    header = _parse_header(blob[_PREFIX.size : _PREFIX.size + header_len])
    dtype, shape = np.dtype(header["dtype"]).newbyteorder("<"), tuple(header["shape"])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected > MAX_DECODED_BYTES:
        raise CodecError(f"blob declares {expected} bytes, over the {MAX_DECODED_BYTES}-byte limit")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(blob[_PREFIX.size + header_len :], expected + 1)
    except zlib.error as exc:
        raise CodecError(f"blob payload is corrupt: {exc}") from None
    if len(raw) != expected or not inflater.eof:
        raise CodecError(f"blob payload is truncated or corrupt: expected {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _parse_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CodecError("blob header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("compression") != "zlib":
        raise CodecError("blob header lacks a supported compression")
    if header.get("dtype") not in ALLOWED_DTYPES:
        raise CodecError(f"blob dtype {header.get('dtype')!r} is not allowed")
    shape = header.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape) or len(shape) > 8:
        raise CodecError(f"blob shape {shape!r} is invalid")
    return header
