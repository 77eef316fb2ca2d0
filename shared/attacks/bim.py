"""BIM: the basic iterative method (iterative FGSM).

Paper: Kurakin, Goodfellow and Bengio, "Adversarial Examples in the Physical
World", ICLR workshop 2017 (https://arxiv.org/abs/1607.02533).
Distance: L-inf. ``steps`` FGSM steps of size ``alpha``, each clipped back into
the eps ball and [0, 1]. Defaults: alpha = 1/255 and Kurakin's step count
floor(min(eps*255 + 4, 1.25 * eps*255)), which is 1 step at eps = 0.004.

Shapes: images (N, C, H, W) float in [0, 1]; labels (N,) int; output like images.
"""

from __future__ import annotations

import math

import torch

from shared.attacks._base import check_inputs, cross_entropy, signed_gradient_steps


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s number of steps for a given eps in [0, 1] units (at least 1)."""
    return max(int(math.floor(min(eps * 255 + 4, 1.25 * eps * 255))), 1)


def bim(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float = 8 / 255,
    alpha: float = 1 / 255,
    steps: int | None = None,
) -> torch.Tensor:
    """Untargeted BIM.

    Parameters
    ----------
    model : torch.nn.Module
        Maps [0, 1] images to logits.
    images, labels : torch.Tensor
        The clean batch and its true classes.
    eps : float
        Radius of the L-inf ball in [0, 1] units (default 8/255).
    alpha : float
        Step size in [0, 1] units (default 1/255).
    steps : int, optional
        Number of steps; default :func:`kurakin_steps` of eps.

    Returns
    -------
    torch.Tensor
        Detached adversarial images within ``eps`` of ``images``, in [0, 1].
    """
    images, labels = check_inputs(images, labels, eps)
    steps = kurakin_steps(eps) if steps is None else int(steps)
    if steps < 1 or alpha <= 0:
        raise ValueError(f"BIM needs steps >= 1 and alpha > 0, got steps={steps}, alpha={alpha}")
    return signed_gradient_steps(cross_entropy(model), images, images, labels, eps=eps, alpha=alpha, steps=steps,
                                 models=[model])
