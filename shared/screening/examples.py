"""A source's examples for the detector: features of its clean images and of the attacked ones that fool.

The detector learns what clean images look like, and clean images look
different from source to source (:mod:`shared.images.encodings`). Fitting and
measuring it per source needs, for a set of images of one source: the
features of the clean images, and the features of each attack's 8-bit
images that fool the standard model, crafted on that source's pixels.

An unlabelled source (photographs, say) is attacked away from the standard
model's own label, and an image fools it when that label changes; a
labelled one is attacked on its true label, and fools when the standard
model was right before and is wrong after.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared import attacks
from shared.dwt import defences
from shared.evaluation.plan import EPS_8_255, AttackSpec, ModelPath, paper_attacks
from shared.images.image_set import iter_batches, quantise
from shared.models.store import ModelStore
from shared.screening import detector
from shared.screening.verdicts import flagged_share

#: The attacks a detector trains on (the paper's), and some it never sees.
TRAINED = [AttackSpec.of(a) for a in paper_attacks()]
HELD_OUT = [AttackSpec.named("pgd", eps=0.01), AttackSpec.named("fgsm", eps=EPS_8_255),
            AttackSpec.named("bim", eps=EPS_8_255)]
BATCH = 500


@dataclass
class Examples:
    """Features of one source's images: clean, and per attack those of the fooling 8-bit images.

    ``clean_labels`` and ``attacked_labels`` hold the label screening reports
    (the defended path's), ``truth`` the labels the attacks aimed away from,
    ``fooled`` per attack which of the images fool the standard model.
    """

    source: str
    clean: torch.Tensor
    clean_labels: torch.Tensor
    truth: torch.Tensor
    labelled: bool
    attacked: dict[str, torch.Tensor] = field(default_factory=dict)
    attacked_labels: dict[str, torch.Tensor] = field(default_factory=dict)
    fooled: dict[str, torch.Tensor] = field(default_factory=dict)

    def fooling(self, attack: str) -> torch.Tensor:
        """Features of the images of ``attack`` that fool the standard model."""
        return self.attacked[attack][self.fooled[attack]]

    def positives(self) -> torch.Tensor:
        """Features of every fooling image, all attacks together."""
        return torch.cat([self.fooling(a) for a in self.attacked]) if self.attacked else self.clean[:0]

    def subset(self, index) -> "Examples":
        """The same examples for the images at ``index`` (a slice or index tensor)."""
        return Examples(self.source, self.clean[index], self.clean_labels[index], self.truth[index], self.labelled,
                        {a: f[index] for a, f in self.attacked.items()},
                        {a: v[index] for a, v in self.attacked_labels.items()},
                        {a: v[index] for a, v in self.fooled.items()})


class FeatureReader:
    """The detector's features and the reported label, for images on the store's device, batch by batch.

    Parameters
    ----------
    store : ModelStore
        The classifiers.
    weights_dir : path
        Where the defences' settings live.
    reading : dict
        ``paths`` and ``statistics`` (:func:`shared.screening.detector.reads`).
    reported_path : str
        The path whose label screening reports, e.g. ``haar@haar``.
    """

    def __init__(self, store: ModelStore, weights_dir, reading: dict, reported_path: str):
        self.store, self.reading, self.reported_path = store, reading, reported_path
        self.options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, weights_dir))
        self.standard = store.get("standard")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, reported labels) of ``x`` on the CPU."""
        features, labels = [], []
        for s in iter_batches(len(x), BATCH):
            f, logits = detector.features(x[s].to(self.store.device), self.store.get, self.options,
                                          with_logits=True, **self.reading)
            features.append(f.cpu())
            labels.append(logits[self.reported_path].argmax(1).cpu())
        return torch.cat(features), torch.cat(labels)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The standard model's labels of ``x``, on the CPU."""
        return torch.cat([self.standard(x[s].to(self.store.device)).argmax(1).cpu()
                          for s in iter_batches(len(x), BATCH)])

    def attack(self, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` attacked on the standard model, delivered in 8 bits, on the CPU."""
        device = self.store.device
        return quantise(torch.cat([attacks.get(spec.name)(self.standard, x[s].to(device), y[s].to(device),
                                                          **spec.kwargs).cpu()
                                   for s in iter_batches(len(x), BATCH)]))


def examples(reader: FeatureReader, source: str, x: torch.Tensor, labels: torch.Tensor | None, attack_list,
             on_attack: Callable[[str], None] = lambda label: None,
             on_images: Callable[[str, torch.Tensor], None] = lambda key, images: None) -> Examples:
    """Features of ``x`` (float NCHW in [0, 1], 8-bit values) and of each attack (an AttackSpec) of ``attack_list``.

    ``labels`` None: the attacks aim away from the standard model's own label.
    ``on_attack(label)`` is called before each attack (progress), and
    ``on_images(key, images)`` with the clean (``clean``) and each attack's
    8-bit images, for a caller who measures more of them.
    """
    return extended(reader, None, source, x, labels, attack_list, on_attack, on_images)


def extended(reader: FeatureReader, known: Examples | None, source: str, x: torch.Tensor, labels: torch.Tensor | None,
             attack_list, on_attack: Callable[[str], None] = lambda label: None,
             on_images: Callable[[str, torch.Tensor], None] = lambda key, images: None) -> Examples:
    """:func:`examples`, computing only what ``known`` (the same images' examples, or None) lacks."""
    before = reader.predict(x)
    truth = before if labels is None else labels
    if known is None:
        clean, clean_labels = reader(x)
        on_images("clean", x)
        out = Examples(source, clean, clean_labels, truth, labels is not None)
    else:
        out = Examples(source, known.clean, known.clean_labels, known.truth, known.labelled, dict(known.attacked),
                       dict(known.attacked_labels), dict(known.fooled))
    right = before == truth
    for spec in attack_list:
        key = spec.id
        if key in out.attacked:
            continue
        on_attack(key)
        adversarial = reader.attack(spec, x, truth)
        on_images(key, adversarial)
        out.attacked[key], out.attacked_labels[key] = reader(adversarial)
        out.fooled[key] = right & (reader.predict(adversarial) != truth)
    return out


def thresholds(model: detector.Detector, calibration: dict[str, torch.Tensor], fpr: float) -> dict[str, float]:
    """Per source, the threshold at which ``fpr`` of its clean calibration features score above it."""
    from shared.screening.verdicts import calibrate

    return {name: calibrate(model.score(f).numpy(), fpr) for name, f in calibration.items()}


def measure(model: detector.Detector, threshold: float, measured: Examples) -> dict:
    """False positives, and per attack the share of fooling images flagged, their count and AUROC."""
    clean = model.score(measured.clean)
    out = {"clean_images": len(clean), "false_positives": flagged_share(clean, threshold),
           "detected": {}, "fooling_images": {}, "auroc": {}}
    for attack in measured.attacked:
        scores = model.score(measured.fooling(attack))
        out["fooling_images"][attack] = len(scores)
        out["detected"][attack] = flagged_share(scores, threshold)
        out["auroc"][attack] = detector.auroc(clean, scores)
    return out


def to_tensors(ex: Examples) -> dict[str, torch.Tensor]:
    """An :class:`Examples` as flat named tensors (for a safetensors file)."""
    out = {"clean": ex.clean, "clean_labels": ex.clean_labels, "truth": ex.truth,
           "labelled": torch.tensor([int(ex.labelled)])}
    for attack in ex.attacked:
        out[f"attacked/{attack}"] = ex.attacked[attack]
        out[f"attacked_labels/{attack}"] = ex.attacked_labels[attack]
        out[f"fooled/{attack}"] = ex.fooled[attack].to(torch.uint8)
    return {k: v.contiguous() for k, v in out.items()}


def from_tensors(source: str, tensors: dict[str, torch.Tensor]) -> Examples:
    """The inverse of :func:`to_tensors`."""
    ex = Examples(source, tensors["clean"], tensors["clean_labels"], tensors["truth"], bool(tensors["labelled"][0]))
    for key, value in tensors.items():
        kind, _, attack = key.partition("/")
        if kind == "attacked":
            ex.attacked[attack] = value
        elif kind == "attacked_labels":
            ex.attacked_labels[attack] = value
        elif kind == "fooled":
            ex.fooled[attack] = value.bool()
    return ex


class FeatureCache:
    """Examples kept on disk between fits: a source's images read the same way by the same models are computed once.

    A file per source holds its clean features and those of every attack
    computed so far (:func:`to_tensors`); an attack it lacks is computed and
    added. The file's name is a hash of what the features depend on: the
    data (its resolved path, size and modification time), how many images,
    what the detector reads, the reported path, the weights of every model
    read (their sha256) and the defences' settings.

    Parameters
    ----------
    folder : path
        Where the files live.
    reader : FeatureReader
        What computes the features.
    """

    def __init__(self, folder, reader: FeatureReader):
        self.folder, self.reader = Path(folder), reader

    def key(self, data: str, n: int) -> str:
        """The hash that names the file of ``data``'s first ``n`` images (as many as were read)."""
        path = Path(data).resolve()
        stat = path.stat() if path.exists() else None
        models = sorted({ModelPath.named(p).model for p in self.reader.reading["paths"]} | {"standard"})
        defences = sorted({d for d in (ModelPath.named(p).defence for p in self.reader.reading["paths"]) if d})
        what = {"data": str(path), "size": stat.st_size if stat else None, "mtime_ns": stat.st_mtime_ns if stat else None,
                "n": n, "reading": {k: list(v) for k, v in self.reader.reading.items()},
                "reported_path": self.reader.reported_path,
                "models": {m: self.reader.store.card(m)["sha256"] for m in models},
                "defences": {d: repr(self.reader.options(d)) for d in defences}}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]

    def examples(self, source: str, data: str, x: torch.Tensor, labels: torch.Tensor | None, attack_list,
                 on_attack: Callable[[str], None] = lambda label: None) -> Examples:
        """:func:`examples` of ``x``, the first images of ``data``, from the file where it has them."""
        from safetensors.torch import load_file, save_file

        file = self.folder / f"{self.key(data, len(x))}.safetensors"
        known = from_tensors(source, load_file(str(file))) if file.is_file() else None
        out = extended(self.reader, known, source, x, labels, attack_list, on_attack)
        if known is None or set(out.attacked) != set(known.attacked):
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = file.with_suffix(".partial")
            save_file(to_tensors(out), str(partial))
            partial.replace(file)  # whole or absent: a fit stopped mid-write leaves no torn file
        return only(out, attack_list)


def only(ex: Examples, attack_list) -> Examples:
    """``ex`` with the attacks of ``attack_list`` alone, in its order (a cached file may hold more)."""
    keys = [spec.id for spec in attack_list]
    return Examples(ex.source, ex.clean, ex.clean_labels, ex.truth, ex.labelled,
                    {k: ex.attacked[k] for k in keys}, {k: ex.attacked_labels[k] for k in keys},
                    {k: ex.fooled[k] for k in keys})
