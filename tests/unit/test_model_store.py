"""The model store: one place that finds, checks and loads named checkpoints."""

import pytest

from shared.models import network
from shared.models.store import MissingWeights, ModelStore


def test_missing_weights_say_how_to_train_them(tmp_path):
    store = ModelStore(tmp_path)
    assert not store.has("haar")
    with pytest.raises(MissingWeights, match=r"screening: no weights haar.safetensors .*\(models there: none\); "
                                             r"train it: waveshield train --defence haar"):
        store.require("haar", "screening")
    with pytest.raises(ValueError, match=r"--defence none\|haar\|daubechies --name mine"):
        store.get("mine")


def test_models_load_once_verified_and_cards_read_without_weights(tmp_path):
    card = network.save(network.ResNet18(width=4), tmp_path / "standard.safetensors", {"epochs": 1})
    store = ModelStore(tmp_path)
    model = store.get("standard")
    assert store.get("standard") is model and not model.training and model.width == 4
    assert store.card("standard")["sha256"] == card["sha256"]
    (tmp_path / "standard.safetensors").write_bytes(b"tampered")
    with pytest.raises(network.ModelCardError, match="sha256"):
        ModelStore(tmp_path).get("standard")


def test_a_misspelled_model_names_the_folder_the_models_there_and_the_likely_one(tmp_path):
    for name in ("standard", "haar"):
        network.save(network.ResNet18(width=4), tmp_path / f"{name}.safetensors", {"epochs": 1})
    (tmp_path / "notes.safetensors").write_bytes(b"")  # no card: not a model of this folder
    store = ModelStore(tmp_path)
    assert store.known() == ["haar", "standard"]
    with pytest.raises(MissingWeights) as caught:
        store.require("standrd", "model 'standrd'")
    assert str(tmp_path) in str(caught.value) and "did you mean 'standard'?" in str(caught.value)
    assert "(models there: haar, standard)" in str(caught.value)
    assert "train it" not in str(caught.value)  # not the misspelled name
