"""The evaluation grid: attacks x defence configurations x models, counted per cell.

A plan is plain JSON-ready data: the data, the source model the attacks are
crafted on, the attacks with their parameters, and the defence
configurations (a model, and a named DWT defence or none). The stage
functions below are what every runner calls, in one process or on workers:
craft -> reconstruct -> classify -> count.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch

from shared import attacks as attack_registry
from shared import transforms
from shared.dwt import defences
from shared.dwt.transform import reconstruct
from shared.evaluation.plan import CLEAN, DEFAULT_BATCH_SIZE, RUN_MODES, STAGED, AttackSpec, Cell, ModelPath
from shared.images.image_set import iter_batches

#: Draws of a randomised defence whose outputs an adaptive attack averages at each step (EOT).
EOT_DRAWS = 8


def validate_plan(plan: dict) -> None:
    """Raise ValueError on an unknown attack, a bad parameter, or an empty plan."""
    for part, example in (("attacks", "[[attacks]] name = \"fgsm\", eps = 0.004"),
                          ("configurations", "[[configurations]] model = \"haar\", defence = \"haar\"")):
        if not plan.get(part):
            raise ValueError(f"the plan has no {part}: give at least one, e.g. {example}")
    for attack in plan["attacks"]:
        if attack["name"] != CLEAN:
            accepted = attack_registry.parameters(attack["name"])
            unknown = set(attack.get("params", {})) - set(accepted)
            if unknown:
                raise ValueError(f"{attack['name']}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                                 f"valid: {', '.join(sorted(accepted))}")
        through = attack.get("through")
        if through is not None and (not isinstance(through, dict) or set(through) - {"model", "defence"}
                                    or "model" not in through):
            raise ValueError(f"{attack['name']}: 'through' names a model and an optional defence, got {through!r}")
        _check_eps(attack)
    if int(plan.get("batch_size", 1)) < 1:
        raise ValueError("batch_size must be >= 1")
    if plan.get("mode", STAGED) not in RUN_MODES:
        raise ValueError(f"unknown mode {plan['mode']!r}; valid: {', '.join(RUN_MODES)}")
    threads = plan.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads is the number of CPU threads that craft the attacks (>= 1), got {threads!r}")


def _check_eps(attack: dict) -> None:
    """An attack's eps: a number in [0, 1] pixel units (a value over 1 is the 0-255 scale, said so)."""
    eps = attack.get("params", {}).get("eps")
    if eps is None:
        return
    if isinstance(eps, bool) or not isinstance(eps, int | float) or eps != eps:
        raise ValueError(f"{attack['name']}: eps is a number in [0, 1] pixel units, got {eps!r}")
    if eps < 0:
        raise ValueError(f"{attack['name']}: eps is a perturbation budget, at least 0, got {eps}")
    if eps > 1:
        raise ValueError(f"{AttackSpec.of(attack).id}: eps is in [0, 1] pixel units; {eps}/255 = {eps / 255:.4f} "
                         "on that scale")


def attack_model(plan: dict, attack: dict, get_model: Callable, defence_options: Callable):
    """The network an attack is crafted on: the plan's source model, or, for an
    adaptive attack (``through``), a configuration's model behind its defence.

    The gradient through the defence: the identity for the DWT (BPDA); an input
    transformation's own (the identity where it has none, see
    :mod:`shared.transforms`); for a randomised one, the average over
    :data:`EOT_DRAWS` draws (EOT).
    """
    through = attack.get("through")
    if not through:
        return get_model(plan["source_model"])
    model = get_model(through["model"])
    if not through.get("defence"):
        return model
    options = defence_options(through["defence"])
    if "transform" not in options:
        return attack_registry.BPDA(model, functools.partial(reconstruct, **options))
    if transforms.is_randomised(options):
        return attack_registry.EOT(model, functools.partial(transforms.apply, options=options), draws=EOT_DRAWS)
    return attack_registry.Defended(model, functools.partial(transforms.apply, options=options))


