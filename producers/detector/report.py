"""The report of `waveshield fit-detector`: ``detector.md``, its ROC figure, and ``report.json`` to draw both again."""

from __future__ import annotations

import json
from pathlib import Path

from shared.evaluation.plan import EPS_8_255, AttackSpec

#: What ``report.json`` says it is, so that `waveshield report` tells a detector's report from an evaluation's.
KIND = "detector"
#: The card's entries the report reads (the rest, e.g. the coarse references, stay in weights/detector.json).
_CARD_KEYS = ("paths", "statistics", "threshold", "fpr", "measured_fpr", "trained_on", "calibrated_on", "per_source",
              "adaptive_images", "flagged_after_benign_changes", "hidden", "n_features", "sha256")

#: The attacks of the per-source table, in its column order: attacks a source is measured on (fitted or held out).
SOURCE_ATTACKS = (AttackSpec.named("fgsm", eps=0.004), AttackSpec.named("fgsm", eps=0.01), AttackSpec.named("bim", eps=0.01),
                  AttackSpec.named("pgd", eps=0.01), AttackSpec.named("deepfool"), AttackSpec.named("fgsm", eps=EPS_8_255))
SOURCE_COLUMNS = tuple(spec.id for spec in SOURCE_ATTACKS)


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.1f} %"


def source_table(per_source: dict, fitted: set[str] = frozenset()) -> list[str]:
    """Markdown rows: per source, clean images flagged and the share of each attack's fooling images flagged."""
    lines = ["| source | clean images | flagged (false positives) | " + " | ".join(SOURCE_COLUMNS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in SOURCE_COLUMNS) + " |"]
    for name, r in per_source.items():
        lines.append(f"| {name}{' (fitted)' if name in fitted else ''} | {r['clean_images']} | "
                     f"{_pct(r['false_positives'])} | "
                     + " | ".join(_pct(r["detected"].get(c, float("nan"))) for c in SOURCE_COLUMNS) + " |")
    return lines


def content_lines(study: dict) -> list[str]:
    """The leave-one-photograph-out table of a ``photographs.json`` (``scripts/photo_holdout.py``)."""
    recipe = next(iter(study["recipes"]))
    rows, before = study["recipes"][recipe], study["shipped"]
    lines = [f"Each group of photographs left out of the fit and of every threshold in turn (the recipe above; the "
             f"photographs' threshold set on {recipe}, for {100 * study['photo_fpr']:g} %): the share of its clean "
             "crops flagged (every scale, turn, "
             f"recolouring and encoding), and of {study['detection_of']} images that fool the standard model "
             "flagged on each CIFAR-10 source's odd-positioned held-out images. The last column is the detector "
             f"that was in `weights/` when the study ran (sha256 {before['sha256'][:12]}), on the same crops.", "",
             "| content left out | crops | flagged | detected, CIFAR-10 sources | flagged by "
             f"{before['sha256'][:12]} |", "| --- | --- | --- | --- | --- |"]
    for group, row in rows.items():
        lines.append(f"| {group} | {row['images']} | {_pct(row['flagged'])} | {_span(row['detected'].values())} | "
                     f"{_pct(before['flagged'][group])} |")
    flagged = [row["flagged"] for row in rows.values()]
    lines += ["", f"Left out in turn: {_span(flagged)} flagged (mean {_pct(sum(flagged) / len(flagged))}); "
              f"detection {_span(d for row in rows.values() for d in row['detected'].values())} "
              f"({before['sha256'][:12]}: {_span(before['detected'].values())})."]
    return lines


def _span(values) -> str:
    values = list(values)
    return f"{100 * min(values):.1f}-{100 * max(values):.1f} %"


