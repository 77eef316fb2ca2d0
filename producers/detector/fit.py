"""`waveshield fit-detector`: train the learned detector on corpora and sources, calibrate it per source, measure it,
switch screening to it.

The stages live elsewhere: features and the fit in :mod:`shared.screening.detector`,
a source's examples in :mod:`shared.screening.examples`, the measures in
:mod:`shared.screening.measures`, screening.json in
:mod:`shared.screening.config`, the report in :mod:`producers.detector.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from producers.detector.report import write_report
from shared.evaluation import corpus as corpus_files
from shared.evaluation.plan import AttackSpec, ModelPath
from shared.images import coarse
from shared.images.image_set import quantise
from shared.images.load import load_images
from shared.models.checkpoints import sha256_file
from shared.models.store import ModelStore
from shared.screening import config as screening_config
from shared.screening import detector, measures
from shared.screening.examples import HELD_OUT, TRAINED, FeatureCache, FeatureReader, examples, measure, thresholds
from shared.screening.verdicts import suspicion_histogram
from shared.settings import Settings, resolve_device
from shared.settings import load as load_settings

#: The pixel statistics a detector reads unless told otherwise (with, by default, only the two model paths
#: screening computes anyway, so that it costs no extra pass). ``steps`` holds on every source measured;
#: ``chroma`` only on sources with subsampled chroma (docs/calibration/sources/sources.md).
DEFAULT_STATISTICS = ("steps",)


def parse_source(text: str) -> tuple[str, str]:
    """``NAME=DATA`` -> (NAME, DATA); a bare DATA is named after its file (``test.zip`` -> ``test``)."""
    name, sep, data = str(text).partition("=")
    if not sep:
        data, name = name, Path(name.rstrip("/")).stem or name
    if not name or not data:
        raise ValueError(f"a source is NAME=DATA or DATA, got {text!r}")
    return name, data


def _load(data: str, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    image_set = load_images(data, limit=n, workers=load_settings().decode_workers)
    if len(image_set) == 0:
        raise ValueError(f"{data}: no readable images")
    return image_set.to_tensor(), None if image_set.labels is None else torch.from_numpy(image_set.labels)


@dataclass
class TrainingSet:
    """Features of the fit's negatives and positives, each part tagged with its source group, and what they came from."""

    negatives: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    positives: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    record: dict = field(default_factory=dict)

    def stacked(self, parts) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([f for _, f in parts]), torch.cat([torch.full((len(f),), i) for i, f in parts])


@dataclass
class HeldOut:
    """The calibration sources: even halves (thresholds, references), odd halves (measures)."""

    calibrating: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    pixels: dict = field(default_factory=dict)
    evens: dict = field(default_factory=dict)


