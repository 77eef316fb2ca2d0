"""Commands that prepare models and defences: train, tune, calibrate, fit-detector."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from producers.cli.options import COUNT, RATE
from producers.cli.progress import ProgressBar
from shared import settings as settings_mod
from shared.dwt import DEFAULT_WAVELETS
from shared.dwt.defences import DEFAULTS


@click.command()
@click.option("--defence", default="none", show_default=True,
              help=f"none = the standard model; {'/'.join(DEFAULTS)} = trained on originals + their DWT copies; an "
                   "input transformation (jpeg:quality=30, bit-depth:bits=3, median:size=2...) = on originals + "
                   "their transformed copies.")
@click.option("--from", "from_model", default=None, metavar="NAME",
              help="Fine-tune a copy of this registered model on originals + their --defence copies, at its input "
                   "size and with its classes, and register it as its twin in your models folder (--defence none: "
                   "on the originals alone, as a model of its own).")
@click.option("--width", type=COUNT, default=None, help="ResNet18 width (64 = the standard ResNet18) [default: 16].")
@click.option("--epochs", type=COUNT, default=None,
              help="Passes over the training set (DWT copies included) [default: 30; 5 with --from].")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate of the one-cycle schedule [default: 0.2; 0.01 with --from].")
@click.option("--batch-size", type=COUNT, default=256, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--data", required=True,
              help="Labelled training images: a folder or zip with class sub-folders, a path,label list (.csv, "
                   ".jsonl), an npz with y, or cifar10:train (canonical CIFAR-10 in WAVESHIELD_DATA_DIR).")
@click.option("--test-data", default=None,
              help="Held-out labelled images for the card's accuracy [default: the embedded 1,000 CIFAR-10 test "
                   "images; with --from, required for a model of other classes].")
@click.option("--name", default=None,
              help="Checkpoint name [default: standard/haar/daubechies; with --from, FROM-DEFENCE].")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--label-smoothing", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Target smoothing of the cross-entropy loss [default: the shipped recipe's, 0 = hard labels].")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Random crop and flip every batch.")
@click.option("--limit", type=COUNT, default=None, help="Use only the first N training images (smoke runs).")
@click.option("--stop-after", type=COUNT, default=None, help="Stop after this epoch, as an interruption would.")
def train(defence, from_model, width, epochs, lr, batch_size, seed, data, test_data, name, precision, label_smoothing,
          augment, limit, stop_after):
    """Train a CIFAR ResNet18 and write safetensors + model card to the weights directory; or, with --from,
    fine-tune a registered model into its DWT-trained twin.

    Resumable: rerun the same command after an interruption and it continues
    from the last finished epoch.
    """
    from producers.train import run_fine_tune, run_train

    options = {"batch_size": batch_size, "seed": seed, "precision": precision, "augment": augment,
               **({} if label_smoothing is None else {"label_smoothing": label_smoothing}),
               **({} if epochs is None else {"epochs": epochs}), **({} if lr is None else {"lr_peak": lr})}
    common = {"name": name, "data": data, "limit": limit, "settings": settings_mod.load(), "stop_after": stop_after,
              "say": click.echo, "progress": _EpochProgress()}
    if from_model is not None:
        if width is not None:
            raise click.UsageError("--width sets our ResNet18's; --from keeps the registered model's architecture")
        written = run_fine_tune(parent=from_model, defence=defence, test_data=test_data, recipe_options=options,
                                **common)
    else:
        written = run_train(defence=defence, test_data=test_data or "sample",
                            recipe_options={"width": width or 16, **options}, **common)
    if written is None:
        return
    out, card = written
    click.echo(f"wrote {out} (test accuracy {card['test_accuracy']:.4f})")


@click.command()
@click.option("--data", default="sample", show_default=True, help="Labelled images to tune on.")
@click.option("--n", "n", type=COUNT, default=256, show_default=True, help="Number of images.")
@click.option("--min-psnr", default=30.0, show_default=True, help="Clean PSNR a setting must keep (dB).")
@click.option("--wavelets", default=",".join(DEFAULT_WAVELETS), show_default=True,
              help="Comma-separated wavelets to sweep.")
@click.option("--objective", type=click.Choice(["attenuation", "gain"]), default="attenuation", show_default=True,
              help="What to maximise above the PSNR threshold (see tune.md).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Table directory [default: $WAVESHIELD_OUTPUT_DIR/tune].")
def tune(data, n, min_psnr, wavelets, objective, out):
    """Choose the Haar and Daubechies DWT settings by PSNR/MSE; write defences.json for train and evaluate."""
    from producers.tune import run_tune

    cfg = settings_mod.load()
    out = out or cfg.output_dir / "tune"
    with ProgressBar() as bar:
        chosen = run_tune(data=data, n=n, out=out, settings=cfg, min_psnr=min_psnr, objective=objective,
                          wavelets=tuple(w.strip() for w in wavelets.split(",") if w.strip()), progress=bar)
    for family, row in chosen.items():
        click.echo(f"{family}: {row['wavelet']} levels={row['levels']} {row['mode']} {row['method']} "
                   f"sigma x{row['sigma_scale']}{' YCbCr' if row['convert2ycbcr'] else ''}: clean PSNR "
                   f"{row['clean_psnr']:.2f} dB, mean attenuation {row['mean_attenuation']:+.2f} dB, "
                   f"mean gain {row['mean_gain']:+.2f} dB")
    click.echo(f"table: {out / 'tune.md'}; settings: {cfg.weights_dir / 'defences.json'}")


@click.command()
@click.option("--data", default="sample", show_default=True,
              help="Clean images: labelled without --source; any, with it.")
@click.option("--n", "n", type=COUNT, default=1000, show_default=True, help="Number of images (at most 1,000 with --source).")
@click.option("--fpr", type=RATE, default=0.05, show_default=True, help="False-positive rate allowed on clean images.")
@click.option("--source", default=None, metavar="NAME",
              help="Calibrate the current score (the detector, once fitted) for one source of images, recorded "
                   "under NAME; `screen --source NAME` uses it. Without it: calibrate the hand-made score and "
                   "switch screening to it.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where calibration.md goes [default: $WAVESHIELD_OUTPUT_DIR/calibrate].")
def calibrate(data, n, fpr, source, out):
    """Set the screening flag's threshold at a false-positive rate; report detection per attack."""
    from producers.screening.calibrate import run_calibration, run_source_calibration

    cfg = settings_mod.load()
    out = out or cfg.output_dir / "calibrate"
    if source is not None:
        entry = run_source_calibration(data=data, source=source, n=n, fpr=fpr, settings=cfg, out=out,
                                       progress=lambda line: click.echo(line, err=True))
        click.echo(f"source {source}: threshold {entry['threshold']:.4f} ({entry['score']} score, "
                   f"{entry['calibrated_on']['images']} clean images, {100 * entry['measured_fpr']:.1f} % flagged)")
        for attack, rate in entry["detection_of_fooling"].items():
            click.echo(f"  {attack}: {'-' if rate != rate else f'{100 * rate:.1f} %'} of the images that fool the "
                       "standard model flagged")
        click.echo(f"settings: {cfg.weights_dir / 'screening.json'}; screen with: waveshield screen --source {source}")
        return
    result = run_calibration(data=data, n=n, fpr=fpr, settings=cfg, out=out)
    click.echo(f"threshold {result['threshold']:.4f} (false positives on clean: {100 * result['measured_fpr']:.1f} %)")
    for attack, rate in result["detection"].items():
        click.echo(f"  {attack}: {100 * rate:.1f} % flagged ({100 * result['detection_of_fooling'][attack]:.1f} % "
                   "of those that fool the standard model)")
    click.echo(f"settings: {cfg.weights_dir / 'screening.json'}; table: {out / 'calibration.md'}")


