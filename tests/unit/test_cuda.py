"""The CUDA paths against the CPU: models, attacks and a training step on the GPU.

Skipped without a CUDA device; benchmarks/gpu_check.sh runs them (``-m cuda``) on a GPU machine.
"""

import pytest
import torch

from shared import attacks
from shared.models import network
from shared.models.training import Recipe, train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def shipped():
    from shared.settings import load

    return network.load(load().weights_dir / "standard.safetensors")[0]


def test_model_on_cuda_predicts_as_on_cpu(shipped, sample):
    x = sample.to_tensor()[:256]
    with torch.no_grad():
        cpu = shipped(x)
        gpu = shipped.cuda()(x.cuda()).cpu()
    shipped.cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3)
    assert (cpu.argmax(1) == gpu.argmax(1)).float().mean() > 0.99


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "deepfool"])
def test_attacks_run_on_cuda_and_keep_their_budget(shipped, sample, name):
    model = shipped.cuda()
    x, y = sample.to_tensor()[:128].cuda(), torch.from_numpy(sample.labels[:128]).cuda()
    params = {} if name == "deepfool" else {"eps": 0.01}
    adversarial = attacks.get(name)(model, x, y, **params)
    assert adversarial.is_cuda and adversarial.min() >= 0 and adversarial.max() <= 1
    if params:
        assert (adversarial - x).abs().max() <= 0.01 + 1e-6
    with torch.no_grad():
        assert (model(adversarial).argmax(1) == y).sum() < (model(x).argmax(1) == y).sum()
    shipped.cpu()


def test_training_on_cuda_with_bf16_learns(sample, tmp_path):
    subset = type(sample)(sample.images[:512], sample.labels[:512], sample.ids[:512])
    model, log = train(subset, Recipe(width=16, epochs=3, batch_size=128), checkpoint=tmp_path / "c.safetensors",
                       device="cuda")
    assert log["precision"] == "bfloat16" and log["epochs"][-1]["train_acc"] > log["epochs"][0]["train_acc"]
    assert next(model.parameters()).is_cuda
