"""BPDA: attack through a non-differentiable defence.

Paper: Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False
Sense of Security", ICML 2018 (https://arxiv.org/abs/1802.00420).
The defence (DWT reconstruction, say) runs in the forward pass; the backward
pass treats it as the identity. Wrap the model, then run any attack on it:

    defended = BPDA(model, functools.partial(reconstruct, wavelet="haar"))
    adversarial = bim(defended, images, labels, eps=0.01)

Shapes: the defence maps (N, C, H, W) in [0, 1] to the same shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images, defence):
        return defence(images.detach())

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None  # identity: d defence(x) / dx ~ I


def straight_through(images: torch.Tensor, defence: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``defence(images)`` in the forward pass, the identity in the backward pass."""
    return _StraightThrough.apply(images, defence)


class BPDA(nn.Module):
    """``model(defence(x))`` whose gradient flows through the defence as the identity.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    defence : callable
        Tensor -> tensor of the same shape, not necessarily differentiable.
    """

    def __init__(self, model: nn.Module, defence: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.defence = defence

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(straight_through(images, self.defence))
