"""Run an evaluation plan, in this process or on the workers, and write its report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from shared.dwt import defences
from shared.evaluation import report
from shared.evaluation.plan import ModelPath, paper_plan
from shared.evaluation.run import deterministic_kernels, evaluate_local
from shared.images.load import load_images
from shared.models.store import MissingWeights, ModelStore, train_command
from shared.settings import Settings, resolve_device

log = logging.getLogger("waveshield")


def plan_models(plan: dict) -> list[str]:
    """Every model a plan names: its source, those attacks are crafted through, and its configurations'."""
    return list(dict.fromkeys([plan["source_model"], *(a["through"]["model"] for a in plan["attacks"] if a.get("through")),
                               *(c["model"] for c in plan["configurations"])]))


def available_plan(plan: dict, weights_dir: Path, *, strict: bool = False) -> tuple[dict, list[str]]:
    """The plan without the configurations and adaptive attacks whose model has no weights, and notes saying so.

    Parameters
    ----------
    strict : bool
        A plan the user wrote (a spec): a model without weights is a mistake
        (a misspelled name, the wrong folder), never skipped.

    Raises
    ------
    MissingWeights
        If the source model has no weights, nor any configuration, or (``strict``) any model named.
    """
    store = ModelStore(weights_dir)
    named = plan_models(plan)
    if strict and (absent := list(dict.fromkeys(m for m in named if not store.has(m)))):
        raise MissingWeights("; ".join(f"model {m!r}: {store.missing(m)}" for m in absent))
    store.require(plan["source_model"], "the source model", any_input=True)
    notes, kept, attacks = [], [], []
    for attack in plan["attacks"]:
        through = attack.get("through")
        if through and not store.has(through["model"]):
            notes.append(f"skipped adaptive {attack['name']} through {through['model']}: no weights")
        else:
            attacks.append(attack)
    for config in plan["configurations"]:
        if store.has(config["model"]):
            kept.append(config)
        else:
            notes.append(f"skipped {config['model']}+{config.get('defence') or 'raw'}: no weights "
                         f"{config['model']}.safetensors (train them: {train_command(config['model'])})")
    if not kept:
        raise MissingWeights("no configuration of the plan has its weights: "
                             + "; ".join(f"model {m!r}: {store.missing(m)}"
                                         for m in dict.fromkeys(c["model"] for c in plan["configurations"])))
    return {**plan, "attacks": attacks, "configurations": kept}, notes


def run_evaluation(*, data: str, limit: int | None, out: Path, settings: Settings, plan: dict | None = None,
                   redis_url: str | None = None, progress=lambda done, total, what: None, strict: bool = False) -> Path:
    """Evaluate ``plan`` (default: the paper's) on ``data`` and write the report; return its path.

    With ``redis_url`` the plan runs on the workers behind that Redis; without, in this process.
    ``strict``: every model the plan names must have weights (a plan the user
    wrote); otherwise configurations without weights are skipped, with a warning.
    ``progress(done, total, what)`` hears how far it got: images evaluated
    here (``what``: ``evaluating``), or cells a job finished (``job ID``).
    """
    plan, notes = available_plan(plan or paper_plan(), settings.weights_dir, strict=strict)  # before any image is read
    for note in notes:
        log.warning("%s", note)
    # The images the plan's models read: their input size, labelled with their classes (one line if they differ).
    size, classes = ModelStore(settings.weights_dir, models_dir=settings.models_dir).inputs(
        plan_models(plan), "evaluation")
    image_set = load_images(data, size=size, classes=list(classes), limit=limit, workers=settings.decode_workers)
    if image_set.labels is None or len(image_set) == 0:
        raise ValueError(f"{data}: evaluation needs labelled images (class sub-folders, a path,label list, or 'y' in "
                         "an npz)")
    if image_set.labels.max() >= len(classes) or image_set.labels.min() < 0:
        raise ValueError(f"{data}: labels run from {image_set.labels.min()} to {image_set.labels.max()}, and the "
                         f"models have {len(classes)} classes")
    for config in plan["configurations"]:  # an unknown defence fails here, not on a worker
        if config.get("defence"):
            defences.get(config["defence"], settings.weights_dir)
    started = time.perf_counter()
    traffic = None
    if redis_url:
        cells, job, traffic = _on_workers(plan, image_set, settings, redis_url, progress, data)
        runner = f"Celery workers, {plan.get('mode', 'staged')} (job {job})"
    else:
        cells, job = _in_process(plan, image_set, settings, progress), None
        runner = "one process (--local)"
    meta = {"data": str(data), "images": len(image_set), "unreadable": len(image_set.errors),
            "seconds": time.perf_counter() - started, "job": job, "runner": runner}
    notes = report.run_notes(meta, plan) + notes
    if traffic:
        meta["redis_traffic"] = traffic
        notes.append(f"Redis traffic: {traffic['redis_kib_per_image']:.1f} KiB per image in all "
                     f"({traffic['blob_kib_per_image']:.1f} KiB of blobs)")
    out.mkdir(parents=True, exist_ok=True)
    example_sheet(plan, image_set, settings, out / report.EXAMPLES)
    return report.write(cells, out, plan=plan, meta=meta, notes=notes, examples=True)


