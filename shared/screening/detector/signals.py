"""The detector's features of a batch: its model paths, how far they move from the raw one, the pixel statistics."""

from __future__ import annotations

from collections.abc import Callable

import torch

from shared import transforms
from shared.evaluation.plan import ModelPath
from shared.evaluation.run import defend
from shared.screening.detector import DEFENCES, MODELS, PATHS, STATISTICS
from shared.screening.detector.statistics import CLIP, STEP_PLANES, chroma_cooccurrence, step_correlation


def check_statistics(statistics) -> tuple[str, ...]:
    """Validate a choice of pixel statistics (known ones, each once); return it as a tuple."""
    statistics = tuple(statistics)
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or len(set(statistics)) != len(statistics):
        raise ValueError(f"detector statistics must name each of {', '.join(STATISTICS)} at most once; "
                         f"got {', '.join(statistics) or 'none'}")
    return statistics


def _transform_path(name: str) -> bool:
    """Whether ``name`` is a model behind an input transformation, ``standard@resize-pad:shrink=0.05``, valid as written."""
    model, _, defence = name.partition("@")
    if model not in MODELS or not transforms.is_transform(defence):
        return False
    transforms.parse(defence)  # a wrong setting says what is wrong, in one line
    return True


def check_paths(paths) -> tuple[str, ...]:
    """Validate a choice of paths: known ones, ``standard@raw`` first; return it as a tuple.

    A path is one of :data:`PATHS`, or a model behind an input
    transformation (``standard@resize-pad:shrink=0.05``, ``haar@jpeg:quality=30``).
    """
    paths = tuple(paths)
    unknown = [p for p in paths if p not in PATHS and not _transform_path(p)]
    if unknown or not paths or paths[0] != "standard@raw" or len(set(paths)) != len(paths):
        raise ValueError(f"detector paths must start with standard@raw and name each at most once, from "
                         f"{', '.join(PATHS)} or MODEL@TRANSFORM (MODEL one of {', '.join(MODELS)}, TRANSFORM one of "
                         f"{', '.join(transforms.KINDS)}, e.g. standard@resize-pad:shrink=0.05); "
                         f"got {', '.join(paths) or 'none'}")
    return paths


def _defences(paths) -> list[str]:
    """The reconstructions that ``paths`` read: the DWTs in :data:`DEFENCES` order, then the transformations."""
    read = [ModelPath.named(p).defence for p in paths]
    return [d for d in DEFENCES if d in read] + list(dict.fromkeys(d for d in read if transforms.is_transform(d)))


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
    reconstructions, logits = path_outputs(x, get_model, reconstruct, paths)
    return features_from(x, reconstructions, logits, paths=paths, statistics=statistics), logits


def path_outputs(x: torch.Tensor, get_model: Callable, reconstruct: Callable, paths, known=None) -> tuple[dict, dict]:
    """Each reconstruction ``paths`` read, and each path's logits: ``({defence: images}, {path: logits})``.

    ``known``, a pair of the same kind for some of them, is reused as it is:
    an attacker who averages over a randomised path's draws computes the
    other paths once.
    """
    reconstructions, logits = ({}, {}) if known is None else (dict(known[0]), dict(known[1]))
    for d in _defences(paths):
        if d not in reconstructions:
            reconstructions[d] = reconstruct(d, x)
    for path in paths:
        if path not in logits:
            route = ModelPath.named(path)
            logits[path] = get_model(route.model)(x if route.defence is None else reconstructions[route.defence])
    return reconstructions, logits


def features_from(x: torch.Tensor, reconstructions: dict, logits: dict, *, paths, statistics) -> torch.Tensor:
    """The columns of :func:`feature_names` from :func:`path_outputs` (``paths`` and ``statistics`` checked)."""
    columns = [c for p in paths for c in _summary(logits[p].float())]
    p_raw = logits["standard@raw"].float().softmax(1)
    raw_label = p_raw.argmax(1, keepdim=True)
    for p in paths[1:]:
        logp = logits[p].float().log_softmax(1)
        columns += [0.5 * (logp.exp() - p_raw).abs().sum(1), logp.gather(1, raw_label).squeeze(1),
                    (logp.argmax(1, keepdim=True) != raw_label).float().squeeze(1)]
    columns += [(reconstructions[d] - x).abs().flatten(1).mean(1) for d in _defences(paths)]
    f = torch.stack(columns, 1).float()
    for statistic in statistics:  # in the caller's order, as feature_names lists them
        f = torch.cat([f, (chroma_cooccurrence(x) if statistic == "chroma" else step_correlation(x)).float()], 1)
    return f
