"""Named defences: which reconstruct() options "haar" and "daubechies" mean, and the input transformations.

``waveshield tune`` chooses the DWT settings by PSNR/MSE and writes
``defences.json`` into the weights directory; ``train`` and ``evaluate`` read
that file, and fall back to the built-in defaults below when it is absent.

Every other defence a plan or a command names is an input transformation
(:mod:`shared.transforms`), by a name that carries its settings:
``jpeg:quality=75``, ``bit-depth:bits=5``, ``median:size=2``,
``resize-pad:shrink=0.1``. Its options hold a ``"transform"`` key, which the
DWT's never do: :func:`apply` applies either.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared import dwt, transforms
from shared.dwt import METHODS, THRESHOLD_MODES

FILENAME = "defences.json"
# scikit-image's defaults with the paper's two wavelet families.
DEFAULTS = {
    "haar": {"wavelet": "haar", "levels": None, "mode": "soft", "method": "BayesShrink", "sigma": None,
             "convert2ycbcr": False, "sigma_scale": 1.0},
    "daubechies": {"wavelet": "db2", "levels": None, "mode": "soft", "method": "BayesShrink", "sigma": None,
                   "convert2ycbcr": False, "sigma_scale": 1.0},
}
_KEYS = set(DEFAULTS["haar"])


def load(weights_dir: str | Path) -> dict[str, dict]:
    """The named defence settings: ``weights_dir/defences.json`` if present, else the defaults.

    Raises
    ------
    ValueError
        If the file is unreadable or a setting has an unknown key or value.
    """
    path = Path(weights_dir) / FILENAME
    if not path.is_file():
        return {k: dict(v) for k, v in DEFAULTS.items()}
    try:
        data = json.loads(path.read_text())
        named = data["defences"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a defence settings file ({exc})") from None
    for name, options in named.items():
        validate(name, options)
    return named


def validate(name: str, options: dict) -> None:
    """Check one named setting's keys and values; raise ValueError naming the problem."""
    unknown = set(options) - _KEYS
    if unknown:
        raise ValueError(f"defence {name!r}: unknown option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(_KEYS))}")
    if options.get("wavelet") not in dwt.WAVELETS:
        raise ValueError(f"defence {name!r}: unknown wavelet {options.get('wavelet')!r}")
    if options.get("mode", "soft") not in THRESHOLD_MODES or options.get("method", "BayesShrink") not in METHODS:
        raise ValueError(f"defence {name!r}: mode must be one of {THRESHOLD_MODES} and method one of {METHODS}")


def get(name: str, weights_dir: str | Path) -> dict:
    """The options of one named defence: a DWT setting's reconstruct() options, or an input transformation's.

    Raises
    ------
    ValueError
        If no defence has that name (the message lists the valid ones), or an
        input transformation's settings are wrong (the message says which).
    """
    named = load(weights_dir)
    if name in named:
        return dict(named[name])
    if transforms.is_transform(name):
        return transforms.parse(name)
    raise ValueError(f"unknown defence {name!r}; valid: {', '.join(sorted(named))}, or an input transformation "
                     f"({', '.join(transforms.KINDS)}, e.g. jpeg:quality=75)")


def apply(images, options: dict):
    """Apply one defence's options (:func:`get`) to a float N x C x H x W batch in [0, 1]: the DWT's
    reconstruction, or an input transformation. Imports torch when called, not when this module is imported."""
    if "transform" in options:
        return transforms.apply(images, options)
    from shared.dwt.transform import reconstruct

    return reconstruct(images, **options)