@contextlib.contextmanager
def cpu_threads(count: int | None, device: torch.device | str = "cpu"):
    """Run the block on ``count`` torch CPU threads (None, or a CUDA device: leave them as they are).

    oneDNN's gradient kernels split their sums by thread (seen on AVX2), so an
    attack crafted on 1 and on 2 threads differs in the last bits, and images on
    a decision boundary (DeepFool's) change class. A plan that names its threads
    crafts the same images on every runner.
    """
    if count is None or torch.device(device).type != "cpu" or count == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def deterministic_kernels() -> None:
    """Pick deterministic kernels where torch offers a choice (cuDNN), so runners agree cell for cell."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def craft(model, images: torch.Tensor, labels: torch.Tensor, attack: dict, *, threads: int | None = None) -> torch.Tensor:
    """Stage 1: the adversarial (or clean) images of one attack entry, on ``threads`` CPU threads if given."""
    if attack["name"] == CLEAN:
        return images
    with cpu_threads(threads, images.device):
        return attack_registry.get(attack["name"])(model, images, labels, **attack.get("params", {}))


def defend(images: torch.Tensor, defence_options: dict | None) -> torch.Tensor:
    """Stage 2: the defence's input transformation (DWT reconstruction, JPEG...), or the images unchanged."""
    return images if defence_options is None else defences.apply(images, defence_options)


@torch.no_grad()
def classify(model, images: torch.Tensor) -> torch.Tensor:
    """Stage 3: predicted class per image."""
    return model(images).argmax(1)


def evaluate_local(
    plan: dict,
    images: torch.Tensor,
    labels: torch.Tensor,
    get_model: Callable[[str], torch.nn.Module],
    defence_options: Callable[[str], dict],
    *,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[Cell]:
    """Run a plan in this process, batch by batch, and return its cells.

    Parameters
    ----------
    plan : dict
        See :func:`paper_plan`.
    images, labels : torch.Tensor
        Float NCHW images in [0, 1] and their classes.
    get_model : callable
        Model name -> network in eval mode on ``device``.
    defence_options : callable
        Defence name -> reconstruct() options.
    progress : callable, optional
        Called with the number of images finished after each batch.
    """
    validate_plan(plan)
    specs = [AttackSpec.of(a) for a in plan["attacks"]]
    paths = [ModelPath.of(c) for c in plan["configurations"]]
    cells = {(spec, path.id): Cell(spec, path) for spec in specs for path in paths}
    options = functools.lru_cache(maxsize=None)(defence_options)
    batch_size = int(plan.get("batch_size", DEFAULT_BATCH_SIZE))
    for batch in iter_batches(len(images), batch_size):
        x, y = images[batch].to(device), labels[batch].to(device)
        for attack, configuration, correct, total in evaluate_batch(plan, x, y, get_model, options):
            cell = cells[(specs[attack], configuration)]
            cell.correct += correct
            cell.total += total
        if progress:
            progress(len(x))
    return list(cells.values())


def evaluate_batch(plan: dict, x: torch.Tensor, y: torch.Tensor, get_model: Callable, defence_options: Callable
                   ) -> list[tuple[int, str, int, int]]:
    """One batch through every stage, in this process: ``(attack index, configuration id, correct, total)`` per cell.

    What ``--local`` runs batch by batch, and what a fused task runs for its batch.
    """
    out = []
    for index, attack in enumerate(plan["attacks"]):
        model = None if attack["name"] == CLEAN else attack_model(plan, attack, get_model, defence_options)
        adversarial = craft(model, x, y, attack, threads=plan.get("threads"))
        reconstructed = {}
        for config in plan["configurations"]:
            name = config.get("defence")
            if name not in reconstructed:
                reconstructed[name] = defend(adversarial, None if name is None else defence_options(name))
            predictions = classify(get_model(config["model"]), reconstructed[name])
            out.append((index, ModelPath.of(config).id, int((predictions == y).sum()), len(y)))
    return out
