"""`waveshield train`: a CIFAR ResNet18 trained, given its card, and written to the weights directory; or a user's
registered model fine-tuned on originals plus their DWT copies (``--from``), written to their models folder as its
twin."""

from __future__ import annotations

import re
import time
from pathlib import Path

from safetensors.torch import save_file

from shared.dwt import defences
from shared.images.image_set import CIFAR10_CLASSES
from shared.images.load import load_images
from shared.models import network
from shared.models.training import Recipe, model_card
from shared.models.training import train as run_training
from shared.settings import Settings, resolve_device


def run_train(*, defence: str, name: str | None, data: str, test_data: str, limit: int | None, settings: Settings,
              recipe_options: dict, stop_after: int | None = None, say=lambda line: None,
              progress=None) -> tuple[Path, dict] | None:
    """Train the model of ``defence`` (``none``, ``haar`` or ``daubechies``) and write it with its card.

    Parameters
    ----------
    defence : str
        ``none`` trains the standard model; a defence's name trains on the
        originals and their DWT copies.
    name : str, optional
        Checkpoint name [default: ``standard`` or the defence's name].
    data, test_data : str
        Training images, and the held-out set whose accuracy the card records.
    limit : int, optional
        Only the first ``limit`` training images.
    recipe_options : dict
        Keyword arguments of :class:`shared.models.training.Recipe` besides the defence.
    stop_after : int, optional
        Stop after this epoch, as an interruption would; the checkpoint stays
        for a resume.
    say, progress : callable
        A line of text at the start; each step's progress (see :func:`shared.models.training.train`).

    Returns
    -------
    (Path, dict) or None
        The weights written and their card; None when stopped before the last epoch.
    """
    device = resolve_device(settings.device)
    options = None if defence == "none" else defences.get(defence, settings.weights_dir)
    # A transformation's name holds ':' and '=': its model's file takes the name with those as '-'.
    name = name or ("standard" if defence == "none" else re.sub(r"[^A-Za-z0-9_.]+", "-", defence))
    recipe = Recipe(defence=options, **recipe_options)
    train_set = load_images(data, limit=limit, workers=settings.decode_workers)
    test_set = load_images(test_data, workers=settings.decode_workers)
    copies = "" if not options else f" + {defence} copies" if "transform" in options else f" + DWT copies ({options['wavelet']})"
    say(f"training {name}: {len(train_set)} images from {data}" + copies
        + f", width {recipe.width}, {recipe.epochs} epochs, on {device}")
    checkpoint = settings.checkpoint_dir / f"{name}.safetensors"
    started = time.perf_counter()
    model, log = run_training(train_set, recipe, checkpoint=checkpoint, device=device, progress=progress,
                              stop_after_epoch=stop_after)  # a fresh ResNet18
    if stop_after is not None and stop_after < recipe.epochs:
        say(f"stopped after epoch {stop_after}; rerun the same command to resume from {checkpoint}")
        return None
    card = model_card(model, log, recipe, train_source=str(data), train_images=len(train_set), test_set=test_set,
                      test_source=str(test_data), device=device, seconds=time.perf_counter() - started)
    out = settings.weights_dir / f"{name}.safetensors"
    network.save(model, out, card)
    return out, card


#: A fine-tuning run's defaults: a few epochs at a learning rate that keeps what the model knows.
FINE_TUNE = {"epochs": 5, "lr_peak": 0.01}


def run_fine_tune(*, parent: str, defence: str, name: str | None, data: str, test_data: str | None,
                  limit: int | None, settings: Settings, recipe_options: dict, stop_after: int | None = None,
                  say=lambda line: None, progress=None) -> tuple[Path, dict] | None:
    """Fine-tune a copy of registered model ``parent`` on originals plus their ``defence`` copies; register it as
    ``name`` (default ``PARENT-DEFENCE``), the parent's twin, in the user's models folder. ``defence`` ``none``
    trains on the originals alone (``PARENT-tuned``, no twin): a model registered with its untrained weights is
    trained here that way.

    Images are read at the parent's input size and labelled with its classes. Resumable as :func:`run_train`: a
    checkpoint resumes only the same recipe, images and starting weights.

    Returns
    -------
    (Path, dict) or None
        The weights written and the twin's card facts; None when stopped before the last epoch.

    Raises
    ------
    ValueError
        One line: the parent is unknown or a TorchScript archive, the name is taken, the defence is unknown.
    """
    from shared.models.registry import ModelRegistry

    registry = ModelRegistry(settings.weights_dir, settings.models_dir)
    card = registry.card(parent)
    if card.architecture.kind == "torchscript":
        raise ValueError(f"{parent} is a TorchScript archive: train --from fine-tunes a model whose card has "
                         "safetensors weights (register the architecture and a state dict instead)")
    options = None if defence == "none" else defences.get(defence, settings.weights_dir)
    name = name or f"{parent}-{'tuned' if options is None else re.sub(r'[^A-Za-z0-9_.]+', '-', defence)}"
    registry.check_new(name)  # before an hour of training, not after
    if test_data is None:
        if list(card.classes) != list(CIFAR10_CLASSES):
            raise ValueError(f"{parent} has classes of its own: give --test-data, held-out labelled images of them")
        test_data = "sample"
    device = resolve_device(settings.device)
    recipe = Recipe(defence=options, **{**FINE_TUNE, **recipe_options})
    size = card.geometry
    train_set = load_images(data, size=size, classes=list(card.classes), limit=limit, workers=settings.decode_workers)
    test_set = load_images(test_data, size=size, classes=list(card.classes), workers=settings.decode_workers)
    copies = "" if options is None else f" + {defence} copies"
    say(f"fine-tuning {parent} into {name}: {len(train_set)} images from {data}{copies} at "
        f"{card.size_text}, {recipe.epochs} epochs from lr {recipe.lr_peak}, on {device}")
    checkpoint = settings.checkpoint_dir / f"{name}.safetensors"
    started = time.perf_counter()
    model, log = run_training(train_set, recipe, checkpoint=checkpoint, device=device, progress=progress,
                              stop_after_epoch=stop_after, start=(registry.load(parent, device), card.sha256))
    if stop_after is not None and stop_after < recipe.epochs:
        say(f"stopped after epoch {stop_after}; rerun the same command to resume from {checkpoint}")
        return None
    facts = model_card(model, log, recipe, train_source=str(data), train_images=len(train_set), test_set=test_set,
                       test_source=str(test_data), device=device, seconds=time.perf_counter() - started)
    from shared.models.normalized import Normalized

    inner = model.model if isinstance(model, Normalized) else model  # the architecture's own weights
    weights = settings.checkpoint_dir / f"{name}.weights.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}, str(weights))
    twin = registry.add(name, architecture=str(card.architecture), arch_args=card.arch_args, weights=weights,
                        input_size=card.input_size, resize=card.resize, classes=list(card.classes), mean=card.mean,
                        std=card.std, defended_by=None if options is None else defence,
                        facts={**facts, "fine_tuned_from_sha256": card.sha256,
                               **({} if options is None else {"twin_of": parent})})
    weights.unlink()
    return twin.weights, twin.facts