def _rates(pairs) -> dict[str, float]:
    """``NAME=RATE`` pairs -> {name: rate}, each rate checked to lie between 0 and 1."""
    rates = {}
    for pair in pairs:
        name, sep, rate = pair.partition("=")
        try:
            rates[name] = float(rate)
        except ValueError:
            rates[name] = float("nan")
        if not sep or not name or not 0 < rates[name] < 1:
            raise click.BadParameter(f"{pair!r}: give NAME=RATE with RATE between 0 and 1, e.g. photos=0.04",
                                     param_hint="--source-fpr")
    return rates


def _paths(text: str) -> list[str]:
    """``--paths``: comma-separated paths, where a transformation's own settings may hold commas too
    (``standard@raw,standard@resize-pad:shrink=0.05,seed=3``): a part without ``@`` belongs to the path before it."""
    paths: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if paths and "@" not in part and part:
            paths[-1] += "," + part
        elif part:
            paths.append(part)
    return paths


@click.command(name="fit-detector")
@click.option("--corpus", "corpora", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A corpus folder written by `waveshield corpus` on training images (repeatable).")
@click.option("--source", "fit_sources", multiple=True, metavar="NAME=DATA",
              help="Another training source (repeatable): its clean images, and the paper's attacks crafted on "
                   "them here, so that the detector learns what clean images of that source look like.")
@click.option("--n-source", type=COUNT, default=2000, show_default=True, help="How many images of each --source.")
@click.option("--clean", required=True, help="Clean training images (negatives), e.g. the training images the "
              "models were trained on.")
@click.option("--n-clean", type=COUNT, default=10000, show_default=True, help="How many clean training images.")
@click.option("--calibration", multiple=True, metavar="[NAME=]DATA",
              help="Held-out images of a source (repeatable): every other one sets that source's threshold, the "
                   "rest measure it; the threshold used is the highest [default: sample, the embedded test images].")
@click.option("--n-calibration", type=COUNT, default=2000, show_default=True,
              help="How many held-out images of each --calibration source.")
@click.option("--fpr", type=RATE, default=0.05, show_default=True, help="False-positive rate allowed on clean images.")
@click.option("--paths", default=None, help="Model paths the detector reads, comma-separated (MODEL@raw, "
              "MODEL@DEFENCE or MODEL@TRANSFORM, e.g. standard@resize-pad:shrink=0.05), standard@raw first; more paths, "
              "slower screening [default: standard@raw and the "
              "path screening reports, which it computes anyway].")
@click.option("--statistics", default="steps", show_default=True,
              help="Pixel statistics the detector reads besides the paths, comma-separated, or 'none'.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where detector.md and roc.png go [default: $WAVESHIELD_OUTPUT_DIR/detector].")
@click.option("--source-fpr", "source_fpr", multiple=True, metavar="NAME=RATE",
              help="A calibration source's own false-positive rate for its threshold, in place of --fpr "
                   "(repeatable): lower for a source that stands for content no fit saw.")
@click.option("--adaptive-images", type=COUNT, default=None,
              help="How many of each calibration source's measured images the attacker who knows the detector "
                   "attacks (80 model passes each) [default: all].")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep each source's features here: a later fit on the same images and models reuses them "
                   "and computes only the attacks it lacks [default: none kept].")
