"""The detector's network: standardisation and a small MLP; its fit, and its safetensors file with a card."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shared.models.checkpoints import read_card, write_card


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
