"""`waveshield train --from`: a registered model fine-tuned on originals plus their DWT copies, resumably, becomes
its twin, which `evaluate --model` picks up."""

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from producers.jobs import plan_for_model
from producers.train import run_fine_tune
from shared.images.image_set import CIFAR10_CLASSES
from shared.models.registry import ModelRegistry
from shared.settings import load as load_settings

from .test_model_registry import MEAN, REPO_WEIGHTS, STD


@pytest.fixture()
def settings(tmp_path):
    return load_settings({"WAVESHIELD_WEIGHTS_DIR": str(REPO_WEIGHTS), "WAVESHIELD_MODELS": str(tmp_path / "models"),
                          "WAVESHIELD_CHECKPOINT_DIR": str(tmp_path / "ckpt"), "WAVESHIELD_DEVICE": "cpu",
                          "WAVESHIELD_DECODE_WORKERS": "1"})


@pytest.fixture()
def parent(tmp_path, settings):
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "p.safetensors"))
    return ModelRegistry(settings.weights_dir, settings.models_dir).add(
        "shop", architecture="torchvision:shufflenet_v2_x0_5", arch_args={"num_classes": 10},
        weights=tmp_path / "p.safetensors", input_size=(40, 40), resize="shorter-side", mean=MEAN, std=STD,
        classes=list(CIFAR10_CLASSES))


def test_fine_tuning_resumes_registers_the_twin_and_evaluate_picks_it_up(settings, parent):
    options = {"epochs": 2, "batch_size": 50, "precision": "fp32"}
    common = {"parent": "shop", "defence": "haar", "name": None, "data": "sample", "test_data": None, "limit": 100,
              "settings": settings, "recipe_options": options}
    assert run_fine_tune(**common, stop_after=1) is None  # interrupted after epoch 1
    checkpoint = settings.checkpoint_dir / "shop-haar.safetensors"
    assert json.loads(checkpoint.with_suffix(".json").read_text())["epoch"] == 1
    weights, facts = run_fine_tune(**common)
    assert weights == settings.models_dir / "shop-haar.safetensors"
    assert facts["twin_of"] == "shop" and facts["defended_by"] == "haar" and facts["fine_tuned_from_sha256"] == parent.sha256
    assert [e["epoch"] for e in facts["epoch_log"]] == [1, 2] and 0 <= facts["test_accuracy_dwt_input"] <= 1
    assert facts["training_data"] == {"source": "sample", "images": 100, "dwt_copies": True, "transformed_copies": False}
    registry = ModelRegistry(settings.weights_dir, settings.models_dir)
    twin = registry.card("shop-haar")
    assert (twin.architecture, twin.input_size, twin.mean, twin.classes) == (parent.architecture, parent.input_size,
                                                                             parent.mean, parent.classes)
    assert twin.sha256 != parent.sha256
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        assert not torch.allclose(registry.load("shop-haar")(x), registry.load("shop")(x))
    plan = plan_for_model("shop", None, None, settings)
    assert plan["configurations"][-1] == {"model": "shop-haar", "defence": "haar"}
    with pytest.raises(ValueError, match="a model 'shop-haar' exists"):  # before any training
        run_fine_tune(**common)


def test_a_model_of_other_classes_needs_its_own_test_images(settings, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "q.safetensors"))
    ModelRegistry(settings.weights_dir, settings.models_dir).add(
        "pets", architecture="torchvision:shufflenet_v2_x0_5", arch_args={"num_classes": 3},
        weights=tmp_path / "q.safetensors", input_size=(40, 40), classes=["cat", "dog", "frog"])
    with pytest.raises(ValueError, match="pets has classes of its own: give --test-data"):
        run_fine_tune(parent="pets", defence="haar", name=None, data="sample", test_data=None, limit=None,
                      settings=settings, recipe_options={})


def test_defence_none_trains_on_the_originals_into_a_model_of_its_own(settings, parent):
    weights, facts = run_fine_tune(parent="shop", defence="none", name=None, data="sample", test_data=None, limit=60,
                                   settings=settings, recipe_options={"epochs": 1, "batch_size": 30,
                                                                      "precision": "fp32"})
    card = ModelRegistry(settings.weights_dir, settings.models_dir).card("shop-tuned")
    assert card.weights == weights and card.twin_of is None and card.defended_by is None
    assert facts["training_data"]["dwt_copies"] is False and facts["training_data"]["images"] == 60
    assert plan_for_model("shop", None, None, settings)["configurations"][-1]["model"] == "shop"  # no twin
