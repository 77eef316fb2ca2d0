"""Sources: encodings, the colour smoothness per image, and the source check on a job's records."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.images import encodings
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


def _records(smoothness, flagged_share, seed=0):
    rng = np.random.default_rng(seed)
    flags = rng.random(len(smoothness)) < flagged_share
    return [{"id": str(i), "error": None, "label": "cat", "flagged": bool(f), "colour_roughness": float(s)}
            for i, (s, f) in enumerate(zip(smoothness, flags))]


def test_source_check_needs_many_flags_and_unlike_colours():
    rng = np.random.default_rng(1)
    calibrated = rng.beta(8, 4, 5000)
    calibration = {"name": "mirror", "fpr": 0.05,
                   "reference": {"deciles": np.quantile(calibrated, np.linspace(0.1, 0.9, 9)).tolist()}}
    like, unlike = rng.beta(8, 4, 600), rng.beta(4, 8, 600)
    # Unlike colours and 60 % flagged: a clean set from another source, most likely; the message says what to run.
    check = verdicts.source_check(_records(unlike, 0.6), calibration)
    assert check["mismatch"] and "waveshield calibrate" in check["message"] and "--source" in check["message"]
    assert check["distance"] >= verdicts.CHECK_DISTANCE and check["flagged_share"] > 0.5
    # Colours like the calibration's: the flags stand on their own (a set that really is attacked).
    assert not verdicts.source_check(_records(like, 0.6), calibration)["mismatch"]
    # Unlike colours, but flags at the calibrated rate: nothing to explain.
    assert not verdicts.source_check(_records(unlike, 0.05), calibration)["mismatch"]
    # Too few images to say.
    few = verdicts.source_check(_records(unlike[:150], 0.6), calibration)
    assert not few["mismatch"] and "fewer than 200" in few["reason"]
    # A summary carries the calibration's name and the check, and still counts every flag.
    summary = verdicts.summary(_records(unlike, 0.6), calibration)
    assert summary["calibration"]["name"] == "mirror" and summary["source_check"]["mismatch"]
    assert summary["flagged"] == sum(r["flagged"] for r in _records(unlike, 0.6))


def test_decile_distance_is_small_for_the_same_distribution_and_large_for_another():
    rng = np.random.default_rng(2)
    deciles = np.quantile(rng.normal(size=100_000), np.linspace(0.1, 0.9, 9))
    assert verdicts.decile_distance(rng.normal(size=1000), deciles) < 0.06
    assert verdicts.decile_distance(rng.normal(1.0, 1.0, size=1000), deciles) > 0.3


def test_a_source_calibration_is_picked_by_name_and_refused_for_another_detector():
    chosen = {"score": "detector", "detector_sha256": "a" * 64, "threshold": 0.2, "fpr": 0.05,
              "reference": {"deciles": [0.5] * 9},
              "sources": {"canonical": {"score": "detector", "detector_sha256": "a" * 64, "threshold": 0.4,
                                        "fpr": 0.05, "reference": {"deciles": [0.3] * 9}},
                          "old": {"score": "detector", "detector_sha256": "b" * 64, "threshold": 0.1, "fpr": 0.05}}}
    assert calibration_for(chosen, None)["name"] == "default" and calibration_for(chosen, None)["threshold"] == 0.2
    picked = calibration_for(chosen, "canonical")
    assert picked["name"] == "canonical" and picked["threshold"] == 0.4
    with pytest.raises(ValueError, match="another score or detector"):
        calibration_for(chosen, "old")
    with pytest.raises(ValueError, match="it has: canonical, old.*waveshield calibrate"):
        calibration_for(chosen, "photos")
