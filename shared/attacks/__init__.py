"""Adversarial attacks, one small module each, behind a name registry.

Every attack is ``fn(model, images, labels, **params) -> adversarial``: float
N x C x H x W in [0, 1] in and out, eps in [0, 1] units, the model's
train/eval mode restored, output detached. :class:`BPDA` wraps a model with a
non-differentiable defence so any of them can attack through it,
:class:`Defended` with a differentiable one, :class:`EOT` with a randomised one.

Besides the project's own (:func:`names`), ``torchattacks:NAME`` is any
torchattacks attack under the same contract (``torchattacks:AutoAttack``,
``torchattacks:Square``, ...; see :mod:`shared.attacks.external`). torchattacks
is imported only when such a name is asked for.
"""

from __future__ import annotations

import inspect

from shared.attacks import external
from shared.attacks.bim import bim, kurakin_steps
from shared.attacks.bpda import BPDA, EOT, Defended
from shared.attacks.deepfool import deepfool
from shared.attacks.external import parse_value
from shared.attacks.fgsm import fgsm
from shared.attacks.pgd import pgd

ATTACKS = {"fgsm": fgsm, "bim": bim, "pgd": pgd, "deepfool": deepfool}
# What an error or a help text says besides names(): the torchattacks attacks are not listed (that would import it).
EXTERNAL = "torchattacks:NAME (e.g. torchattacks:AutoAttack)"


def names() -> list[str]:
    """The registered attack names (the project's own; ``torchattacks:NAME`` works too, see :data:`EXTERNAL`)."""
    return sorted(ATTACKS)


def get(name: str):
    """The attack function registered under ``name`` (case-insensitive), or ``torchattacks:CLASSNAME``'s.

    Raises
    ------
    ValueError
        If no attack has that name; the message lists the valid names (for an
        unknown torchattacks class, the classes torchattacks has).
    """
    text = str(name)
    if text.lower().startswith(external.PREFIX):
        return external.attack(text[len(external.PREFIX):])
    try:
        return ATTACKS[text.lower()]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(names())}, or {EXTERNAL}") from None


def parameters(name: str) -> list[str]:
    """The parameter names the attack ``name`` accepts (besides model, images and labels), sorted.

    Raises
    ------
    ValueError
        As :func:`get`, for an unknown attack.
    """
    if str(name).lower().startswith(external.PREFIX):
        return external.parameters(str(name)[len(external.PREFIX):])
    return sorted(set(inspect.signature(get(name)).parameters) - {"model", "images", "labels"})


__all__ = ["ATTACKS", "BPDA", "EOT", "EXTERNAL", "Defended", "bim", "deepfool", "fgsm", "get", "kurakin_steps", "names",
           "parameters", "parse_value", "pgd"]