def example_sheet(plan: dict, image_set, settings: Settings, path: Path, count: int = 10) -> Path:
    """Draw :func:`example_figure` into ``path`` (:data:`shared.evaluation.report.EXAMPLES`); return it."""
    from shared.reports import sheets

    return sheets.save(example_figure(plan, image_set, settings, count), path)


def example_figure(plan: dict, image_set, settings: Settings, count: int = 10):
    """The examples sheet's Figure: rows of the same ``count`` images, one per class in turn.

    Rows: clean, attacked (the plan's strongest transfer attack with an eps,
    crafted on the source model), reconstructed for the source model (the
    first configuration giving it a DWT input), and the full defence (the
    first DWT-trained model with its DWT input); each image with its true
    label and that row's prediction. A row whose configuration the plan
    lacks is left out.
    """
    from shared.evaluation.plan import AttackSpec
    from shared.evaluation.run import craft, defend
    from shared.reports import sheets

    device = resolve_device(settings.device)
    store = ModelStore(settings.weights_dir, device, settings.models_dir)
    source_name = plan["source_model"]
    source = store.get(source_name)
    picked = sheets.across_classes(image_set.labels, count)
    x = image_set.to_tensor()[picked].to(device)
    truth = image_set.labels[picked].tolist()
    attack = next((a for a in reversed(plan["attacks"]) if a.get("params", {}).get("eps") and not a.get("through")),
                  plan["attacks"][-1])
    adversarial = craft(source, x, torch.tensor(truth, device=device), attack)
    configs = [ModelPath.of(c) for c in plan["configurations"]]
    rebuilt = next((c for c in configs if c.defence and c.model == source_name), None)
    full = next((c for c in configs if c.defence and c.model != source_name), None)
    classes = image_set.classes

    @torch.no_grad()
    def row(title: str, images: torch.Tensor, model) -> tuple:
        predictions = model(images).argmax(1).tolist()
        pixels = images.permute(0, 2, 3, 1).cpu().numpy()
        return title, sheets.prediction_tiles(pixels, truth, predictions, classes)

    source_id = ModelPath(source_name).id
    rows = [row(f"clean, on {source_id}", x, source),
            # Crafted here on the source model, whatever path the plan's entry names: labelled without its "via".
            row(f"attacked: {AttackSpec.named(attack['name'], **attack.get('params', {})).label}, crafted on "
                f"{source_name}; on {source_id}", adversarial,
                source)]
    for title, config in (("reconstructed ({} DWT input), on the undefended model: {}", rebuilt),
                          ("full defence (DWT-trained model, {} DWT input): {}", full)):
        if config:
            rec = defend(adversarial, defences.get(config.defence, settings.weights_dir))
            rows.append(row(title.format(config.defence, config.id), rec, store.get(config.model)))
    return sheets.image_sheet(rows)


def _in_process(plan, image_set, settings, progress):
    device = resolve_device(settings.device)
    deterministic_kernels()
    if settings.torch_threads:  # as a worker with the same setting computes
        torch.set_num_threads(settings.torch_threads)
    x, y = image_set.to_tensor(), torch.from_numpy(image_set.labels)
    done = {"images": 0}

    def advance(n):
        done["images"] += n
        progress(done["images"], len(x), "evaluating")

    return evaluate_local(plan, x, y, ModelStore(settings.weights_dir, device, settings.models_dir).get,
                          lambda name: defences.get(name, settings.weights_dir), device=device, progress=advance)


def _on_workers(plan, image_set, settings, redis_url, progress, data):
    from producers import submit
    from shared.pipeline import Pipeline
    from shared.store.client import connect
    from workers.app import app, use_broker

    use_broker(redis_url)
    client = connect(redis_url, settings.redis_retry_s)
    before = client.info("stats")
    job = submit.submit(client, app, plan, image_set, settings, data=str(data))
    state = submit.wait(client, job, lambda state: progress(state["done"], state["expected"], f"job {job}"),
                        stall_timeout_s=settings.stall_timeout_s, app=app, redrive_after_s=settings.redrive_after_s)
    after = client.info("stats")
    if state["errors"]:
        raise ValueError(f"job {job} finished with {len(state['errors'])} error(s): {state['errors'][0]['reason']}")
    pipe = Pipeline(client)
    return pipe.cells(job), job, traffic_summary(pipe.traffic(job), len(image_set), before, after)


def traffic_summary(per_stage: dict, images: int, info_before: dict, info_after: dict) -> dict:
    """KiB per image through Redis: blobs per stage (written + read), and all bytes the server moved.

    The server's count (``total_net_*_bytes`` of INFO) includes Celery's messages and any other
    client of that Redis during the run.
    """
    kib = 1024 * max(images, 1)
    stages = {stage: round((v["in"] + v["out"]) / kib, 2) for stage, v in sorted(per_stage.items())}
    moved = sum(info_after[f"total_net_{d}_bytes"] - info_before[f"total_net_{d}_bytes"] for d in ("input", "output"))
    return {"blob_kib_per_image_by_stage": stages, "blob_kib_per_image": round(sum(stages.values()), 2),
            "redis_kib_per_image": round(moved / kib, 2)}
