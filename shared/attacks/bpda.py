"""Attack through a defence: BPDA for one without a gradient, EOT for a randomised one.

Paper: Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False
Sense of Security", ICML 2018 (https://arxiv.org/abs/1802.00420).
The defence (DWT reconstruction, say) runs in the forward pass; the backward
pass treats it as the identity. Wrap the model, then run any attack on it:

    defended = BPDA(model, functools.partial(reconstruct, wavelet="haar"))
    adversarial = bim(defended, images, labels, eps=0.01)

Shapes: the defence maps (N, C, H, W) in [0, 1] to the same shape.

A defence that carries its own gradient is wrapped by :class:`Defended`; a
randomised one by :class:`EOT` (Athalye, Engstrom, Ilyas and Kwok,
"Synthesizing Robust Adversarial Examples", ICML 2018), which averages the
classifier over several draws so that a step follows the defence's
expectation rather than one draw.
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


class Defended(nn.Module):
    """``model(defence(x))`` with the defence's own gradient (see :mod:`shared.transforms`).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    defence : callable
        Tensor -> tensor of the same shape, differentiable (or straight-through where it has no gradient).
    """

    def __init__(self, model: nn.Module, defence: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.defence = defence

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.defence(images))


class EOT(nn.Module):
    """The expected classifier behind a randomised defence: log of the mean softmax over ``draws`` draws.

    Each forward pass draws ``draws`` fresh transformations from the wrapper's
    own generator (seeded once, so that an attack run twice crafts the same
    images), and returns the log of the averaged class probabilities: logits
    of the classifier the defence is on average. A step then follows every
    draw at once, weighted by how much each draw's probabilities count in the
    mean (EOT on the expected classifier, not the mean of each draw's loss
    gradient). Attacks that take a model run on it unchanged.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    defence : callable
        ``defence(images, generator=...)``: a randomised transformation drawing from the generator it is given.
    draws : int
        Transformations averaged per forward pass.
    seed : int
        Seeds the generator of the draws.
    """

    def __init__(self, model: nn.Module, defence: Callable[..., torch.Tensor], *, draws: int = 8, seed: int = 0):
        super().__init__()
        if draws < 1:
            raise ValueError(f"EOT averages at least 1 draw, got {draws}")
        self.model = model
        self.defence = defence
        self.draws = draws
        self.seed = seed
        self._generator = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._generator is None or self._generator.device != images.device:
            self._generator = torch.Generator(device=images.device).manual_seed(self.seed)
        probabilities = sum(torch.softmax(self.model(self.defence(images, generator=self._generator)), dim=1)
                            for _ in range(self.draws)) / self.draws
        return torch.log(probabilities.clamp(min=1e-30))
