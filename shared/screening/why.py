"""The "why" picture of a flagged image: what the DWT reconstruction takes away, amplified.

An adversarial perturbation moves the raw path's output; the reconstruction
removes much of it, and the two paths then disagree. Where a record's
signal is a model path or a reconstruction (``haar@haar``, ``haar:removed``,
``disagreement``, ``standard@raw``), the part of the image the paths see
differently is ``image - reconstruct(image)``: shown around mid-grey, times
:data:`GAIN`. A pixel statistic (``steps``, ``chroma``) has no such picture.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shared import transforms

#: The residual's amplification: eps 0.01 (2.55 grey levels) shows as +-13 levels around mid-grey, and what the
#: shipped Haar reconstruction changes in a clean image stays short of saturation (measured per pixel on the
#: embedded sample's first 500 images and the 5,085 canonical-prefix ones: median 3.8 and 3.4 grey levels,
#: 99th percentile 23 and 22, so x5 = 117 and 111 of the 127 either side of mid-grey).
GAIN = 5.0
#: Signals that are statistics of the pixels themselves, with no reconstruction to show.
PIXEL_STATISTICS = ("steps", "chroma")


def defence_of(signal: str | None, plan_defence: str, known: set[str]) -> str | None:
    """The reconstruction whose residual explains ``signal``: the one it names (a DWT of ``known``, or an input
    transformation), else the plan's; None for a pixel statistic or no signal."""
    if signal is None or signal in PIXEL_STATISTICS:
        return None
    # ``standard@resize-pad:shrink=0.05`` names its defence after the @; ``resize-pad:shrink=0.05:removed`` before
    # the last colon.
    named = signal.split("@", 1)[1] if "@" in signal else signal.rsplit(":", 1)[0]
    return named if named in known or transforms.is_transform(named) else plan_defence


def residual_pictures(images: np.ndarray, defences: list[str | None],
                      options: Callable[[str], dict]) -> list[np.ndarray | None]:
    """Per image, ``image - reconstruct(image)`` as a uint8 picture (mid-grey = no change), or None.

    Parameters
    ----------
    images : numpy.ndarray
        N x H x W x 3 uint8, the pixels screening classified.
    defences : list of str or None
        Per image, the defence whose residual to show (:func:`defence_of`).
    options : callable
        Defence name -> ``reconstruct`` options.
    """
    import torch

    from shared.evaluation.run import defend
    from shared.images.image_set import to_float_nchw

    pictures: list[np.ndarray | None] = [None] * len(images)
    for name in sorted({d for d in defences if d is not None}):
        at = [i for i, d in enumerate(defences) if d == name]
        x = to_float_nchw(images[at])
        with torch.no_grad():
            residual = (x - defend(x, options(name))).permute(0, 2, 3, 1).numpy()
        shown = np.clip(127.5 + GAIN * 255 * residual, 0, 255).round().astype(np.uint8)
        for i, picture in zip(at, shown):
            pictures[i] = picture
    return pictures
