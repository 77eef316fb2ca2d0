"""`waveshield train`: a CIFAR ResNet18 trained, given its card, and written to the weights directory."""

from __future__ import annotations

import re
import time
from pathlib import Path

from shared.dwt import defences
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
                              stop_after_epoch=stop_after)
    if stop_after is not None and stop_after < recipe.epochs:
        say(f"stopped after epoch {stop_after}; rerun the same command to resume from {checkpoint}")
        return None
    card = model_card(model, log, recipe, train_source=str(data), train_images=len(train_set), test_set=test_set,
                      test_source=str(test_data), device=device, seconds=time.perf_counter() - started)
    out = settings.weights_dir / f"{name}.safetensors"
    network.save(model, out, card)
    return out, card
