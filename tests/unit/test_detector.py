"""The learned detector: its features on real images and models, its training, its AUROC against scipy."""

import functools

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from shared import attacks, defences, detector
from shared.model_store import ModelStore

from .test_shipped_weights import WEIGHTS


@pytest.fixture(scope="module")
def shipped():
    store = ModelStore(WEIGHTS, "cpu")
    return store.get, functools.lru_cache(maxsize=None)(lambda name: defences.get(name, WEIGHTS))


def test_features_are_named_finite_and_move_under_attack(sample, shipped):
    get_model, options = shipped
    x, y = sample.to_tensor()[:64], torch.from_numpy(sample.labels[:64])
    clean = detector.features(x, get_model, options)
    attacked = detector.features(attacks.get("fgsm")(get_model("standard"), x, y, eps=0.01), get_model, options)
    names = detector.feature_names()
    assert clean.shape == attacked.shape == (64, len(names)) and torch.isfinite(clean).all()
    column = {n: i for i, n in enumerate(names)}
    # FGSM spreads +-eps over every pixel: the reconstructions remove more, and the raw path loses confidence.
    assert (attacked[:, column["haar:removed"]] > clean[:, column["haar:removed"]]).float().mean() > 0.9
    assert torch.allclose(clean[:, [column[f"standard@raw:logp_{k}"] for k in range(10)]].exp().sum(1), torch.ones(64))
    assert attacked[:, column["standard@raw:top_prob"]].mean() < clean[:, column["standard@raw:top_prob"]].mean()
    # A path's label differs from the raw one exactly when its log-probability of the raw label is not its top.
    assert set(clean[:, column["haar@haar:label_differs"]].unique().tolist()) <= {0.0, 1.0}


def test_fit_separates_two_feature_clouds_and_saves_its_standardisation(sample):
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(400, 5, generator=generator) * 3 + 10
    adversarial = clean[:200] + torch.tensor([0.0, 0.0, 2.5, 0.0, 0.0]) * 3
    model = detector.fit(clean, adversarial, hidden=0, epochs=400)
    assert torch.allclose(model.mean, torch.cat([clean, adversarial]).mean(0))
    assert detector.auroc(model.score(clean), model.score(adversarial)) > 0.95
    with pytest.raises(ValueError, match="both clean and adversarial"):
        detector.fit(clean, adversarial[:0])


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_equals_the_mann_whitney_statistic(ties):
    rng = np.random.default_rng(1)
    clean, adversarial = rng.normal(0, 1, 300), rng.normal(0.7, 1, 200)
    if ties:
        clean, adversarial = np.round(clean, 1), np.round(adversarial, 1)
    u = mannwhitneyu(adversarial, clean).statistic
    assert detector.auroc(torch.tensor(clean), torch.tensor(adversarial)) == pytest.approx(u / (300 * 200), abs=1e-12)
