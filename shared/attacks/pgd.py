"""PGD: projected gradient descent with a random start.

Paper: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018
(https://arxiv.org/abs/1706.06083).
Distance: L-inf. A uniform random start in the eps ball, then ``steps`` signed
gradient steps of size ``alpha`` (default eps/4), each projected back.
The start is drawn from a generator seeded with ``seed``: same seed, same output.

Shapes: images (N, C, H, W) float in [0, 1]; labels (N,) int; output like images.
"""

from __future__ import annotations

import torch

from shared.attacks._base import check_inputs, cross_entropy, random_start, signed_gradient_steps


def pgd(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float = 8 / 255,
    alpha: float | None = None,
    steps: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """Untargeted L-inf PGD.

    Parameters
    ----------
    model : torch.nn.Module
        Maps [0, 1] images to logits.
    images, labels : torch.Tensor
        The clean batch and its true classes.
    eps : float
        Radius of the L-inf ball in [0, 1] units (default 8/255).
    alpha : float, optional
        Step size; default eps / 4.
    steps : int
        Number of gradient steps (default 10).
    seed : int
        Seed of the random start.

    Returns
    -------
    torch.Tensor
        Detached adversarial images within ``eps`` of ``images``, in [0, 1].
    """
    images, labels = check_inputs(images, labels, eps)
    alpha = eps / 4 if alpha is None else alpha
    if steps < 1 or alpha <= 0:
        raise ValueError(f"PGD needs steps >= 1 and alpha > 0, got steps={steps}, alpha={alpha}")
    return signed_gradient_steps(cross_entropy(model), random_start(images, eps, seed), images, labels, eps=eps,
                                 alpha=alpha, steps=steps, models=[model])
