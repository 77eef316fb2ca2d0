"""What a detector's card says it reads, known without torch: its file name, paths and pixel statistics."""

from __future__ import annotations

#: The detector's file name in the weights directory (its card: the same name, ``.json``).
WEIGHTS_NAME = "detector.safetensors"
#: The reconstruction paths: (name of the DWT-trained model = name of its defence).
DEFENCES = ("haar", "daubechies")
PATHS = ("standard@raw", *(f"{d}@{d}" for d in DEFENCES), *(f"standard@{d}" for d in DEFENCES))
#: Pixel statistics a detector may read besides its paths (see :mod:`shared.detector`).
STATISTICS = ("chroma", "steps")


def reads(card: dict) -> dict:
    """What a detector's card says it reads: ``paths`` and ``statistics``, as keyword arguments of ``features``.

    A card written before pixel statistics existed reads none.
    """
    return {"paths": tuple(card.get("paths", PATHS)), "statistics": tuple(card.get("statistics", ()))}
