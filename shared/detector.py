"""A learned detector of adversarial images, on what the screening pipeline already computes.

Features, per image:

- model paths (:data:`PATHS`; a detector's card names the ones it reads):
  the standard model on the raw image, each DWT-trained model on its
  reconstruction, and the standard model on each reconstruction; of each,
  the log-softmax output, the top probability, the entropy and the top-two
  logit margin;
- how far each other path moves from the raw one: the total variation
  distance between the softmax outputs, the log-probability it gives the raw
  path's label, and whether its label differs;
- how much each reconstruction removed (mean absolute change);
- statistics of the pixels themselves (:data:`STATISTICS`, as the card
  says): ``steps`` (shipped), the correlation of each step between
  neighbouring pixels with the next, in red minus green, green minus blue
  and luminance, along rows and columns: edges make consecutive steps
  alike, noise added pixel by pixel makes them opposite, whatever a codec
  did to the colours. ``chroma`` (the previous release's), how
  neighbouring steps of the colour differences occur together, after
  colour steganalysis: a JPEG with subsampled chroma has smooth colour
  differences and an attack roughens them, but so are canonical pixels,
  photographs and JPEGs without subsampling rough, clean; no threshold
  makes it hold on every source (docs/calibration/sources/sources.md).

Tried and left out, on 4,000 training images unless said: the energy of
the image's finest wavelet details (no better than chance at the paper's
eps, AUROC 0.50-0.56); the same co-occurrences of each channel's own steps
instead of the colour differences (5 points more at most, where the colour
differences took detection from 50-77 % to 99-100 % on two paths); the
standard model's penultimate-layer activations with its softmax, as
class-conditional features (0-3 points more with five paths, 1-5 fewer
with two).

A small MLP in torch scores them; a standardisation fitted on the training
features is part of the network, so that the saved weights are all it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .evaluation import defend
from .checkpoints import ModelCardError, read_card, sha256_file, write_card  # noqa: F401  (re-exported)
from .detector_card import DEFENCES, PATHS, STATISTICS, WEIGHTS_NAME, reads  # noqa: F401  (re-exported)

#: The planes whose neighbouring steps ``steps`` correlates, and the directions.
STEP_PLANES = ("red-green", "green-blue", "luminance")
#: Colour-difference steps are clipped to +-this many grey levels: (2 * CLIP + 1) ** 2 co-occurrence bins.
CLIP = 2


def check_statistics(statistics) -> tuple[str, ...]:
    """Validate a choice of pixel statistics (known ones, each once); return it as a tuple."""
    statistics = tuple(statistics)
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or len(set(statistics)) != len(statistics):
        raise ValueError(f"detector statistics must name each of {', '.join(STATISTICS)} at most once; "
                         f"got {', '.join(statistics) or 'none'}")
    return statistics


def check_paths(paths) -> tuple[str, ...]:
    """Validate a choice of paths: known ones, ``standard@raw`` first; return it as a tuple."""
    paths = tuple(paths)
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths or paths[0] != "standard@raw" or len(set(paths)) != len(paths):
        raise ValueError(f"detector paths must start with standard@raw and name each of {', '.join(PATHS)} at most "
                         f"once; got {', '.join(paths) or 'none'}")
    return paths


def _defences(paths) -> list[str]:
    """The reconstructions that ``paths`` read, in :data:`DEFENCES` order."""
    return [d for d in DEFENCES if any(p.endswith(f"@{d}") for p in paths)]


def feature_names(classes: int = 10, paths=PATHS, statistics=()) -> list[str]:
    """The names of the columns :func:`features` returns, in order, for ``classes`` output classes."""
    paths, statistics = check_paths(paths), check_statistics(statistics)
    names = [f"{p}:{s}" for p in paths for s in (*(f"logp_{k}" for k in range(classes)), "top_prob", "entropy",
                                                   "margin")]
    names += [f"{p}:{s}" for p in paths[1:] for s in ("tv_to_raw", "logp_raw_label", "label_differs")]
    names += [f"{d}:removed" for d in _defences(paths)]
    steps = range(-CLIP, CLIP + 1)
    for s in statistics:
        if s == "chroma":
            names += [f"chroma:cooccur_{a}_{b}" for a in steps for b in steps]
        elif s == "steps":
            names += [f"steps:correlation_{plane}_{way}" for plane in STEP_PLANES for way in ("rows", "columns")]
    return names


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


def _summary(logits: torch.Tensor) -> list[torch.Tensor]:
    logp = logits.log_softmax(1)
    top2 = logits.topk(2, dim=1).values
    return [*logp.unbind(1), logp.exp().amax(1), -(logp.exp() * logp).sum(1), top2[:, 0] - top2[:, 1]]


@torch.no_grad()
def features(x: torch.Tensor, get_model: Callable, defence_options: Callable, *, with_logits: bool = False,
             paths=PATHS, statistics=()):
    """The detector's features of a batch of images.

    Parameters
    ----------
    x : torch.Tensor
        (N, 3, H, W) float images in [0, 1].
    get_model : callable
        Model name (``standard``, ``haar``, ``daubechies``) -> network in eval mode.
    defence_options : callable
        Defence name -> ``reconstruct()`` options.
    with_logits : bool
        Also return each path's logits, keyed by path (``standard@raw``,
        ``haar@haar``...), so that a caller needs no second forward pass.
    paths : sequence of str
        The paths to compute (a detector's card names its own); fewer paths,
        fewer forward passes.
    statistics : sequence of str
        The pixel statistics to add (:data:`STATISTICS`; the card's own).

    Returns
    -------
    torch.Tensor
        (N, F) float32, columns named by :func:`feature_names`; with
        ``with_logits``, a pair (features, logits).
    """
    f, logits = differentiable_features(x, get_model, lambda name, images: defend(images, defence_options(name)),
                                        paths=paths, statistics=statistics)
    return (f, logits) if with_logits else f


def differentiable_features(x: torch.Tensor, get_model: Callable, reconstruct: Callable, *, paths=PATHS,
                            statistics=()):
    """:func:`features` with gradients, and with the reconstruction given: ``reconstruct(defence name, images)``.

    An attacker who knows the detector differentiates through this, with a
    BPDA reconstruction (identity in the backward pass). Returns (features, logits).
    """
    paths, statistics = check_paths(paths), check_statistics(statistics)
    reconstructions = {d: reconstruct(d, x) for d in _defences(paths)}
    logits = {}
    for path in paths:
        model, source = path.split("@")
        logits[path] = get_model(model)(x if source == "raw" else reconstructions[source])
    columns = [c for p in paths for c in _summary(logits[p].float())]
    p_raw = logits["standard@raw"].float().softmax(1)
    raw_label = p_raw.argmax(1, keepdim=True)
    for p in paths[1:]:
        logp = logits[p].float().log_softmax(1)
        columns += [0.5 * (logp.exp() - p_raw).abs().sum(1), logp.gather(1, raw_label).squeeze(1),
                    (logp.argmax(1, keepdim=True) != raw_label).float().squeeze(1)]
    columns += [(rec - x).abs().flatten(1).mean(1) for rec in reconstructions.values()]
    f = torch.stack(columns, 1).float()
    for statistic in statistics:  # in the caller's order, as feature_names lists them
        f = torch.cat([f, (chroma_cooccurrence(x) if statistic == "chroma" else step_correlation(x)).float()], 1)
    return f, logits


class Detector(nn.Module):
    """Standardise the features, then a small MLP: one logit per image, higher = more likely adversarial.

    Parameters
    ----------
    n_features : int
        Input width.
    hidden : int
        Width of the two hidden layers; 0 makes it logistic regression.
    """

    def __init__(self, n_features: int, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        # A typical clean image, standardised: what :func:`strongest_signal` measures departures from.
        self.register_buffer("reference", torch.zeros(n_features))
        self.net = nn.Linear(n_features, 1) if hidden == 0 else nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net((f - self.mean) / self.scale).squeeze(1)

    @torch.no_grad()
    def score(self, f: torch.Tensor) -> torch.Tensor:
        """Probability of adversarial, per image, in float64 (float32 rounds every logit over 17 to exactly 1)."""
        return torch.sigmoid(self(f).double())


def _balanced(groups: torch.Tensor) -> torch.Tensor:
    """Weights that give each group the same share (summing to 1), whatever its size."""
    _, inverse, counts = groups.unique(return_inverse=True, return_counts=True)
    return 1.0 / (counts[inverse].double() * len(counts))


def fit(clean: torch.Tensor, adversarial: torch.Tensor, *, hidden: int = 64, epochs: int = 300, lr: float = 3e-3,
        weight_decay: float = 1e-4, seed: int = 0, clean_sources: torch.Tensor | None = None,
        adversarial_sources: torch.Tensor | None = None) -> Detector:
    """Train a detector on features of clean (label 0) and adversarial (label 1) images.

    Full-batch Adam on the binary cross-entropy, each class weighted to half
    the loss, so that the balance of the two sets does not move the scores.
    ``clean_sources`` and ``adversarial_sources`` (an integer per row) name
    the source of each example; within its class, each source then weighs
    the same, so that a large source does not decide what clean looks like.
    """
    if len(clean) == 0 or len(adversarial) == 0:
        raise ValueError("the detector needs both clean and adversarial examples")
    torch.manual_seed(seed)
    f = torch.cat([clean, adversarial]).float()
    y = torch.cat([torch.zeros(len(clean)), torch.ones(len(adversarial))])
    share_clean = _balanced(clean_sources) if clean_sources is not None else torch.full((len(clean),), 1.0 / len(clean))
    share_adv = (_balanced(adversarial_sources) if adversarial_sources is not None
                 else torch.full((len(adversarial),), 1.0 / len(adversarial)))
    weight = (0.5 * torch.cat([share_clean, share_adv]) * len(y)).float()
    model = Detector(f.shape[1], hidden)
    model.mean.copy_(f.mean(0))
    model.scale.copy_(f.std(0).clamp_min(1e-6))
    model.reference.copy_((clean.float().mean(0) - model.mean) / model.scale)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(weight=weight)
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = loss_fn(model(f), y)
        loss.backward()
        optimiser.step()
    if not math.isfinite(loss.item()):
        raise FloatingPointError("the detector's training loss is not finite; check the features for NaN or inf")
    return model.eval()


def auroc(clean_scores: torch.Tensor, adversarial_scores: torch.Tensor) -> float:
    """Area under the ROC curve: the probability that an adversarial image outscores a clean one (ties count half)."""
    c, a = clean_scores.double().flatten(), adversarial_scores.double().flatten()
    if len(c) == 0 or len(a) == 0:
        return float("nan")
    ranks = torch.cat([c, a]).argsort().argsort().double()  # 0-based ranks; ties broken below
    values = torch.cat([c, a])
    # Average ranks over ties (Mann-Whitney U with midranks).
    unique, inverse = values.unique(return_inverse=True)
    rank_sum = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    count = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    mid = (rank_sum / count)[inverse]
    u = mid[len(c):].sum() - len(a) * (len(a) - 1) / 2
    return float(u / (len(a) * len(c)))


def signal_groups(names: list[str]) -> list[str]:
    """The signal each feature belongs to, for a record's "why": ``haar@haar``, ``haar:removed``, ``chroma``..."""
    return [name.split(":")[0] if "@" in name or name.split(":")[0] in STATISTICS else name for name in names]


def strongest_signal(model: Detector, f: torch.Tensor, names: list[str]) -> list[str]:
    """Per image, the signal that raised its score most.

    Each feature's contribution is the gradient of the logit times the
    feature's departure from a typical clean image (both standardised),
    summed per signal.

    Returns the name of that signal: a path (``haar@haar``: what the Haar
    model said of the Haar reconstruction, and how it differs from the raw
    image's) or a reconstruction's change (``haar:removed``).
    """
    with torch.enable_grad():
        z = ((f - model.mean) / model.scale).detach().requires_grad_(True)
        grad, = torch.autograd.grad(model.net(z).sum(), z)
    contribution = grad * (z.detach() - model.reference)
    groups = signal_groups(names)
    labels = sorted(set(groups), key=groups.index)
    index = torch.tensor([labels.index(g) for g in groups])
    per_group = torch.zeros(len(f), len(labels)).index_add_(1, index, contribution)
    return [labels[i] for i in per_group.argmax(1).tolist()]


def save(model: Detector, path: str | Path, card: dict) -> dict:
    """Write the detector (safetensors, float32) and its JSON card beside it; return the card.

    The card gets ``hidden``, ``n_features`` and the weights' ``sha256``;
    ``card["features"]`` must name the columns it was trained on.
    """
    path = Path(path)
    if len(card["features"]) != model.mean.numel():
        raise ValueError(f"the card names {len(card['features'])} features, the detector takes {model.mean.numel()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"kind": "waveshield-detector"})
    hidden = 0 if isinstance(model.net, nn.Linear) else model.net[0].out_features
    return write_card(path, {**card, "hidden": hidden, "n_features": int(model.mean.numel())})


def load(path: str | Path) -> tuple[Detector, dict]:
    """Load a detector written by :func:`save`, verifying its sha256 against the card.

    Raises
    ------
    ModelCardError
        If a file is missing, the card is unreadable or the hash differs.
    """
    card = read_card(path, what="detector", missing_hint="; train it: waveshield fit-detector")
    model = Detector(card["n_features"], card["hidden"])
    model.load_state_dict(load_file(str(path)))
    return model.eval(), card
