"""Adversarial attacks, one small module each, behind a name registry.

Every attack is ``fn(model, images, labels, **params) -> adversarial``: float
N x C x H x W in [0, 1] in and out, eps in [0, 1] units, the model's
train/eval mode restored, output detached. :class:`BPDA` wraps a model with a
non-differentiable defence so any of them can attack through it.
"""

from __future__ import annotations

from shared.attacks.bim import bim, kurakin_steps
from shared.attacks.bpda import BPDA
from shared.attacks.deepfool import deepfool
from shared.attacks.fgsm import fgsm
from shared.attacks.pgd import pgd

ATTACKS = {"fgsm": fgsm, "bim": bim, "pgd": pgd, "deepfool": deepfool}


def names() -> list[str]:
    """The registered attack names."""
    return sorted(ATTACKS)


def get(name: str):
    """The attack function registered under ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If no attack has that name; the message lists the valid names.
    """
    try:
        return ATTACKS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(names())}") from None


__all__ = ["ATTACKS", "BPDA", "bim", "deepfool", "fgsm", "get", "kurakin_steps", "names", "pgd"]
