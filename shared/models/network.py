"""The CIFAR ResNet18 and its safetensors checkpoints.

The network follows kuangliu/pytorch-cifar: a 3x3 stride-1 stem and no
max-pool, so a 32x32 input keeps its resolution into the first stage.
``width`` scales every stage (64 = the standard 11M-parameter ResNet18).
Input normalisation lives inside the model, so callers and attacks work in
[0, 1] pixel space.

A checkpoint is ``NAME.safetensors`` plus ``NAME.json``, a model card with
the architecture, training recipe, accuracy and the weights' sha256, which
:func:`load` verifies. Nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shared.images.image_set import CIFAR10_CLASSES  # noqa: F401  (re-exported: where the models' users look)
from shared.models.checkpoints import ModelCardError, read_card, write_card  # noqa: F401  (ModelCardError: what load raises)

ARCHITECTURE = "cifar-resnet18"
# Per-channel statistics of the CIFAR-10 training images.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet18: inputs N x 3 x H x W in [0, 1], outputs logits.

    Parameters
    ----------
    width : int
        Channels of the first stage; the stages have width x (1, 2, 4, 8).
    num_classes : int
        Number of output logits.
    mean, std : tuple of float
        Per-channel normalisation applied inside the model.
    """

    def __init__(self, width: int = 64, num_classes: int = 10, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        if width < 1 or num_classes < 2:
            raise ValueError(f"width must be >= 1 and num_classes >= 2, got {width} and {num_classes}")
        self.width, self.num_classes = width, num_classes
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = (x - self.mean) / self.std
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def build(card: dict) -> ResNet18:
    """Instantiate the (untrained) network that a model card describes."""
    if card.get("architecture") != ARCHITECTURE:
        raise ModelCardError(f"unknown architecture {card.get('architecture')!r}; expected {ARCHITECTURE!r}")
    return ResNet18(width=int(card["width"]), num_classes=len(card["classes"]))


def save(model: ResNet18, path: str | Path, card: dict, *, dtype: torch.dtype = torch.float16) -> dict:
    """Write ``model`` as safetensors and its card as JSON beside it.

    Parameters
    ----------
    model : ResNet18
        The network to save.
    path : str or Path
        Target ``.safetensors`` file; the card goes to the same name ``.json``.
    card : dict
        Training facts to record (data, transform, epochs, seed, accuracy...).
        Architecture, width, classes and sha256 are filled in here.
    dtype : torch.dtype
        Storage type of floating tensors (fp16 halves the file; the weights
        are cast back to fp32 on load).

    Returns
    -------
    dict
        The card as written.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(path), metadata={"architecture": ARCHITECTURE})
    return write_card(path, {
        "classes": list(CIFAR10_CLASSES) if model.num_classes == 10 else [str(i) for i in range(model.num_classes)],
        **card,
        "architecture": ARCHITECTURE,
        "width": model.width,
        "storage_dtype": str(dtype).removeprefix("torch."),
        "weights_file": path.name,
    })


def load(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[ResNet18, dict]:
    """Load a checkpoint written by :func:`save`, verifying its hash.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file (its ``.json`` card must sit beside it).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model : ResNet18
        In eval mode, float32.
    card : dict
        The model card.

    Raises
    ------
    ModelCardError
        If a file is missing, the card is unreadable, the sha256 differs, or the
        weights are not safetensors.
    """
    path = Path(path)
    card = read_card(path)
    model = build(card)
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:  # a pickled checkpoint under this name, say: never unpickled
        raise ModelCardError(f"{path}: not a safetensors file ({exc})") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card
