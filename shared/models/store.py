"""The named checkpoints of a weights directory: found, checked and loaded in one place.

Workers and producers alike ask a :class:`ModelStore` for ``standard``,
``haar`` or ``daubechies``; a missing checkpoint is one clear error that says
how to train it, and each model is loaded (and its sha256 verified) once.
"""

from __future__ import annotations

from pathlib import Path

from shared.models import checkpoints
from shared.screening import detector

# Models are loaded (and torch imported) on first use: producers use this store to check and read cards.


class MissingWeights(ValueError):
    """A named checkpoint is not in the weights directory."""


def train_command(name: str) -> str:
    """The command that trains the checkpoint ``name`` with the shipped recipe."""
    if name not in ("standard", "haar", "daubechies"):
        return f"waveshield train --defence none|haar|daubechies --name {name} --data PATH"
    return f"waveshield train --defence {'none' if name == 'standard' else name} --data PATH"


class ModelStore:
    """Checkpoints ``NAME.safetensors`` (+ ``NAME.json``) in ``weights_dir``, loaded lazily onto ``device``.

    Parameters
    ----------
    weights_dir : str or Path
        The folder of checkpoints.
    device : str
        Where loaded models go.
    """

    def __init__(self, weights_dir: str | Path, device: str = "cpu"):
        self.weights_dir = Path(weights_dir)
        self.device = device
        self._loaded: dict = {}

    def path(self, name: str) -> Path:
        """Where the checkpoint ``name`` is (or would be)."""
        return self.weights_dir / f"{name}.safetensors"

    def has(self, name: str) -> bool:
        """Whether the checkpoint ``name`` is there."""
        return self.path(name).is_file()

    def known(self) -> list[str]:
        """The classifiers of this folder: checkpoints with a model card, the detector aside."""
        return sorted(p.stem for p in self.weights_dir.glob("*.safetensors")
                      if p.name != detector.WEIGHTS_NAME and p.with_suffix(".json").is_file())

    def missing(self, name: str) -> str:
        """Why ``name`` cannot be loaded, in words: the folder searched, the models there, a likely spelling."""
        import difflib

        known = self.known()
        close = difflib.get_close_matches(name, known, n=1)
        # A likely misspelling is the answer; training a model of the misspelled name is not.
        advice = f"did you mean {close[0]!r}?" if close else f"train it: {train_command(name)}"
        return f"no weights {name}.safetensors in {self.weights_dir} (models there: {', '.join(known) or 'none'}); {advice}"

    def require(self, name: str, purpose: str = "this") -> Path:
        """The checkpoint's path; raises :class:`MissingWeights` (saying how to train it) when it is missing."""
        if not self.has(name):
            raise MissingWeights(f"{purpose}: {self.missing(name)}")
        return self.path(name)

    def get(self, name: str):
        """The model ``name`` (a :class:`shared.models.network.ResNet18`) in eval mode on the store's device, loaded and verified once."""
        from shared.models import network

        if name not in self._loaded:
            self._loaded[name] = network.load(self.require(name, f"model {name!r}"), device=self.device)[0]
        return self._loaded[name]

    def detector(self, sha256: str | None = None):
        """The learned detector of this weights directory and its card, loaded once.

        Raises
        ------
        ModelCardError
            If it is missing or corrupt, or its sha256 is not ``sha256`` (the
            detector the job was submitted with).
        """
        from shared.screening import detector

        if "detector" not in self._loaded:
            model, card = detector.load(self.weights_dir / detector.WEIGHTS_NAME)
            self._loaded["detector"] = (model.to(self.device), card)
        model, card = self._loaded["detector"]
        if sha256 is not None and card["sha256"] != sha256:
            raise checkpoints.ModelCardError(f"the detector in {self.weights_dir} (sha256 {card['sha256'][:12]}) is not the "
                                        f"one the job was submitted with ({sha256[:12]}); give every worker the same weights")
        return model, card

    def card(self, name: str) -> dict:
        """The JSON card of the checkpoint ``name`` (without loading its weights)."""
        import json

        return json.loads(checkpoints.card_path(self.require(name, f"model {name!r}")).read_text())

    def detector_card(self) -> dict:
        """The learned detector's card, once its weights' sha256 matches it (without loading it).

        Raises
        ------
        ModelCardError
            If it is missing or corrupt.
        """
        return checkpoints.read_card(self.weights_dir / detector.WEIGHTS_NAME, what="detector",
                                     missing_hint="; train it: waveshield fit-detector")
