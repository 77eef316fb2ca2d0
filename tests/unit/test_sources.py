"""Sources: encodings, the colour roughness and coarse statistics per image, and the guard on a job's records."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.images import coarse, encodings
from shared.screening import verdicts
from shared.screening.config import calibration_for


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def test_encodings_round_trip_as_their_format_says(canonical_prefix):
    images = canonical_prefix[0][:20]
    assert np.array_equal(encodings.reencode(images, "png"), images)  # lossless
    for encoding in ("jpeg-q95-444", "jpeg-q50", "webp-q90"):
        decoded = encodings.reencode(images, encoding)
        error = np.abs(decoded.astype(int) - images).mean()
        assert decoded.shape == images.shape and 0 < error < 12, (encoding, error)
    jpeg = Image.open(io.BytesIO(encodings.encode(images[0], "jpeg-q95-444")))
    assert jpeg.format == "JPEG" and jpeg.layer[0][1:3] == jpeg.layer[1][1:3]  # 4:4:4: chroma not subsampled
    with pytest.raises(ValueError, match="unknown encoding"):
        encodings.encode(images[0], "gif")


def _roughness_loop(image: np.ndarray) -> float:
    """The oracle: every pair of neighbours, one at a time."""
    levels = image.astype(float)
    colour = [levels[..., 0] - levels[..., 1], levels[..., 1] - levels[..., 2]]
    luminance = levels.mean(-1)

    def mean_step(planes):
        steps = []
        for plane in planes:
            h, w = plane.shape
            for i in range(h):
                for j in range(w):
                    if j + 1 < w:
                        steps.append(abs(plane[i, j + 1] - plane[i, j]))
                    if i + 1 < h:
                        steps.append(abs(plane[i + 1, j] - plane[i, j]))
        return sum(steps) / len(steps)

    return float(np.log((mean_step(colour) + 0.5) / (mean_step([luminance]) + 0.5)))


def test_colour_roughness_against_a_loop_over_every_pair_of_neighbours(canonical_prefix):
    images = canonical_prefix[0][:6]
    measured = encodings.colour_roughness(_nchw(images))
    assert measured.tolist() == pytest.approx([_roughness_loop(i) for i in images], abs=1e-5)


def test_subsampled_jpeg_has_smoother_colours_than_canonical_pixels_and_colour_noise_rougher(canonical_prefix):
    images = canonical_prefix[0][:300]
    canonical = encodings.colour_roughness(_nchw(images)).mean()
    subsampled = encodings.colour_roughness(_nchw(encodings.reencode(images, "jpeg-q50"))).mean()
    noise = torch.randint(0, 3, images.shape, generator=torch.Generator().manual_seed(0)).numpy() - 1
    noisy = encodings.colour_roughness(_nchw(np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8))).mean()
    assert subsampled < canonical - 0.1 and noisy > canonical + 0.1, (subsampled, canonical, noisy)


def _records(contrast, flagged, seed=0, colour=None):
    """Records of clean-looking images: ``flagged`` is a share flagged at random, or a count flagged."""
    rng = np.random.default_rng(seed)
    n = len(contrast)
    flags = rng.random(n) < flagged if isinstance(flagged, float) else np.arange(n) < flagged
    colour = contrast if colour is None else colour
    return [{"id": str(i), "error": None, "label": "cat", "flagged": bool(f), "coarse_contrast": float(c),
             "coarse_colour": float(k)} for i, (c, k, f) in enumerate(zip(contrast, colour, flags))]


def _calibration(values, fpr=0.05):
    deciles = np.quantile(values, np.linspace(0.1, 0.9, 9)).tolist()
    return {"name": "mirror", "fpr": fpr, "threshold": 0.5,
            "reference": {"statistics": {"coarse_contrast": deciles, "coarse_colour": deciles}, "images": len(values)}}


def test_the_guard_warns_on_the_flags_alone_and_the_statistics_only_pick_the_wording():
    rng = np.random.default_rng(1)
    calibration = _calibration(rng.beta(8, 4, 5000))
    like, unlike = rng.beta(8, 4, 600), rng.beta(4, 8, 600)
    # 60 % flagged, 12x the rate: it warns whatever the images show; the flags stand and it says what to run.
    for values, likelier in ((unlike, "unlike the calibration"), (like, "attack")):
        check = verdicts.source_check(_records(values, 0.6), calibration)
        assert check["warning"] and check["likelier"] == likelier, check
        assert "The flags stand" in check["message"] and "waveshield calibrate --data CLEAN_IMAGES" in check["message"]
        assert check["p_value"] < 1e-100 and check["times_calibrated"] > 10
    assert max(verdicts.source_check(_records(unlike, 0.6), calibration)["distance"].values()) >= 0.2
    assert "an attack is likelier" in verdicts.source_check(_records(like, 0.6), calibration)["message"]
    assert "unlike the calibration's are likelier" in verdicts.source_check(_records(unlike, 0.6), calibration)["message"]
    # Flags at the calibrated rate: quiet, however unlike the images.
    assert not verdicts.source_check(_records(unlike, 0.05), calibration)["warning"]
    # Too few images to say.
    few = verdicts.source_check(_records(unlike[:150], 0.6), calibration)
    assert not few["warning"] and "fewer than 200" in few["reason"]
    # Either statistic alone unlike the calibration's is enough to call the images unlike.
    one = verdicts.source_check(_records(like, 0.6, colour=unlike), calibration)
    assert one["likelier"] == "unlike the calibration" and one["distance"]["coarse_contrast"] < 0.1
    # A calibration of an earlier release (another statistic): it still warns, and says it cannot tell why.
    old = {**calibration, "reference": {"statistic": "colour_roughness", "deciles": [0.5] * 9}}
    check = verdicts.source_check(_records(like, 0.6), old)
    assert check["warning"] and check["likelier"] is None and "records nothing" in check["message"]
    # A summary carries the calibration's name and the check, and still counts every flag.
    summary = verdicts.summary(_records(unlike, 0.6), calibration)
    assert summary["calibration"]["name"] == "mirror" and summary["source_check"]["warning"]
    assert summary["flagged"] == sum(r["flagged"] for r in _records(unlike, 0.6))


def test_three_times_the_rate_is_not_enough_where_chance_explains_it():
    """At a 1 % rate, 6 flags of 200 are 3x the rate, and 1.6 % likely by chance: quiet. 60 of 2,000 are not."""
    rng = np.random.default_rng(3)
    calibration = _calibration(rng.beta(8, 4, 5000), fpr=0.01)
    small = verdicts.source_check(_records(rng.beta(8, 4, 200), 6), calibration)
    assert small["times_calibrated"] == 3.0 and small["p_value"] == pytest.approx(0.016, abs=5e-4)
    assert not small["warning"] and "p < 0.001" in small["reason"]
    large = verdicts.source_check(_records(rng.beta(8, 4, 2000), 60), calibration)
    assert large["warning"] and large["p_value"] < 1e-6


def test_the_binomial_tail_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for n, k, p in ((200, 30, 0.05), (200, 6, 0.01), (1000, 3, 0.005), (100_000, 5_200, 0.05), (500, 20, 0.05),
                    (300, 0, 0.05), (50, 50, 0.5), (1000, 400, 0.05), (10, 1, 0.3), (7, 8, 0.5)):
        assert verdicts.binomial_tail(k, n, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-9, abs=1e-300)


def test_coarse_statistics_against_a_loop_over_blocks(canonical_prefix):
    images = canonical_prefix[0][:4]
    measured = coarse.coarse_statistics(_nchw(images))
    for i, image in enumerate(images.astype(float)):
        blocks = image.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3))  # 8 x 8 blocks of 4 x 4 pixels
        luminance = blocks.mean(-1).ravel()
        assert measured["coarse_contrast"][i] == pytest.approx(np.log1p(luminance.std(ddof=1)), abs=1e-5)
        assert measured["coarse_colour"][i] == pytest.approx((blocks.max(-1) - blocks.min(-1)).mean(), abs=1e-4)
    with pytest.raises(ValueError, match="at least 8 x 8"):
        coarse.coarse_statistics(torch.zeros(1, 3, 4, 4))


def test_an_attack_leaves_the_coarse_statistics_where_it_moves_the_colour_roughness(canonical_prefix):
    """Signs of +-0.01 on every pixel, as FGSM at eps 0.01 delivers them: the guard's statistics stay put."""
    images = _nchw(canonical_prefix[0][:1000])
    reference = coarse.reference(images[0::2])
    clean = images[1::2]
    signs = torch.randint(0, 2, clean.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    attacked = (clean + 0.01 * signs).clamp(0, 1)
    for x, most in ((clean, 0.08), (attacked, 0.08)):
        found = coarse.coarse_statistics(x)
        for name in coarse.NAMES:
            assert verdicts.decile_distance(found[name].double().numpy(), reference["statistics"][name]) < most
    rough = encodings.colour_roughness(images[0::2]).double().numpy()
    deciles = np.quantile(rough, np.linspace(0.1, 0.9, 9))
    assert verdicts.decile_distance(encodings.colour_roughness(attacked).double().numpy(), deciles) > 0.3


def test_decile_distance_is_small_for_the_same_distribution_and_large_for_another():
    rng = np.random.default_rng(2)
    deciles = np.quantile(rng.normal(size=100_000), np.linspace(0.1, 0.9, 9))
    assert verdicts.decile_distance(rng.normal(size=1000), deciles) < 0.06
    assert verdicts.decile_distance(rng.normal(1.0, 1.0, size=1000), deciles) > 0.3


def test_a_source_calibration_is_picked_by_name_and_refused_for_another_detector():
    chosen = {"score": "detector", "detector_sha256": "a" * 64, "threshold": 0.2, "fpr": 0.05,
              "reference": {"statistics": {"coarse_contrast": [0.5] * 9}},
              "sources": {"canonical": {"score": "detector", "detector_sha256": "a" * 64, "threshold": 0.4,
                                        "fpr": 0.05, "reference": {"statistics": {"coarse_contrast": [0.3] * 9}}},
                          "old": {"score": "detector", "detector_sha256": "b" * 64, "threshold": 0.1, "fpr": 0.05}}}
    assert calibration_for(chosen, None)["name"] == "default" and calibration_for(chosen, None)["threshold"] == 0.2
    picked = calibration_for(chosen, "canonical")
    assert picked["name"] == "canonical" and picked["threshold"] == 0.4
    with pytest.raises(ValueError, match="another score or detector"):
        calibration_for(chosen, "old")
    with pytest.raises(ValueError, match="it has: canonical, old.*waveshield calibrate"):
        calibration_for(chosen, "photos")


def test_a_calibration_of_several_sources_is_like_a_set_that_is_like_any_one_of_them():
    rng = np.random.default_rng(4)
    bright, dark = rng.beta(8, 4, 3000), rng.beta(4, 8, 3000)
    calibration = {"name": "default", "fpr": 0.05,
                   "reference": {"sources": {"bright": _calibration(bright)["reference"],
                                             "dark": _calibration(dark)["reference"]}}}
    check = verdicts.source_check(_records(rng.beta(4, 8, 400), 0.5), calibration)
    assert check["warning"] and check["likelier"] == "attack" and check["nearest_source"] == "dark"
    assert "its source 'dark'" in check["message"]
    check = verdicts.source_check(_records(rng.beta(20, 20, 400), 0.5), calibration)  # like neither
    assert check["likelier"] == "unlike the calibration"


def test_the_watch_guard_reads_the_last_1000_records_and_warns_once_as_it_starts_to_hold():
    rng = np.random.default_rng(5)
    values = rng.beta(8, 4, 5000)
    guard = verdicts.RecentCheck(_calibration(values))
    assert guard.recent.maxlen == verdicts.WATCH_WINDOW == 1000
    lines = [guard.add(_records(values[i:i + 100], 0.04, seed=i)) for i in range(0, 1200, 100)]
    assert lines == [None] * 12  # clean images at the calibrated rate
    lines = [guard.add(_records(values[i:i + 100], 0.6, seed=i)) for i in range(1200, 1600, 100)]
    started = [line for line in lines if line]
    assert len(started) == 1 and started[0].startswith("warning (last 1000 images):")
    assert "an attack is likelier" in started[0]
    # Once 1,000 clean records follow, the flagged ones have left the window: quiet, and ready to warn again.
    assert [guard.add(_records(values[i:i + 100], 0.0)) for i in range(2000, 3000, 100)] == [None] * 10
    assert not guard.warning
    assert guard.add(_records(values[:1000], 0.5)) is not None


def test_photographic_content_names_its_group_and_turns_without_filling_corners():
    from PIL import Image

    from shared.images import photo_content

    crops = photo_content.content_crops("coffee", seed=1, per_size=3, short_sides=(48, 96))
    assert [name for name, _ in crops][:3] == ["coffee-plain-48-000.png", "coffee-turned-48-001.png",
                                               "coffee-jittered-48-002.png"]
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for _, c in crops)
    assert {photo_content.group_of(f"zip/{name}") for name, _ in crops} == {"coffee"}
    assert set(photo_content.groups()) == {*photo_content.PHOTOGRAPHS, "textures"}
    # A picture with no black pixel, turned by any angle: the cut keeps only its own pixels.
    picture = Image.new("RGB", (300, 200), (200, 120, 40))
    for seed in range(20):
        turned = np.asarray(photo_content.turned(picture, np.random.default_rng(seed)))
        assert turned.min() > 30 and min(turned.shape[:2]) >= 100, (seed, turned.shape)
    # Textures are grey files in colour.
    tinted = [c for _, c in photo_content.content_crops("textures", seed=2, per_size=2, short_sides=(64,))]
    assert all(np.abs(c[..., 0].astype(int) - c[..., 2]).mean() > 1 for c in tinted)
