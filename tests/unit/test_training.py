import numpy as np
import pytest
import torch

from shared.models import network
from shared.models.training import Recipe, augment, learning_rate, train


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
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):  # each is a window of the reflection-padded image, perhaps flipped
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(shifted[i], w) or torch.equal(shifted[i], w.flip(2)) for w in windows)
    moved = augment(x.repeat(16, 1, 1, 1), torch.Generator().manual_seed(2), pad=2)
    assert sum(not torch.equal(m, x[0]) and not torch.equal(m, x[0].flip(2)) for m in moved[::2]) > 0


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

    card = network.save(resumed, tmp_path / "w.safetensors", {"epochs": 2, "training_data": "sample[:512]"})
    loaded, loaded_card = network.load(tmp_path / "w.safetensors")
    assert loaded_card["sha256"] == card["sha256"] and loaded.width == 4


def test_ablation_factors_change_what_training_sees(sample, tmp_path, monkeypatch):
    # augment=False feeds the images as they are; label_smoothing reaches the loss.
    from shared.models import training

    subset = type(sample)(sample.images[:128], sample.labels[:128], sample.ids[:128])
    calls, smoothing = [], []
    real_augment, real_loss = training.augment, training.F.cross_entropy
    monkeypatch.setattr(training, "augment", lambda *a, **k: calls.append(1) or real_augment(*a, **k))
    monkeypatch.setattr(training.F, "cross_entropy",
                        lambda *a, **k: smoothing.append(k["label_smoothing"]) or real_loss(*a, **k))
    train(subset, Recipe(width=4, epochs=1, batch_size=64, precision="fp32", augment=False, label_smoothing=0.1),
          checkpoint=tmp_path / "plain.safetensors")
    assert calls == [] and smoothing == [0.1, 0.1]
    train(subset, Recipe(width=4, epochs=1, batch_size=64, precision="fp32"), checkpoint=tmp_path / "shipped.safetensors")
    assert len(calls) == 2 and smoothing[2:] == [0.0, 0.0]  # the shipped recipe: augmented, hard labels


def test_resume_with_another_recipe_is_refused(sample, tmp_path):
    subset = type(sample)(sample.images[:128], sample.labels[:128], sample.ids[:128])
    train(subset, Recipe(width=4, epochs=2, precision="fp32"), checkpoint=tmp_path / "c.safetensors", stop_after_epoch=1)
    with pytest.raises(ValueError, match="another recipe"):
        train(subset, Recipe(width=4, epochs=3, precision="fp32"), checkpoint=tmp_path / "c.safetensors")


def test_resume_on_other_images_is_refused_and_the_same_images_resume(sample, tmp_path):
    # Same recipe, same name, other images: the finished run must not be handed back as if trained on these.
    first, other = (type(sample)(sample.images[s], sample.labels[s], sample.ids[s])
                    for s in (slice(128), slice(128, 256)))
    recipe = Recipe(width=4, epochs=1, precision="fp32")
    train(first, recipe, checkpoint=tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="other training images"):
        train(other, recipe, checkpoint=tmp_path / "d.safetensors")
    relabelled = type(sample)(first.images, (first.labels + 1) % 10, first.ids)
    with pytest.raises(ValueError, match="other training images"):
        train(relabelled, recipe, checkpoint=tmp_path / "d.safetensors")
    _, log = train(first, recipe, checkpoint=tmp_path / "d.safetensors")
    assert log["resumed_at_epoch"] == 1
    # The same images whose labels another loader read as int32 are the same run.
    _, log = train(type(sample)(first.images, first.labels.astype("int32"), first.ids), recipe,
                   checkpoint=tmp_path / "d.safetensors")
    assert log["resumed_at_epoch"] == 1


def test_dwt_recipe_doubles_the_training_set(sample):
    from shared.models.training import training_tensors

    subset = type(sample)(sample.images[:64], sample.labels[:64], sample.ids[:64])
    x, y = training_tensors(subset, Recipe(defence={"wavelet": "haar"}))
    assert x.shape[0] == 128 and torch.equal(y[:64], y[64:])
    assert not torch.equal(x[:64], x[64:]) and (x[:64] - x[64:]).abs().mean() < 0.05


def test_a_transformation_recipe_trains_on_the_transformed_copies(sample):
    from shared import transforms
    from shared.models.training import training_tensors

    subset = type(sample)(sample.images[:64], sample.labels[:64], sample.ids[:64])
    options = transforms.parse("median:size=2")
    x, y = training_tensors(subset, Recipe(defence=options))
    assert x.shape[0] == 128 and torch.equal(y[:64], y[64:])
    assert torch.equal(x[64:], transforms.apply(x[:64], options))


@pytest.mark.parametrize("width, onednn", [(4, False), (8, True)])
def test_narrow_widths_train_on_native_convolutions(sample, tmp_path, width, onednn):
    subset = type(sample)(sample.images[:128], sample.labels[:128], sample.ids[:128])
    during = []
    _, log = train(subset, Recipe(width=width, epochs=1, batch_size=64, precision="fp32"),
                   checkpoint=tmp_path / "n.safetensors", progress=lambda p: during.append(torch.backends.mkldnn.enabled))
    assert during and set(during) == {onednn}
    assert log["convolutions"] == ("oneDNN" if onednn else "native")
    assert torch.backends.mkldnn.enabled  # switched back on for everything after training


def test_narrow_width_trains_on_the_avx2_kernels(tmp_path):
    # oneDNN's AVX2 kernels hung at width 4; capping an AVX-512 CPU at AVX2 checks that path anywhere.
    import subprocess
    import sys

    script = ("from shared.images.load import load_images\nfrom shared.models.training import Recipe, train\n"
              "s = load_images('sample')\ns = type(s)(s.images[::2], s.labels[::2], s.ids[::2])\n"
              f"train(s, Recipe(width=4, epochs=2, batch_size=128, precision='fp32'), checkpoint={str(tmp_path / 'a.safetensors')!r})\n"
              "print('trained')")
    env = {**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "trained" in result.stdout, result.stderr[-2000:]


def test_bf16_follows_the_onednn_isa_cap(monkeypatch):
    from shared.models.training import autocast_dtype, cpu_bf16_supported

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = cpu_bf16_supported()
    assert autocast_dtype("cpu", "auto") == (torch.bfloat16 if native else None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # as on an AVX2-only CPU: no bf16 kernels
    assert not cpu_bf16_supported() and autocast_dtype("cpu", "auto") is None
    with pytest.raises(ValueError, match="no bf16"):
        autocast_dtype("cpu", "bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cpu_bf16_supported() == native
