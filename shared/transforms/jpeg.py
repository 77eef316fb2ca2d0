"""JPEG compression as a defence: encode at a quality, decode, keep the decoded pixels.

Papers: Dziugaite, Ghahramani and Roy, "A study of the effect of JPG compression
on adversarial images", 2016 (https://arxiv.org/abs/1608.00853); Guo, Rana, Cisse
and van der Maaten, "Countering Adversarial Images using Input Transformations",
ICLR 2018 (https://arxiv.org/abs/1711.00117).

The codec is libjpeg through :func:`torchvision.io.encode_jpeg` and
:func:`~torchvision.io.decode_jpeg` on the CPU: baseline JPEG, 4:2:0 chroma
subsampling, the standard (IJG) quantisation tables scaled by the quality. That
is exactly what Pillow writes and reads with its defaults,
``Image.fromarray(a).save(buf, "JPEG", quality=q)`` (subsampling 4:2:0): on the
repository's CIFAR-10 sample, 224 x 224 and non-square images the pixels agree
bit for bit (tests/unit/test_transforms.py measures it).

CUDA batches are encoded on the CPU too, and moved back. torchvision's nvJPEG
encoder does not subsample chroma (it sets 4:4:4), so on a GPU "jpeg:quality=75"
would be a different, milder defence than on a CPU runner, and results would
depend on which machine ran them. The pixels go to the host and back once per
call; the codec itself is the cost either way.

Quantisation and decoding are flat almost everywhere, so the gradient passes
straight through (BPDA; Athalye, Carlini and Wagner, ICML 2018).

Shapes: images (N, C, H, W) float in [0, 1] with C = 1 or 3; output like images.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from shared.attacks.bpda import straight_through

_MODES = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}


def jpeg(images: torch.Tensor, *, quality: int = 75) -> torch.Tensor:
    """Compress and decompress each image with JPEG at ``quality``.

    Parameters
    ----------
    images : torch.Tensor
        Float N x C x H x W in [0, 1], C = 1 (grey) or 3 (RGB), on any device.
        Values are quantised to 8 bits, ``round(x * 255)``, before encoding.
    quality : int
        1..100, libjpeg's quality scale.

    Returns
    -------
    torch.Tensor
        The decoded images, multiples of 1/255, same shape, dtype and device.
        The backward pass is the identity (straight-through), built only when
        ``images`` requires grad.

    Raises
    ------
    ValueError
        If C is neither 1 nor 3 (JPEG has no other layout here).
    """
    if images.shape[1] not in _MODES:
        raise ValueError(f"jpeg: images need 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")
    compress = functools.partial(_compress, quality=quality)
    return straight_through(images, compress) if images.requires_grad else compress(images)


def _compress(images: torch.Tensor, quality: int) -> torch.Tensor:
    if images.shape[0] == 0:
        return images.clone()
    pixels = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec; the warning would repeat on every batch.
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg(list(pixels), quality=quality)
        decoded = decode_jpeg(encoded, mode=_MODES[images.shape[1]])
    return torch.stack(decoded).to(device=images.device, dtype=images.dtype).div(255)
