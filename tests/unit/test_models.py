import json

import pytest
import torch

from shared import checkpoints, models


def test_width_64_is_the_standard_resnet18():
    model = models.ResNet18(width=64)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # kuangliu/pytorch-cifar ResNet18
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_forward_shape_and_normalisation_inside():
    model = models.ResNet18(width=8).eval()
    x = torch.rand(4, 3, 32, 32)
    assert model(x).shape == (4, 10)
    mean = torch.tensor(models.CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.CIFAR10_STD).view(1, 3, 1, 1)
    first = model.bn1(model.conv1((x - mean) / std))
    assert torch.allclose(first, model.bn1(model.conv1((x - model.mean) / model.std)))


def test_save_load_round_trip_fp16(tmp_path):
    model = models.ResNet18(width=8).eval()
    card = models.save(model, tmp_path / "m.safetensors", {"epochs": 3, "seed": 1, "test_accuracy": 0.5})
    loaded, loaded_card = models.load(tmp_path / "m.safetensors")
    assert loaded_card == card and card["width"] == 8 and card["architecture"] == "cifar-resnet18"
    assert card["storage_dtype"] == "float16" and len(card["sha256"]) == 64
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-2  # fp16 storage, fp32 compute
    assert next(loaded.parameters()).dtype == torch.float32 and not loaded.training
    # safetensors alone creates 0600; the weights must be as readable as the card beside them.
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == (tmp_path / "m.json").stat().st_mode & 0o777


def test_tampered_weights_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    models.save(models.ResNet18(width=4), path, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(models.ModelCardError, match="sha256"):
        models.load(path)


def test_missing_card_and_wrong_architecture_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    models.save(models.ResNet18(width=4), path, {})
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "architecture": "vit"}))
    with pytest.raises(models.ModelCardError, match="unknown architecture"):
        models.load(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(models.ModelCardError, match="missing"):
        models.load(path)


def test_pickle_checkpoint_is_not_loaded(tmp_path):
    path = tmp_path / "evil.safetensors"
    torch.save(models.ResNet18(width=4).state_dict(), path)  # a pickle under a safetensors name
    path.with_suffix(".json").write_text(json.dumps({"architecture": "cifar-resnet18", "width": 4,
                                                     "classes": list(models.CIFAR10_CLASSES),
                                                     "sha256": checkpoints.sha256_file(path)}))
    with pytest.raises(Exception) as info:
        models.load(path)
    assert "pickle" not in type(info.value).__name__.lower()
