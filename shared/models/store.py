"""The classifiers a job names: found, checked and loaded in one place.

Workers and producers alike ask a :class:`ModelStore` for a model by name:
a shipped checkpoint of the weights directory, or a model the user
registered in their models folder (:mod:`shared.models.registry`). A missing
one is one clear error that says how to get it, and each model is loaded
(and its sha256 verified) once.
"""

from __future__ import annotations

from pathlib import Path

from shared.images.geometry import InputSize
from shared.images.image_set import CIFAR10_CLASSES
from shared.models import checkpoints
from shared.models.registry import CIFAR_SIZE, ModelRegistry
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
    """Checkpoints ``NAME.safetensors`` (+ ``NAME.json``) in ``weights_dir`` and the user's registered models,
    loaded lazily onto ``device``.

    Parameters
    ----------
    weights_dir : str or Path
        The folder of shipped checkpoints.
    device : str
        Where loaded models go.
    models_dir : str or Path or None
        The user's models folder (default: ``WAVESHIELD_MODELS`` or the per-user data folder).
    """

    def __init__(self, weights_dir: str | Path, device: str = "cpu", models_dir: str | Path | None = None):
        self.weights_dir = Path(weights_dir)
        self.device = device
        self.registry = ModelRegistry(self.weights_dir, models_dir)
        self._loaded: dict = {}

    def path(self, name: str) -> Path:
        """Where the checkpoint ``name`` is (or would be, in the weights directory)."""
        shipped = self.weights_dir / f"{name}.safetensors"
        if not shipped.is_file() and self.registry.has(name):
            return self.registry.card(name).weights
        return shipped

    def has(self, name: str) -> bool:
        """Whether the checkpoint ``name`` is there: shipped or registered."""
        return (self.weights_dir / f"{name}.safetensors").is_file() or self.registry.has(name)

    def known(self) -> list[str]:
        """The classifiers: the weights directory's checkpoints with a model card (the detector aside), then the
        user's registered models."""
        shipped = sorted(p.stem for p in self.weights_dir.glob("*.safetensors")
                         if p.name != detector.WEIGHTS_NAME and p.with_suffix(".json").is_file())
        return shipped + [n for n in self.registry.names() if n not in shipped]

    def missing(self, name: str) -> str:
        """Why ``name`` cannot be loaded, in words: the folder searched, the models there, a likely spelling."""
        import difflib

        known = self.known()
        close = difflib.get_close_matches(name, known, n=1)
        # A likely misspelling is the answer; training a model of the misspelled name is not.
        advice = (f"did you mean {close[0]!r}?" if close else
                  f"train it: {train_command(name)}, or register your own: waveshield model add {name} ...")
        return (f"no weights {name}.safetensors in {self.weights_dir} nor a model {name!r} in {self.registry.models_dir} "
                f"(models there: {', '.join(known) or 'none'}); {advice}")

    def require(self, name: str, purpose: str = "this", *, any_input: bool = False) -> Path:
        """The checkpoint's path; raises :class:`MissingWeights` (saying how to train it) when it is missing.

        Every job but ``evaluate`` decodes 32x32 images and labels them with CIFAR-10's classes in this release:
        unless ``any_input``, a model made for other images is refused here (a :class:`ModelCardError`), in one
        line, rather than fed images or labels it does not know.
        """
        if not self.has(name):
            raise MissingWeights(f"{purpose}: {self.missing(name)}")
        if not any_input:
            size, classes = self.inputs([name], purpose)
            if (size.height, size.width) != CIFAR_SIZE or list(classes) != list(CIFAR10_CLASSES):
                raise checkpoints.ModelCardError(
                    f"{purpose}: model {name!r} takes {size.text} images of {len(classes)} classes; this job runs on "
                    "32x32 images labelled with CIFAR-10's ten classes in this release (evaluate takes any model)")
        return self.path(name)

    def inputs(self, names, purpose: str = "this") -> tuple[InputSize, tuple[str, ...]]:
        """The input size and classes that the models ``names`` share (the shipped ones: 32x32 CIFAR-10).

        Raises
        ------
        MissingWeights
            If one is missing.
        ValueError
            If they read images of different sizes or classes (one line naming each).
        """
        found = {}
        for name in dict.fromkeys(names):
            if not self.has(name):
                raise MissingWeights(f"{purpose}: {self.missing(name)}")
            card = self.registry.card(name)  # a shipped card reads as 32x32, squashed, its own classes
            found[name] = (card.geometry, card.classes)
        if len(set(found.values())) > 1:
            raise ValueError(f"{purpose}: the models read different images: " + "; ".join(
                f"{n} {size.text} ({size.resize}) of {len(classes)} classes" for n, (size, classes) in found.items()))
        return next(iter(found.values()))

    def get(self, name: str):
        """The model ``name`` in eval mode on the store's device, taking [0, 1] pixels, loaded and verified once."""
        from shared.models import network

        if name not in self._loaded:
            path = self.require(name, f"model {name!r}", any_input=True)
            if path.parent == self.weights_dir:
                self._loaded[name] = network.load(path, device=self.device)[0]
            else:
                self._loaded[name] = self.registry.load(name, self.device)
        return self._loaded[name]

    def detector_path(self) -> Path:
        """The learned detector in use: the one fitted into the user's models folder, else the shipped one."""
        fitted = self.registry.models_dir / detector.WEIGHTS_NAME
        return fitted if fitted.is_file() else self.weights_dir / detector.WEIGHTS_NAME

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
            model, card = detector.load(self.detector_path())
            self._loaded["detector"] = (model.to(self.device), card)
        model, card = self._loaded["detector"]
        if sha256 is not None and card["sha256"] != sha256:
            raise checkpoints.ModelCardError(f"the detector {self.detector_path()} (sha256 {card['sha256'][:12]}) is not the "
                                        f"one the job was submitted with ({sha256[:12]}); give every worker the same weights")
        return model, card

    def card(self, name: str) -> dict:
        """The JSON card of the checkpoint ``name`` (without loading its weights)."""
        import json

        path = self.require(name, f"model {name!r}", any_input=True)
        if path.parent != self.weights_dir:
            return dict(self.registry.card(name).facts)
        return json.loads(checkpoints.card_path(path).read_text())

    def detector_card(self) -> dict:
        """The learned detector's card, once its weights' sha256 matches it (without loading it).

        Raises
        ------
        ModelCardError
            If it is missing or corrupt.
        """
        return checkpoints.read_card(self.detector_path(), what="detector",
                                     missing_hint="; train it: waveshield fit-detector")
