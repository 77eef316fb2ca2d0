"""The checkpoints in weights/ load with their hash verified and classify the embedded sample."""

import json
from pathlib import Path

import pytest
import torch

from shared import defences, models
from shared.training import accuracy
from shared.wavelets import reconstruct

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED = sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


def test_the_standard_model_is_shipped():
    assert "standard" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_verified_and_score_on_the_sample(name, sample):
    model, card = models.load(WEIGHTS / f"{name}.safetensors")
    assert card["sha256"] == models.sha256_file(WEIGHTS / f"{name}.safetensors")
    assert card["architecture"] == "cifar-resnet18" and card["storage_dtype"] == "float16"
    x, y = sample.to_tensor(), torch.from_numpy(sample.labels)
    assert accuracy(model, x, y) >= 0.85
    if card.get("defence"):  # a DWT model also classifies reconstructed input well
        options = card["defence"]
        assert options == defences.get(name, WEIGHTS)  # trained with the shipped settings
        assert accuracy(model, x, y, defence=lambda t: reconstruct(t, **options)) >= 0.80


def test_defence_settings_file_records_its_rule():
    document = json.loads((WEIGHTS / "defences.json").read_text())
    assert set(document["defences"]) == {"haar", "daubechies"} and "rule" in document
    for options in document["defences"].values():
        reconstruct(torch.rand(1, 3, 32, 32), **options)  # every shipped setting is valid
