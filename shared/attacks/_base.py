"""What every attack shares: input checks, eval mode, the loss and its gradient, the eps ball, the signed-gradient loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


def check_inputs(images: torch.Tensor, labels: torch.Tensor, eps: float | None = None):
    """Validate the attack contract; return detached copies of images and labels.

    Raises
    ------
    ValueError
        If images are not a float N x C x H x W batch in [0, 1], labels do not
        match, or eps is outside [0, 1] (the usual mistake: eps on the 0-255 scale).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor N x C x H x W in [0, 1]")
    if images.numel():
        lo, hi = torch.aminmax(images.detach())
        if not (lo >= 0 and hi <= 1):
            raise ValueError(
                f"images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; divide images on the /255 scale by 255"
            )
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a tensor of {len(images)} class indices")
    if eps is not None and not 0 <= eps <= 1:
        raise ValueError(f"eps={eps} is outside [0, 1]; eps is in the [0, 1] pixel scale, so {eps}/255 = {eps / 255:.4f} on the /255 scale")
    return images.detach().clone(), labels.detach().to(images.device, torch.long)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run in eval mode, then restore every submodule's own train/eval flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def cross_entropy(model) -> Callable:
    """The loss FGSM, BIM and PGD ascend: ``(images, labels) ->`` the mean cross-entropy of ``model``."""
    def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(images), labels)
    return loss


def loss_gradient(loss: Callable, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of ``loss(images, labels)`` (a scalar) w.r.t. the images (not the weights)."""
    images = images.detach().requires_grad_(True)
    return torch.autograd.grad(loss(images, labels), images)[0]


def project_linf(adversarial: torch.Tensor, original: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip into the L-inf ball of radius eps around ``original`` and into [0, 1]."""
    lower = torch.clamp(original - eps, min=0)
    upper = torch.clamp(original + eps, max=1)
    return torch.minimum(torch.maximum(adversarial, lower), upper).detach()


def random_start(images: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """A uniform draw in the eps ball around ``images`` (clipped to [0, 1]), from a generator seeded with ``seed``."""
    generator = torch.Generator(device=images.device).manual_seed(int(seed))
    noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return project_linf(images + (2 * noise - 1) * eps, images, eps)


def signed_gradient_steps(loss: Callable, start: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, *,
                          eps: float, alpha: float, steps: int, models: Iterable[torch.nn.Module],
                          shape_gradient: Callable | None = None) -> torch.Tensor:
    """``steps`` steps of ``alpha * sign(grad loss)`` from ``start``, each projected into the eps ball of ``images``.

    FGSM is one step of size eps from the images, BIM several smaller ones, PGD
    the same from a random start, each on :func:`cross_entropy`; the attacker
    who knows the screening (:mod:`shared.screening.evasion`) is PGD on a loss
    of its own.

    Parameters
    ----------
    loss : callable
        ``(images, labels) -> scalar tensor`` to ascend.
    models : iterable of torch.nn.Module
        The networks ``loss`` runs, held in eval mode meanwhile.
    shape_gradient : callable, optional
        Applied to each gradient before its sign is taken (e.g. summed over
        channels, for a step that moves a pixel's channels alike).
    """
    adversarial = start
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(eval_mode(model))
        for _ in range(steps):
            grad = loss_gradient(loss, adversarial, labels)
            if shape_gradient is not None:
                grad = shape_gradient(grad)
            adversarial = project_linf(adversarial + alpha * grad.sign(), images, eps)
    return adversarial
