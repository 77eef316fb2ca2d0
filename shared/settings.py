"""Settings read from the environment, in one place.

Every knob of waveshield is an environment variable (``REDIS_URL`` or a
``WAVESHIELD_*`` name); :func:`load` reads them once and
``waveshield config`` prints the result. Secrets only ever come from here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

#: Where the repository keeps its shipped checkpoints.
_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Settings:
    """waveshield's configuration (see the README for each variable)."""

    redis_url: str | None  # REDIS_URL; None = use/start an embedded server
    weights_dir: Path  # WAVESHIELD_WEIGHTS_DIR: safetensors + JSON cards
    data_dir: Path  # WAVESHIELD_DATA_DIR: torchvision's dataset cache
    output_dir: Path  # WAVESHIELD_OUTPUT_DIR: reports, corpora
    device: str  # WAVESHIELD_DEVICE: "auto", "cpu", "cuda", "cuda:1", ...
    blob_ttl_s: int  # WAVESHIELD_BLOB_TTL: seconds an unconsumed blob lives
    checkpoint_dir: Path  # WAVESHIELD_CHECKPOINT_DIR: resumable training state

    def as_text(self) -> str:
        """Render the settings as ``name = value`` lines, passwords masked."""
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "redis_url" and value:
                value = _mask_password(value)
            lines.append(f"{f.name} = {value}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The settings as JSON-ready values (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _mask_password(url: str) -> str:
    # redis://user:secret@host -> redis://user:***@host
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def load(environ: dict | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``).

    Raises
    ------
    ValueError
        If a numeric variable does not parse.
    """
    env = os.environ if environ is None else environ
    ttl = env.get("WAVESHIELD_BLOB_TTL", "86400")
    try:
        ttl_s = int(ttl)
    except ValueError:
        raise ValueError(f"WAVESHIELD_BLOB_TTL must be a whole number of seconds, got {ttl!r}") from None
    return Settings(
        redis_url=env.get("REDIS_URL") or None,
        weights_dir=Path(env.get("WAVESHIELD_WEIGHTS_DIR", _REPO_WEIGHTS)),
        data_dir=Path(env.get("WAVESHIELD_DATA_DIR", Path.home() / ".cache" / "waveshield" / "data")),
        output_dir=Path(env.get("WAVESHIELD_OUTPUT_DIR", "waveshield-out")),
        device=env.get("WAVESHIELD_DEVICE", "auto"),
        blob_ttl_s=ttl_s,
        checkpoint_dir=Path(env.get("WAVESHIELD_CHECKPOINT_DIR", Path.home() / ".cache" / "waveshield" / "checkpoints")),
    )


def resolve_device(name: str = "auto") -> str:
    """Turn a device setting into a torch device string.

    ``"auto"`` picks CUDA when present, else the CPU.
    """
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
