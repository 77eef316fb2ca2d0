"""The files of a checkpoint, read without torch: its JSON card beside the weights, checked by sha256.

Classifiers (:mod:`shared.models`) and the detector (:mod:`shared.detector`)
load their weights through :func:`read_card`, so the card and hash check has
one home; producers read cards with it too, and start without loading torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


class ModelCardError(ValueError):
    """A checkpoint is missing, inconsistent with its card, or tampered with."""


def card_path(weights_path: str | Path) -> Path:
    """The JSON card that sits beside a ``.safetensors`` file."""
    return Path(weights_path).with_suffix(".json")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_card(weights_path: str | Path, *, what: str = "checkpoint", missing_hint: str = "") -> dict:
    """The card of the checkpoint at ``weights_path``, once the weights' sha256 matches it.

    Raises
    ------
    ModelCardError
        If a file is missing (the message ends with ``missing_hint``), the card
        is unreadable, or the sha256 differs.
    """
    path = Path(weights_path)
    cpath = card_path(path)
    if not path.is_file() or not cpath.is_file():
        raise ModelCardError(f"{what} {path} or its card {cpath.name} is missing{missing_hint}")
    try:
        card = json.loads(cpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{what} card {cpath} is unreadable: {exc}") from None
    actual = sha256_file(path)
    if actual != card.get("sha256"):
        raise ModelCardError(f"{path.name}: sha256 differs from its card ({actual[:12]}... against "
                             f"{str(card.get('sha256'))[:12]}...); the file is corrupt or was replaced")
    return card
