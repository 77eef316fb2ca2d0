import numpy as np
import pytest
import torch

from shared import models
from shared.training import Recipe, augment, learning_rate, train


def test_one_cycle_schedule_shape():
    recipe = Recipe(lr_peak=0.2, warmup=0.25)
    lrs = [learning_rate(s, 100, recipe) for s in range(101)]
    assert lrs[0] == pytest.approx(0.02) and max(lrs) == pytest.approx(0.2) and lrs[100] == 0
    assert np.argmax(lrs) == 25


def test_augment_crops_and_flips_without_changing_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):  # with no padding, only a flip can happen
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    shifted = augment(x, torch.Generator().manual_seed(1), pad=2)
    assert shifted.shape == x.shape


def test_interrupted_training_resumes_to_the_same_model(sample, tmp_path):
    subset = type(sample)(sample.images[:512], sample.labels[:512], sample.ids[:512])
    recipe = Recipe(width=4, epochs=2, batch_size=128, precision="fp32")
    straight, log_straight = train(subset, recipe, checkpoint=tmp_path / "a.safetensors")

    first, log_first = train(subset, recipe, checkpoint=tmp_path / "b.safetensors", stop_after_epoch=1)
    assert len(log_first["epochs"]) == 1
    resumed, log_resumed = train(subset, recipe, checkpoint=tmp_path / "b.safetensors")
    assert log_resumed["resumed_at_epoch"] == 1 and len(log_resumed["epochs"]) == 2
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), k

    card = models.save(resumed, tmp_path / "w.safetensors", {"epochs": 2, "training_data": "sample[:512]"})
    loaded, loaded_card = models.load(tmp_path / "w.safetensors")
    assert loaded_card["sha256"] == card["sha256"] and loaded.width == 4


def test_resume_with_another_recipe_is_refused(sample, tmp_path):
    subset = type(sample)(sample.images[:128], sample.labels[:128], sample.ids[:128])
    train(subset, Recipe(width=4, epochs=2, precision="fp32"), checkpoint=tmp_path / "c.safetensors", stop_after_epoch=1)
    with pytest.raises(ValueError, match="another recipe"):
        train(subset, Recipe(width=4, epochs=3, precision="fp32"), checkpoint=tmp_path / "c.safetensors")


def test_dwt_recipe_doubles_the_training_set(sample):
    from shared.training import training_tensors

    subset = type(sample)(sample.images[:64], sample.labels[:64], sample.ids[:64])
    x, y = training_tensors(subset, Recipe(defence={"wavelet": "haar"}))
    assert x.shape[0] == 128 and torch.equal(y[:64], y[64:])
    assert not torch.equal(x[:64], x[64:]) and (x[:64] - x[64:]).abs().mean() < 0.05
