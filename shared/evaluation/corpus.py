"""Adversarial corpora: attacked images in float shards with a per-image manifest.

A shard is one (attack, batch) pair: ``<attack>/shard-NNNNN.npz`` holding
``x`` (float16 or float32, N x C x H x W in [0, 1], never rounded to uint8),
``y`` and ``ids``, beside ``<attack>/shard-NNNNN.jsonl`` with one manifest line
per image. Both are written atomically (temporary name, then rename), so a
shard either exists whole or not at all, and a rerun of the same spec only
computes the shards that are missing. At the end ``manifest.jsonl`` gathers
the lines of every shard in order, ``preview.png`` shows a few images and
``report.html`` both with a table of the attacks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from shared.dwt.transform import psnr
from shared.evaluation.plan import CORPUS_DTYPES, AttackSpec
from shared.files import write_atomically


def slug(attack: dict) -> str:
    """A folder name for an attack entry: ``bim_eps0.007`` (:attr:`AttackSpec.slug`)."""
    return AttackSpec.of(attack).slug


def shard_paths(out: Path, attack: dict, shard: int) -> tuple[Path, Path]:
    base = Path(out) / slug(attack) / f"shard-{shard:05d}"
    return base.with_suffix(".npz"), base.with_suffix(".jsonl")


def shard_done(out: Path, attack: dict, shard: int) -> bool:
    npz, lines = shard_paths(out, attack, shard)
    return npz.is_file() and lines.is_file()


@torch.no_grad()
def manifest_lines(model, clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor, ids: list[str],
                   attack: dict, *, seed: int, model_sha256: str) -> list[dict]:
    """One manifest record per image: predictions before and after, success, L2, Linf, PSNR."""
    before = model(clean).argmax(1)
    after = model(adversarial).argmax(1)
    delta = (adversarial - clean).flatten(1)
    l2, linf = delta.norm(dim=1), delta.abs().amax(dim=1)
    quality = psnr(adversarial, clean)
    params = dict(attack.get("params", {}))
    if "eps" in params:
        params["eps_255"] = round(params["eps"] * 255, 4)
    out = []
    for i, item in enumerate(ids):
        out.append({"id": item, "label": int(labels[i]), "attack": attack["name"], "params": params, "seed": seed,
                    "source_model_sha256": model_sha256, "pred_before": int(before[i]), "pred_after": int(after[i]),
                    "success": bool(before[i] == labels[i] and after[i] != labels[i]),
                    "l2": round(float(l2[i]), 6), "linf": round(float(linf[i]), 6),
                    "psnr": round(float(quality[i]), 4) if torch.isfinite(quality[i]) else None})
    return out


def write_shard(out: Path, attack: dict, shard: int, adversarial: np.ndarray, labels: np.ndarray, ids: list[str],
                lines: list[dict], dtype: str) -> None:
    """Write one shard's arrays and manifest lines, each atomically."""
    if dtype not in CORPUS_DTYPES:
        raise ValueError(f"corpus dtype must be one of {', '.join(CORPUS_DTYPES)}, got {dtype!r}")
    npz, jsonl = shard_paths(out, attack, shard)
    npz.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(npz, lambda tmp: np.savez(tmp, x=adversarial.astype(dtype), y=np.asarray(labels, np.int64),
                                               ids=np.asarray(ids, dtype=str)))
    write_atomically(jsonl, lambda tmp: tmp.write_text("".join(json.dumps(line) + "\n" for line in lines)))


def read_shards(out: Path):
    """Yield ``(x, y, pred_before)`` of every shard of a corpus written by :func:`write_shard`, as float32 tensors.

    Raises
    ------
    ValueError
        If ``out`` holds no shard.
    """
    shards = sorted(Path(out).glob("*/shard-*.npz"))
    if not shards:
        raise ValueError(f"{out}: no corpus shards (<attack>/shard-NNNNN.npz) found; generate one with waveshield corpus")
    for npz in shards:
        with np.load(npz, allow_pickle=False) as arrays:
            x, y = torch.from_numpy(arrays["x"].astype(np.float32)), torch.from_numpy(arrays["y"])
        lines = [json.loads(line) for line in npz.with_suffix(".jsonl").read_text().splitlines()]
        yield x, y, torch.tensor([line["pred_before"] for line in lines])


def finish(out: Path, attacks: list[dict], shards: int) -> int:
    """Gather every shard's lines into manifest.jsonl (attack, then shard order); return the line count."""
    count = 0

    def gather(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "w") as fh:
            for attack in attacks:
                for shard in range(shards):
                    text = shard_paths(out, attack, shard)[1].read_text()
                    fh.write(text)
                    count += text.count("\n")

    write_atomically(Path(out) / "manifest.jsonl", gather)
    return count


def pictures(out: Path, attacks: list[dict], classes: list[str] | None = None) -> None:
    """preview.png and report.html beside a finished corpus's manifest; a picture never fails the corpus.

    Whatever goes wrong drawing them (a manifest of an earlier release, a
    full disk) is logged as a warning: the shards and the manifest are whole.
    """
    try:
        preview(out, attacks, classes=classes)
        page(out)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger("waveshield").warning("corpus %s: its preview and report.html could not be drawn (%s: %s); "
                                                "the shards and manifest.jsonl are whole", out, type(exc).__name__, exc)


def preview(out: Path, attacks: list[dict], per_attack: int = 8, classes: list[str] | None = None) -> Path:
    """preview.png: images of shard 0 of every attack, one per class in turn, with the true label and the
    source model's predictions before and after the attack (red where the attack fooled it), named by ``classes``
    (the source model's; default CIFAR-10's, those of a corpus of an earlier release)."""
    from shared.reports import sheets

    rows = []
    for attack in attacks:
        npz, jsonl = shard_paths(out, attack, 0)
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
        picked = sheets.across_classes([line["label"] for line in lines], per_attack)
        with np.load(npz, allow_pickle=False) as data:
            x = data["x"][picked].astype(np.float32)
        tiles = [(image, [f"true: {_class(line['label'], classes)}", f"before: {_class(line['pred_before'], classes)}",
                          f"after: {_class(line['pred_after'], classes)}"],
                  # red where the attack fooled the model (manifests of earlier releases have no "success")
                  line.get("success", line["pred_before"] == line["label"] != line["pred_after"]))
                 for image, line in zip(x, (lines[i] for i in picked))]
        rows.append((AttackSpec.of(attack).label, tiles))
    return sheets.save(sheets.image_sheet(rows), Path(out) / "preview.png")


def _class(index: int, classes: list[str] | None = None) -> str:
    from shared.images.image_set import CIFAR10_CLASSES

    names = classes or CIFAR10_CLASSES
    return names[index] if 0 <= index < len(names) else str(index)


def page(out: Path) -> Path:
    """report.html beside manifest.jsonl: the preview and a table of the attacks and their counts."""
    from shared.reports import evaluation_page

    return evaluation_page.write_corpus(out, preview="preview.png" if (Path(out) / "preview.png").is_file() else None)
