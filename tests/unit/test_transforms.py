"""Input transformations (shared.transforms): names, and each defence against a library that computes it.

JPEG is compared with Pillow's codec, bit-depth with the numpy formula, median
with scipy.ndimage.median_filter, resize-pad with torch's interpolate at the
placement it reports; all on real images (the CIFAR-10 sample, scikit-image's
photographs), not noise alone.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as photos

from shared import transforms
from shared.transforms.resize_pad import placements


def _nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC (or NHW, grey) as float32 NCHW in [0, 1]."""
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


@pytest.fixture(scope="module")
def cifar(sample):
    """64 real CIFAR-10 test images, uint8 NHWC (every class)."""
    return sample.images[::15][:64]


@pytest.fixture(scope="module")
def photographs():
    """scikit-image's colour photographs, uint8 HWC, at their own sizes."""
    return [photos.chelsea(), photos.coffee(), photos.astronaut(), photos.rocket()]


def _crops(pictures, h, w, count):
    """``count`` h x w crops spread over the photographs, each photograph first shrunk so a crop shows a scene."""
    crops = []
    for i in range(count):
        picture = Image.fromarray(pictures[i % len(pictures)])
        scale = max(h / picture.height, w / picture.width) * (1 + i // len(pictures))
        picture = np.asarray(picture.resize((round(picture.width * scale) + 1, round(picture.height * scale) + 1),
                                            Image.BICUBIC))
        top, left = (picture.shape[0] - h) // 2, (picture.shape[1] - w) // 2
        crops.append(picture[top:top + h, left:left + w])
    return np.stack(crops)


# --- names -------------------------------------------------------------------------------------------------------


def test_the_names_import_without_torch_or_numpy():
    code = ("import sys, shared.transforms as t; t.parse('jpeg:quality=5'); t.is_transform('median');"
            "print(sorted(m for m in ('torch', 'numpy', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_kinds_and_is_transform():
    assert transforms.KINDS == ("bit-depth", "jpeg", "median", "resize-pad")
    for name in ("jpeg", "jpeg:quality=50", "bit-depth:bits=3", "median", "resize-pad:shrink=0.2"):
        assert transforms.is_transform(name)
    for name in ("haar", "daubechies", "jpg:quality=5", "", None, 3, "quality=5:jpeg"):
        assert not transforms.is_transform(name)


@pytest.mark.parametrize("name, expected", [
    ("jpeg", {"transform": "jpeg", "quality": 75}),
    ("jpeg:quality=10", {"transform": "jpeg", "quality": 10}),
    ("bit-depth", {"transform": "bit-depth", "bits": 5}),
    ("bit-depth:bits=1", {"transform": "bit-depth", "bits": 1}),
    ("median", {"transform": "median", "size": 2}),
    ("median: size = 9 ", {"transform": "median", "size": 9}),
    ("resize-pad", {"transform": "resize-pad", "shrink": 0.1, "seed": 0}),
    ("resize-pad:shrink=0.5,seed=7", {"transform": "resize-pad", "shrink": 0.5, "seed": 7}),
    ("resize-pad:seed=3", {"transform": "resize-pad", "shrink": 0.1, "seed": 3}),
])
def test_parse_fills_defaults_and_types(name, expected):
    options = transforms.parse(name)
    assert options == expected
    assert all(type(options[k]) is type(v) for k, v in expected.items())  # 0.5 stays a float, 7 an int
    assert transforms.parse(transforms.name_of(options)) == options
    assert transforms.validate(options) == options


def test_name_of_is_canonical():
    assert transforms.name_of({"transform": "jpeg"}) == "jpeg:quality=75"
    assert transforms.name_of(transforms.parse("resize-pad:seed=2,shrink=0.3")) == "resize-pad:seed=2,shrink=0.3"
    assert transforms.name_of(transforms.parse("resize-pad:shrink=0.3,seed=2")) == "resize-pad:seed=2,shrink=0.3"
    odd = {"transform": "resize-pad", "shrink": 0.1 + 0.2, "seed": 0}  # 0.30000000000000004 round-trips exactly
    assert transforms.parse(transforms.name_of(odd)) == odd


@pytest.mark.parametrize("name, message", [
    ("jpg", "unknown defence kind 'jpg'; input transformations: bit-depth, jpeg, median, resize-pad"),
    ("jpg:quality=5", "unknown defence kind 'jpg'; input transformations: bit-depth, jpeg, median, resize-pad"),
    ("jpeg:q=5", "jpeg: unknown parameter 'q'; valid: quality"),
    ("resize-pad:size=3", "resize-pad: unknown parameter 'size'; valid: seed, shrink"),
    ("jpeg:quality=0", "jpeg: quality is an integer in 1..100, got 0"),
    ("jpeg:quality=101", "jpeg: quality is an integer in 1..100, got 101"),
    ("jpeg:quality=7.5", "jpeg: quality is an integer in 1..100, got '7.5'"),
    ("jpeg:quality=abc", "jpeg: quality is an integer in 1..100, got 'abc'"),
    ("jpeg:quality=", "jpeg: quality is an integer in 1..100, got ''"),
    ("bit-depth:bits=9", "bit-depth: bits is an integer in 1..8, got 9"),
    ("bit-depth:bits=0", "bit-depth: bits is an integer in 1..8, got 0"),
    ("median:size=1", "median: size is an integer in 2..9, got 1"),
    ("median:size=10", "median: size is an integer in 2..9, got 10"),
    ("resize-pad:shrink=0", "resize-pad: shrink is a number in (0, 0.5], got 0.0"),
    ("resize-pad:shrink=0.6", "resize-pad: shrink is a number in (0, 0.5], got 0.6"),
    ("resize-pad:shrink=nan", "resize-pad: shrink is a number in (0, 0.5], got nan"),
    ("resize-pad:shrink=x", "resize-pad: shrink is a number in (0, 0.5], got 'x'"),
    ("resize-pad:seed=-1", "resize-pad: seed is an integer >= 0, got -1"),
    ("jpeg:", "jpeg: expected key=value, got ''; valid: quality"),
    ("jpeg:quality", "jpeg: expected key=value, got 'quality'; valid: quality"),
    ("jpeg:quality=5,quality=6", "jpeg: parameter 'quality' given twice"),
])
def test_parse_errors_are_one_line_naming_what_exists(name, message):
    with pytest.raises(ValueError) as caught:
        transforms.parse(name)
    assert str(caught.value) == message


def test_validate_checks_dicts_and_completes_them():
    assert transforms.validate({"transform": "median"}) == {"transform": "median", "size": 2}
    assert transforms.validate({"transform": "jpeg", "quality": "40"}) == {"transform": "jpeg", "quality": 40}
    assert transforms.validate({"transform": "resize-pad", "shrink": 0.25})["shrink"] == 0.25
    bad = [
        ({"transform": "jpeg", "quality": True}, "jpeg: quality is an integer in 1..100, got True"),
        ({"transform": "jpeg", "quality": 7.5}, "jpeg: quality is an integer in 1..100, got 7.5"),
        ({"transform": "resize-pad", "shrink": False}, "resize-pad: shrink is a number in (0, 0.5], got False"),
        ({"transform": "median", "size": None}, "median: size is an integer in 2..9, got None"),
        ({"transform": "median", "sigma": 1}, "median: unknown parameter 'sigma'; valid: size"),
        ({"transform": "haar"}, "unknown defence kind 'haar'; input transformations: bit-depth, jpeg, median, "
                                "resize-pad"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError) as caught:
            transforms.validate(options)
        assert str(caught.value) == message
    for not_options in ({"quality": 5}, "jpeg", None):
        with pytest.raises(ValueError, match="'transform' key"):
            transforms.validate(not_options)


def test_only_resize_pad_is_randomised():
    assert [k for k in transforms.KINDS if transforms.is_randomised(transforms.parse(k))] == ["resize-pad"]


def test_apply_refuses_what_is_not_a_float_batch(cifar):
    x = _nchw(cifar[:2])
    for images in (x[0], (x * 255).to(torch.uint8), cifar[:2]):
        with pytest.raises(ValueError, match="float N x C x H x W"):
            transforms.apply(images, {"transform": "median"})
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels, got 4"):
        transforms.apply(torch.cat([x, x[:, :1]], 1), {"transform": "jpeg"})
    with pytest.raises(ValueError, match="unknown defence kind"):
        transforms.apply(x, {"transform": "jpg"})


@pytest.mark.parametrize("name", ["jpeg", "bit-depth", "median:size=3", "resize-pad"])
def test_every_kind_keeps_shape_dtype_and_builds_no_graph_without_grad(cifar, name):
    x = _nchw(cifar[:4])
    for images in (x, x.double(), x[:, :1], x[:0], x[:, :, :20, :28]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torchvision's deprecation of its codecs stays inside
            out = transforms.apply(images, transforms.parse(name))
        assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
        assert not out.requires_grad and out.grad_fn is None
        assert ((out >= 0) & (out <= 1)).all()


# --- jpeg --------------------------------------------------------------------------------------------------------


def _pillow_jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Each uint8 image through Pillow's JPEG at its defaults (4:2:0 chroma subsampling), read back."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        out.append(np.asarray(Image.open(buffer)))
    return np.stack(out)


def _jpeg_difference(images: np.ndarray, quality: int) -> tuple[int, float]:
    """Max abs difference (grey levels) from Pillow, and the share of values more than 1 level apart."""
    ours = transforms.apply(_nchw(images), {"transform": "jpeg", "quality": quality})
    ours = ours.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pillow = _pillow_jpeg(images, quality).reshape(ours.shape)
    difference = np.abs(ours.astype(int) - pillow.astype(int))
    return int(difference.max()), float((difference > 1).mean())


# Measured (torchvision 0.29.1, Pillow 13.0.0): bit for bit at every size and quality, grey too. Pillow with
# subsampling=0 (4:4:4) differs by up to 126 levels at quality 10, so the 4:2:0 default is what matches.
@pytest.mark.parametrize("quality", [10, 50, 75, 95])
def test_jpeg_matches_pillow_on_cifar(cifar, quality):
    max_difference, share_over_one = _jpeg_difference(cifar, quality)
    assert max_difference <= 1 and share_over_one == 0
    assert max_difference == 0  # measured: identical


@pytest.mark.parametrize("h, w", [(224, 224), (40, 56), (33, 17)])
def test_jpeg_matches_pillow_on_photographs(photographs, h, w, cifar):
    crops = _crops(photographs, h, w, 6)
    upsampled = np.asarray([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in cifar[:4]])
    for quality in (20, 75):
        assert _jpeg_difference(np.concatenate([crops, upsampled]), quality) == (0, 0.0)
        grey = np.stack([np.asarray(Image.fromarray(c).convert("L")) for c in crops])
        assert _jpeg_difference(grey, quality) == (0, 0.0)


def test_jpeg_matches_pillow_on_noise_too():
    noise = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)  # the codec's worst case
    assert _jpeg_difference(noise, 50) == (0, 0.0)


def test_jpeg_quantises_to_8_bits_first(cifar):
    x = _nchw(cifar[:8])
    off_grid = (x + 0.3 / 255).clamp(0, 1)  # rounds back to the same 8-bit levels
    assert torch.equal(transforms.apply(off_grid, {"transform": "jpeg"}), transforms.apply(x, {"transform": "jpeg"}))


# --- bit-depth ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_matches_the_numpy_formula(cifar, bits):
    levels = 2 ** bits - 1
    for dtype in (np.float32, np.float64):
        x = cifar.transpose(0, 3, 1, 2).astype(dtype) / dtype(255)
        expected = np.round(x * dtype(levels)) / dtype(levels)
        out = transforms.apply(torch.from_numpy(x), {"transform": "bit-depth", "bits": bits}).numpy()
        assert out.dtype == dtype and np.array_equal(out, expected)
        assert len(np.unique(out)) <= levels + 1
    edges = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)
    assert torch.equal(transforms.apply(edges, {"transform": "bit-depth", "bits": bits}), edges)
    if bits == 8:
        assert np.array_equal(out, x)  # 8 bits keep every 8-bit image


# --- median ------------------------------------------------------------------------------------------------------


def _scipy_median(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([[scipy.ndimage.median_filter(channel, size=size, mode="reflect") for channel in image]
                     for image in images])


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_median_equals_scipy_exactly(cifar, photographs, size):
    cases = [cifar[:16], _crops(photographs, 224, 224, 2), _crops(photographs, 40, 56, 4)]
    for images in cases:
        x = _nchw(images)
        for dtype in (torch.float32, torch.float64):
            expected = _scipy_median(x.to(dtype).numpy(), size)
            out = transforms.apply(x.to(dtype), {"transform": "median", "size": size})
            assert out.dtype == dtype and np.array_equal(out.numpy(), expected)


def test_median_equals_scipy_for_large_windows_grey_and_tiny_images(photographs):
    grey = _nchw(np.stack([np.asarray(Image.fromarray(c).convert("L")) for c in _crops(photographs, 21, 30, 2)]))
    tiny = torch.rand(2, 3, 3, 2, generator=torch.Generator().manual_seed(0))  # windows wider than the image
    for x in (grey, tiny):
        for size in range(6, 10):
            out = transforms.apply(x, {"transform": "median", "size": size})
            assert np.array_equal(out.numpy(), _scipy_median(x.numpy(), size))


def test_median_gradient_is_the_selection():
    x = torch.rand(2, 2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    for size in (2, 3):
        median = lambda t: transforms.apply(t, {"transform": "median", "size": size})  # noqa: E731
        assert torch.autograd.gradcheck(median, (x,), fast_mode=True)
    out = transforms.apply(x, {"transform": "median", "size": 3})
    out.sum().backward()
    assert x.grad.sum().item() == out.numel()  # every output's gradient went to exactly one input pixel


# --- straight-through gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jpeg:quality=30", "bit-depth:bits=3"])
def test_jpeg_and_bit_depth_pass_the_gradient_straight_through(cifar, name):
    x = _nchw(cifar[:4]).requires_grad_()
    out = transforms.apply(x, transforms.parse(name))
    assert torch.equal(out.detach(), transforms.apply(x.detach(), transforms.parse(name)))  # forward: exact
    upstream = torch.randn_like(x)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)


# --- resize-pad --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(32, 32), (40, 56), (56, 40)])
def test_resize_pad_places_the_resized_image_on_zeros(cifar, h, w):
    x = F.interpolate(_nchw(cifar[:32]), size=(h, w), mode="bilinear") if (h, w) != (32, 32) else _nchw(cifar[:32])
    options = {"transform": "resize-pad", "shrink": 0.3, "seed": 0}
    out = transforms.apply(x, options)
    draws = placements(x, shrink=0.3)
    assert out.shape == x.shape and len(draws) == len(x)
    low = round(h * 0.7)
    for image, placed, (rh, rw, top, left) in zip(x, out, draws):
        assert low <= rh <= h and rw == min(w, int(w * rh / h + 0.5)) and 0 <= top <= h - rh and 0 <= left <= w - rw
        inside = placed[:, top:top + rh, left:left + rw]
        expected = image[None] if (rh, rw) == (h, w) else F.interpolate(image[None], size=(rh, rw), mode="bilinear",
                                                                         align_corners=False)
        assert torch.equal(inside, expected[0])
        mask = torch.ones(h, w, dtype=torch.bool)
        mask[top:top + rh, left:left + rw] = False
        assert (placed[:, mask] == 0).all()
    assert len({d[:2] for d in draws}) > 3  # the sizes vary over the batch


def test_resize_pad_without_shrinkage_is_the_identity(cifar):
    x = _nchw(cifar)
    for generator in (None, torch.Generator().manual_seed(5)):
        # round(32 * 0.99) = 32: the only size is the image's own.
        assert torch.equal(transforms.apply(x, {"transform": "resize-pad", "shrink": 0.01}, generator=generator), x)


def test_resize_pad_with_a_generator_is_reproducible_and_draws_anew_on_each_call(cifar):
    x = _nchw(cifar)
    options = transforms.parse("resize-pad")
    first = transforms.apply(x, options, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, transforms.apply(x, options, generator=torch.Generator().manual_seed(3)))
    stream = torch.Generator().manual_seed(3)
    assert torch.equal(first, transforms.apply(x, options, generator=stream))
    assert not torch.equal(first, transforms.apply(x, options, generator=stream))  # EOT: the next call, new draws
    assert placements(x, generator=torch.Generator().manual_seed(3)) != placements(x)


def test_resize_pad_draws_are_uniform_over_sizes_and_offsets():
    x = torch.zeros(6000, 1, 20, 20)
    draws = placements(x, shrink=0.2, generator=torch.Generator().manual_seed(0))
    sizes = np.bincount([d[0] for d in draws], minlength=21)[16:]
    assert sizes.min() > 0.8 * len(draws) / 5  # each of r = 16..20 about a fifth of the time
    tops = {d[2] for d in draws if d[0] == 16}
    assert tops == set(range(5))  # every offset where the image fits


def test_resize_pad_content_seeded_draws_follow_each_image(cifar):
    x = _nchw(cifar)
    draws = placements(x)
    assert len(set(draws)) > 10  # different images, different draws
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert placements(x[order]) == [draws[i] for i in order.tolist()]  # any batch composition, same draw
    assert placements(x[5:9]) == draws[5:9]
    assert placements(x.double()) == draws  # the pixels, quantised to 8 bits, seed the draw: not their dtype
    out = transforms.apply(x, {"transform": "resize-pad"})
    assert torch.equal(transforms.apply(x[order], {"transform": "resize-pad"}), out[order])
    nudged = x.clone()
    nudged[:, 0, 7, 9] = (nudged[:, 0, 7, 9] + 1 / 255).where(nudged[:, 0, 7, 9] < 1, nudged[:, 0, 7, 9] - 1 / 255)
    changed = sum(a != b for a, b in zip(placements(nudged), draws))
    assert changed > 0.8 * len(x)  # one grey level at one pixel: a fresh draw (30 placements, so ~1/30 repeat)
    assert sum(a != b for a, b in zip(placements(x, seed=1), draws)) > 0.8 * len(x)


def test_resize_pad_gradient_is_the_true_one(cifar):
    x = torch.rand(3, 2, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    options = {"transform": "resize-pad", "shrink": 0.4}
    # A fresh generator each call: gradcheck's perturbed calls see the same draws (sizes 6..9 over the 3 images).
    assert {d[:2] for d in placements(x, shrink=0.4, generator=torch.Generator().manual_seed(1))} != {(9, 11)}
    resize_pad = lambda t: transforms.apply(t, options, generator=torch.Generator().manual_seed(1))  # noqa: E731
    assert torch.autograd.gradcheck(resize_pad, (x,), fast_mode=True)
    images = _nchw(cifar[:16]).requires_grad_()
    out = transforms.apply(images, {"transform": "resize-pad", "shrink": 0.5})
    out.sum().backward()
    assert images.grad.shape == images.shape and images.grad.abs().sum() > 0


# --- CUDA --------------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["jpeg:quality=50", "bit-depth", "median:size=4", "resize-pad:shrink=0.3"])
def test_on_cuda_as_on_cpu(cifar, name):
    x = _nchw(cifar)
    options = transforms.parse(name)
    cpu = transforms.apply(x, options)
    gpu = transforms.apply(x.cuda(), options)
    assert gpu.is_cuda and gpu.dtype == x.dtype
    if options["transform"] == "resize-pad":
        assert placements(x.cuda(), shrink=0.3) == placements(x, shrink=0.3)  # the content hash is exact integers
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-6)
    else:
        assert torch.equal(gpu.cpu(), cpu)  # jpeg: the CPU codec either way (nvJPEG would not subsample chroma)
    images = x.cuda().requires_grad_()
    transforms.apply(images, options, generator=torch.Generator("cuda").manual_seed(0)).sum().backward()
    assert images.grad.is_cuda
