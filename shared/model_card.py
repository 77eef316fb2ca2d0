"""A trained model's card: the facts of its training and its held-out accuracy, beside its weights."""

from __future__ import annotations

import torch

from .data import ImageSet
from .training import Recipe, accuracy
from .wavelets import reconstruct


def model_card(model, log: dict, recipe: Recipe, *, train_source: str, train_images: int, test_set: ImageSet,
               test_source: str, device: str = "cpu", seconds: float | None = None) -> dict:
    """The training facts of a model's JSON card, with its test accuracy (and with DWT input, for a DWT model).

    :func:`shared.models.save` adds the architecture, width, classes and sha256.
    """
    options = recipe.defence
    x_test, y_test = test_set.to_tensor(), torch.from_numpy(test_set.labels)
    card = {
        "training_data": {"source": train_source, "images": train_images, "dwt_copies": options is not None},
        "transform": (f"random crop ({recipe.crop_pad} px reflection padding) + horizontal flip" if recipe.augment
                      else "no augmentation") + ("; originals plus their DWT reconstructions" if options else ""),
        "defence": options,
        "epochs": recipe.epochs, "seed": recipe.seed, "recipe": log["recipe"], "precision": log["precision"],
        "device": device, "convolutions": log["convolutions"],
        "train_seconds": None if seconds is None else round(seconds, 1), "epoch_log": log["epochs"],
        "test_data": {"source": test_source, "images": len(test_set)},
        "test_accuracy": accuracy(model, x_test, y_test, device=device),
    }
    if options:
        card["test_accuracy_dwt_input"] = accuracy(model, x_test, y_test, device=device,
                                                   defence=lambda x: reconstruct(x, **options))
    return card
