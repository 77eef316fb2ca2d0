"""The checkpoints in weights/ load with their hash verified and classify the embedded sample."""

import json
from pathlib import Path

import pytest
import torch

from shared.dwt import defences
from shared.dwt.transform import reconstruct
from shared.models import checkpoints, network
from shared.models.training import accuracy

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED = sorted(p.stem for p in WEIGHTS.glob("*.safetensors") if p.stem != "detector")  # the classifiers


def test_the_standard_model_is_shipped():
    assert "standard" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_verified_and_score_on_the_sample(name, sample):
    model, card = network.load(WEIGHTS / f"{name}.safetensors")
    assert card["sha256"] == checkpoints.sha256_file(WEIGHTS / f"{name}.safetensors")
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


def test_the_shipped_detector_is_verified_and_screening_selects_it(sample):
    import functools

    from shared import attacks
    from shared.models.store import ModelStore
    from shared.screening import config as screening_config
    from shared.screening import detector

    model, card = detector.load(WEIGHTS / detector.WEIGHTS_NAME)
    assert card["features"] == detector.feature_names(**detector.reads(card))
    chosen = screening_config.load(WEIGHTS)
    assert chosen["score"] == "detector" and chosen["threshold"] == card["threshold"]
    store = ModelStore(WEIGHTS)
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, WEIGHTS))
    x, y = sample.to_tensor()[:300], torch.from_numpy(sample.labels[:300])
    clean = model.score(detector.features(x, store.get, options, **detector.reads(card)))
    adversarial = attacks.get("fgsm")(store.get("standard"), x, y, eps=0.01)
    adversarial = torch.round(adversarial * 255) / 255  # delivered in 8 bits, as it was measured
    with torch.no_grad():
        fooled = (store.get("standard")(x).argmax(1) == y) & (store.get("standard")(adversarial).argmax(1) != y)
    attacked = model.score(detector.features(adversarial[fooled], store.get, options, **detector.reads(card)))
    # Measured on 1,500 held-out mirror test images: 2.9 % of clean and 84.8 % of these flagged (80 % of the 300
    # here); a loose check of the artefact. Every source's rates: docs/calibration/detector/detector.md.
    assert (clean > card["threshold"]).float().mean() <= 0.075
    assert (attacked > card["threshold"]).float().mean() >= 0.7
