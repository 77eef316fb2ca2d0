"""A learned detector of adversarial images, on what the screening pipeline already computes.

Features, per image:

- model paths (:data:`PATHS`; a detector's card names the ones it reads):
  the standard model on the raw image, each DWT-trained model on its
  reconstruction, and the standard model on each reconstruction; of each,
  the log-softmax output, the top probability, the entropy and the top-two
  logit margin;
- how far each other path moves from the raw one: the total variation
  distance between the softmax outputs, the log-probability it gives the raw
  path's label, and whether its label differs;
- how much each reconstruction removed (mean absolute change);
- statistics of the pixels themselves (:data:`STATISTICS`, as the card
  says): ``steps`` (shipped), the correlation of each step between
  neighbouring pixels with the next, in red minus green, green minus blue
  and luminance, along rows and columns: edges make consecutive steps
  alike, noise added pixel by pixel makes them opposite, whatever a codec
  did to the colours. ``chroma`` (the previous release's), how
  neighbouring steps of the colour differences occur together, after
  colour steganalysis: a JPEG with subsampled chroma has smooth colour
  differences and an attack roughens them, but so are canonical pixels,
  photographs and JPEGs without subsampling rough, clean; no threshold
  makes it hold on every source (docs/calibration/sources/sources.md).

Tried and left out, on 4,000 training images unless said: the energy of
the image's finest wavelet details (no better than chance at the paper's
eps, AUROC 0.50-0.56); the same co-occurrences of each channel's own steps
instead of the colour differences (5 points more at most, where the colour
differences took detection from 50-77 % to 99-100 % on two paths); the
standard model's penultimate-layer activations with its softmax, as
class-conditional features (0-3 points more with five paths, 1-5 fewer
with two).

A small MLP in torch scores them; a standardisation fitted on the training
features is part of the network, so that the saved weights are all it needs.

The package: :mod:`.signals` (and the pixel :mod:`.statistics`), the
:mod:`.model` (fit, save, load), :mod:`.metrics` (AUROC, ROC points) and
:mod:`.explanation` (the strongest signal). What a card reads is here,
known without torch; the rest loads (with torch) when first named, as
scikit-image's lazy package attributes do, so a producer reads a card in a
fraction of a second.
"""

from __future__ import annotations

import importlib

from shared.evaluation.plan import ModelPath

#: The detector's file name in the weights directory (its card: the same name, ``.json``).
WEIGHTS_NAME = "detector.safetensors"
#: The reconstruction paths: (name of the DWT-trained model = name of its defence).
DEFENCES = ("haar", "daubechies")
#: The classifiers a path may name: the standard model and the DWT-trained ones.
MODELS = ("standard", *DEFENCES)
PATHS = tuple(p.name for p in (ModelPath("standard"), *(ModelPath(d, d) for d in DEFENCES),
                                *(ModelPath("standard", d) for d in DEFENCES)))
#: Pixel statistics a detector may read besides its paths (see :mod:`shared.screening.detector`).
STATISTICS = ("chroma", "steps")


def reads(card: dict) -> dict:
    """What a detector's card says it reads: ``paths`` and ``statistics``, as keyword arguments of ``features``.

    A card written before pixel statistics existed reads none.
    """
    return {"paths": tuple(card.get("paths", PATHS)), "statistics": tuple(card.get("statistics", ()))}


#: Names served from the submodules, which import torch: loaded when first used.
_LAZY = {
    "ModelCardError": "shared.models.checkpoints",
    "signal_groups": ".explanation", "strongest_signal": ".explanation",
    "check_paths": ".signals", "check_statistics": ".signals", "differentiable_features": ".signals",
    "feature_names": ".signals", "features": ".signals",
    "auroc": ".metrics", "roc_points": ".metrics",
    "Detector": ".model", "fit": ".model", "load": ".model", "save": ".model",
    "CLIP": ".statistics", "STEP_PLANES": ".statistics", "chroma_cooccurrence": ".statistics",
    "step_correlation": ".statistics",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_LAZY[name], __name__), name)  # once
    return value


__all__ = ["DEFENCES", "MODELS", "PATHS", "STATISTICS", "WEIGHTS_NAME", "reads", *_LAZY]
