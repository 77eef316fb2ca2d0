"""The files of a checkpoint, read without torch: its JSON card beside the weights, checked by sha256.

Classifiers (:mod:`shared.models.network`) and the detector (:mod:`shared.screening.detector`)
save through :func:`write_card` and load through :func:`read_card`, so the
permissions, the card and the hash check have one home; producers read cards
with it too, and start without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def write_card(weights_path: str | Path, card: dict) -> dict:
    """Finish a checkpoint whose weights are written: readable as the umask allows, its card with the sha256 beside.

    safetensors creates the file owner-only (0600); a worker running as
    another user (the compose image's) must be able to read shipped weights.
    Returns the card as written (``card`` with ``sha256`` last).
    """
    path = Path(weights_path)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)
    card = {**card, "sha256": sha256_file(path)}
    card_path(path).write_text(json.dumps(card, indent=2) + "\n")
    return card


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
