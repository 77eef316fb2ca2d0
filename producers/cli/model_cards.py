"""``waveshield model``: register a classifier of your own, list the models, show one's card."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared import settings as settings_mod


def _registry():
    from shared.models.registry import ModelRegistry

    current = settings_mod.load()
    return ModelRegistry(current.weights_dir, current.models_dir)


def _arch_args(text: str | None) -> dict:
    """``num_classes=10,dropout=0.2`` as keyword arguments: numbers, booleans and null as JSON reads them, else text."""
    args = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--arch-args")
        try:
            args[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            args[key.strip()] = value
    return args


def _size(text: str) -> tuple[int, int]:
    """``224`` (square) or ``HxW``."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise click.BadParameter(f"expected N or HxW (e.g. 224 or 224x160), got {text!r}", param_hint="--input-size")
    return (sizes[0], sizes[-1])


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=option) from None


def _classes(path: Path) -> list[str]:
    """One class name a line (blank lines at the end ignored), in the model's logit order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


@click.group()
def model():
    """Register a classifier of your own, list the models, show one's card, remove one."""


@model.command("add")
@click.argument("name")
@click.option("--arch", "architecture", required=True, metavar="KIND:TARGET",
              help="torchvision:NAME (e.g. torchvision:resnet50), python:package.module:factory (a function the "
                   "workers can import that returns an nn.Module), torchscript:FILE.pt, or cifar-resnet18.")
@click.option("--arch-args", default=None, metavar="key=value,...",
              help="Keyword arguments of the architecture's builder, e.g. num_classes=10.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The weights, a .safetensors file (none for torchscript: the archive holds them).")
@click.option("--input-size", "input_size", required=True, help="The model's input: N (square) or HxW, e.g. 224.")
@click.option("--resize", type=click.Choice(["shorter-side", "squash"]), default="shorter-side", show_default=True,
              help="shorter-side: resize the shorter side, then centre crop (torchvision's Resize + CenterCrop); "
                   "squash: resize to the exact size.")
@click.option("--mean", default=None, help="Per-channel input mean, e.g. 0.485,0.456,0.406 (omit for [0, 1] inputs).")
@click.option("--std", default=None, help="Per-channel input std, e.g. 0.229,0.224,0.225.")
@click.option("--classes", "classes_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A text file of class names, one a line, in logit order.")
@click.option("--defended-by", default=None, help="The defence the model is meant to be used behind (haar, "
                                                   "daubechies, or a setting such as jpeg:quality=30).")
@click.option("--twin", default=None, help="The registered DWT-trained twin of this model.")
def add(name, architecture, arch_args, weights, input_size, resize, mean, std, classes_file, defended_by, twin):
    """Check a classifier (it is loaded once and must answer a batch at its input size) and register it as NAME.

    \b
    waveshield model add shop-resnet50 --arch torchvision:resnet50 --arch-args num_classes=12 \\
        --weights shop.safetensors --input-size 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \\
        --classes classes.txt
    """
    card = _registry().add(name, architecture=architecture, arch_args=_arch_args(arch_args), weights=weights,
                           input_size=_size(input_size), resize=resize, mean=_floats(mean, "--mean"),
                           std=_floats(std, "--std"), classes=_classes(classes_file), defended_by=defended_by,
                           twin=twin)
    click.echo(f"registered {card.name}: {card.architecture}, {card.size_text}, {len(card.classes)} classes "
               f"(card {card.weights.with_suffix('.json')})")


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def list_models(as_json):
    """List the models: the shipped ones, then yours."""
    registry = _registry()
    cards = [registry.card(name) for name in registry.names()]
    if as_json:
        click.echo(json.dumps([{"name": c.name, "shipped": c.shipped, "architecture": str(c.architecture),
                                "input_size": list(c.input_size), "classes": len(c.classes),
                                "defended_by": c.defended_by, "twin": c.twin, "twin_of": c.twin_of} for c in cards],
                               indent=2))
        return
    rows = [("name", "from", "architecture", "input", "classes", "defended by", "twin", "twin of")]
    rows += [(c.name, "shipped" if c.shipped else "yours", str(c.architecture), c.size_text, str(len(c.classes)),
              c.defended_by or "-", c.twin or "-", c.twin_of or "-") for c in cards]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo(f"(your models folder: {registry.models_dir})")


@model.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole card as stored.")
def show(name, as_json):
    """Print one model's card."""
    card = _registry().card(name)
    click.echo(json.dumps(card.facts, indent=2) if as_json else "\n".join(card.describe()))


@model.command("remove")
@click.argument("name")
def remove(name):
    """Delete one of your models (its card and weights); shipped models are read-only."""
    card = _registry().remove(name)
    click.echo(f"removed {card.name} ({card.architecture}, {card.size_text}) from {card.weights.parent}")
