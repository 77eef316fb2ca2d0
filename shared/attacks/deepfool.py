"""DeepFool: the minimal L2 step across the nearest linearised decision boundary.

Paper: Moosavi-Dezfooli, Fawzi and Frossard, "DeepFool: a simple and
accurate method to fool deep neural networks", CVPR 2016
(https://arxiv.org/abs/1511.04599).
Distance: L2 (no eps budget). Each step linearises the classifier around the
current image and moves to the closest wrong class's boundary; an image
stops once it is misclassified (under the paper's rule, by a margin: below),
or after ``steps``. Defaults:
overshoot 0.02, 50 steps, and the 4 most likely classes as candidates
(``candidates=None``: all, as torchattacks).

Two rules place the overshoot (``rule``):

* ``"paper"`` (default), the paper's Algorithm 2 as its authors' code runs
  it: the steps add up to a total perturbation r, and the image tried next
  is ``clip(x + (1 + overshoot) * r)``. Each step also goes 1e-4 past the
  boundary in L2, as that code does. One departure: an image stops when
  another class's logit is :data:`FOOLED_MARGIN` above the true class's,
  not as soon as the label changes, so that no image stops on the
  boundary where float rounding would decide its label (a trained test
  model ended one at a margin of 1.7e-6 under the paper's own test).
* ``"torchattacks"``: torchattacks.DeepFool's rule, which scales each step by
  1 + overshoot from the clipped image before it. Where a step lands on the
  boundary the next step is near zero, so an image can stall there and count
  as fooled or not by float rounding (8 of 128 test images on the shipped
  standard model). Kept to compare with torchattacks image by image.

Batched: every still-correct image of the batch advances together; the
Jacobian of all logits is taken with one backward pass per class over the
batch, so the cost does not grow with a per-image Python loop.

Shapes: images (N, C, H, W) float in [0, 1]; labels (N,) int; output like images.
"""

from __future__ import annotations

import contextlib

import torch

from shared.attacks._base import check_inputs, eval_mode

# Guards the division by a zero gradient difference (a flat classifier).
_TINY = 1e-12
#: The L2 distance each step of the paper's rule goes past the linearised boundary (its authors' code).
PAST_BOUNDARY = 1e-4
#: Under the paper's rule, an image is done once another class's logit is this far above the true class's:
#: past what float rounding moves (about 1e-6 for logits of order 10), so its label does not depend on the batch
#: it is classified in.
FOOLED_MARGIN = 1e-4
#: Where the overshoot applies: to the total perturbation (the paper) or to each step (torchattacks).
RULES = ("paper", "torchattacks")


@contextlib.contextmanager
def _frozen(model):
    """No weight gradients while attacking: a fifth less backward work, and the model's .grad stays untouched."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def deepfool(model, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 50, overshoot: float = 0.02,
             candidates: int | None = 4, rule: str = "paper") -> torch.Tensor:
    """Untargeted L2 DeepFool.

    Parameters
    ----------
    model : torch.nn.Module
        Maps [0, 1] images to logits.
    images, labels : torch.Tensor
        The clean batch and its true classes.
    steps : int
        Maximum number of linearisation steps per image (default 50).
    overshoot : float
        The perturbation is scaled by 1 + overshoot (default 0.02): the total
        one under the paper's rule, each step under torchattacks'.
    candidates : int or None
        Consider only the true class and the ``candidates - 1`` other classes
        with the highest clean logits (the original paper's ``num_classes``).
        Default 4: the nearest boundary is almost always among them, and each
        step needs 4 backward passes instead of 10 (2x the throughput on
        CIFAR-10 with the same success rate and median L2; see
        benchmarks/RESULTS.md). None: every class, exactly torchattacks' rule.

    Returns
    -------
    torch.Tensor
        Detached adversarial images in [0, 1]; images already misclassified
        come back unchanged.
    """
    images, labels = check_inputs(images, labels)
    if steps < 1 or overshoot < 0 or (candidates is not None and candidates < 2):
        raise ValueError(f"DeepFool needs steps >= 1, overshoot >= 0 and candidates >= 2, got {steps}, {overshoot}, {candidates}")
    if rule not in RULES:
        raise ValueError(f"DeepFool's rule is one of {', '.join(RULES)}, got {rule!r}")
    paper = rule == "paper"
    adversarial = images.clone()
    total = torch.zeros_like(images) if paper else None  # the paper's r: the sum of the steps, before the overshoot
    active = torch.arange(len(images), device=images.device)
    with eval_mode(model), _frozen(model):
        classes = None
        if candidates is not None:
            with torch.no_grad():
                logits = model(images)
            logits[torch.arange(len(labels)), labels] = float("inf")  # the true class always comes first
            classes = logits.topk(min(candidates, logits.shape[1]), dim=1).indices
        for _ in range(steps):
            if active.numel() == 0:
                break
            x = adversarial[active].requires_grad_(True)
            logits = model(x)
            y = labels[active]
            if paper:
                true = logits.gather(1, y[:, None])[:, 0]
                others = logits.detach().scatter(1, y[:, None], float("-inf")).amax(1)
                still_correct = others - true.detach() < FOOLED_MARGIN
            else:
                still_correct = logits.argmax(1) == y
            if classes is not None:  # keep the candidate columns; the true class is column 0
                logits, y = logits.gather(1, classes[active]), torch.zeros_like(y)
            active = active[still_correct]
            if active.numel() == 0:
                break
            step = _boundary_step(logits, x, y, still_correct, PAST_BOUNDARY if paper else 0.0)
            if paper:
                total[active] += step
                adversarial[active] = torch.clamp(images[active] + (1 + overshoot) * total[active], 0, 1)
            else:
                adversarial[active] = torch.clamp(x.detach()[still_correct] + (1 + overshoot) * step, 0, 1)
    return adversarial.detach()


def _boundary_step(logits, x, y, keep, past: float = 0.0):
    """One DeepFool step for the rows of ``x`` selected by ``keep``: to the nearest linearised boundary, and
    ``past`` further in L2."""
    num_classes = logits.shape[1]
    # d logit_k / d x for every class k, summed over the batch: samples are
    # independent in eval mode, so each row holds its own image's gradient.
    jacobian = torch.stack(
        [torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < num_classes - 1)[0] for k in range(num_classes)],
        dim=1,
    )[keep]
    f, x, y = logits.detach()[keep], x.detach()[keep], y[keep]
    rows = torch.arange(len(y), device=y.device)
    f_diff = f - f[rows, y][:, None]  # (B, K); zero at the true class
    w_diff = jacobian - jacobian[rows, y][:, None]  # (B, K, C, H, W)
    w_norm = w_diff.flatten(2).norm(dim=2).clamp(min=_TINY)
    distance = f_diff.abs() / w_norm
    distance[rows, y] = float("inf")
    nearest = distance.argmin(dim=1)
    scale = (f_diff[rows, nearest].abs() / w_norm[rows, nearest] + past) / w_norm[rows, nearest]
    return scale.view(-1, 1, 1, 1) * w_diff[rows, nearest]
