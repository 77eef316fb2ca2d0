"""The attacker who knows the screening: PGD through the DWT (BPDA) that also lowers the detector's score.

Screening reports the defended path's label (the DWT-trained model on the
reconstruction) and flags an image whose detector score is over the
threshold. An attacker who knows both wants the label wrong *and* the image
unflagged, so each step ascends

    cross-entropy(defended path, true label) + weight * log P_detector(clean)

(both in nats; ``weight`` trades one aim against the other). The DWT
reconstructions are BPDA: their forward pass is the real DWT, their backward
pass the identity (Athalye, Carlini and Wagner, ICML 2018,
https://arxiv.org/abs/1802.00420); an input transformation on a path
(``standard@resize-pad:shrink=0.05``) keeps its own gradient, straight-through
where it has none. A randomised one (resize-and-pad) is met with EOT: each
step ascends the mean of the loss over ``EOT_DRAWS`` fresh draws (8, as
the grid's EOT), the other paths computed once. The detector's features
are differentiated through every path, its pixel counts through a triangular kernel on the
unrounded pixels (their forward pass counts exactly).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from shared import transforms
from shared.attacks._base import check_inputs, project_linf, random_start, signed_gradient_steps
from shared.attacks.bpda import straight_through
from shared.evaluation.plan import ModelPath
from shared.evaluation.run import EOT_DRAWS, defend
from shared.screening.detector import PATHS, Detector
from shared.screening.detector.signals import check_paths, check_statistics, features_from, path_outputs


def attacker_reconstruct(defence_options: Callable, generator: torch.Generator | None = None) -> Callable:
    """``(defence name, images) -> reconstruction`` as the attacker differentiates it.

    A DWT with the identity's gradient (BPDA); an input transformation with
    its own (straight-through where it has none), a randomised one drawing
    from ``generator``.
    """
    def reconstruct(name: str, images: torch.Tensor) -> torch.Tensor:
        options = defence_options(name)
        if transforms.is_transform(name):
            return transforms.apply(images, options, generator=generator if transforms.is_randomised(options) else None)
        return straight_through(images, lambda t: defend(t, options))
    return reconstruct


def randomised_paths(paths, defence_options: Callable) -> list[str]:
    """The paths of ``paths`` behind a randomised input transformation (an attacker averages them over draws)."""
    return [p for p in paths if (d := ModelPath.named(p).defence) is not None and transforms.is_transform(d)
            and transforms.is_randomised(defence_options(d))]


def screening_loss(get_model: Callable, defence_options: Callable, detector: Detector, *, weight: float,
                   screened_path: str, paths=PATHS, statistics=(), seed: int = 0,
                   draws: int = EOT_DRAWS) -> Callable:
    """``(images, labels) ->`` cross-entropy of the screened label, summed, plus ``weight`` * log P_detector(clean).

    What the attacker who knows the screening ascends; with a randomised
    path, its mean over ``draws`` draws (from a generator seeded by ``seed``),
    the other paths computed once. The other arguments are as for
    :func:`evade_screening`.
    """
    paths, statistics = check_paths(paths), check_statistics(statistics)
    randomised = randomised_paths(paths, defence_options)
    fixed = [p for p in paths if p not in randomised]
    generators = {}

    def one_draw(images, labels, known, reconstruct):
        reconstructions, logits = path_outputs(images, get_model, reconstruct, paths, known=known)
        f = features_from(images, reconstructions, logits, paths=paths, statistics=statistics)
        return F.cross_entropy(logits[screened_path], labels, reduction="sum") \
            - weight * F.softplus(detector(f)).sum()  # softplus(logit) = -log P(clean)

    def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not randomised:
            return one_draw(images, labels, None, attacker_reconstruct(defence_options))
        if images.device not in generators:  # one stream per attack: a run repeats
            generators[images.device] = torch.Generator(device=images.device).manual_seed(seed)
        reconstruct = attacker_reconstruct(defence_options, generators[images.device])
        known = path_outputs(images, get_model, reconstruct, fixed)
        return sum(one_draw(images, labels, known, reconstruct) for _ in range(draws)) / draws
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
    loss = screening_loss(get_model, defence_options, detector, weight=weight, screened_path=screened_path,
                          paths=paths, statistics=statistics, seed=seed)
    if grey:
        start = random_start(images[:, :1], eps, seed) - images[:, :1]  # one draw per pixel, for all channels
        start = project_linf(images + start, images, eps)
    else:
        start = random_start(images, eps, seed)
    models = {*(get_model(ModelPath.named(p).model) for p in paths), detector}
    return signed_gradient_steps(loss, start, images, labels, eps=eps, alpha=alpha, steps=steps, models=models,
                                 shape_gradient=(lambda grad: grad.sum(1, keepdim=True)) if grey else None)
