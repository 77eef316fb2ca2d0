"""The learned detector: its features on real images and models, its training, its AUROC against scipy."""

import functools

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from shared import attacks
from shared.dwt import defences
from shared.models.network import ModelCardError
from shared.models.store import ModelStore
from shared.screening import detector

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
    # (on 512 sample images: 89 % with the shipped models, 90 % with the label-smoothing ones)
    assert (attacked[:, column["haar:removed"]] > clean[:, column["haar:removed"]]).float().mean() > 0.8
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
    # A typical clean image (the reference) and one further from the adversarial side: nothing raised their score.
    typical = model.mean + model.reference * model.scale
    cleaner = typical.clone()
    cleaner[1] -= 4 * model.scale[1]
    assert detector.strongest_signal(model, torch.stack([typical, cleaner, adversarial[0]]), names) == [
        None, None, "haar@haar"]


def test_the_attacker_who_knows_the_detector_lowers_its_score_and_the_screened_accuracy(sample, shipped):
    from shared.screening.evasion import evade_screening

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


def _chroma_oracle(image: np.ndarray) -> np.ndarray:
    """The chroma co-occurrences of one HxWx3 uint8 image, counted pair by pair in plain Python."""
    q = image.astype(int)
    colour = [q[..., 0] - q[..., 1], q[..., 1] - q[..., 2]]
    counts = {"rows": np.zeros((5, 5)), "columns": np.zeros((5, 5))}
    h, w = q.shape[:2]
    for c in colour:
        for i in range(h):
            for j in range(w - 2):
                a, b = c[i, j + 1] - c[i, j], c[i, j + 2] - c[i, j + 1]
                counts["rows"][min(max(a, -2), 2) + 2, min(max(b, -2), 2) + 2] += 1
        for i in range(h - 2):
            for j in range(w):
                a, b = c[i + 1, j] - c[i, j], c[i + 2, j] - c[i + 1, j]
                counts["columns"][min(max(a, -2), 2) + 2, min(max(b, -2), 2) + 2] += 1
    return ((counts["rows"] / counts["rows"].sum() + counts["columns"] / counts["columns"].sum()) / 2).ravel()


def test_the_chroma_statistic_counts_as_a_plain_loop_does_and_sees_an_attack(sample, shipped):
    get_model, _ = shipped
    x, y = sample.to_tensor()[:32], torch.from_numpy(sample.labels[:32])
    f = detector.chroma_cooccurrence(x)
    every = detector.chroma_cooccurrence(sample.to_tensor()[:100])
    for i in range(100):
        assert np.allclose(every[i].numpy(), _chroma_oracle(sample.images[i]), atol=1e-6)
    names = detector.feature_names(paths=("standard@raw",), statistics=("chroma",))
    assert names[-25:] == [f"chroma:cooccur_{a}_{b}" for a in range(-2, 3) for b in range(-2, 3)]
    assert set(detector.signal_groups(names[-25:])) == {"chroma"}
    # A grey image has no colour differences: every pair is (0, 0).
    grey = x[:4].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert torch.allclose(detector.chroma_cooccurrence(torch.round(grey * 255) / 255)[:, 12], torch.ones(4))
    # The JPEG-decoded sample has smooth colour differences; FGSM of one grey level, in 8 bits, roughens them.
    fgsm = torch.round(attacks.get("fgsm")(get_model("standard"), x, y, eps=0.004) * 255) / 255
    smooth_after = detector.chroma_cooccurrence(fgsm)[:, 12]
    assert (smooth_after < f[:, 12]).float().mean() > 0.9 and smooth_after.mean() < 0.8 * f[:, 12].mean()
    with pytest.raises(ValueError, match="RGB"):
        detector.chroma_cooccurrence(x[:, :1])


def test_the_chroma_statistic_counts_exactly_forward_and_has_a_gradient_backward(sample):
    x = sample.to_tensor()[:4]
    moved = (x + 0.3 / 255).requires_grad_(True)  # between grey levels, as an attacker's iterate is
    f = detector.chroma_cooccurrence(moved)
    assert torch.equal(f.detach(), detector.chroma_cooccurrence(torch.round(moved.detach() * 255) / 255))
    grad, = torch.autograd.grad(f[:, 12].sum(), moved)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()


