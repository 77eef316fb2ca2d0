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

The package: :mod:`.features` (and the pixel :mod:`.statistics`), the
:mod:`.model` (fit, save, load), :mod:`.metrics` (AUROC, ROC points) and
:mod:`.explanation` (the strongest signal). What a card reads is known
without torch in :mod:`shared.detector_card`.
"""

from __future__ import annotations

from ..checkpoints import ModelCardError
from ..detector_card import DEFENCES, PATHS, STATISTICS, WEIGHTS_NAME, reads
from .explanation import signal_groups, strongest_signal
from .features import check_paths, check_statistics, differentiable_features, feature_names, features
from .metrics import auroc, roc_points
from .model import Detector, fit, load, save
from .statistics import CLIP, STEP_PLANES, chroma_cooccurrence, step_correlation

__all__ = ["CLIP", "DEFENCES", "PATHS", "STATISTICS", "STEP_PLANES", "WEIGHTS_NAME", "Detector", "ModelCardError",
           "auroc", "check_paths", "check_statistics", "chroma_cooccurrence", "differentiable_features",
           "feature_names", "features", "fit", "load", "reads", "roc_points", "save", "signal_groups",
           "strongest_signal", "step_correlation"]
