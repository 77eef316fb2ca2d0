"""Input transformations as named defences beside the DWT: JPEG, bit-depth, median, resize-and-pad.

The comparison defences of the literature, each applied to float N x C x H x W
batches in [0, 1] (any H, W; C = 3, or 1 for grey images) and returning the same
shape, dtype and device:

- ``jpeg:quality=Q`` -- JPEG compression and decompression (Dziugaite, Ghahramani
  and Roy 2016, https://arxiv.org/abs/1608.00853; Guo, Rana, Cisse and van der
  Maaten, "Countering Adversarial Images using Input Transformations", ICLR 2018).
- ``bit-depth:bits=B`` and ``median:size=S`` -- feature squeezing (Xu, Evans and
  Qi, "Feature Squeezing", NDSS 2018, https://arxiv.org/abs/1704.01155).
- ``resize-pad:shrink=F,seed=K`` -- random resizing and zero padding (Xie, Wang,
  Zhang, Ren and Yuille, "Mitigating Adversarial Effects Through Randomization",
  ICLR 2018, https://arxiv.org/abs/1711.01991).

Every output carries a gradient back to its input so attacks can run through
it: the true one where the transformation is differentiable (median, resize-pad)
and the identity where it is not (jpeg, bit-depth: BPDA, Athalye, Carlini and
Wagner, ICML 2018).

Importing this package does not import torch: producers check the names a user
typed (:func:`parse`) before torch is loaded, so :func:`apply` imports the
implementations when it runs.
"""

from __future__ import annotations

from shared.transforms.registry import KINDS, is_randomised, is_transform, name_of, parse, validate

__all__ = ["KINDS", "apply", "is_randomised", "is_transform", "name_of", "parse", "validate"]


def apply(images, options: dict, *, generator=None):
    """Apply the input transformation that ``options`` describe to a batch.

    Parameters
    ----------
    images : torch.Tensor
        Float N x C x H x W in [0, 1], on any device.
    options : dict
        ``{"transform": KIND, ...}`` as :func:`parse` returns; a partial dict is
        completed with the defaults (see :func:`validate`).
    generator : torch.Generator, optional
        Only for randomised kinds (resize-pad): the draws come from it. Without
        one each image's draw is seeded by its own content and ``options["seed"]``
        (see :func:`shared.transforms.resize_pad.resize_pad`).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``images``; differentiable with respect
        to ``images`` (straight-through for jpeg and bit-depth). When ``images``
        does not require grad, no graph is built.

    Raises
    ------
    ValueError
        If the options are invalid, or ``images`` is not a floating 4-D tensor
        (or, for jpeg, has neither 1 nor 3 channels).
    """
    import torch  # here, not at the top: the names above must stay importable without torch

    options = validate(options)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        described = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) \
            else type(images).__name__
        raise ValueError(f"{options['transform']}: images are a float N x C x H x W tensor, got a {described}")
    kind = options["transform"]
    if kind == "jpeg":
        from shared.transforms.jpeg import jpeg

        return jpeg(images, quality=options["quality"])
    if kind == "bit-depth":
        from shared.transforms.bit_depth import bit_depth

        return bit_depth(images, bits=options["bits"])
    if kind == "median":
        from shared.transforms.median import median

        return median(images, size=options["size"])
    from shared.transforms.resize_pad import resize_pad

    return resize_pad(images, shrink=options["shrink"], seed=options["seed"], generator=generator)
