"""Batched DWT reconstruction (wavelet denoising) and image quality metrics.

:func:`reconstruct` is ``skimage.restoration.denoise_wavelet`` over a whole
N x C x H x W batch at once, in torch, so it runs on the GPU when given a CUDA
tensor. Each one-level 1-D DWT (PyWavelets' ``symmetric`` extension) is a
linear map, so it is built once as a small matrix by transforming the basis
vectors with PyWavelets itself, then applied to every row of the batch with
one matmul. Thresholds (BayesShrink per sub-band, VisuShrink universal) and
the noise estimate (MAD of the finest diagonal band) are computed per image
and channel, exactly as scikit-image computes them image by image.

Differences from scikit-image, both deliberate:

* the output is always clipped to [0, 1] (scikit-image >= 0.24 leaves float
  output unclipped);
* an image whose finest diagonal band is all zero (a flat image) gets a noise
  estimate of 0 and comes back unchanged, where scikit-image returns NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pywt
import torch

from shared.dwt import METHODS, THRESHOLD_MODES, WAVELETS
from shared.dwt.noise import estimate_sigma, finest_diagonal_like_pywt

# ITU-R BT.601 RGB -> YCbCr for RGB in [0, 1] (Y in [16, 235]), as scikit-image.
_YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_DETAIL_KEYS = ("ad", "da", "dd")  # PyWavelets' order: first letter = rows (H)


def reconstruct(
    images,
    *,
    wavelet: str = "haar",
    levels: int | None = None,
    mode: str = "soft",
    method: str = "BayesShrink",
    sigma: float | Sequence[float] | None = None,
    convert2ycbcr: bool = False,
    sigma_scale: float = 1.0,
):
    """Denoise a batch of images by wavelet thresholding ("input reconstruction").

    Parameters
    ----------
    images : numpy.ndarray or torch.Tensor, shape (N, C, H, W)
        Floats in [0, 1], or uint8 (divided by 255). CUDA tensors stay on the GPU.
    wavelet : str
        Any discrete PyWavelets wavelet (``haar``, ``db2``, ``db4``, ``sym4``...).
    levels : int, optional
        Decomposition levels; default ``max(max_level - 3, 1)``, as scikit-image.
    mode : {'soft', 'hard'}
        Thresholding of the detail coefficients.
    method : {'BayesShrink', 'VisuShrink'}
        BayesShrink: one threshold per sub-band; VisuShrink: the universal
        threshold ``sigma * sqrt(2 log(H W))``.
    sigma : float or sequence of float, optional
        Noise standard deviation in [0, 1] pixel units, one value or one per
        channel. Estimated per image and channel when not given.
    convert2ycbcr : bool
        Denoise in YCbCr (each channel rescaled to [0, 1]); needs C == 3.
    sigma_scale : float
        Multiplies the noise level, given or estimated (an extension of
        scikit-image's options; 1.0 = its behaviour). Below 1 keeps more detail.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same kind, shape and device as ``images``; float (float32 for uint8
        input), clipped to [0, 1].

    Raises
    ------
    ValueError
        For a bad option (the message lists the valid ones), a batch that is
        not 4-D, or values outside [0, 1].
    """
    x, restore = _as_float_tensor(images)
    n, c, h, w = x.shape
    _validate(wavelet, mode, method, convert2ycbcr, c)
    max_level = max(pywt.dwtn_max_level((h, w), wavelet), 1)
    if levels is None:
        levels = max(max_level - 3, 1)
    if not isinstance(levels, int) or not 1 <= levels <= max_level:
        raise ValueError(f"levels must be an integer from 1 to {max_level} for {h}x{w} images and {wavelet!r}, got {levels!r}")
    if not (isinstance(sigma_scale, (int, float)) and math.isfinite(sigma_scale) and sigma_scale > 0):
        raise ValueError(f"sigma_scale must be a positive number, got {sigma_scale!r}")
    sigmas = _per_channel_sigma(sigma, c, x)
    if convert2ycbcr:
        out = _denoise_ycbcr(x, sigmas, wavelet, levels, mode, method, sigma_scale)
    else:
        out = _denoise(x, sigmas, wavelet, levels, mode, method, sigma_scale)
    return restore(out.clamp_(0.0, 1.0))


def mse(a, b):
    """Mean squared error per image of two batches (numpy or torch, N x ...)."""
    if isinstance(a, torch.Tensor):
        return (a.double() - torch.as_tensor(b, device=a.device).double()).pow(2).flatten(1).mean(1)
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return (diff * diff).reshape(len(diff), -1).mean(axis=1)


def psnr(a, b, *, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB per image; ``inf`` for identical images."""
    err = mse(a, b)
    lib = torch if isinstance(err, torch.Tensor) else np
    with np.errstate(divide="ignore"):
        return 10.0 * lib.log10(data_range**2 / err)


