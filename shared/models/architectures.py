"""The networks a model card can name, built and filled with their weights.

An architecture is written ``KIND:TARGET``:

``cifar-resnet18``
    waveshield's own CIFAR ResNet18 (:mod:`shared.models.network`), the shipped models.
``torchvision:NAME``
    a torchvision classifier by its builder's name (``torchvision:resnet50``), untrained.
``python:package.module:factory``
    a function, importable where the workers run, that returns an ``nn.Module``.
``torchscript:FILE.pt``
    a TorchScript archive, architecture and weights in one file.

Weights come from safetensors (tensors only, no code) or, for TorchScript,
from the archive itself. A pickled checkpoint is refused, never unpickled.
Every way a file can fail to fit its architecture is one line (a
:class:`ArchitectureError`), naming the keys or shapes concerned.
"""

from __future__ import annotations

import difflib
import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

KINDS = ("cifar-resnet18", "torchvision", "python", "torchscript")
EXAMPLES = "torchvision:resnet50, python:mypackage.models:build, torchscript:model.pt"


class ArchitectureError(ValueError):
    """An architecture that cannot be built, or weights that do not fit it."""


@dataclass(frozen=True)
class Architecture:
    """A parsed ``KIND:TARGET`` architecture name.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    target : str
        The torchvision builder, ``module:factory`` or archive path ('' for ``cifar-resnet18``).
    """

    kind: str
    target: str

    @classmethod
    def parse(cls, text: str) -> "Architecture":
        """Read ``KIND:TARGET``; a wrong one is one line that lists the kinds and an example."""
        kind, _, target = text.partition(":")
        if kind == "cifar-resnet18" and not target:
            return cls(kind, "")
        if kind not in KINDS or not target:
            raise ArchitectureError(f"unknown architecture {text!r}: expected one of {', '.join(KINDS[1:])} "
                                    f"followed by ':' and its target, e.g. {EXAMPLES}")
        if kind == "python" and target.count(":") != 1:
            raise ArchitectureError(f"python architecture {text!r} must be python:package.module:factory")
        return cls(kind, target)

    def __str__(self) -> str:
        return self.kind if not self.target else f"{self.kind}:{self.target}"

    @property
    def runs_code_from_file(self) -> bool:
        """Whether loading it executes code stored in a file (TorchScript) rather than in installed packages."""
        return self.kind == "torchscript"


def build(arch: Architecture, arch_args: dict | None = None):
    """An untrained ``nn.Module`` of architecture ``arch`` (not for TorchScript, whose archive is the model).

    Raises
    ------
    ArchitectureError
        If the builder does not exist, cannot be imported, rejects ``arch_args``, or returns no module.
    """
    from torch import nn

    args = dict(arch_args or {})
    if arch.kind == "cifar-resnet18":
        from shared.models.network import ResNet18

        factory = ResNet18
    elif arch.kind == "torchvision":
        from torchvision import models

        names = models.list_models()
        if arch.target not in names:
            close = difflib.get_close_matches(arch.target, names, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
            raise ArchitectureError(f"torchvision has no model {arch.target!r}; {hint}")
        args.setdefault("weights", None)  # never downloaded: the weights come from the user's file

        def factory(**kwargs):
            return models.get_model(arch.target, **kwargs)
    elif arch.kind == "python":
        module_name, _, function = arch.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ArchitectureError(f"cannot import {module_name!r} for {arch} ({exc}); install the package "
                                    "where waveshield and its workers run") from None
        factory = getattr(module, function, None)
        if not callable(factory):
            raise ArchitectureError(f"{module_name} has no function {function!r}")
    else:
        raise ArchitectureError(f"{arch} is built from its archive, not by name")
    try:
        module = factory(**args)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"{arch} rejects the arguments {args_text(arch_args)}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ArchitectureError(f"{arch} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def args_text(arch_args: dict | None) -> str:
    """``key=value,...`` as ``--arch-args`` takes it ('none' when empty)."""
    return ",".join(f"{k}={v}" for k, v in (arch_args or {}).items()) or "none"


def refuse_pickle(path: Path) -> None:
    """Raise a one-line :class:`ArchitectureError` when ``path`` is a pickled (``torch.save``) checkpoint.

    The line names the conversion to safetensors, to be run where the file is trusted.
    """
    with open(path, "rb") as fh:
        head = fh.read(2)
    pickled = head[:1] == b"\x80" or (zipfile.is_zipfile(path) and _is_torch_save(path))
    if pickled:
        raise ArchitectureError(
            f"{path.name} is a pickled PyTorch checkpoint; waveshield never unpickles a file (unpickling runs the "
            "code inside it). Convert it where you trust it: python -c \"import torch; from safetensors.torch import "
            f"save_file; save_file(torch.load('{path.name}', weights_only=True), '{path.stem}.safetensors')\" "
            "(a checkpoint that holds more than the state dict: save its model's state_dict())")


def _is_torch_save(path: Path) -> bool:
    """A ``torch.save`` zip holds ``*/data.pkl``; a TorchScript archive holds ``*/code/`` beside it."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("data.pkl") for n in names) and not any("/code/" in n for n in names)


def load_state(module, weights: Path) -> None:
    """Fill ``module`` with the safetensors file ``weights`` (floats cast to the module's), strictly.

    Raises
    ------
    ArchitectureError
        If the file is pickled or not safetensors, or its keys or shapes differ from the module's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    refuse_pickle(weights)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ArchitectureError(f"{weights.name} is not a safetensors file ({exc})") from None
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        raise ArchitectureError(f"{weights.name} does not fit the architecture: {_keys('missing', missing)}, "
                                f"{_keys('unexpected', extra)}")
    wrong = [f"{k} is {_shape(tensors[k])} in the file, {_shape(v)} in the architecture"
             for k, v in expected.items() if tuple(tensors[k].shape) != tuple(v.shape)]
    if wrong:
        raise ArchitectureError(f"{weights.name} does not fit the architecture: {'; '.join(wrong[:3])}"
                                + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    module.load_state_dict({k: t.to(expected[k].dtype) if t.is_floating_point() else t for k, t in tensors.items()})


def _keys(what: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    return f"{len(keys)} {what} key{'s' if len(keys) != 1 else ''}" + (f" ({shown})" if keys else "")


def _shape(tensor) -> str:
    return "x".join(str(n) for n in tensor.shape) or "a scalar"


def load_torchscript(archive: Path):
    """The TorchScript module in ``archive`` on the CPU (it runs the code the archive holds: trusted files only)."""
    import torch

    refuse_pickle(archive)
    try:
        return torch.jit.load(str(archive), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ArchitectureError(f"{archive.name} is not a TorchScript archive ({str(exc).splitlines()[0]})") from None
