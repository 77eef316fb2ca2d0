import itertools

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio
from skimage.restoration import denoise_wavelet

from shared.dwt.transform import mse, psnr, reconstruct


def _oracle(batch, **options):
    """scikit-image image by image, clipped to [0, 1] like reconstruct()."""
    kw = {"wavelet": options.get("wavelet", "haar"), "wavelet_levels": options.get("levels"),
          "mode": options.get("mode", "soft"), "method": options.get("method", "BayesShrink"),
          "sigma": options.get("sigma"), "convert2ycbcr": options.get("convert2ycbcr", False)}
    return np.stack([np.clip(denoise_wavelet(im, channel_axis=0, **kw), 0, 1) for im in batch])


@pytest.fixture(scope="module")
def real_images(sample):
    # Real CIFAR images as float64 NCHW, plus two edge cases: a saturated
    # image and one with flat regions (zero wavelet coefficients).
    x = sample.images[::125].astype(np.float64).transpose(0, 3, 1, 2) / 255
    flat = x[:1].copy()
    flat[..., :16, :] = 0.5
    return np.concatenate([x, np.ones_like(x[:1]), flat])


OPTIONS = [
    dict(wavelet=w, levels=lv, mode=m, method=me, sigma=s, convert2ycbcr=y)
    for w, lv, m, me, s, y in itertools.product(
        ["haar", "db2", "db4", "sym4", "coif1"], [None, 1, 2], ["soft", "hard"], ["BayesShrink", "VisuShrink"],
        [None, 0.04], [False, True])
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_matches_scikit_image_denoise_wavelet(real_images, options):
    x = real_images
    if options["sigma"] is None:
        x = x[:-2]  # scikit-image returns NaN where no coefficient is non-zero; checked separately below
    expected = _oracle(x, **options)
    actual = reconstruct(x, **options)
    assert actual.dtype == np.float64 and actual.shape == x.shape
    assert np.abs(actual - expected).max() <= 1e-5


def test_matches_on_odd_and_non_square_sizes():
    rng = np.random.default_rng(3)
    x = np.clip(rng.random((3, 3, 27, 40)) * 0.6 + rng.normal(0, 0.05, (3, 3, 27, 40)), 0, 1)
    for wavelet in ("haar", "db4"):
        np.testing.assert_allclose(reconstruct(x, wavelet=wavelet), _oracle(x, wavelet=wavelet), atol=1e-5)


@pytest.mark.parametrize("size", [(224, 224), (160, 224)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("options", [dict(wavelet="haar"), dict(wavelet="db2", method="VisuShrink", convert2ycbcr=True),
                                     dict(wavelet="haar", levels=2, mode="hard", sigma=0.04)], ids=str)
def test_matches_at_a_users_input_size(size, options):
    """A user's model reads photographs at its own size: the levels follow it as scikit-image chooses them
    (4 for Haar at 224), and the reconstruction still equals scikit-image's."""
    from PIL import Image
    from skimage import data

    photos = [Image.fromarray(im).resize(size[::-1], Image.Resampling.LANCZOS) for im in (data.astronaut(), data.chelsea())]
    x = np.stack([np.asarray(p, dtype=np.float64).transpose(2, 0, 1) / 255 for p in photos])
    assert np.abs(reconstruct(x, **options) - _oracle(x, **options)).max() <= 1e-5


def test_flat_regions_match_and_flat_image_comes_back_unchanged(real_images):
    with_flat_half = real_images[-1:]
    np.testing.assert_allclose(reconstruct(with_flat_half), _oracle(with_flat_half), atol=1e-5)
    constant = np.full((1, 3, 32, 32), 0.25)
    np.testing.assert_allclose(reconstruct(constant), constant, atol=1e-12)


def test_denoising_raises_psnr_of_noisy_images(sample):
    clean = sample.images[:64].transpose(0, 3, 1, 2).astype(np.float32) / 255
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.08, clean.shape).astype(np.float32), 0, 1)
    gain = psnr(reconstruct(noisy), clean) - psnr(noisy, clean)
    assert gain.mean() > 1.0 and (gain > 0).mean() > 0.9


def test_torch_input_gives_torch_output_equal_to_numpy(real_images):
    x32 = real_images.astype(np.float32)
    out_np = reconstruct(x32, wavelet="db2")
    out_t = reconstruct(torch.from_numpy(x32), wavelet="db2")
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_array_equal(out_t.numpy(), out_np)


@pytest.mark.parametrize("ycbcr", [False, True])
def test_float32_matches_float32_oracle(real_images, ycbcr):
    x = real_images[:-2].astype(np.float32)
    out = reconstruct(x, convert2ycbcr=ycbcr)
    assert out.dtype == np.float32
    assert np.abs(out - _oracle(x, convert2ycbcr=ycbcr)).max() <= 1e-5


def test_uint8_input_is_scaled(real_images):
    u8 = np.round(real_images * 255).astype(np.uint8)
    out = reconstruct(u8)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reconstruct(u8.astype(np.float32) / 255), atol=1e-6)


