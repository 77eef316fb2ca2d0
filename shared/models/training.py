"""Training: the standard model and the DWT-augmented ("proactive") models, and the card of a trained one.

A DWT model is trained on the originals plus their DWT-reconstructed copies,
so it learns the images the reactive defence will hand it at test time.
Random crop and flip, SGD with Nesterov momentum on a one-cycle learning-rate
schedule, channels_last, bf16 autocast where the hardware has it.

Training resumes: after every epoch the full state (weights, momentum,
epoch) goes to a safetensors checkpoint with a JSON sidecar, and a restarted
run with the same recipe continues from it. The per-epoch shuffling and
augmentation are seeded by (seed, epoch), so a resumed run sees the same
batches an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from shared.dwt import defences
from shared.files import write_atomically
from shared.images.image_set import ImageSet, iter_batches
from shared.models import network
from shared.models.checkpoints import sha256_file


@dataclass(frozen=True)
class Recipe:
    """Every training hyperparameter, in one place."""

    width: int = 16  # channels of the first ResNet stage (64 = standard ResNet18)
    epochs: int = 30  # passes over the training set (originals + DWT copies)
    batch_size: int = 256  # images per optimiser step
    lr_peak: float = 0.2  # SGD learning rate at the top of the one-cycle ramp
    warmup: float = 0.2  # fraction of all steps spent ramping up from lr_peak / 10
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 on every weight, per step, scaled by lr
    label_smoothing: float = 0.0  # hard targets: smoothing masks the gradients attacks climb (docs/results.md)
    crop_pad: int = 4  # pixels of reflection padding for the random crop
    augment: bool = True  # random crop and flip each batch; False trains on the images as they are
    seed: int = 0  # seeds initialisation, shuffling and augmentation
    defence: dict | None = field(default=None)  # the copies' defence options (DWT or not); None = standard model
    precision: str = "auto"  # "auto" (bf16 where supported), "bf16" or "fp32"


#: Narrower ResNets train on PyTorch's native CPU convolutions, not oneDNN's: with
#: torch 2.14, oneDNN's AVX2 weight gradient of the 1x1 shortcut convolution hangs
#: (and segfaults on one thread) for widths 2-6, while widths 1, 7, 8, 12, 16 and 64
#: train. The native kernels are slower, which at these widths costs seconds.
ONEDNN_MIN_WIDTH = 8


@contextlib.contextmanager
def convolution_backend(width: int, device: str) -> Iterator[bool]:
    """Train-time convolution kernels for a width: yields whether oneDNN stays on.

    Below :data:`ONEDNN_MIN_WIDTH` on the CPU, oneDNN is switched off for the
    duration (the switch is process-wide; training runs in one thread of control).
    """
    if not device.startswith("cpu") or width >= ONEDNN_MIN_WIDTH or not torch.backends.mkldnn.enabled:
        yield torch.backends.mkldnn.enabled
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield False
    finally:
        torch.backends.mkldnn.enabled = True


def learning_rate(step: int, total: int, recipe: Recipe) -> float:
    """One-cycle schedule: linear from lr_peak/10 up to lr_peak, then linear to 0."""
    top = max(int(total * recipe.warmup), 1)
    if step < top:
        return recipe.lr_peak * (0.1 + 0.9 * step / top)
    return recipe.lr_peak * max(total - step, 0) / max(total - top, 1)


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has bf16 kernels here: the CPU has them and ONEDNN_MAX_CPU_ISA does not cap them off.

    ``ONEDNN_MAX_CPU_ISA=AVX2`` makes an AVX-512 machine run the kernels of an AVX2-only CPU,
    which has no bf16; torch's own check reads the CPU, not the cap.
    """
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return cap in ("", "ALL", "DEFAULT") or any(isa in cap for isa in ("BF16", "FP16", "AMX", "AVX10"))


def autocast_dtype(device: str, precision: str) -> torch.dtype | None:
    """The autocast dtype for a device, or None for plain fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; valid: auto, bf16, fp32")
    if precision == "fp32":
        return None
    if device.startswith("cuda"):
        return torch.bfloat16
    supported = cpu_bf16_supported()
    if precision == "bf16" and not supported:
        raise ValueError("this CPU has no bf16 support; use --precision fp32")
    return torch.bfloat16 if supported else None


def training_tensors(train: ImageSet, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 NCHW training images and labels, with DWT copies appended for a DWT recipe."""
    if train.labels is None or len(train) == 0:
        raise ValueError("training needs a labelled, non-empty image set")
    x = train.to_tensor()
    y = torch.from_numpy(train.labels)
    if recipe.defence is not None:
        copies = torch.cat([defences.apply(x[s], recipe.defence) for s in iter_batches(len(x), 2048)])
        x, y = torch.cat([x, copies]), torch.cat([y, y])
    return x, y