def write_report(out: Path, rows: list[dict], adaptive: dict, curves: dict, card: dict, first: str) -> Path:
    """Write ``detector.md`` (per source, per attack, the adaptive attacker, benign changes), ``roc.png`` and
    ``report.json``; return the Markdown path.

    ``rows`` and ``curves``: :func:`shared.screening.measures.attack_rows` of the
    first calibration source, ``first``; ``adaptive``: source -> its
    :func:`shared.screening.measures.adaptive_rows`; ``card``: the detector's.
    Where ``out`` holds a ``photographs.json`` (``scripts/photo_holdout.py``),
    its leave-one-photograph-out table follows the per-source one.
    ``report.json`` holds these arguments (the card's entries the report
    reads), so that :func:`read_report` and this function draw it again.
    """
    from shared.reports import charts  # matplotlib: only when a report is drawn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"kind": KIND, "first": first, "rows": rows, "adaptive": adaptive, "curves": curves,
               "card": {k: card[k] for k in _CARD_KEYS if k in card}}
    (out / "report.json").write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    labels = {spec.id: spec.label for spec in SOURCE_ATTACKS}  # eps in /255 too, as the tables write it
    shown = {labels[k]: v for k, v in curves.items() if k in labels}
    operating = {labels[k]: 100 * v for k, v in card["per_source"][first]["detected"].items()
                 if k in labels and k in curves}
    fpr = 100 * card["per_source"][first]["false_positives"]
    charts.save(charts.roc(shown, title=f"Learned detector, 8-bit attacked images of {first} (held-out half)",
                           fpr=fpr, detected=operating, target=100 * card["fpr"]), out / "roc.png")
    study = out / "photographs.json"
    content = (["## Content no fit saw", "", *content_lines(json.loads(study.read_text())),
                "", "More in [photographs.md](photographs.md).", ""] if study.is_file() else [])
    lines = [*_fit_lines(card, first), *content, f"## On {first}, attack by attack", "", *_attack_lines(rows),
             *_adaptive_lines(adaptive, card.get("adaptive_images") or {}, card.get("paths", ())), *_benign_lines(card), "", "![ROC](roc.png)", ""]
    (out / "detector.md").write_text("\n".join(lines))
    return out / "detector.md"


def is_report(payload: dict) -> bool:
    """Whether a loaded ``report.json`` is a detector's (:func:`write_report`), not an evaluation's."""
    return isinstance(payload, dict) and payload.get("kind") == KIND