def run_fit(*, corpora: list[Path], clean: str, n_clean: int, calibration, n_calibration: int, fpr: float,
            settings: Settings, out: Path, hidden: int = 64, epochs: int = 300, paths=None,
            statistics=DEFAULT_STATISTICS, fit_sources=(), n_source: int = 2000,
            progress=lambda message: None, cache: Path | None = None, source_fpr: dict | None = None,
            adaptive_images: int | None = None, measure_attacks: tuple[str, ...] = ()) -> dict:
    """Train on clean images and fooling attacks of every source, calibrate per source, measure on held-back images.

    Parameters
    ----------
    corpora : list of Path
        Corpus folders (`waveshield corpus`): their fooling images are positives.
    clean, n_clean : str, int
        Clean training images (negatives).
    calibration : str or sequence of str
        Held-out sources, each ``NAME=DATA`` or ``DATA``. Each is split by
        position: the even half sets that source's threshold at ``fpr``, the
        odd half measures false positives and detection, and never sees a
        threshold being set. The threshold screening uses by default is the
        highest of them, so that no calibrated source goes over ``fpr``.
    source_fpr : dict, optional
        Calibration source name -> its own rate, in place of ``fpr``, for
        its threshold: a lower one for a source that stands for content no
        fit saw (scripts/photo_holdout.py measures what that buys).
    adaptive_images : int, optional
        How many of each source's measured images the attacker who knows the
        detector attacks (all by default; each costs 80 model passes).
    measure_attacks : sequence of str
        More attacks to measure detection on, never trained on, as
        ``waveshield corpus --attacks`` writes them (``torchattacks:Square:eps=0.01``):
        they join :data:`shared.screening.examples.HELD_OUT`.
    fit_sources : sequence of str
        More training sources, ``NAME=DATA`` or ``DATA``: up to ``n_source``
        of their clean images are negatives, and the paper's attacks crafted
        on them in this process (:data:`shared.screening.examples.TRAINED`)
        positives, so that the detector learns clean images of each.
    paths, statistics
        What the detector reads (default: ``standard@raw``, the path whose
        label screening reports, and :data:`DEFAULT_STATISTICS`).
    progress : callable
        Called with a line of text as each stage starts.
    cache : Path, optional
        A folder of :class:`shared.screening.examples.FeatureCache`: each
        source's features are read from it where a fit on the same images
        and models left them, and kept there.

    Writes ``detector.safetensors`` and its card into the weights directory,
    switches ``screening.json`` to the detector, and writes ``detector.md``
    and ``roc.png`` into ``out``.
    """
    measured = [AttackSpec.of(attack) for attack in _measured_attacks(measure_attacks)]  # a typo fails here
    paths = detector.check_paths(paths or ("standard@raw", reported_path(settings)))
    reading = {"paths": paths, "statistics": detector.check_statistics(statistics)}
    reader = _reader(settings, reading)
    source_examples = FeatureCache(cache, reader).examples if cache else _uncached(reader)
    held = [parse_source(c) for c in ([calibration] if isinstance(calibration, str) else calibration)]
    extra = [parse_source(s) for s in fit_sources]
    unknown = sorted(set(source_fpr or {}) - {n for n, _ in held})
    if unknown:
        raise ValueError(f"--source-fpr names {', '.join(unknown)}, which no --calibration source is "
                         f"(they are {', '.join(n for n, _ in held)})")
    if len({n for n, _ in held}) != len(held) or len({n for n, _ in extra}) != len(extra):
        raise ValueError("each calibration source, and each fit source, needs a name of its own (NAME=DATA)")
    training = _training_set(reader, source_examples, corpora, clean, n_clean, extra, n_source, progress)
    progress("fitting")
    (neg, neg_sources), (pos, pos_sources) = training.stacked(training.negatives), training.stacked(training.positives)
    model = detector.fit(neg, pos, hidden=hidden, epochs=epochs, clean_sources=neg_sources,
                         adversarial_sources=pos_sources)
    sets = _held_out(source_examples, held, n_calibration, progress, measured)
    rates = {name: (source_fpr or {}).get(name, fpr) for name in sets.features}
    per_source = {name: thresholds(model, {name: f}, rates[name])[name] for name, f in sets.features.items()}
    threshold = max(per_source.values())
    results = {n: measure(model, threshold, ex) for n, ex in sets.measured.items()}
    first = held[0][0]
    rows, curves = measures.attack_rows(model, threshold, sets.measured[first])
    adaptive = {}
    for name in sets.measured:
        progress(f"the attacker who knows the detector, on {name}")
        adaptive[name] = measures.adaptive_rows(model, threshold, reader, sets.pixels[name][:adaptive_images],
                                                sets.measured[name].truth[:adaptive_images],
                                                reading)
    worst = max(results, key=lambda n: results[n]["false_positives"])
    # The models whose outputs the features are: a detector read with other weights would score other features.
    models = {name: reader.store.card(name)["sha256"] for name in sorted({ModelPath.named(p).model for p in paths})}
    card = {"features": detector.feature_names(**reading), "paths": list(paths), "models": models,
            "statistics": list(reading["statistics"]), "epochs": epochs, "trained_on": training.record,
            "threshold": threshold, "fpr": fpr, "measured_fpr": results[worst]["false_positives"],
            "calibrated_on": {"sources": sets.calibrating, "thresholds": per_source,
                              "rates": rates, "rule": "the highest of the sources' thresholds"},
            "reference": coarse.references(sets.evens),
            # The calibration images' suspicion, all sources together: the screening page draws it.
            "clean_histogram": suspicion_histogram(torch.cat([model.score(f) for f in sets.features.values()]).numpy()),
            "measured_on": {"which": "odd positions", "quantised_to_uint8": True,
                            "images": {n: r["clean_images"] for n, r in results.items()}},
            "per_source": results,
            "detection_of_fooling": {r["attack"]: r["detected"] for r in rows[1:]},
            "auroc": {r["attack"]: r["auroc"] for r in rows[1:]},
            "screened": {r["attack"]: _screened(r) for r in rows + adaptive[first]},
            "adaptive": {name: {r["attack"]: _screened(r) for r in found} for name, found in adaptive.items()},
            "adaptive_images": {name: len(sets.pixels[name][:adaptive_images]) for name in adaptive},
            "flagged_after_benign_changes": measures.flagged_after_benign_changes(model, threshold, reader,
                                                                                  sets.pixels[first])}
    card = detector.save(model, settings.models_dir / detector.WEIGHTS_NAME, card)
    select_detector(settings, card)
    write_report(out, rows, adaptive, curves, card, first)
    return card


def _screened(row: dict) -> dict:
    return {k: row[k] for k in ("screened_accuracy", "flagged_of_wrong", "evaded")}


def _reader(settings: Settings, reading: dict) -> FeatureReader:
    """The feature reader of ``reading``'s paths, once the models they need are found."""
    screened_path = chosen_paths(settings, reading["paths"])
    store = ModelStore(settings.weights_dir, resolve_device(settings.device), settings.models_dir)
    for name in sorted({ModelPath.named(p).model for p in reading["paths"]}):
        store.require(name, "the detector")
    return FeatureReader(store, settings.weights_dir, reading, screened_path)


