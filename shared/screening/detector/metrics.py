"""How well scores separate clean from adversarial images: AUROC and points of the ROC curve."""

from __future__ import annotations

import torch


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


def roc_points(clean: torch.Tensor, adversarial: torch.Tensor, points: int = 60) -> list[tuple[float, float]]:
    """(false-positive rate, detection rate) at thresholds spread over the scores, in percent."""
    if len(adversarial) == 0:
        return []
    cuts = torch.quantile(torch.cat([clean, adversarial]).double(), torch.linspace(0, 1, points, dtype=torch.float64))
    return [(100 * float((clean > t).double().mean()), 100 * float((adversarial > t).double().mean())) for t in cuts]
