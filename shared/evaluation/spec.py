"""Evaluation specs: a TOML, YAML or JSON file that becomes a plan.

    data = "../shared/datasets/cifar10-jpeg/test.zip"
    limit = 1000
    batch_size = 250
    source_model = "standard"

    [[attacks]]
    name = "bim"
    eps = [0.004, 0.007, 0.01]   # a list expands to one attack per value

    [[attacks]]
    name = "deepfool"

    [[attacks]]                  # adaptive: crafted through a defended model with BPDA
    name = "pgd"
    eps = 0.031373
    through = {model = "haar", defence = "haar"}

    [[attacks]]                  # any torchattacks attack by its class name
    name = "torchattacks:AutoAttack"
    eps = 0.031373

    [[configurations]]
    model = "haar"
    defence = "haar"             # "none" or absent: raw input

    [[configurations]]
    model = "standard"
    defence = "jpeg:quality=30"  # or bit-depth:bits=B, median:size=S, resize-pad:shrink=F

The clean row is always added first: every drop is measured against it.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path

from shared.evaluation.plan import CLEAN, DEFAULT_BATCH_SIZE
from shared.evaluation.run import validate_plan

TOP_KEYS = {"data", "limit", "batch_size", "source_model", "attacks", "configurations", "threads", "mode"}


def load_spec(path: str | Path) -> tuple[dict, dict]:
    """Read a spec file; return ``(plan, run)`` where run holds ``data`` and ``limit`` if given.

    Raises
    ------
    ValueError
        For an unreadable file, an unknown key, an unknown attack or a bad value (one line).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raise ValueError(f"spec {path.name}: unknown format; use .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"spec {path.name} does not parse: {exc}") from None
    except Exception as exc:  # yaml.YAMLError, without importing yaml for other formats
        if type(exc).__module__.startswith("yaml"):
            raise ValueError(f"spec {path.name} does not parse: {exc}") from None
        raise
    return spec_to_plan(raw, name=path.name)


def attack_name(name) -> str:
    """An attack's name as plans keep it: ours in lower case, ``torchattacks:ClassName`` with the class as written."""
    text = str(name).strip()
    prefix, sep, rest = text.partition(":")
    return f"{prefix.lower()}:{rest}" if sep else text.lower()


def spec_to_plan(raw: dict, *, name: str = "spec") -> tuple[dict, dict]:
    """Turn parsed spec data into a validated plan (see :func:`load_spec`)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{name}: the top level must be a table of keys")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(TOP_KEYS))}")
    attacks = [{"name": CLEAN, "params": {}}]
    for part in ("attacks", "configurations"):
        if not isinstance(raw.get(part, []), list) or not all(isinstance(e, dict) for e in raw.get(part, [])):
            raise ValueError(f"{name}: {part} is a list of tables ([[{part}]] in TOML), got {raw[part]!r}")
    for entry in raw.get("attacks", []):
        if "name" not in entry:
            raise ValueError(f"{name}: an attack has no name, got {entry}")
        params = {k: v for k, v in entry.items() if k not in ("name", "through")}
        lists = {k: v for k, v in params.items() if isinstance(v, list)}
        for values in itertools.product(*lists.values()) if lists else [()]:
            attack = {"name": attack_name(entry["name"]), "params": {**params, **dict(zip(lists, values))}}
            if entry.get("through"):
                attack["through"] = entry["through"]
            attacks.append(attack)
    configurations = []
    for entry in raw.get("configurations", []):
        if set(entry) - {"model", "defence"} or "model" not in entry:
            raise ValueError(f"{name}: a configuration has a 'model' and an optional 'defence', got {entry}")
        defence = entry.get("defence")
        configurations.append({"model": entry["model"], "defence": None if defence in (None, "none", "raw") else defence})
    for count in ("limit", "batch_size"):
        value = raw.get(count)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}: {count} is a number of images (at least 1), got {value!r}")
    if "data" in raw and not isinstance(raw["data"], str):
        raise ValueError(f"{name}: data is a path or a source name such as 'sample', got {raw['data']!r}")
    plan = {"source_model": raw.get("source_model", "standard"), "attacks": attacks, "configurations": configurations,
            "batch_size": raw.get("batch_size", DEFAULT_BATCH_SIZE)}
    for optional in ("threads", "mode"):
        if optional in raw:
            plan[optional] = raw[optional]
    if len(attacks) == 1 and not raw.get("attacks"):
        raise ValueError(f"{name}: no attacks given: add at least one, e.g. [[attacks]] name = \"fgsm\", eps = 0.004")
    try:
        validate_plan(plan)
    except ValueError as exc:  # which file said it, for a user with several specs
        raise ValueError(f"{name}: {exc}") from None
    run = {k: raw[k] for k in ("data", "limit") if k in raw}
    return plan, run
