"""Median smoothing: feature squeezing's local spatial smoother.

Paper: Xu, Evans and Qi, "Feature Squeezing: Detecting Adversarial Examples in
Deep Neural Networks", NDSS 2018 (https://arxiv.org/abs/1704.01155); their
squeezer is ``scipy.ndimage.median_filter``, and this is that filter bit for bit
(tests/unit/test_transforms.py compares every pixel), channel by channel:

- the window is size x size; for an even size scipy centres it one pixel late,
  so it covers offsets ``-(size // 2) .. size - size // 2 - 1`` (size 2: -1..0);
- the "median" of the size * size values is the one of 0-based rank
  ``size * size // 2`` in sorted order: for an even count the upper of the two
  middle values, not their mean (so the output holds only input values);
- the borders are extended with scipy's mode "reflect", numpy's "symmetric":
  the edge pixel is repeated (``c b a | a b c``).

The median selects one value of its window, so the gradient flows to the
selected pixel: :meth:`torch.Tensor.kthvalue` differentiates as a selection.

Shapes: images (N, C, H, W) float; output like images.
"""

from __future__ import annotations

import torch

# Windows are unfolded into an (n, C, H, W, size * size) copy; batches are cut so
# that copy stays under this many elements (256 MiB in float32).
_MAX_WINDOW_ELEMENTS = 1 << 26


def median(images: torch.Tensor, *, size: int = 2) -> torch.Tensor:
    """Median-filter each channel of each image with a size x size window.

    Parameters
    ----------
    images : torch.Tensor
        Float N x C x H x W, on any device.
    size : int
        Window side, >= 1 (the defence names admit 2..9).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device; equal to
        ``scipy.ndimage.median_filter(channel, size=size, mode="reflect")`` on
        every channel. Differentiable (the gradient goes to each selected pixel).
    """
    n, c, h, w = images.shape
    before = size // 2
    rows = _symmetric_index(h, before, size - 1 - before, images.device)
    cols = _symmetric_index(w, before, size - 1 - before, images.device)
    padded = images.index_select(2, rows).index_select(3, cols)
    per_image = max(1, _MAX_WINDOW_ELEMENTS // max(1, c * h * w * size * size))
    parts = []
    for start in range(0, max(n, 1), per_image):
        windows = padded[start:start + per_image].unfold(2, size, 1).unfold(3, size, 1)
        windows = windows.reshape(*windows.shape[:4], size * size)
        parts.append(windows.kthvalue(size * size // 2 + 1, dim=-1).values)  # kthvalue's k counts from 1
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _symmetric_index(n: int, before: int, after: int, device) -> torch.Tensor:
    """Source indices of a length-``n`` axis extended by ``before`` and ``after`` with symmetric reflection.

    The extension is periodic with period 2n (the axis, then the axis reversed),
    which also covers a window wider than the image, where a single padding
    would not.
    """
    index = torch.arange(-before, n + after, device=device).remainder(2 * n)
    return torch.where(index >= n, 2 * n - 1 - index, index)