@click.option("--measure-attack", "measure_attacks", multiple=True, metavar="NAME[:key=value,...]",
              help="Another attack to measure detection on, never trained on (repeatable), as corpus --attacks "
                   "takes it, e.g. torchattacks:Square:eps=0.01,n_queries=1000.")
def fit_detector(corpora, fit_sources, n_source, clean, n_clean, calibration, n_calibration, fpr, paths, statistics,
                 out, source_fpr, adaptive_images, cache, measure_attacks):
    """Train the learned detector on corpora and sources, calibrate it per source, and make screening use it."""
    from producers.detector.fit import run_fit

    if not corpora and not fit_sources:
        raise click.UsageError("give --corpus DIR or --source NAME=DATA (or both): the detector needs attacked images")
    cfg = settings_mod.load()
    out = out or cfg.output_dir / "detector"
    card = run_fit(corpora=list(corpora), clean=clean, n_clean=n_clean, calibration=list(calibration) or ["sample"],
                   n_calibration=n_calibration, fpr=fpr, settings=cfg, out=out, fit_sources=fit_sources,
                   n_source=n_source, progress=lambda line: click.echo(line, err=True), cache=cache,
                   source_fpr=_rates(source_fpr), adaptive_images=adaptive_images, measure_attacks=measure_attacks,
                   paths=_paths(paths) if paths else None,
                   statistics=[] if statistics.strip() == "none" else [s.strip() for s in statistics.split(",") if s.strip()])
    click.echo(f"threshold {card['threshold']:.4f}; false positives on held-back clean images: "
               + ", ".join(f"{n} {100 * r['false_positives']:.1f} %" for n, r in card["per_source"].items()))
    for attack, rate in card["detection_of_fooling"].items():
        click.echo(f"  {attack}: {100 * rate:.1f} % of the images that fool the standard model flagged, "
                   f"AUROC {card['auroc'][attack]:.3f}")
    click.echo(f"detector: {cfg.weights_dir / 'detector.safetensors'}; screening now uses it; report: {out / 'detector.md'}")


class _EpochProgress:
    """Training progress: a live bar on a terminal, and one line per finished epoch."""

    def __init__(self):
        self.bar = None

    def __call__(self, p: dict) -> None:
        if sys.stdout.isatty():
            if self.bar is None or p["step"] == 1:
                self.bar = click.progressbar(length=p["steps"], label=f"epoch {p['epoch']}/{p['epochs']}",
                                             item_show_func=lambda s: s)
                self.bar.__enter__()
            self.bar.update(1, f"loss {p['loss']:.3f} acc {p['acc']:.3f}")
        if p["step"] == p["steps"]:
            if self.bar is not None:
                self.bar.__exit__(None, None, None)
                self.bar = None
            click.echo(f"epoch {p['epoch']}/{p['epochs']}: loss {p['loss']:.4f}, train accuracy {p['acc']:.4f}")
