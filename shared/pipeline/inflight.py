"""Backpressure: how many of a job's batches may be unfinished in Redis at once.

One setting bounds every job kind: ``WAVESHIELD_IN_FLIGHT_MIB``, the blob
bytes a job's unfinished batches may hold. Each kind says what one batch can
hold at its peak (the upper bound: every blob its stages write, none yet
released, before compression), and the producer keeps
``max(1, limit // peak)`` batches unfinished, counted in the units the job's
``done`` counts (batches, shards x attacks, or cells). Ids and records are
small and are not counted.
"""

from __future__ import annotations

import numpy as np

from shared.evaluation.plan import CORPUS_DTYPES, FUSED
from shared.images.geometry import InputSize
from shared.pipeline.keys import RAW

_FLOAT32 = 4


def _pixels(images: int, size: int | InputSize) -> int:
    """Values of ``images`` RGB images at ``size`` (an int: square)."""
    return images * InputSize.of(size).pixels * 3


def screen_batch_bytes(plan: dict, images: int, itemsize: int, size: int | InputSize = 32) -> int:
    """A screening batch: its clean images, and (staged) the float32 reconstruction the DWT stage writes."""
    clean = _pixels(images, size) * itemsize
    return clean if plan.get("mode") == FUSED else clean + _pixels(images, size) * _FLOAT32


def corpus_batch_bytes(plan: dict, images: int, itemsize: int, attacks: int, size: int | InputSize = 32) -> int:
    """A corpus shard: its clean images and one adversarial copy per attack still to run, in the corpus dtype."""
    dtype_size = np.dtype(plan.get("dtype", CORPUS_DTYPES[0])).itemsize
    return _pixels(images, size) * (itemsize + attacks * dtype_size)


def evaluate_batch_bytes(plan: dict, images: int, itemsize: int, size: int | InputSize = 32) -> int:
    """An evaluation batch: clean images; staged, float32 adversarial images and their reconstructions per attack."""
    clean = _pixels(images, size) * itemsize
    if plan.get("mode") == FUSED:
        return clean
    defences = {c.get("defence") or RAW for c in plan["configurations"]} - {RAW}
    return clean + len(plan["attacks"]) * (1 + len(defences)) * _pixels(images, size) * _FLOAT32


def batches_allowed(batch_bytes: int, limit_mib: int) -> int:
    """How many batches of ``batch_bytes`` fit under ``limit_mib`` (at least one: a job always moves)."""
    return max(1, (limit_mib * 2 ** 20) // max(batch_bytes, 1))
