"""The learned detector: its features on real images and models, its training, its AUROC against scipy."""

import functools

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from shared import attacks, defences, detector
from shared.model_store import ModelStore
from shared.models import ModelCardError

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
    # A path's label_differs is 1 exactly when its top class is not the raw path's.
    assert set(clean[:, column["haar@haar:label_differs"]].unique().tolist()) <= {0.0, 1.0}
    top = {p: attacked[:, [column[f"{p}:logp_{k}"] for k in range(10)]].argmax(1) for p in ("standard@raw", "haar@haar")}
    assert torch.equal(attacked[:, column["haar@haar:label_differs"]].bool(), top["haar@haar"] != top["standard@raw"])


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


def test_save_load_round_trip_verifies_the_hash(tmp_path):
    generator = torch.Generator().manual_seed(0)
    clean, adversarial = torch.randn(100, 4, generator=generator), torch.randn(100, 4, generator=generator) + 1
    model = detector.fit(clean, adversarial, hidden=8, epochs=50)
    names = ["standard@raw:top_prob", "haar@haar:tv_to_raw", "haar@haar:entropy", "haar:removed"]
    card = detector.save(model, tmp_path / "detector.safetensors", {"features": names, "threshold": 0.5})
    loaded, loaded_card = detector.load(tmp_path / "detector.safetensors")
    assert loaded_card == card and card["hidden"] == 8 and card["n_features"] == 4
    assert torch.equal(loaded.score(adversarial), model.score(adversarial))
    signals = detector.strongest_signal(loaded, adversarial, names)
    assert len(signals) == 100 and set(signals) <= {"standard@raw", "haar@haar", "haar:removed"}
    with pytest.raises(ValueError, match="names 3 features"):
        detector.save(model, tmp_path / "other.safetensors", {"features": names[:3]})
    raw = bytearray((tmp_path / "detector.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "detector.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelCardError, match="sha256 differs"):
        detector.load(tmp_path / "detector.safetensors")
    with pytest.raises(ModelCardError, match="waveshield fit-detector"):
        detector.load(tmp_path / "missing.safetensors")


def test_the_strongest_signal_is_the_one_that_moves_the_score():
    # Only the second feature differs between the classes: every adversarial image's reason is its signal.
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(300, 3, generator=generator)
    adversarial = clean.clone()
    adversarial[:, 1] += 4
    model = detector.fit(clean, adversarial, hidden=0, epochs=300)
    names = ["standard@raw:margin", "haar@haar:tv_to_raw", "daubechies:removed"]
    assert set(detector.strongest_signal(model, adversarial, names)) == {"haar@haar"}


def test_the_attacker_who_knows_the_detector_lowers_its_score_and_the_screened_accuracy(sample, shipped):
    from shared.adaptive_screening import evade_screening

    get_model, options = shipped
    x, y = sample.to_tensor()[:96], torch.from_numpy(sample.labels[:96])
    fgsm = attacks.get("fgsm")(get_model("standard"), x, y, eps=0.01)
    model = detector.fit(detector.features(x, get_model, options), detector.features(fgsm, get_model, options))
    eps = 0.01

    def run(weight):
        adversarial = evade_screening(x[:24], y[:24], get_model, options, model, eps=eps, steps=4, weight=weight)
        f, logits = detector.features(adversarial, get_model, options, with_logits=True)
        return adversarial, model.score(f).mean(), (logits["haar@haar"].argmax(1) == y[:24]).float().mean()

    blind, blind_score, blind_accuracy = run(0.0)  # BPDA PGD on the screened label only
    aware, aware_score, aware_accuracy = run(4.0)
    assert (aware - x[:24]).abs().max() <= eps + 1e-6 and aware.min() >= 0 and aware.max() <= 1
    assert aware_score < blind_score  # knowing the detector, it hides better
    clean_accuracy = (detector.features(x[:24], get_model, options, with_logits=True)[1]["haar@haar"].argmax(1)
                      == y[:24]).float().mean()
    assert blind_accuracy < clean_accuracy and aware_accuracy < clean_accuracy
    again, _, _ = run(4.0)
    assert torch.equal(again, aware)  # seeded start: the same images


def test_a_detector_on_fewer_paths_computes_only_those(sample, shipped):
    get_model, options = shipped
    x = sample.to_tensor()[:8]
    paths = ("standard@raw", "haar@haar")
    f, logits = detector.features(x, get_model, options, with_logits=True, paths=paths)
    full = detector.features(x, get_model, options)
    names, all_names = detector.feature_names(paths=paths), detector.feature_names()
    assert set(logits) == set(paths) and f.shape == (8, len(names)) and set(names) < set(all_names)
    assert torch.allclose(f, full[:, [all_names.index(n) for n in names]])  # the same columns as the full set
    for bad in (("haar@haar",), ("standard@raw", "standard@raw"), ("standard@raw", "haar@daubechies")):
        with pytest.raises(ValueError, match="must start with standard@raw"):
            detector.feature_names(paths=bad)
