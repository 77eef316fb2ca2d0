"""The noise estimate of wavelet denoising, bit for bit with scikit-image.

The noise estimate is the median of the *non-zero* finest diagonal
coefficients. On 8-bit images many of them are zero in exact arithmetic,
and whether each comes out as 0.0 or as 1e-17 depends on the order of the
floating-point operations. To count the same coefficients as scikit-image,
that one band is computed with PyWavelets' own summation order (its
symmetric-mode downsampling convolution), one multiply and one add per tap.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pywt
import torch

_MAD_TO_SIGMA = 0.6744897501960817  # Gaussian MAD constant: scipy.stats.norm.ppf(0.75)


@functools.lru_cache(maxsize=256)
def _pywt_schedule(n: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Filter and input indices, in PyWavelets' summation order, of each output.

    Follows ``downsampling_convolution`` (step 2, symmetric mode) of
    PyWavelets' convolution.template.c. Returns two (L, f) integer arrays.
    """

    def mirrored(terms, j, first_forward):
        # Symmetric extension beyond one edge, alternating direction every n taps.
        forward = first_forward
        while j < f:
            for k in range(n):
                if j >= f:
                    break
                terms.append((j, k if forward else n - 1 - k))
                j += 1
            forward = not forward

    def right_extension(terms, i):
        j, backward = 0, True
        while i - j >= n:
            for k in range(n):
                if i - j < n:
                    break
                terms.append((i - n - j, n - 1 - k if backward else k))
                j += 1
            backward = not backward
        return j

    outputs, i = [], 1
    while i < f and i < n:  # filter overhangs the left edge
        terms = [(j, i - j) for j in range(i + 1)]
        mirrored(terms, i + 1, True)
        outputs.append(terms)
        i += 2
    while i < n:  # filter inside the signal
        outputs.append([(j, i - j) for j in range(f)])
        i += 2
    while i < f:  # filter wider than the signal: both edges
        terms = []
        j = right_extension(terms, i)
        terms += [(jj, i - jj) for jj in range(j, i + 1)]
        mirrored(terms, i + 1, True)
        outputs.append(terms)
        i += 2
    while i < n + f - 1:  # filter overhangs the right edge
        terms = []
        j = right_extension(terms, i)
        terms += [(jj, i - jj) for jj in range(j, f)]
        outputs.append(terms)
        i += 2
    table = np.array(outputs, dtype=np.int64)
    return table[..., 0], table[..., 1]


@functools.lru_cache(maxsize=256)
def _interior(n: int, f: int) -> tuple[int, int]:
    """The outputs [lo, hi) whose taps all fall inside the signal, in plain order."""
    filt, src = _pywt_schedule(n, f)
    plain = (filt == np.arange(f)).all(1) & (src == 2 * np.arange(len(src))[:, None] + 1 - np.arange(f)).all(1)
    inside = np.flatnonzero(plain)
    return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


def _dwt_detail_like_pywt(x, wavelet, dim):
    """Detail coefficients along ``dim`` (-1 or -2), rounded exactly as PyWavelets rounds them."""
    taps = np.asarray(pywt.Wavelet(wavelet).dec_hi)
    n, f = x.shape[dim], len(taps)
    filt, src = _pywt_schedule(n, f)
    lo, hi = _interior(n, f)

    def accumulate(terms):
        acc = None
        for term in terms:  # one multiply and one add per tap, in PyWavelets' order
            acc = term if acc is None else acc.add_(term)  # (it starts from 0.0, and 0.0 + a == a)
        return acc

    def edge(rows):  # outputs near an edge: gather the (mirrored) inputs tap by tap
        coef = torch.as_tensor(taps[filt[rows]], dtype=x.dtype, device=x.device)
        index = torch.as_tensor(src[rows], device=x.device)
        shape = (-1, 1) if dim == -2 else (-1,)
        return accumulate(coef[:, t].view(shape) * x.index_select(dim, index[:, t]) for t in range(f))

    def interior():  # strided views, no copies: output o reads input 2o + 1 - t
        def tap(t):
            view = x[..., 2 * lo + 1 - t : 2 * hi - t : 2, :] if dim == -2 else x[..., 2 * lo + 1 - t : 2 * hi - t : 2]
            return torch.as_tensor(taps[t], dtype=x.dtype, device=x.device) * view
        return accumulate(tap(t) for t in range(f))

    parts = ([edge(slice(0, lo))] if lo > 0 else []) + ([interior()] if hi > lo else [])
    parts += [edge(slice(hi, len(src)))] if hi < len(src) else []
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def finest_diagonal_like_pywt(x, wavelet):
    """The level-1 'dd' band, axis 0 (rows) first as ``pywt.dwtn`` does."""
    return _dwt_detail_like_pywt(_dwt_detail_like_pywt(x, wavelet, -2), wavelet, -1)


def _sort_rows(values):
    # numpy's sort is vectorised (AVX-512 where present) and about 15x faster
    # than torch's on the CPU; on a GPU torch's own sort is the fast one.
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.numpy(), axis=-1))
    return values.sort(dim=-1).values


def estimate_sigma(dd):
    """Median absolute value of the non-zero coefficients / 0.6745, per (N, C).

    The median of an even count is the mean of the two middle values, as numpy.
    """
    a = dd.abs().flatten(-2)
    nonzero = a > 0
    m = nonzero.sum(-1, keepdim=True)
    ordered = _sort_rows(torch.where(nonzero, a, math.inf))  # zeros sort last, past every rank we read
    lower = ordered.gather(-1, (m - 1).clamp(min=0) // 2)
    upper = ordered.gather(-1, (m // 2).clamp(max=a.shape[-1] - 1))
    median = torch.where(m > 0, (lower + upper) / 2, 0.0).squeeze(-1)
    return median / _MAD_TO_SIGMA
