"""The attacker who knows the screening: PGD through the DWT (BPDA) that also lowers the detector's score.

Screening reports the defended path's label (the DWT-trained model on the
reconstruction) and flags an image whose detector score is over the
threshold. An attacker who knows both wants the label wrong *and* the image
unflagged, so each step ascends

    cross-entropy(defended path, true label) + weight * log P_detector(clean)

(both in nats; ``weight`` trades one aim against the other). The
reconstructions are BPDA: their forward pass is the real DWT, their backward
pass the identity (Athalye, Carlini and Wagner, ICML 2018,
https://arxiv.org/abs/1802.00420), and the detector's features are
differentiated through every path, its pixel counts through a triangular
kernel on the unrounded pixels (their forward pass counts exactly).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from shared.attacks._base import check_inputs, project_linf, random_start, signed_gradient_steps
from shared.attacks.bpda import straight_through
from shared.evaluation.plan import ModelPath
from shared.evaluation.run import defend
from shared.screening.detector import PATHS, Detector, differentiable_features


def bpda_reconstruct(defence_options: Callable) -> Callable:
    """``(defence name, images) -> reconstruction`` whose gradient is the identity's."""
    def reconstruct(name: str, images: torch.Tensor) -> torch.Tensor:
        return straight_through(images, lambda t: defend(t, defence_options(name)))
    return reconstruct


def screening_loss(get_model: Callable, reconstruct: Callable, detector: Detector, *, weight: float,
                   screened_path: str, paths=PATHS, statistics=()) -> Callable:
    """``(images, labels) ->`` cross-entropy of the screened label, summed, plus ``weight`` * log P_detector(clean).

    What the attacker who knows the screening ascends; ``reconstruct`` is
    :func:`bpda_reconstruct`'s, the other arguments as for :func:`evade_screening`.
    """
    def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        f, logits = differentiable_features(images, get_model, reconstruct, paths=paths, statistics=statistics)
        return F.cross_entropy(logits[screened_path], labels, reduction="sum") \
            - weight * F.softplus(detector(f)).sum()  # softplus(logit) = -log P(clean)
    return loss


def evade_screening(images: torch.Tensor, labels: torch.Tensor, get_model: Callable, defence_options: Callable,
                    detector: Detector, *, eps: float, steps: int = 20, alpha: float | None = None,
                    weight: float = 1.0, screened_path: str = "haar@haar", seed: int = 0,
                    paths=PATHS, statistics=(), grey: bool = False) -> torch.Tensor:
    """L-inf PGD (random start) against the screened label and the detector at once.

    Parameters
    ----------
    images, labels : torch.Tensor
        (N, 3, H, W) in [0, 1]; true classes.
    get_model, defence_options : callable
        As for :func:`shared.screening.detector.features`.
    detector : Detector
        The detector to evade.
    eps, steps, alpha : float, int, float
        The L-inf radius, the number of steps and their size (default eps / 4).
    weight : float
        Weight of looking clean to the detector against the label being wrong.
    screened_path : str
        The path whose label screening reports.
    seed : int
        Seed of the random start.
    paths, statistics : sequence of str
        What the detector reads (its card's ``paths`` and ``statistics``);
        pixel statistics are differentiated as :func:`shared.screening.detector.chroma_cooccurrence` says.
    grey : bool
        Move the three channels of a pixel by the same amount (the gradient
        summed over channels; one random start for all three): the colour
        differences, and so a chroma statistic, stay as they were, up to
        clipping at black and white. What an attacker who knows that the
        detector reads colour differences does.

    Returns
    -------
    torch.Tensor
        Detached adversarial images within ``eps`` of ``images``, in [0, 1].
    """
    images, labels = check_inputs(images, labels, eps)
    alpha = eps / 4 if alpha is None else alpha
    loss = screening_loss(get_model, bpda_reconstruct(defence_options), detector, weight=weight,
                          screened_path=screened_path, paths=paths, statistics=statistics)
    if grey:
        start = random_start(images[:, :1], eps, seed) - images[:, :1]  # one draw per pixel, for all channels
        start = project_linf(images + start, images, eps)
    else:
        start = random_start(images, eps, seed)
    models = {*(get_model(ModelPath.named(p).model) for p in paths), detector}
    return signed_gradient_steps(loss, start, images, labels, eps=eps, alpha=alpha, steps=steps, models=models,
                                 shape_gradient=(lambda grad: grad.sum(1, keepdim=True)) if grey else None)