def augment(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop (reflection padding) and horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    crops = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1000, device: str = "cpu", defence=None) -> float:
    """Top-1 accuracy of ``model`` on float NCHW images, optionally after ``defence``."""
    model.eval()
    correct = 0
    for s in iter_batches(len(images), batch_size):
        x = images[s].to(device)
        if defence is not None:
            x = defence(x)
        correct += (model(x).argmax(1).cpu() == labels[s]).sum().item()
    return correct / max(len(images), 1)


def train(
    train_set: ImageSet,
    recipe: Recipe,
    *,
    checkpoint: str | Path,
    device: str = "cpu",
    progress: Callable[[dict], None] | None = None,
    stop_after_epoch: int | None = None,
    start: tuple[torch.nn.Module, str] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train a CIFAR ResNet18 (or fine-tune ``start``'s model), resuming from ``checkpoint`` when it matches.

    Parameters
    ----------
    train_set : ImageSet
        Labelled training images.
    recipe : Recipe
        Hyperparameters (and the DWT options for a DWT model).
    checkpoint : str or Path
        Resumable state, a ``.safetensors`` path (a ``.json`` sidecar beside it).
    device : str
        Torch device.
    progress : callable, optional
        Called after every step with a dict: epoch, epochs, step, steps, loss, acc, lr.
    stop_after_epoch : int, optional
        Return after this epoch (as an interruption would); the checkpoint remains.
    start : (nn.Module, str), optional
        A model of any architecture taking [0, 1] pixels, with its weights' sha256: it is fine-tuned in place of a
        new ResNet18 (``recipe.width`` is then unused), and a checkpoint resumes only a run from the same weights.

    Returns
    -------
    model : nn.Module
        The trained model, in eval mode.
    log : dict
        Recipe, per-epoch loss/accuracy/seconds, and the precision used.
    """
    torch.manual_seed(recipe.seed)
    x, y = training_tensors(train_set, recipe)
    base = network.ResNet18(width=recipe.width) if start is None else start[0]
    model = base.to(device).to(memory_format=torch.channels_last)
    decay, no_decay = _parameter_groups(model)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr_peak, momentum=recipe.momentum, nesterov=True,
    )
    amp = autocast_dtype(device, recipe.precision)
    log = {"recipe": asdict(recipe), "precision": str(amp).removeprefix("torch.") if amp else "fp32", "epochs": []}
    # A checkpoint resumes only the run it came from: the same recipe on the same images.
    identity = {"recipe": asdict(recipe), "data_sha256": _data_digest(train_set)}
    if start is not None:
        identity["start_sha256"] = start[1]
    start_epoch = _resume(Path(checkpoint), model, optimizer, identity, log)
    # The narrow-ResNet kernel workaround concerns our ResNet alone: another architecture keeps oneDNN.
    with convolution_backend(recipe.width if start is None else ONEDNN_MIN_WIDTH, device) as onednn:
        log["convolutions"] = ("oneDNN" if onednn else "native") if device.startswith("cpu") else "cuDNN"
        _run_epochs(model, optimizer, x, y, recipe, log, range(start_epoch, recipe.epochs), device=device, amp=amp,
                    checkpoint=Path(checkpoint), identity=identity, progress=progress,
                    stop_after_epoch=stop_after_epoch)
    optimizer.zero_grad(set_to_none=True)  # hand back a model without stale gradients
    return model.eval().to(memory_format=torch.contiguous_format), log


def _run_epochs(model, optimizer, x, y, recipe: Recipe, log: dict, epochs: range, *, device, amp, checkpoint: Path,
                identity: dict, progress, stop_after_epoch) -> None:
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    for epoch in epochs:
        model.train()
        generator = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=generator)
        seen = correct = 0
        loss_sum, started = 0.0, time.perf_counter()
        for i, s in enumerate(iter_batches(len(x), recipe.batch_size)):
            idx = order[s]
            batch = augment(x[idx], generator, recipe.crop_pad) if recipe.augment else x[idx]
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            target = y[idx].to(device)
            lr = learning_rate(epoch * steps_per_epoch + i, total, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(batch)
                loss = F.cross_entropy(logits, target, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(idx)
            correct += (logits.argmax(1) == target).sum().item()
            loss_sum += loss.item() * len(idx)
            if progress:
                progress({"epoch": epoch + 1, "epochs": recipe.epochs, "step": i + 1, "steps": steps_per_epoch,
                          "loss": loss_sum / seen, "acc": correct / seen, "lr": lr})
        log["epochs"].append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
                              "seconds": time.perf_counter() - started})
        _save_checkpoint(checkpoint, model, optimizer, identity, epoch + 1, log)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < recipe.epochs:
            break


def _parameter_groups(model):
    # Weight decay on convolution and linear weights only; decaying BatchNorm
    # scales and biases costs accuracy on short schedules.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return decay, no_decay


def _data_digest(images: ImageSet) -> str:
    """sha256 of the training images' pixels and labels (as int64, whichever loader read them)."""
    digest = hashlib.sha256(images.images.tobytes())
    digest.update(images.labels.astype("int64").tobytes())
    return digest.hexdigest()


def _save_checkpoint(path: Path, model, optimizer, identity: dict, epoch: int, log: dict) -> None:
    """Weights and momentum as safetensors, the rest as JSON; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"momentum.{i}"] = buf.detach().cpu().contiguous()
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp)))
    meta = {"epoch": epoch, **identity, "log": log, "weights_sha256": sha256_file(path)}
    write_atomically(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta)))


def _resume(path: Path, model, optimizer, identity: dict, log: dict) -> int:
    """Load a matching checkpoint; return the first epoch still to run (0 if none)."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        return 0
    meta = json.loads(meta_path.read_text())
    if meta.get("recipe") != identity["recipe"]:
        raise ValueError(f"checkpoint {path} was made with another recipe; delete it or train with the same options")
    if meta.get("data_sha256", identity["data_sha256"]) != identity["data_sha256"]:  # older checkpoints lack it
        raise ValueError(f"checkpoint {path} was made on other training images; delete it or train on the same data")
    if meta.get("start_sha256") != identity.get("start_sha256"):
        raise ValueError(f"checkpoint {path} was made from other starting weights; delete it to start over")
    if sha256_file(path) != meta.get("weights_sha256"):
        raise ValueError(f"checkpoint {path} does not match its sidecar (interrupted write?); delete it to start over")
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        if f"momentum.{i}" in tensors:
            optimizer.state[p]["momentum_buffer"] = tensors[f"momentum.{i}"].to(device)
    log["epochs"] = meta["log"]["epochs"]
    log["resumed_at_epoch"] = meta["epoch"]
    return int(meta["epoch"])


def model_card(model, log: dict, recipe: Recipe, *, train_source: str, train_images: int, test_set: ImageSet,
               test_source: str, device: str = "cpu", seconds: float | None = None) -> dict:
    """The training facts of a model's JSON card, with its test accuracy (and with DWT input, for a DWT model).

    :func:`shared.models.network.save` adds the architecture, width, classes and sha256.
    """
    options = recipe.defence
    copies = "" if not options else ("; originals plus their transformed copies" if "transform" in options
                                     else "; originals plus their DWT reconstructions")
    x_test, y_test = test_set.to_tensor(), torch.from_numpy(test_set.labels)
    card = {
        "training_data": {"source": train_source, "images": train_images,
                          "dwt_copies": options is not None and "transform" not in options,
                          "transformed_copies": options is not None and "transform" in options},
        "transform": (f"random crop ({recipe.crop_pad} px reflection padding) + horizontal flip" if recipe.augment
                      else "no augmentation") + copies,
        "defence": options,
        "epochs": recipe.epochs, "seed": recipe.seed, "recipe": log["recipe"], "precision": log["precision"],
        "device": device, "convolutions": log["convolutions"],
        "train_seconds": None if seconds is None else round(seconds, 1), "epoch_log": log["epochs"],
        "test_data": {"source": test_source, "images": len(test_set)},
        "test_accuracy": accuracy(model, x_test, y_test, device=device),
    }
    if options:
        card["test_accuracy_dwt_input"] = accuracy(model, x_test, y_test, device=device,
                                                   defence=lambda x: defences.apply(x, options))
    return card