def _triangular_counts(x: torch.Tensor, rounded: torch.Tensor, bin_: int) -> torch.Tensor:
    """The gradient's oracle: bin ``bin_`` of the counts with each step's weight the triangular kernel on its
    unrounded value on one side of a pair and the exact bin of ``rounded`` (grey levels) on the other (the
    product rule of the straight-through count), written out plainly in float64."""
    centres = torch.arange(-2, 3, dtype=torch.float64)
    a, b = divmod(bin_, 5)

    def steps(levels, dim):
        colour = torch.stack([levels[:, 0] - levels[:, 1], levels[:, 1] - levels[:, 2]], 1)
        return colour.diff(dim=dim)

    total = 0
    for dim in (-1, -2):
        smooth, exact = steps(x * 255, dim), steps(rounded, dim)
        tri = (1 - (smooth.clamp(-2, 2).unsqueeze(-1) - centres).abs()).clamp_min(0)
        hard = (exact.clamp(-2, 2).unsqueeze(-1) == centres).double()
        n = smooth.shape[dim] - 1
        first = lambda w: w.narrow(dim - 1, 0, n)  # noqa: E731  (dim counts from the end; the bins are last)
        second = lambda w: w.narrow(dim - 1, 1, n)  # noqa: E731
        pairs = first(tri)[..., a] * second(hard)[..., b] + first(hard)[..., a] * second(tri)[..., b]
        total = total + pairs.flatten(1).sum(1) / pairs[0].numel()  # per direction: the mean over its pairs
    return total / 2


