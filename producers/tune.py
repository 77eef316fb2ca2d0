"""`waveshield tune`: sweep DWT settings on clean and attacked images, write the table and the chosen settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from shared import attacks
from shared.dwt import defences, tuning
from shared.evaluation.plan import PAPER_EPS, paper_attacks
from shared.files import write_atomically
from shared.images.load import load_images
from shared.models import network
from shared.models.store import ModelStore
from shared.settings import Settings, resolve_device


def run_tune(*, data: str, n: int, out: Path, settings: Settings, min_psnr: float, wavelets: tuple[str, ...],
             objective: str = "attenuation", model_name: str = "standard",
             progress=lambda done, total, what: None) -> dict:
    """Sweep, choose, write ``tune.md``, ``tune.csv``, ``tune.png`` and ``defences.json``; return the choice.

    ``progress(done, total, what)`` hears of each setting scored.
    """
    device = resolve_device(settings.device)
    store = ModelStore(settings.weights_dir, models_dir=settings.models_dir)
    weights = store.require(model_name, "tune (it crafts its adversarial images there)")
    model, card = network.load(weights, device=device)
    image_set = load_images(data, limit=n, workers=settings.decode_workers)
    if image_set.labels is None or not len(image_set):
        raise ValueError(f"{data}: tune needs labelled images")
    clean = image_set.to_tensor().to(device)
    labels = torch.from_numpy(image_set.labels).to(device)
    adversarial = {f"{a['name']}_{a['params']['eps']}": attacks.get(a["name"])(model, clean, labels, **a["params"])
                   for a in paper_attacks() if "eps" in a["params"]}  # the gradient attacks; DeepFool has no budget
    rows = []
    candidates = tuning.grid(wavelets, tuple(clean.shape[-2:]))
    for options in candidates:
        rows.append(tuning.score(options, clean, adversarial))
        progress(len(rows), len(candidates), f"{len(candidates)} settings")
    chosen = tuning.choose(rows, min_clean_psnr=min_psnr, objective=objective)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, out / "tune.csv")
    (out / "tune.md").write_text(_markdown(rows, chosen, data=data, images=len(clean), min_psnr=min_psnr, objective=objective))
    plot(rows, out / "tune.png", min_psnr=min_psnr, objective=objective)
    keys = defences.DEFAULTS["haar"].keys()
    document = {
        "defences": {family: {k: row[k] for k in keys} for family, row in chosen.items()},
        "rule": f"clean PSNR >= {min_psnr} dB, then the largest mean {objective} on FGSM/BIM (eps {', '.join(map(str, PAPER_EPS))})",
        "chosen_on": {"data": str(data), "images": len(clean), "model": model_name, "model_sha256": card["sha256"]},
        "scores": chosen,
    }
    text = json.dumps(document, indent=2) + "\n"
    settings.weights_dir.mkdir(parents=True, exist_ok=True)
    # Workers read this file at every batch: they see the old settings or the new, never half a file.
    write_atomically(settings.weights_dir / defences.FILENAME, lambda tmp: tmp.write_text(text))
    (out / defences.FILENAME).write_text(text)
    return chosen


def plot(rows: list[dict], path: Path, *, min_psnr: float, objective: str) -> Path:
    """tune.png: every setting's clean PSNR against its mean ``objective``, per wavelet, and the PSNR threshold.

    ``rows`` as :func:`shared.dwt.tuning.score` gives them, or as :func:`read_csv` reads them back.
    """
    from shared.reports import charts  # matplotlib: only when the plot is drawn

    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r["wavelet"], []).append((float(r["clean_psnr"]), float(r[f"mean_{objective}"])))
    return charts.save(charts.scatter(groups, xlabel="PSNR of reconstruct(clean) vs clean (dB)",
                                      ylabel=f"mean {objective} on FGSM/BIM images (dB)",
                                      title=f"DWT settings: {len(rows)} scored", vline=min_psnr,
                                      vline_label=f"clean PSNR >= {min_psnr:g} dB"), path)


def read_csv(path: Path) -> list[dict]:
    """The rows of a ``tune.csv`` (:func:`run_tune`), as text: enough for :func:`plot`."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _label(row: dict) -> str:
    return (f"{row['wavelet']} L{row['levels']} {row['mode']} {row['method']} x{row['sigma_scale']}"
            + (" YCbCr" if row["convert2ycbcr"] else ""))


def _markdown(rows, chosen, *, data, images, min_psnr, objective) -> str:
    attacks_ = [k.removeprefix("gain_") for k in rows[0] if k.startswith("gain_")]
    head = ("| setting | clean PSNR (dB) | clean MSE | " + " | ".join(f"att. {a}" for a in attacks_)
            + " | mean attenuation | mean gain |")
    sep = "| --- " * (5 + len(attacks_)) + "|"

    def line(r):
        values = " | ".join(f"{r['attenuation_' + a]:+.2f}" for a in attacks_)
        return (f"| {_label(r)} | {r['clean_psnr']:.2f} | {r['clean_mse']:.2e} | {values} | "
                f"{r['mean_attenuation']:+.2f} | {r['mean_gain']:+.2f} |")

    out = ["# DWT settings by PSNR / MSE", "",
           f"{images} images from {data}; {len(rows)} settings; FGSM/BIM crafted on the standard model, eps in [0, 1] units.",
           "- clean PSNR: reconstruct(clean) against clean.",
           "- attenuation: PSNR(reconstruct(adv), reconstruct(clean)) - PSNR(adv, clean), dB of perturbation removed.",
           "- gain: PSNR(reconstruct(adv), clean) - PSNR(adv, clean), the denoising gain against the original.",
           f"Rule: clean PSNR >= {min_psnr} dB, then the largest mean {objective}.", "", "## Chosen", "", head, sep]
    out += [line(r).replace("| ", f"| **{family}**: ", 1) for family, r in chosen.items()]
    out += ["", f"## Best 10 per wavelet (by mean {objective}, among settings over the threshold)", "", head, sep]
    for wavelet in dict.fromkeys(r["wavelet"] for r in rows):
        ok = sorted((r for r in rows if r["wavelet"] == wavelet and r["clean_psnr"] >= min_psnr),
                    key=lambda r: -r[f"mean_{objective}"])
        out += [line(r) for r in ok[:10]]
    out += ["", "Every setting, with PSNR and MSE per attack: tune.csv. Plot: tune.png."]
    return "\n".join(out) + "\n"
