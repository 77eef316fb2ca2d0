"""Why an image was flagged: the signal that raised its score most."""

from __future__ import annotations

import torch

from shared.screening.detector import STATISTICS
from shared.screening.detector.model import Detector


def signal_groups(names: list[str]) -> list[str]:
    """The signal each feature belongs to, for a record's "why": ``haar@haar``, ``haar:removed``, ``chroma``...

    A path's name may hold colons of its own (``standard@resize-pad:shrink=0.05``), so a
    path's feature drops only its last part.
    """
    def group(name: str) -> str:
        if "@" in name:
            return name.rsplit(":", 1)[0]
        return name.split(":")[0] if name.split(":")[0] in STATISTICS else name
    return [group(name) for name in names]


def strongest_signal(model: Detector, f: torch.Tensor, names: list[str]) -> list[str | None]:
    """Per image, the signal that raised its score most, or None when none raised it.

    Each feature's contribution is the gradient of the logit times the
    feature's departure from a typical clean image (both standardised),
    summed per signal.

    Returns the name of that signal: a path (``haar@haar``: what the Haar
    model said of the Haar reconstruction, and how it differs from the raw
    image's), a reconstruction's change (``haar:removed``) or a pixel
    statistic (``steps``); None where no signal's contribution is above 0
    (the image looks at least as clean as a typical clean one), since
    naming the least negative signal would explain a score nobody raised.
    """
    with torch.enable_grad():
        z = ((f - model.mean) / model.scale).detach().requires_grad_(True)
        grad, = torch.autograd.grad(model.net(z).sum(), z)
    contribution = grad * (z.detach() - model.reference)
    groups = signal_groups(names)
    labels = sorted(set(groups), key=groups.index)
    index = torch.tensor([labels.index(g) for g in groups])
    per_group = torch.zeros(len(f), len(labels)).index_add_(1, index, contribution)
    best, at = per_group.max(1)
    return [labels[i] if gain > 0 else None for i, gain in zip(at.tolist(), best.tolist())]
