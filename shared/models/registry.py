"""The classifiers waveshield knows: the shipped cards and the user's own, by name.

A model is a card, ``NAME.json``, beside its weights. The shipped cards live in
the weights directory (``WAVESHIELD_WEIGHTS_DIR``) and are read, never
written. A user's cards live in their models folder (``WAVESHIELD_MODELS``,
by default the per-user data folder platformdirs names), where
:meth:`ModelRegistry.add` writes them once the model has loaded and answered
a batch at its input size. Both kinds are :class:`ModelCard` objects, so
nothing outside this module needs to know which names are shipped.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shared.files import write_atomically
from shared.models import checkpoints
from shared.models.architectures import Architecture, ArchitectureError

#: The size of the shipped models' (CIFAR-10) images.
CIFAR_SIZE = (32, 32)
#: The shipped undefended model: the one `train --defence` models are the twins of.
STANDARD = "standard"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DETECTOR = "detector"  # the learned detector's checkpoint sits among the shipped cards: not a classifier


def user_models_dir(environ: dict | None = None) -> Path:
    """The user's models folder: ``WAVESHIELD_MODELS``, else platformdirs' per-user data folder + ``models``."""
    env = os.environ if environ is None else environ
    if env.get("WAVESHIELD_MODELS"):
        return Path(env["WAVESHIELD_MODELS"])
    import platformdirs

    return Path(platformdirs.user_data_dir("waveshield", appauthor=False)) / "models"


@dataclass(frozen=True)
class ModelCard:
    """What waveshield needs to know of a classifier, read from its JSON card.

    Attributes
    ----------
    name : str
        The name jobs use (``--model NAME``).
    architecture : Architecture
        How to build it.
    arch_args : dict
        Keyword arguments of the architecture's builder.
    weights : Path
        The safetensors file (or TorchScript archive) beside the card.
    sha256 : str
        The weights' hash, checked on every load.
    input_size : tuple of int
        ``(height, width)`` of the model's input.
    resize : str
        How an image reaches that size: ``shorter-side`` (resize, then centre crop) or ``squash``.
    mean, std : tuple of float or None
        Input normalisation applied before the model; None when the model normalises itself.
    classes : tuple of str
        The class names, in logit order.
    defended_by : str or None
        The defence the model is meant to be used behind.
    twin : str or None
        The model's DWT-trained twin, as registered.
    twin_of : str or None
        The model this one was fine-tuned from on DWT copies (``waveshield train --from``): it is that model's twin.
    shipped : bool
        Whether the card came with waveshield (read-only).
    facts : dict
        The whole card as stored (training recipe, accuracy...).
    """

    name: str
    architecture: Architecture
    arch_args: dict
    weights: Path
    sha256: str
    input_size: tuple[int, int]
    resize: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    classes: tuple[str, ...]
    defended_by: str | None
    twin: str | None
    shipped: bool
    facts: dict = field(repr=False, compare=False)
    twin_of: str | None = None

    @classmethod
    def read(cls, card_file: Path, *, shipped: bool) -> "ModelCard":
        """The card in ``card_file`` (its weights are not read; :meth:`ModelRegistry.load` checks them).

        Raises
        ------
        ModelCardError
            If the card is unreadable or lacks what it must hold.
        """
        try:
            facts = json.loads(card_file.read_text())
            if facts.get("architecture") == "cifar-resnet18" and "arch_args" not in facts:  # `train`'s own cards
                arch_args = {"width": int(facts["width"]), "num_classes": len(facts["classes"])}
            else:
                arch_args = dict(facts.get("arch_args") or {})
            weights = card_file.parent / facts.get("weights_file", card_file.with_suffix(".safetensors").name)
            return cls(
                name=card_file.stem, architecture=Architecture.parse(facts["architecture"]), arch_args=arch_args,
                weights=weights, sha256=str(facts["sha256"]),
                input_size=tuple(int(n) for n in facts.get("input_size", CIFAR_SIZE)),
                resize=facts.get("resize", "squash"),
                mean=_floats(facts.get("mean")), std=_floats(facts.get("std")),
                classes=tuple(str(c) for c in facts["classes"]),
                defended_by=facts["defended_by"] if "defended_by" in facts else _trained_on(facts, card_file.parent),
                twin=facts.get("twin"), twin_of=facts.get("twin_of") or _shipped_twin_of(facts, card_file.stem),
                shipped=shipped, facts=facts)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise checkpoints.ModelCardError(f"model card {card_file} is unreadable: {exc}") from None

    @property
    def geometry(self):
        """The model's input as an :class:`shared.images.geometry.InputSize` (size and resize policy)."""
        from shared.images.geometry import InputSize  # Pillow: not for a producer that only reads cards

        return InputSize(*self.input_size, self.resize)

    @property
    def size_text(self) -> str:
        """``32x32``, ``224x224`` or ``H x W`` as written on the command line."""
        return f"{self.input_size[0]}x{self.input_size[1]}"

    def describe(self) -> list[str]:
        """The card as ``key: value`` lines, for ``waveshield model show``."""
        norm = ("inside the model" if self.mean is None else
                f"mean {', '.join(f'{v:g}' for v in self.mean)}; std {', '.join(f'{v:g}' for v in self.std)}")
        lines = [
            f"name: {self.name} ({'shipped, read-only' if self.shipped else 'yours'})",
            f"architecture: {self.architecture}"
            + (f" ({', '.join(f'{k}={v}' for k, v in self.arch_args.items())})" if self.arch_args else ""),
            f"weights: {self.weights} (sha256 {self.sha256})",
            f"input: {self.size_text}, resize {self.resize}; normalisation {norm}",
            f"classes ({len(self.classes)}): {', '.join(self.classes[:12])}"
            + (f" ... ({len(self.classes) - 12} more)" if len(self.classes) > 12 else ""),
            f"defended by: {self.defended_by or 'nothing'}",
            f"twin: {self.twin or 'none'}" + (f"; the twin of {self.twin_of}" if self.twin_of else "")
            + (" (fine-tuned from it)" if "fine_tuned_from_sha256" in self.facts else ""),
        ]
        if "test_accuracy" in self.facts:
            lines.append(f"test accuracy: {self.facts['test_accuracy']:.4f}")
        if self.architecture.runs_code_from_file:
            lines.append("note: a TorchScript archive runs the code it holds; keep only archives you trust")
        return lines


