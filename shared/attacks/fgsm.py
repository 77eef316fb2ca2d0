"""FGSM: the fast gradient sign method.

Paper: Goodfellow, Shlens and Szegedy, "Explaining and Harnessing
Adversarial Examples", ICLR 2015 (https://arxiv.org/abs/1412.6572).
Distance: L-inf. One step of size eps along the sign of the loss gradient.

Shapes: images (N, C, H, W) float in [0, 1]; labels (N,) int; output like images.
"""

from __future__ import annotations

import torch

from shared.attacks._base import check_inputs, cross_entropy, signed_gradient_steps


def fgsm(model, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 8 / 255) -> torch.Tensor:
    """Untargeted FGSM.

    Parameters
    ----------
    model : torch.nn.Module
        Maps [0, 1] images to logits.
    images, labels : torch.Tensor
        The clean batch and its true classes.
    eps : float
        Maximum perturbation in [0, 1] pixel units (default 8/255).

    Returns
    -------
    torch.Tensor
        Detached adversarial images within ``eps`` of ``images``, in [0, 1].
    """
    images, labels = check_inputs(images, labels, eps)
    return signed_gradient_steps(cross_entropy(model), images, images, labels, eps=eps, alpha=eps, steps=1,
                                 models=[model])
