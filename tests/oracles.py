"""Helpers that make an oracle library start where ours did, so that the two can be compared exactly."""

import torch


def torchattacks_pgd_start(monkeypatch, shape, seed: int) -> None:
    """Make torchattacks' PGD start from the random point our PGD draws with ``seed``.

    torchattacks draws its start as ``torch.empty_like(x).uniform_(-eps, eps)``; ours as
    ``(2 * torch.rand(shape, generator=seed) - 1) * eps``. Undo with ``monkeypatch.undo()`` once it has run.
    """
    noise = torch.rand(shape, generator=torch.Generator().manual_seed(seed))

    class SameStart:
        def uniform_(self, low, high):
            return (2 * noise - 1) * high

    monkeypatch.setattr(torch, "empty_like", lambda _: SameStart())