# --------------------------------------------------------------------------- input


def _as_float_tensor(images):
    """Return a float tensor view of ``images`` and a function mapping results back."""
    if isinstance(images, torch.Tensor):
        x, to_numpy = images, False
    elif isinstance(images, np.ndarray):
        x, to_numpy = torch.from_numpy(np.ascontiguousarray(images)), True
    else:
        raise ValueError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if x.ndim != 4:
        raise ValueError(f"images must be a batch N x C x H x W, got shape {tuple(x.shape)}")
    x = x.contiguous()  # e.g. a channels-last permute: strided matmuls are several times slower
    out_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    elif x.is_floating_point():
        x = x.to(torch.float32 if x.dtype != torch.float64 else torch.float64)
        lo, hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
        if not (lo >= 0 and hi <= 1):  # also catches NaN
            raise ValueError(f"images must be in [0, 1] (got min {lo:.4g}, max {hi:.4g}); divide 0-255 data by 255")
    else:
        raise ValueError(f"images must be float in [0, 1] or uint8, got {x.dtype}")

    def restore(out):
        out = out.to(out_dtype)
        return out.cpu().numpy() if to_numpy else out

    return x, restore


def _validate(wavelet, mode, method, convert2ycbcr, channels):
    if wavelet not in WAVELETS:
        raise ValueError(f"unknown wavelet {wavelet!r}; valid: {', '.join(WAVELETS)}")
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(THRESHOLD_MODES)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if convert2ycbcr and channels != 3:
        raise ValueError(f"convert2ycbcr needs 3 channels (RGB), got {channels}")


def _per_channel_sigma(sigma, channels, x):
    """None, or a (C,) tensor of noise levels."""
    if sigma is None:
        return None
    values = [float(sigma)] * channels if np.isscalar(sigma) else [float(s) for s in sigma]
    if len(values) != channels or any(not math.isfinite(s) or s < 0 for s in values):
        raise ValueError(f"sigma must be a non-negative number or one per channel ({channels}), got {sigma!r}")
    return torch.tensor(values, dtype=x.dtype, device=x.device)


# ----------------------------------------------------------------- filter banks


@functools.lru_cache(maxsize=256)
def _analysis_np(wavelet: str, n: int) -> np.ndarray:
    """(2L, n) matrix: rows 0..L-1 give cA, rows L..2L-1 give cD of a length-n signal."""
    lo, hi = pywt.dwt(np.eye(n), wavelet, mode="symmetric", axis=-1)
    return np.concatenate([lo.T, hi.T], axis=0)


@functools.lru_cache(maxsize=256)
def _synthesis_np(wavelet: str, n_coeffs: int, n_out: int) -> np.ndarray:
    """(n_out, 2L) matrix inverting :func:`_analysis_np`, cropped to the original length."""
    eye = np.eye(n_coeffs)
    lo = pywt.idwt(eye, None, wavelet, mode="symmetric", axis=-1)
    hi = pywt.idwt(None, eye, wavelet, mode="symmetric", axis=-1)
    return np.concatenate([lo.T, hi.T], axis=1)[:n_out]