def _uncached(reader: FeatureReader):
    """The signature of :meth:`FeatureCache.examples`, computing everything."""
    def source_examples(name, data, x, labels, attack_list, on_attack):
        return examples(reader, name, x, labels, attack_list, on_attack=on_attack)
    return source_examples


def _training_set(reader: FeatureReader, source_examples, corpora, clean: str, n_clean: int, extra, n_source: int,
                  progress) -> TrainingSet:
    """The fit's examples: fooling corpus images and ``clean`` (source group 0), then each fit source's own group."""
    training, corpus_records, fitted_sources = TrainingSet(), [], []
    for folder in corpora:
        progress(f"corpus {folder}")
        found, record = _corpus_positives(reader, Path(folder))
        training.positives += [(0, f) for f in found]
        corpus_records.append(record)
    progress(f"clean images {clean}")
    clean_x, _ = _load(clean, n_clean)
    training.negatives.append((0, reader(clean_x)[0]))
    for i, (name, data) in enumerate(extra, start=1):
        x, labels = _load(data, n_source)
        ex = source_examples(name, data, x, labels, TRAINED,
                             on_attack=lambda a, n=name: progress(f"fit source {n}: {a}"))
        group = 0 if data == clean else i  # the --clean images' own source: one group
        training.negatives.append((group, ex.clean))
        training.positives.append((group, ex.positives()))
        fitted_sources.append({"name": name, "data": str(data), "images": len(x), "fooling_images": len(ex.positives())})
    if not any(len(f) for _, f in training.positives):
        raise ValueError("no corpus or source image fools the standard model once quantised to 8 bits: "
                         "nothing to learn from")
    training.record = {"corpora": corpus_records, "clean": {"data": str(clean), "images": len(clean_x)},
                       "sources": fitted_sources}
    return training


def _measured_attacks(texts) -> list[dict]:
    """Plan entries of the attacks ``--measure-attack`` names, checked (name, parameters, eps) before any work."""
    from producers.corpus import parse_attack
    from shared.evaluation.run import validate_plan

    entries = [parse_attack(text) for text in texts]
    if entries:
        validate_plan({"attacks": entries, "configurations": [{"model": "standard"}]})
    return entries


def _held_out(source_examples, held, n_calibration: int, progress, more_attacks=()) -> HeldOut:
    """Each calibration source's examples, split by position: even images calibrate, odd ones measure."""
    sets = HeldOut()
    attacks = list(dict.fromkeys([*TRAINED, *HELD_OUT, *more_attacks]))
    for name, data in held:
        x, labels = _load(data, n_calibration)
        ex = source_examples(name, data, x, labels, attacks,
                             on_attack=lambda a, n=name: progress(f"measuring on {n}: {a}"))
        sets.calibrating[name] = {"data": str(data), "images": len(x[0::2]), "which": "even positions",
                                  "reference": coarse.reference(x[0::2])}
        sets.features[name] = ex.clean[0::2]
        sets.measured[name], sets.pixels[name] = ex.subset(slice(1, None, 2)), x[1::2]
        sets.evens[name] = x[0::2]
    return sets


def _corpus_positives(reader: FeatureReader, folder: Path) -> tuple[list[torch.Tensor], dict]:
    """Features of a corpus's attacks that fool the standard model once delivered in 8 bits, and its record."""
    positives, used = [], 0
    for x, y, before in corpus_files.read_shards(folder):
        x = quantise(x)
        fooled = (before == y) & (reader.predict(x) != y)
        if fooled.any():
            positives.append(reader(x[fooled])[0])
            used += int(fooled.sum())
    manifest = Path(folder) / "manifest.jsonl"
    return positives, {"corpus": str(folder), "attacks": sorted(p.name for p in Path(folder).iterdir() if p.is_dir()),
                       "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
                       "successful_images_used": used}


def select_detector(settings: Settings, card: dict) -> dict:
    """Make the user's screening.json select the detector of ``card``, keeping the hand-made score's calibration
    aside."""
    chosen = screening_config.with_detector(screening_config.load(settings.weights_dir, settings.models_dir), card)
    screening_config.write(settings.models_dir, chosen)
    return chosen


def reported_path(settings: Settings) -> str:
    """The path whose label screening reports, e.g. ``haar@haar``, from screening.json."""
    return screening_config.reported_path(screening_config.load(settings.weights_dir, settings.models_dir))


def chosen_paths(settings: Settings, paths) -> str:
    """:func:`reported_path`, checked to be one of ``paths``."""
    path = reported_path(settings)
    if path not in paths:
        raise ValueError(f"screening reports the label of {path}; the detector's paths must include it "
                         f"(they are {', '.join(paths)})")
    return path