def read_report(path: str | Path) -> dict:
    """The keyword arguments of :func:`write_report` (but ``out``) from a ``report.json`` it wrote.

    Raises
    ------
    ValueError
        If the file is not such a report.
    """
    try:
        payload = json.loads(Path(path).read_text())
        if not is_report(payload):
            raise ValueError("no \"kind\": \"detector\"")
        return {k: payload[k] for k in ("rows", "adaptive", "curves", "card", "first")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a detector report.json ({exc})") from None


def _fit_lines(card: dict, first: str) -> list[str]:
    """What the detector was trained and calibrated on, and the per-source table."""
    trained = card["trained_on"]
    clean = trained["clean"]
    calibrated = card["calibrated_on"]
    fitted = {s["name"] for s in trained["sources"]}
    rates = calibrated.get("rates") or {}
    per_source = ", ".join(f"{n} {t:.4f} on {calibrated['sources'][n]['images']}"
                           + (f" for {100 * rates[n]:g} %" if rates.get(n, card["fpr"]) != card["fpr"] else "")
                           for n, t in calibrated["thresholds"].items())
    sources = "".join(f", {s['images']} of {s['name']} ({s['data']}; {s['fooling_images']} fooling)"
                      for s in trained["sources"])
    return ["# Learned detector", "",
            (f"Trained on {sum(s['successful_images_used'] for s in trained['corpora'])} successful attacked "
             f"images from {len(trained['corpora'])} corpus folder(s) and " if trained["corpora"] else "Trained on ")
            + f"{clean['images']} clean images ({clean['data']})"
            + (f"; and on clean images and the paper's attacks of each source{sources}" if sources else "")
            + f"; a {card['hidden']}-wide MLP on {card['n_features']} features of the standard and "
            f"DWT-trained models' outputs ({', '.join(card['paths'])})"
            + (f" and of the pixels ({', '.join(card['statistics'])})" if card["statistics"] else "") + ".", "",
            f"Threshold {card['threshold']:.4f}: the highest of the thresholds that give {100 * card['fpr']:.1f} % "
            "false positives on each calibration source's even-positioned clean images "
            f"({per_source}). "
            "Every rate below is measured on the odd-positioned images, which no fit and no threshold used; "
            "attacks are crafted on the standard model, on that source's pixels, and delivered in 8 bits. "
            "A source marked *fitted* gave the fit other images of its own; the others, none.", "",
            "## Per source", "",
            "False positives, and the share of each attack's images that fool the standard model flagged:", "",
            *source_table(card["per_source"], fitted), ""]


def _attack_lines(rows: list[dict]) -> list[str]:
    """The first calibration source's table, attack by attack."""
    lines = ["*Flagged* and *AUROC* count the images that fool the standard model; *screened accuracy* is the "
             "accuracy of the label screening reports (the DWT-trained model on the reconstruction) on all images; "
             "*evaded* is the share of all images whose reported label is wrong and which are not flagged.", "",
             "| attack | in training | fooling images | flagged | AUROC | screened accuracy | evaded |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['attack']} | {'yes' if r['trained_on'] else 'no (held out)'} | {r['fooling_images']} | "
              f"{_pct(r['detected'])} | {'-' if r['auroc'] != r['auroc'] else format(r['auroc'], '.3f')} | "
              f"{_pct(r['screened_accuracy'])} | {_pct(r['evaded'])} |" for r in rows]
    return lines


def _adaptive_lines(adaptive: dict, images: dict, paths=()) -> list[str]:
    """The attacker who knows the detector, per source."""
    from shared import transforms

    through = [p.partition("@")[2] for p in paths if transforms.is_transform(p.partition("@")[2])]
    eot = ""
    if through:
        from shared.screening.evasion import EOT_DRAWS  # torch: only for a detector that reads a transformation

        eot = (f" and through {', '.join(through)} with its own gradient (straight-through where it has none; "
               f"a randomised one averaged over {EOT_DRAWS} draws a step, EOT)")
    lines = ["", "## The attacker who knows the detector", "",
             "PGD (random start, 20 steps of eps/4) through the detector's DWTs with BPDA" + eot
             + ", ascending the "
             "cross-entropy of the reported label plus the log-probability the detector gives *clean* "
             "(`shared/screening/evasion.py`); 8-bit delivery as above, on each source's measured images"
             + (" (the first " + ", ".join(f"{n} of {name}" for name, n in images.items()) + ")"
                if images else "")
             + " (an "
             "unlabelled source's labels are the standard model's own). *Grey*: the same step on all three channels "
             "of a pixel, which leaves the colour differences as they were.", "",
             "| source | attack | screened accuracy | flagged, of the wrongly labelled | evaded |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['attack']} | {_pct(r['screened_accuracy'])} | {_pct(r['flagged_of_wrong'])} | "
              f"{_pct(r['evaded'])} |" for name, found in adaptive.items() for r in found]
    return lines


def _benign_lines(card: dict) -> list[str]:
    """Clean images changed without an attack, and the share flagged."""
    lines = ["", "## Clean images, changed without an attack", "",
             "The measured clean images again, after a change an ordinary source might make "
             "(`shared/screening/benign.py`); the share flagged at the same threshold. Far above the false-positive "
             "rate, the detector sees that change as manipulation: calibrate it on clean images of your own source "
             "(`waveshield calibrate --source NAME`).", "",
             "| change | flagged |", "| --- | --- |"]
    lines += [f"| {name} | {_pct(rate)} |" for name, rate in card["flagged_after_benign_changes"].items()]
    return lines
