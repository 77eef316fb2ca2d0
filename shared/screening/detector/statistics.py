"""Statistics of the pixels themselves, differentiable for an attacker who follows their gradient.

``steps``: the correlation of each step between neighbouring pixels with the
next. ``chroma``: how neighbouring steps of the colour differences occur
together. Why each, and where each holds: :mod:`shared.screening.detector`.
"""

from __future__ import annotations

import torch

#: The planes whose neighbouring steps ``steps`` correlates, and the directions.
STEP_PLANES = ("red-green", "green-blue", "luminance")
#: Colour-difference steps are clipped to +-this many grey levels: (2 * CLIP + 1) ** 2 co-occurrence bins.
CLIP = 2


def _bin_weights(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """(..., 2 * CLIP + 1) weights of each value's co-occurrence bin, values clipped to +-CLIP.

    The forward pass counts ``exact`` (whole grey levels), one bin per value;
    when ``smooth`` (the same values before rounding) carries a gradient, the
    backward pass is that of a triangular kernel on it, so that an attacker
    can follow a gradient through the counts (BPDA, as for the reconstructions).
    """
    centres = torch.arange(-CLIP, CLIP + 1, dtype=smooth.dtype, device=smooth.device)
    hard = (exact.clamp(-CLIP, CLIP).unsqueeze(-1) == centres).to(smooth.dtype)
    if not smooth.requires_grad:
        return hard
    soft = (1 - (smooth.clamp(-CLIP, CLIP).unsqueeze(-1) - centres).abs()).clamp_min(0)
    return hard + (soft - soft.detach())


def _colour_steps(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps of red minus green and green minus blue from each pixel to the next: along rows, along columns."""
    colour = torch.stack([levels[:, 0] - levels[:, 1], levels[:, 1] - levels[:, 2]], 1)
    return colour[..., :, 1:] - colour[..., :, :-1], colour[..., 1:, :] - colour[..., :-1, :]


def _cooccurrence(exact: torch.Tensor, smooth: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, bins^2) frequencies of pairs of consecutive steps along ``dim`` (-1: along rows, -2: along columns)."""
    length = exact.shape[dim]
    first = _bin_weights(exact.narrow(dim, 0, length - 1), smooth.narrow(dim, 0, length - 1)).flatten(1, -2)
    second = _bin_weights(exact.narrow(dim, 1, length - 1), smooth.narrow(dim, 1, length - 1)).flatten(1, -2)
    return torch.einsum("npi,npj->nij", first, second).flatten(1) / first.shape[1]


def chroma_cooccurrence(x: torch.Tensor) -> torch.Tensor:
    """(N, 25) co-occurrences of neighbouring steps of the colour differences, in grey levels.

    The colour differences red minus green and green minus blue change from
    pixel to pixel by a step; this counts how often two consecutive steps
    (along a row, and along a column, averaged) take each pair of values in
    -CLIP..CLIP, on the image in whole grey levels (``x * 255``, rounded).
    Differentiable as :func:`_bin_weights` says.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"the chroma statistic needs (N, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    levels = x * 255
    exact, smooth = _colour_steps(levels.detach().round()), _colour_steps(levels)
    return (_cooccurrence(exact[0], smooth[0], -1) + _cooccurrence(exact[1], smooth[1], -2)) / 2


def step_correlation(x: torch.Tensor) -> torch.Tensor:
    """(N, 6) correlation of each step with the next, in whole grey levels, per plane and direction.

    The planes are red minus green, green minus blue and the mean of the
    three channels; a step is the change from a pixel to its right (rows) or
    lower (columns) neighbour. Edges and gradients make consecutive steps
    alike (correlation near 0 or above); noise added pixel by pixel makes
    them opposite (towards -0.5), whatever the codec's colours. The forward
    pass reads the image rounded to grey levels; the gradient flows through
    the unrounded one (straight through), for an attacker who follows it.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"the steps statistic needs (N, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    levels = x * 255
    levels = levels.detach().round() + (levels - levels.detach())
    planes = [levels[:, 0] - levels[:, 1], levels[:, 1] - levels[:, 2], levels.mean(1)]
    out = []
    for plane in planes:
        for dim in (-1, -2):
            d = plane.diff(dim=dim)
            first, second = d.narrow(dim, 0, d.shape[dim] - 1).flatten(1), d.narrow(dim, 1, d.shape[dim] - 1).flatten(1)
            first, second = first - first.mean(1, keepdim=True), second - second.mean(1, keepdim=True)
            spread = (first.pow(2).mean(1) * second.pow(2).mean(1)).clamp_min(1e-12).sqrt()
            out.append((first * second).mean(1) / spread)
    return torch.stack(out, 1)
