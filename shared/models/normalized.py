"""A user's classifier behind its card's input normalisation, so that it takes [0, 1] pixels as ours do."""

from __future__ import annotations

import torch
from torch import nn


class Normalized(nn.Module):
    """``model((x - mean) / std)``: attacks and defences work in [0, 1] pixels, the model sees what it was trained on.

    Parameters
    ----------
    model : nn.Module
        The classifier, taking normalised inputs.
    mean, std : sequence of float
        Per-channel statistics (one value applies to every channel).
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)