@functools.lru_cache(maxsize=256)
def _matrix(kind: str, wavelet: str, n: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    np_matrix = _analysis_np(wavelet, n) if kind == "analysis" else _synthesis_np(wavelet, n, n_out)
    return torch.as_tensor(np_matrix, dtype=dtype, device=device)


# ------------------------------------------------------------------- transform
# One level keeps its coefficients in a single block (..., 2Lh, 2Lw) laid out
# as [[aa, ad], [da, dd]]: thresholding then edits quadrants in place and the
# inverse is one matmul on each side, with no concatenation.


def _dwt2(x, wavelet):
    """One 2-D level: (..., H, W) -> coefficient block (..., 2Lh, 2Lw)."""
    h, w = x.shape[-2:]
    aw = _matrix("analysis", wavelet, w, 0, x.dtype, x.device)
    ah = _matrix("analysis", wavelet, h, 0, x.dtype, x.device)
    return ah @ (x @ aw.T)


def _idwt2(block, out_shape, wavelet):
    """Inverse of :func:`_dwt2`, cropped to ``out_shape`` (as PyWavelets' waverecn)."""
    lh, lw = block.shape[-2] // 2, block.shape[-1] // 2
    sh = _matrix("synthesis", wavelet, lh, out_shape[0], block.dtype, block.device)
    sw = _matrix("synthesis", wavelet, lw, out_shape[1], block.dtype, block.device)
    return sh @ block @ sw.T


def _quadrants(block):
    """Views of the detail bands ad, da, dd of a coefficient block."""
    lh, lw = block.shape[-2] // 2, block.shape[-1] // 2
    return block[..., :lh, lw:], block[..., lh:, :lw], block[..., lh:, lw:]


def _threshold_(d, t, mode):
    """Threshold the band view ``d`` in place with per-(N, C) thresholds ``t``."""
    t = t[..., None, None]
    if mode == "soft":
        d.sub_(torch.maximum(torch.minimum(d, t), -t))  # d - clip(d, -t, t)
    else:
        d.mul_(d.abs() >= t)  # PyWavelets' hard keeps |d| == t


def _denoise(x, sigma, wavelet, levels, mode, method, sigma_scale=1.0):
    """Wavelet thresholding of every (image, channel) plane of ``x`` (N, C, H, W).

    ``sigma`` is None (estimate) or an (N, C) or (C,) tensor.
    """
    shapes, blocks, approx = [], [], x
    for _ in range(levels):
        shapes.append(approx.shape[-2:])
        block = _dwt2(approx, wavelet)
        blocks.append(block)
        approx = block[..., : block.shape[-2] // 2, : block.shape[-1] // 2]
    if sigma is None:
        sigma = estimate_sigma(finest_diagonal_like_pywt(x, wavelet))
    sigma = sigma.expand(x.shape[:2]) * sigma_scale
    var = sigma * sigma
    universal = sigma * math.sqrt(2 * math.log(x.shape[-2] * x.shape[-1]))
    eps = torch.finfo(x.dtype).eps
    for block in blocks:
        for d in _quadrants(block):
            if method == "BayesShrink":
                dvar = (d * d).mean(dim=(-2, -1))
                t = var / torch.sqrt(torch.clamp(dvar - var, min=eps))
            else:
                t = universal
            _threshold_(d, t, mode)
    out = None
    for block, shape in zip(reversed(blocks), reversed(shapes)):
        if out is not None:  # the finer level's approximation band is the coarser level's output
            lh, lw = block.shape[-2] // 2, block.shape[-1] // 2
            block[..., :lh, :lw] = out[..., :lh, :lw]
        out = _idwt2(block, shape, wavelet)
    return out


def _denoise_ycbcr(x, sigma, wavelet, levels, mode, method, sigma_scale=1.0):
    """YCbCr path of scikit-image: each channel rescaled to [0, 1] per image."""
    m = torch.as_tensor(_YCBCR_FROM_RGB, dtype=x.dtype, device=x.device)
    offset = torch.as_tensor(_YCBCR_OFFSET, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    if x.device.type == "cpu":
        # numpy's matmul rounds exactly as scikit-image's conversion does, so
        # flat regions give the same exact zeros (see the noise estimate).
        rgb_last = np.moveaxis(x.detach().numpy(), 1, -1)
        ycc = torch.from_numpy(rgb_last @ _YCBCR_FROM_RGB.T.astype(rgb_last.dtype)).permute(0, 3, 1, 2) + offset
    else:
        ycc = torch.einsum("ij,njhw->nihw", m, x) + offset
    lo = ycc.amin(dim=(-2, -1), keepdim=True)
    scale = ycc.amax(dim=(-2, -1), keepdim=True) - lo
    flat = scale == 0  # a constant channel is left as it is
    safe = torch.where(flat, torch.ones_like(scale), scale)
    if sigma is not None:
        # Noise of independent R, G, B channels, carried into YCbCr.
        sigma = torch.sqrt((m * m) @ (sigma * sigma))
        sigma = sigma.view(1, 3) / safe.view(-1, 3)
    denoised = _denoise((ycc - lo) / safe, sigma, wavelet, levels, mode, method, sigma_scale) * safe + lo
    ycc = torch.where(flat, ycc, denoised)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), ycc - offset)