def test_the_chroma_gradient_is_the_triangular_kernels_by_finite_differences(sample):
    # Between grey levels by a different amount per value, so that no step sits on a kink of the kernel.
    offset = torch.rand((2, 3, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.4 + 0.05
    x = sample.to_tensor()[:2, :, :6, :6].double() + offset / 255
    rounded = torch.round(x * 255)  # whole grey levels, as the forward pass counts them
    for bin_ in (12, 7, 13):
        moved = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(detector.chroma_cooccurrence(moved)[:, bin_].sum(), moved)
        h = 1e-4 / 255
        for n, c, i, j in [(0, 0, 2, 3), (0, 1, 1, 1), (1, 2, 4, 2), (1, 0, 3, 5), (0, 2, 0, 0)]:
            up, down = x.clone(), x.clone()
            up[n, c, i, j] += h
            down[n, c, i, j] -= h
            numeric = (_triangular_counts(up, rounded, bin_) - _triangular_counts(down, rounded, bin_)).sum() / (2 * h)
            assert abs(grad[n, c, i, j].item() - numeric.item()) <= 1e-6 * max(1.0, abs(numeric.item())), (bin_, n, c, i, j)
        assert grad.abs().sum() > 0


def test_statistics_are_validated_and_an_old_card_reads_none():
    assert detector.reads({"features": []}) == {"paths": detector.PATHS, "statistics": ()}
    assert detector.reads({"paths": ["standard@raw"], "statistics": ["chroma"]}) == {
        "paths": ("standard@raw",), "statistics": ("chroma",)}
    for bad in (("luma",), ("chroma", "chroma"), ("steps", "steps")):
        with pytest.raises(ValueError, match="statistics must name"):
            detector.feature_names(statistics=bad)


def test_the_attacker_who_knows_a_chroma_detector_moves_grey_and_evades_it(sample, shipped):
    from shared.screening.evasion import evade_screening

    get_model, options = shipped
    x, y = sample.to_tensor()[:96], torch.from_numpy(sample.labels[:96])
    reading = {"paths": ("standard@raw", "haar@haar"), "statistics": ("chroma",)}
    fgsm = torch.round(attacks.get("fgsm")(get_model("standard"), x, y, eps=0.01) * 255) / 255
    model = detector.fit(detector.features(x, get_model, options, **reading),
                         detector.features(fgsm, get_model, options, **reading))

    def attack(**kwargs):
        adversarial = evade_screening(x[:24], y[:24], get_model, options, model, eps=0.01, steps=6, **reading,
                                      **kwargs)
        adversarial = torch.round(adversarial * 255) / 255  # delivered in 8 bits
        f, logits = detector.features(adversarial, get_model, options, with_logits=True, **reading)
        return adversarial, model.score(f).mean(), (logits["haar@haar"].argmax(1) == y[:24]).float().mean()

    _, free_score, _ = attack(weight=0.0)
    grey, grey_score, grey_accuracy = attack(weight=4.0, grey=True)
    delta = grey - x[:24]
    inside = ((x[:24] > 0.02) & (x[:24] < 0.98)).all(1)  # no channel clipped at black or white
    assert torch.allclose(delta[:, 0][inside], delta[:, 1][inside]) and torch.allclose(delta[:, 1][inside],
                                                                                        delta[:, 2][inside])
    assert grey_score < free_score - 0.3  # colour differences untouched: the statistic no longer sees it
    assert grey.sub(x[:24]).abs().max() <= 0.01 + 1 / 510 and grey_accuracy < 0.8


def _steps_oracle(image: np.ndarray) -> list[float]:
    """The steps statistic of one HxWx3 uint8 image with numpy's correlation coefficient, plane by plane."""
    levels = image.astype(np.float64)
    planes = [levels[..., 0] - levels[..., 1], levels[..., 1] - levels[..., 2], levels.mean(-1)]
    out = []
    for plane in planes:
        for steps in (np.diff(plane, axis=1), np.diff(plane, axis=0).T):  # rows, then columns
            first, second = steps[:, :-1].ravel(), steps[:, 1:].ravel()
            out.append(0.0 if first.std() == 0 or second.std() == 0 else float(np.corrcoef(first, second)[0, 1]))
    return out


def test_the_steps_statistic_matches_numpy_on_100_images_and_sees_noise(sample, shipped):
    x = sample.to_tensor()[:100]
    f = detector.step_correlation(x)
    assert np.allclose(f.numpy(), [_steps_oracle(i) for i in sample.images[:100]], atol=1e-4)
    names = detector.feature_names(paths=("standard@raw",), statistics=("steps",))
    assert names[-6:] == [f"steps:correlation_{p}_{w}" for p in ("red-green", "green-blue", "luminance")
                          for w in ("rows", "columns")]
    assert set(detector.signal_groups(names[-6:])) == {"steps"}
    # FGSM adds +-eps to every pixel: consecutive steps turn opposite (towards -0.5), on most images and planes.
    get_model, _ = shipped
    fgsm = torch.round(attacks.get("fgsm")(get_model("standard"), x, torch.from_numpy(sample.labels[:100]),
                                           eps=0.01) * 255) / 255
    assert (detector.step_correlation(fgsm) < f).float().mean() > 0.9
    with pytest.raises(ValueError, match="RGB"):
        detector.step_correlation(x[:, :1])


def test_the_steps_statistic_reads_grey_levels_forward_and_has_a_gradient_backward(sample):
    x = sample.to_tensor()[:8]
    moved = (x + 0.3 / 255).clamp(0, 1).requires_grad_(True)  # a third of a grey level: rounds back
    f = detector.step_correlation(moved)
    assert torch.allclose(f.detach(), detector.step_correlation(torch.round(moved.detach() * 255) / 255), atol=1e-6)
    grad, = torch.autograd.grad(f.sum(), moved)
    # The straight-through gradient equals a central finite difference of numpy's correlation (the oracle of the
    # forward test) on the unrounded grey levels.
    direction = torch.randn_like(x).double()
    h = 1e-6  # in double precision; the correlation bends fast under random moves of every pixel
    rounded = (torch.round(moved.detach() * 255) / 255).double()

    def oracle(t):
        return sum(sum(_steps_oracle(image)) for image in (t * 255).permute(0, 2, 3, 1).numpy())

    numeric = (oracle(rounded + h * direction) - oracle(rounded - h * direction)) / (2 * h)
    assert float((grad.double() * direction).sum()) == pytest.approx(float(numeric), rel=1e-3)


def test_every_name_the_package_lists_resolves_and_the_card_facts_need_no_torch():
    import subprocess
    import sys

    for name in detector.__all__:
        assert getattr(detector, name) is not None, name
    script = ("import sys; from shared.screening.detector import PATHS, STATISTICS, reads; "
              "print('torch' in sys.modules, len(PATHS))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["False", "5"], out.stderr


def test_the_feature_cache_computes_each_attack_once_and_gives_what_a_fit_without_it_gives(tmp_path, sample):
    from shared.evaluation.plan import AttackSpec
    from shared.screening import examples as ss

    store = ModelStore(WEIGHTS, "cpu")
    reader = ss.FeatureReader(store, WEIGHTS, {"paths": ("standard@raw", "haar@haar"), "statistics": ("steps",)},
                              "haar@haar")
    x, y = sample.to_tensor()[:24], torch.from_numpy(sample.labels[:24])
    fgsm, bim = AttackSpec.named("fgsm", eps=0.01), AttackSpec.named("bim", eps=0.01)
    cache = ss.FeatureCache(tmp_path / "features", reader)
    ran = []
    first = cache.examples("sample", "sample", x, y, [fgsm], on_attack=ran.append)
    second = cache.examples("sample", "sample", x, y, [fgsm, bim], on_attack=ran.append)
    assert ran == [fgsm.id, bim.id]  # the second call computed BIM alone
    assert list(second.attacked) == [fgsm.id, bim.id] and len(list((tmp_path / "features").iterdir())) == 1
    again = cache.examples("sample", "sample", x, y, [fgsm], on_attack=ran.append)
    assert ran == [fgsm.id, bim.id] and list(again.attacked) == [fgsm.id]  # only what was asked, nothing computed
    direct = ss.examples(reader, "sample", x, y, [fgsm, bim])
    for ex in (first, again):
        assert torch.equal(ex.clean, direct.clean) and torch.equal(ex.fooling(fgsm.id), direct.fooling(fgsm.id))
    assert torch.equal(second.fooling(bim.id), direct.fooling(bim.id))
    # Other images (another count of the same data) or other models: another file.
    cache.examples("sample", "sample", x[:12], y[:12], [fgsm])
    assert len(list((tmp_path / "features").iterdir())) == 2
    assert cache.key("sample", 24) != ss.FeatureCache(tmp_path, ss.FeatureReader(
        store, WEIGHTS, {"paths": ("standard@raw", "haar@haar"), "statistics": ()}, "haar@haar")).key("sample", 24)


RESIZE_PAD = "standard@resize-pad:shrink=0.05"


def test_a_path_behind_an_input_transformation_is_read_as_screening_would_and_named_whole(sample, shipped):
    from shared import transforms
    from shared.screening.why import defence_of

    get_model, options = shipped
    x = sample.to_tensor()[:16]
    paths = ("standard@raw", "haar@haar", RESIZE_PAD)
    f, logits = detector.features(x, get_model, options, with_logits=True, paths=paths)
    again = detector.features(x, get_model, options, paths=paths)
    assert torch.equal(f, again)  # each image's draw is seeded by its pixels: screening it twice says the same
    with torch.no_grad():
        expected = get_model("standard")(transforms.apply(x, transforms.parse("resize-pad:shrink=0.05")))
    assert torch.allclose(logits[RESIZE_PAD], expected)
    names = detector.feature_names(paths=paths)
    groups = detector.signal_groups(names)
    assert groups.count(RESIZE_PAD) == 13 + 3  # its 13 output columns and its 3 against the raw path
    assert "resize-pad:shrink=0.05:removed" in groups and "resize-pad" not in groups
    known = {"haar", "daubechies"}
    assert defence_of(RESIZE_PAD, "haar", known) == "resize-pad:shrink=0.05"
    assert defence_of("resize-pad:shrink=0.05:removed", "haar", known) == "resize-pad:shrink=0.05"
    assert defence_of("haar:removed", "daubechies", known) == "haar"
    assert defence_of("standard@raw", "haar", known) == "haar" and defence_of("steps", "haar", known) is None
    for bad, says in ((("standard@raw", "resnet@jpeg:quality=30"), "MODEL@TRANSFORM"),
                      (("standard@raw", "standard@blur:size=3"), "MODEL@TRANSFORM"),
                      (("standard@raw", "standard@jpeg:quality=300"), "quality")):
        with pytest.raises(ValueError, match=says):
            detector.feature_names(paths=bad)


def test_the_attacker_averages_a_randomised_path_over_seeded_draws_and_computes_the_others_once(sample, shipped):
    from shared.screening.evasion import evade_screening, screening_loss

    get_model, options = shipped
    x, y = sample.to_tensor()[:8], torch.from_numpy(sample.labels[:8])
    reading = {"paths": ("standard@raw", "haar@haar", RESIZE_PAD), "statistics": ("steps",)}
    model = detector.Detector(len(detector.feature_names(**reading))).eval()
    calls = []

    def counting(name):
        net = get_model(name)
        return lambda images: calls.append(name) or net(images)

    def loss(draws):
        return screening_loss(counting, options, model, weight=1.0, screened_path="haar@haar", draws=draws, **reading)

    one = loss(1)
    first, second = one(x, y), one(x, y)  # one stream of draws: the second call draws anew
    assert not torch.isclose(first, second)
    calls.clear()
    assert torch.isclose(loss(2)(x, y), (first + second) / 2, rtol=1e-5)  # the mean over the same two draws
    assert calls.count("standard") == 1 + 2 and calls.count("haar") == 1  # raw and haar once, the draws twice
    a = evade_screening(x, y, get_model, options, model, eps=0.01, steps=2, screened_path="haar@haar", **reading)
    b = evade_screening(x, y, get_model, options, model, eps=0.01, steps=2, screened_path="haar@haar", **reading)
    assert torch.equal(a, b) and (a - x).abs().max() <= 0.01 + 1e-6  # seeded: a run repeats


def test_fit_detector_paths_keep_a_transformations_own_commas():
    from producers.cli.models import _paths

    assert _paths("standard@raw, haar@haar,standard@resize-pad:shrink=0.05,seed=3") == [
        "standard@raw", "haar@haar", "standard@resize-pad:shrink=0.05,seed=3"]
    assert _paths("standard@raw,haar@haar,") == ["standard@raw", "haar@haar"]
