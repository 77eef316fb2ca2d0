"""Bit-depth reduction: feature squeezing's colour-depth squeezer.

Paper: Xu, Evans and Qi, "Feature Squeezing: Detecting Adversarial Examples in
Deep Neural Networks", NDSS 2018 (https://arxiv.org/abs/1704.01155).
Each value becomes the nearest of 2^bits evenly spaced levels in [0, 1]:
``round(x * (2^bits - 1)) / (2^bits - 1)``. Rounding is flat almost everywhere,
so the gradient passes straight through (BPDA).

Shapes: images (N, C, H, W) float in [0, 1]; output like images.
"""

from __future__ import annotations

import functools

import torch

from shared.attacks.bpda import straight_through


def bit_depth(images: torch.Tensor, *, bits: int = 5) -> torch.Tensor:
    """Reduce every value to ``bits`` bits.

    Parameters
    ----------
    images : torch.Tensor
        Float N x C x H x W in [0, 1].
    bits : int
        1..8; 8 keeps every 8-bit level.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device; 0 and 1 map to themselves. The backward
        pass is the identity (straight-through), built only when ``images``
        requires grad.
    """
    squeeze = functools.partial(_squeeze, levels=2 ** bits - 1)
    return straight_through(images, squeeze) if images.requires_grad else squeeze(images)


def _squeeze(images: torch.Tensor, levels: int) -> torch.Tensor:
    # Clamped first: a value outside [0, 1] is no pixel, and the output stays a valid image.
    # torch.round is round-half-to-even like numpy's; on 8-bit inputs no value is a tie anyway.
    return images.clamp(0, 1).mul(levels).round().div(levels)