def _is_card(path: Path) -> bool:
    """Whether a JSON file beside weights is a model card (a training checkpoint's sidecar, say, is not)."""
    try:
        facts = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True  # a broken card is still a card: reading it says what is wrong with it
    return isinstance(facts, dict) and "architecture" in facts


def _trained_on(facts: dict, folder: Path) -> str | None:
    """The named defence whose copies a shipped model was trained on (``train`` records its options), if any."""
    options = facts.get("defence")
    if not isinstance(options, dict):
        return options
    from shared.dwt import defences

    try:
        named = defences.load(folder)
    except (OSError, ValueError):
        named = {}
    return next((name for name, setting in named.items() if setting == options), options.get("wavelet"))


def _shipped_twin_of(facts: dict, name: str) -> str | None:
    """``train`` trains a model on DWT copies with the standard model's recipe: it is the standard model's twin."""
    trained_here = facts.get("architecture") == "cifar-resnet18" and "arch_args" not in facts
    return STANDARD if trained_here and facts.get("defence") and name != STANDARD else None


def _floats(values) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


class ModelRegistry:
    """The shipped cards of ``weights_dir`` and the user's cards of ``models_dir``.

    Parameters
    ----------
    weights_dir : str or Path
        The shipped checkpoints (read-only).
    models_dir : str or Path or None
        The user's models folder (default: :func:`user_models_dir`).
    """

    def __init__(self, weights_dir: str | Path, models_dir: str | Path | None = None):
        self.weights_dir = Path(weights_dir)
        self.models_dir = Path(models_dir) if models_dir is not None else user_models_dir()

    def _card_files(self) -> dict[str, tuple[Path, bool]]:
        found: dict[str, tuple[Path, bool]] = {}
        for folder, shipped in ((self.models_dir, False), (self.weights_dir, True)):  # shipped names win
            if not folder.is_dir():
                continue
            for card in folder.glob("*.json"):
                if (card.stem != _DETECTOR and any(card.with_suffix(s).is_file() for s in (".safetensors", ".pt"))
                        and _is_card(card)):
                    found[card.stem] = (card, shipped)
        return found

    def names(self) -> list[str]:
        """Every model's name: the shipped ones first, then the user's, each sorted."""
        files = self._card_files()
        return sorted(files, key=lambda n: (not files[n][1], n))

    def has(self, name: str) -> bool:
        """Whether a card of that name exists."""
        return name in self._card_files()

    def card(self, name: str) -> ModelCard:
        """The card of model ``name``.

        Raises
        ------
        MissingModel
            If there is none (the message lists the models and a likely spelling).
        """
        files = self._card_files()
        if name not in files:
            raise MissingModel(self.missing(name))
        path, shipped = files[name]
        return ModelCard.read(path, shipped=shipped)

    def twin_for(self, name: str, defence: str | None = None) -> str | None:
        """The twin of model ``name``: its card's ``twin``, else a model fine-tuned from it (``train --from``), behind
        ``defence`` when one is given (the first by name when several are)."""
        card = self.card(name)
        if card.twin:
            return card.twin
        found = []
        for path, shipped in self._card_files().values():
            try:
                found.append(ModelCard.read(path, shipped=shipped))
            except checkpoints.ModelCardError:
                continue  # another model's broken card says so when that model is used, not here
        return next((c.name for c in sorted(found, key=lambda c: c.name)
                     if c.twin_of == name and (defence is None or c.defended_by == defence)), None)

    def missing(self, name: str) -> str:
        """Why ``name`` is not known, in words."""
        import difflib

        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        advice = (f"did you mean {close[0]!r}?" if close else
                  "register yours with `waveshield model add` or train one with `waveshield train`")
        return (f"no model {name!r} in {self.weights_dir} or {self.models_dir} (models: {', '.join(known) or 'none'}); "
                f"{advice}")

    def load(self, name: str, device: str = "cpu"):
        """Model ``name`` in eval mode on ``device``, taking [0, 1] pixels, its weights' sha256 checked.

        Raises
        ------
        MissingModel, ModelCardError, ArchitectureError
            If it is unknown, its file differs from its card, or the file no longer fits the architecture.
        """
        card = self.card(name)
        checkpoints.read_card(card.weights, what=f"model {name!r}")  # the weights' sha256 against the card
        return instantiate(card.architecture, card.arch_args, card.weights, card.mean, card.std).to(device).eval()

    def add(self, name: str, *, architecture: str, weights: str | Path | None, input_size: tuple[int, int],
            classes: list[str], arch_args: dict | None = None, resize: str = "shorter-side",
            mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
            defended_by: str | None = None, twin: str | None = None, facts: dict | None = None) -> ModelCard:
        """Check a classifier and register it: its card (with the weights' sha256) and weights in the models folder.

        The model is loaded once: its weights must fit the architecture
        exactly, and a batch at ``input_size`` must give one logit per class.

        ``facts`` are recorded on the card besides (how it was trained, ``twin_of``).

        Returns
        -------
        ModelCard
            The card as written.

        Raises
        ------
        ValueError
            One line per failure (:class:`ArchitectureError` for what the files do).
        """
        arch = Architecture.parse(architecture)
        self.check_new(name)
        weights_path = self._source_file(arch, weights)
        height, width = input_size
        if min(height, width) < 8:
            raise ValueError(f"input size {height}x{width} is too small: at least 8 pixels a side")
        from shared.images.geometry import InputSize

        InputSize(height, width, resize)  # an unknown resize policy: one line naming the valid ones
        _check_classes(classes)
        mean, std = _check_normalisation(arch, mean, std)
        if defended_by is not None:
            from shared.dwt import defences

            defences.get(defended_by, self.weights_dir)  # an unknown defence is one line listing the valid ones
        if twin is not None:
            other = self.card(twin)
            if list(other.classes) != list(classes) or other.input_size != (height, width):
                raise ValueError(f"twin {twin!r} takes {other.size_text} images of {len(other.classes)} classes; "
                                 f"{name!r} takes {height}x{width} of {len(classes)}: a twin must match both")
        model = instantiate(arch, arch_args, weights_path, mean, std).eval()
        _check_logits(model, arch, height, width, len(classes))
        return self._write(name, arch, weights_path, {
            **(facts or {}),
            "architecture": str(arch) if arch.kind != "torchscript" else "torchscript:" + f"{name}.pt",
            "arch_args": dict(arch_args or {}),
            "input_size": [height, width], "resize": resize,
            "mean": None if mean is None else list(mean), "std": None if std is None else list(std),
            "classes": list(classes), "defended_by": defended_by, "twin": twin,
            "registered_from": str(weights_path.resolve()),
        })

    def remove(self, name: str) -> ModelCard:
        """Delete the user's model ``name``: its card first (so that a half-removed model is no model), then its
        weights; return the card it had.

        Raises
        ------
        MissingModel, ValueError
            If there is no such model, or it is shipped (read-only).
        """
        card = self.card(name)
        if card.shipped:
            raise ValueError(f"{name!r} is shipped with waveshield and read-only; only your own models are removed")
        (self.models_dir / f"{name}.json").unlink()
        card.weights.unlink(missing_ok=True)
        return card

    def check_new(self, name: str) -> None:
        """Raise a one-line ValueError unless ``name`` is a valid name that no model has yet."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, no ':' or '@', "
                             "which separate settings and detector paths)")
        if self.has(name):
            where = "shipped with waveshield" if self.card(name).shipped else f"in {self.models_dir}"
            raise ValueError(f"a model {name!r} exists ({where}); pick another name"
                             + ("" if self.card(name).shipped else f", or remove it: waveshield model remove {name}"))

    @staticmethod
    def _source_file(arch: Architecture, weights) -> Path:
        if arch.kind == "torchscript":
            if weights is not None:
                raise ValueError("a TorchScript archive holds its own weights: leave --weights out")
            path = Path(arch.target)
        else:
            if weights is None:
                raise ValueError(f"{arch} needs --weights FILE.safetensors")
            path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        return path

    def _write(self, name: str, arch: Architecture, source: Path, card: dict) -> ModelCard:
        """Copy the weights into the models folder, then write the card beside them (the card last, atomically)."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / f"{name}{'.pt' if arch.kind == 'torchscript' else '.safetensors'}"
        write_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
        umask = os.umask(0)
        os.umask(umask)
        target.chmod(0o666 & ~umask)  # workers running as another user (compose) read the folder too
        card = {**card, "weights_file": target.name, "sha256": checkpoints.sha256_file(target)}
        card_file = write_atomically(self.models_dir / f"{name}.json",
                                     lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
        return ModelCard.read(card_file, shipped=False)


class MissingModel(ValueError):
    """No card of that name, shipped or the user's."""


def instantiate(arch: Architecture, arch_args: dict | None, weights: Path, mean, std):
    """The module of a card: built and filled, or the TorchScript archive; behind its normalisation when it has one."""
    from shared.models import architectures

    if arch.kind == "torchscript":
        model = architectures.load_torchscript(weights)
    else:
        model = architectures.build(arch, arch_args)
        architectures.load_state(model, weights)
    if mean is None:
        return model
    from shared.models.normalized import Normalized

    return Normalized(model, mean, std)


def _check_classes(classes: list[str]) -> None:
    names = [c.strip() for c in classes]
    if len(names) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, the class list has {len(names)}")
    if any(not c for c in names):
        raise ValueError(f"class {names.index('') + 1} of the class list is empty")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ValueError(f"the class list names {', '.join(duplicates[:3])} more than once")


def _check_normalisation(arch: Architecture, mean, std):
    if arch.kind == "cifar-resnet18":
        if mean is not None or std is not None:
            raise ValueError("cifar-resnet18 normalises its inputs itself (its mean and std are in the weights): "
                             "leave --mean and --std out")
        return None, None
    if (mean is None) != (std is None):
        raise ValueError("give --mean and --std together (or neither, for a model that takes [0, 1] pixels)")
    if mean is None:
        return None, None
    if len(mean) not in (1, 3) or len(std) not in (1, 3):
        raise ValueError(f"--mean and --std take 1 or 3 values (one per colour channel), got {len(mean)} and {len(std)}")
    if any(not math.isfinite(v) for v in (*mean, *std)) or any(v <= 0 for v in std):
        raise ValueError("--mean must be finite and --std positive")
    return tuple(mean), tuple(std)


def _check_logits(model, arch: Architecture, height: int, width: int, n_classes: int) -> None:
    """A batch of two images at the input size must give two rows of ``n_classes`` logits."""
    import torch

    try:
        with torch.no_grad():
            out = model(torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:  # the user's model: any error it raises is the answer, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArchitectureError(f"{arch} fails on a batch of {height}x{width} images: {first}") from None
    if isinstance(out, (tuple, list)) or hasattr(out, "logits"):  # torchvision's GoogLeNet/Inception in train mode
        raise ArchitectureError(f"{arch} returns {type(out).__name__}, not a tensor of logits")
    shape = tuple(out.shape)
    if len(shape) != 2 or shape[0] != 2:
        raise ArchitectureError(f"{arch} gives outputs of shape {shape} for 2 images of {height}x{width}, not 2 x N logits")
    if shape[1] != n_classes:
        raise ArchitectureError(f"{arch} gives {shape[1]} logits per image and the class list has {n_classes} classes"
                                + (" (set --arch-args num_classes=...)" if arch.kind == "torchvision" else ""))
