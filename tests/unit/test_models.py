import json
import pickle

import pytest
import torch

from shared.models import checkpoints, network


def test_width_64_is_the_standard_resnet18():
    model = network.ResNet18(width=64)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # kuangliu/pytorch-cifar ResNet18
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_forward_shape_and_normalisation_inside():
    torch.manual_seed(0)
    model = network.ResNet18(width=8).eval()
    # The same layers without a normalisation of their own, fed normalised pixels by hand.
    plain = network.ResNet18(width=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}, strict=False)
    x = torch.rand(4, 3, 32, 32)
    mean = torch.tensor(network.CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(network.CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (4, 10)
        assert torch.allclose(logits, plain((x - mean) / std), atol=1e-5)
        assert not torch.allclose(logits, plain(x), atol=1e-3)  # the normalisation changes what the layers see


def test_save_load_round_trip_fp16(tmp_path):
    model = network.ResNet18(width=8).eval()
    card = network.save(model, tmp_path / "m.safetensors", {"epochs": 3, "seed": 1, "test_accuracy": 0.5})
    loaded, loaded_card = network.load(tmp_path / "m.safetensors")
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
    network.save(network.ResNet18(width=4), path, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(network.ModelCardError, match="sha256"):
        network.load(path)


def test_missing_card_and_wrong_architecture_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    network.save(network.ResNet18(width=4), path, {})
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "architecture": "vit"}))
    with pytest.raises(network.ModelCardError, match="unknown architecture"):
        network.load(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(network.ModelCardError, match="missing"):
        network.load(path)


def test_pickle_checkpoint_is_not_loaded(tmp_path, monkeypatch):
    path = tmp_path / "evil.safetensors"
    torch.save(network.ResNet18(width=4).state_dict(), path)  # a pickle under a safetensors name
    path.with_suffix(".json").write_text(json.dumps({"architecture": "cifar-resnet18", "width": 4,
                                                     "classes": list(network.CIFAR10_CLASSES),
                                                     "sha256": checkpoints.sha256_file(path)}))
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(network.ModelCardError, match="not a safetensors file"):
        network.load(path)