def test_output_in_unit_range_and_input_untouched(real_images):
    x = real_images.copy()
    out = reconstruct(x, mode="hard", method="VisuShrink")
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(x, real_images)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(wavelet="db99"), "unknown wavelet"),
        (dict(mode="medium"), "valid: soft, hard"),
        (dict(method="SureShrink"), "valid: BayesShrink, VisuShrink"),
        (dict(levels=0), "levels must be"),
        (dict(levels=9), "levels must be"),
        (dict(sigma=-1.0), "sigma"),
        (dict(sigma=[0.1, 0.2]), "sigma"),
    ],
)
def test_bad_options_raise_value_error_listing_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reconstruct(np.zeros((1, 3, 32, 32)), **kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="N x C x H x W"):
        reconstruct(np.zeros((3, 32, 32)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reconstruct(np.full((1, 3, 8, 8), 200.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reconstruct(np.full((1, 3, 8, 8), np.nan))
    with pytest.raises(ValueError, match="3 channels"):
        reconstruct(np.zeros((1, 1, 8, 8)), convert2ycbcr=True)
    with pytest.raises(ValueError, match="numpy array or torch tensor"):
        reconstruct([[0.0]])


def test_psnr_and_mse_match_scikit_image(real_images):
    a = real_images[:4]
    b = np.clip(a + np.random.default_rng(1).normal(0, 0.02, a.shape), 0, 1)
    np.testing.assert_allclose(mse(a, b), [mean_squared_error(x, y) for x, y in zip(a, b)])
    np.testing.assert_allclose(psnr(a, b), [peak_signal_noise_ratio(x, y, data_range=1) for x, y in zip(a, b)])
    torch_psnr = psnr(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(torch_psnr.numpy(), psnr(a, b))
    assert np.isinf(psnr(a, a)).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_stays_on_gpu_and_matches_cpu(real_images):
    x = torch.from_numpy(real_images)
    out = reconstruct(x.cuda(), wavelet="db2", convert2ycbcr=True)
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), reconstruct(x, wavelet="db2", convert2ycbcr=True).numpy(), atol=1e-10)


def test_sigma_scale_scales_the_noise_level(real_images):
    x = real_images[:-2]
    from shared.dwt.noise import estimate_sigma, finest_diagonal_like_pywt

    estimated = estimate_sigma(finest_diagonal_like_pywt(torch.from_numpy(x), "haar")).numpy()
    for scale in (0.5, 2.0):
        per_image = np.stack([reconstruct(x[i:i + 1], sigma=list(estimated[i] * scale)) for i in range(len(x))])[:, 0]
        np.testing.assert_allclose(reconstruct(x, sigma_scale=scale), per_image, atol=1e-12)
    assert np.abs(reconstruct(x, sigma_scale=0.5) - x).mean() < np.abs(reconstruct(x, sigma_scale=2.0) - x).mean()
    with pytest.raises(ValueError, match="sigma_scale"):
        reconstruct(x, sigma_scale=0)
