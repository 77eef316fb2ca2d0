"""Random resizing and zero padding.

Paper: Xie, Wang, Zhang, Ren and Yuille, "Mitigating Adversarial Effects Through
Randomization", ICLR 2018 (https://arxiv.org/abs/1711.01991). They resize a
299 x 299 image to a random r x r, r in [299, 331), and pad it with zeros at a
random offset to 331 x 331. Here the canvas is the input's own size, so that the
classifier sees the shape it was trained on: the image shrinks instead.

Each image of the batch, independently:

1. r is drawn uniformly from the integers ``[round(H * (1 - shrink)), H]``
   (rounded half up). The image is resized to ``r x round(W * r / H)``: one
   factor r / H for both sides, so a non-square image keeps its aspect ratio
   and a square one becomes r x r. Bilinear, ``align_corners=False``, no
   antialiasing (torch's :func:`~torch.nn.functional.interpolate`); r = H leaves
   the image untouched.
2. The resized image is placed at an offset drawn uniformly from every position
   where it fits in an H x W canvas of zeros.

The output is differentiable (interpolation and placement are linear in the
pixels), so attacks get the true gradient of the draw they were given.

Shapes: images (N, C, H, W) float in [0, 1]; output like images.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

_MASK = (1 << 64) - 1
# The hash sums 8-bit pixels times 24-bit weights in int64: exact (no overflow) up to 2^31 values an image.
_WEIGHT_BITS = 24
_HASH_CHUNK = 1 << 24  # values hashed at a time, to bound the int64 copies


def resize_pad(images: torch.Tensor, *, shrink: float = 0.1, seed: int = 0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Shrink each image by a random factor and place it at a random offset on zeros.

    Parameters
    ----------
    images : torch.Tensor
        Float N x C x H x W, on any device.
    shrink : float
        In (0, 0.5]: the smallest side is ``round(H * (1 - shrink))``.
    seed : int
        Mixed into the content-seeded draws (without ``generator``): another
        seed, another fixed set of draws.
    generator : torch.Generator, optional
        The draws' source. An attacker averaging over the randomness (EOT)
        passes a fresh stream, so repeated calls on the same images draw anew.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device; zero outside each placed image.

    Notes
    -----
    Without a generator each image's draw depends only on its own pixels,
    quantised to 8 bits, and ``seed`` (see :func:`placements`). An evaluation
    split over processes, batches of any composition, CPU or GPU runners thus
    gives every image the same draw, so its counts are reproducible, while any
    change to an image, an adversarial perturbation included, gives it a fresh
    draw: the defender's randomness is not a fixed transformation an attacker
    could learn once.
    """
    n, _, h, w = images.shape
    if n == 0:
        return images.clone()
    draws = placements(images, shrink=shrink, seed=seed, generator=generator)
    parts, order = [], []
    for (rh, rw), members in _grouped(draws).items():
        index = torch.tensor(members, device=images.device)
        group = images.index_select(0, index)
        if (rh, rw) != (h, w):  # an image drawn at full size is placed at (0, 0) unchanged
            group = F.interpolate(group, size=(rh, rw), mode="bilinear", align_corners=False, antialias=False)
            group = _placed(group, [draws[i][2:] for i in members], h, w)
        parts.append(group)
        order += members
    if len(parts) == 1 and order == sorted(order):
        return parts[0]
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(n)
    return torch.cat(parts).index_select(0, inverse.to(images.device))


def placements(images: torch.Tensor, *, shrink: float = 0.1, seed: int = 0,
               generator: torch.Generator | None = None) -> list[tuple[int, int, int, int]]:
    """Each image's draw: ``(height, width, top, left)`` of its resized copy in the canvas.

    Parameters
    ----------
    images, shrink, seed, generator
        As :func:`resize_pad`.

    Returns
    -------
    list of tuple of int
        One ``(rh, rw, top, left)`` per image.

    Notes
    -----
    With ``generator``, r comes from :func:`torch.randint` and the offsets from
    :func:`torch.rand` on the generator's device, in that order. Without one,
    each image's pixels ``round(x * 255)`` are dotted with fixed pseudo-random
    24-bit weights in exact int64 arithmetic on the images' device (the same
    integer on every device and in any summation order), mixed with ``seed`` by
    SplitMix64, and three further SplitMix64 outputs give r, top and left.
    """
    n, _, h, w = images.shape
    low = min(h, max(1, math.floor(h * (1 - shrink) + 0.5)))
    if generator is not None:
        r = torch.randint(low, h + 1, (n,), generator=generator, device=generator.device).tolist()
        u = torch.rand((n, 2), generator=generator, dtype=torch.float64, device=generator.device).tolist()
        draws = []
        for ri, (ut, ul) in zip(r, u):
            rh, rw = ri, _width(ri, h, w)
            draws.append((rh, rw, min(int(ut * (h - rh + 1)), h - rh), min(int(ul * (w - rw + 1)), w - rw)))
        return draws
    draws = []
    for digest in _content_hashes(images):
        state = (digest ^ _splitmix(seed)) & _MASK
        state, a = _next(state)
        state, b = _next(state)
        state, c = _next(state)
        rh = low + a % (h - low + 1)
        rw = _width(rh, h, w)
        draws.append((rh, rw, b % (h - rh + 1), c % (w - rw + 1)))
    return draws


def _width(rh: int, h: int, w: int) -> int:
    """The resized width: the height's factor rh / h applied to w, rounded half up."""
    return min(w, max(1, math.floor(w * rh / h + 0.5)))


def _grouped(draws) -> dict[tuple[int, int], list[int]]:
    """Image indices by resized size: one interpolate call per size, not per image."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (rh, rw, _, _) in enumerate(draws):
        groups.setdefault((rh, rw), []).append(i)
    return groups


def _placed(resized: torch.Tensor, offsets, h: int, w: int) -> torch.Tensor:
    """Each resized image at its own (top, left) in an h x w canvas of zeros, in one gather.

    A zero row and column are appended to the resized images; every canvas
    position outside an image reads them. One gather keeps the backward pass a
    single scatter, where per-image slice assignments would copy the whole
    gradient once per image.
    """
    m, _, rh, rw = resized.shape
    device = resized.device
    top = torch.tensor([t for t, _ in offsets], device=device)
    left = torch.tensor([offset for _, offset in offsets], device=device)
    ys = torch.arange(h, device=device) - top[:, None]  # (m, h): source row, or out of the image
    xs = torch.arange(w, device=device) - left[:, None]
    ys = torch.where((ys >= 0) & (ys < rh), ys, rh)
    xs = torch.where((xs >= 0) & (xs < rw), xs, rw)
    bordered = F.pad(resized, (0, 1, 0, 1))
    # Advanced indices around a slice put their dimensions first: (m, h, w, C).
    gathered = bordered[torch.arange(m, device=device)[:, None, None], :, ys[:, :, None], xs[:, None, :]]
    return gathered.permute(0, 3, 1, 2).contiguous()


def _content_hashes(images: torch.Tensor) -> list[int]:
    """One 64-bit integer per image from its 8-bit quantised pixels, computed on the images' device."""
    n, c, h, w = images.shape
    flat = images.detach().reshape(n, c * h * w)
    weights = _weights(flat.shape[1], str(images.device))
    per_chunk = max(1, _HASH_CHUNK // max(1, flat.shape[1]))
    sums = []
    for start in range(0, n, per_chunk):
        levels = flat[start:start + per_chunk].clamp(0, 1).mul(255).round().to(torch.int64)
        sums.append((levels * weights).sum(dim=1))
    return torch.cat(sums).tolist() if sums else []


@functools.lru_cache(maxsize=8)
def _weights(count: int, device: str) -> torch.Tensor:
    """Fixed odd pseudo-random weights, one a position: SplitMix64 of the index, in numpy's wrapping uint64.

    Defined by a formula rather than a library's generator, whose stream could
    change between versions; odd, so that no pixel is left out of the hash.
    """
    z = np.arange(count, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(64 - _WEIGHT_BITS)).astype(np.int64) | 1).to(device)


def _next(state: int) -> tuple[int, int]:
    """SplitMix64 (Steele, Lea and Flood 2014): the next state and its output."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    return state, _splitmix(state)


def _splitmix(z: int) -> int:
    """SplitMix64's output function (a 64-bit finaliser)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)
