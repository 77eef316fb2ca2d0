"""`waveshield resume` and `waveshield report`: a stalled job sent on again, a report rendered again."""

from __future__ import annotations

from pathlib import Path

from producers.stack import connect
from shared.settings import Settings

#: Each kind of job (its plan's ``kind``; an evaluation's plan has none), as a message names it, and where
#: what it made is fetched.
_KINDS = {"evaluate": ("an evaluation job", "`waveshield report {job}`"),
          "screen": ("a screening job", "`waveshield results {job}`"),
          "corpus": ("a corpus job", "its shards are in the collector's WAVESHIELD_OUTPUT_DIR "
                                     "(`waveshield status {job}`)")}


def require_kind(job: str, plan: dict, kind: str) -> None:
    """Refuse a command meant for jobs of ``kind`` on a job of another kind, naming where to look instead.

    Raises
    ------
    ValueError
        If ``plan`` (``job``'s) is of another kind.
    """
    found = plan.get("kind", "evaluate")
    if found != kind:
        what, where = _KINDS.get(found, (f"a {found} job", "`waveshield status {job}`"))
        raise ValueError(f"job {job} is {what}, not {_KINDS[kind][0]}: {where.format(job=job)}")


def resume(job: str, settings: Settings) -> list[str]:
    """Re-send a stalled job's unfinished units; restart its intake when its producer is gone; say what happened.

    Raises
    ------
    shared.pipeline.meta.JobNotFound
        If the job is not in Redis (a user's mistake, as for ``status``, ``report`` and ``results``).
    """
    from producers.screening.ingest import restart_intake
    from producers.submit import redrive
    from shared.pipeline import Pipeline
    from workers.app import app

    url, client = connect(settings.redis_url)
    pipe = Pipeline(client)
    pipe.counts(job)  # a job id Redis never held is the user's mistake, not a job lost while it ran
    in_flight = pipe.in_flight()
    messages = redrive(pipe, app, job)
    lines = [f"job {job}: {len(messages)} unfinished unit(s) re-sent"
             + (f"; {in_flight} message(s) were still in flight, and their work may run twice" if in_flight and
                messages else "") + ("; follow it with: waveshield status " + job if messages else "")]
    intake = restart_intake(client, job, settings, url)
    if intake:
        lines.append(f"job {job}: {intake}")
    return lines


def render_report(job: str, out: Path | None, settings: Settings, *, examples: bool = False) -> Path:
    """The report of ``job`` (from its counts in Redis) or of a ``report.json`` file, written again; its path.

    A ``report.json`` is an evaluation's (``report.md``, the charts,
    ``report.html``) or, by its ``kind``, a detector's (``detector.md``,
    ``roc.png``). ``examples``: draw an evaluation's ``examples.png`` again
    from the report's data and the models in the weights directory (without
    it, the sheet of the original run goes along as it is).

    Raises
    ------
    shared.pipeline.meta.JobNotFound
        If the job is not in Redis.
    ValueError
        If it is not an evaluation job, or ``examples`` meets a job or a detector's report.
    """
    import shutil

    from shared.evaluation import report as report_mod  # matplotlib and the charts: only for this command

    if job.endswith(".json"):
        source, out = Path(job).parent, out or Path(job).parent
        if _is_detector_report(job):
            if examples:
                raise ValueError(f"{job} is a detector's report: --examples redraws an evaluation's sheet")
            from producers.detector.report import read_report, write_report

            return write_report(out, **read_report(job))
        cells, plan, meta = report_mod.read(job)
        out.mkdir(parents=True, exist_ok=True)
        if examples:
            _redraw_examples(plan, meta, settings, out / report_mod.EXAMPLES)
        elif (source / report_mod.EXAMPLES).is_file() and source.resolve() != out.resolve():
            shutil.copyfile(source / report_mod.EXAMPLES, out / report_mod.EXAMPLES)  # the original run's sheet
        return report_mod.write(cells, out, plan=plan, meta=meta, notes=meta.get("notes", []),
                                examples=examples or (source / report_mod.EXAMPLES).is_file())
    if examples:
        raise ValueError("--examples needs a report.json (a job's images are not kept in Redis)")
    from shared.pipeline import Pipeline

    pipe = Pipeline(connect(settings.redis_url)[1])
    plan, state = pipe.plan(job), pipe.progress(job)
    require_kind(job, plan, "evaluate")
    cells, (data, unreadable) = pipe.cells(job), pipe.source(job)
    meta = {"data": data, "images": state["images"], "unreadable": unreadable, "seconds": state["seconds"],
            "job": job, "runner": f"Celery workers, {plan.get('mode', 'staged')} (job {job})"}
    # The job's images are not kept in Redis, so no examples sheet: the report does not name one.
    notes = report_mod.run_notes(meta, plan) + [f"job {job}: {state['status']}, {state['done']}/{state['expected']} cells"]
    return report_mod.write(cells, out or settings.output_dir / job, plan=plan, meta=meta, notes=notes)


def _is_detector_report(path: str) -> bool:
    """Whether ``path`` holds a detector's report.json (any other file is read as an evaluation's)."""
    import json

    from producers.detector.report import is_report

    try:
        return is_report(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return False  # the evaluation's reader says what is wrong with it


def _redraw_examples(plan: dict, meta: dict, settings: Settings, path: Path) -> Path:
    """The examples sheet of an evaluation report drawn again: a few images of its data, the weights directory's models.

    Raises
    ------
    ValueError
        If the report does not name its data, or the data cannot be read.
    """
    from producers.local import available_plan, example_sheet, plan_models
    from shared.images.load import load_images
    from shared.models.store import ModelStore

    if not meta.get("data"):
        raise ValueError("the report does not name its data: its examples cannot be drawn again")
    plan, _ = available_plan(plan, settings.weights_dir)
    size, classes = ModelStore(settings.weights_dir, models_dir=settings.models_dir).inputs(plan_models(plan),
                                                                                            "the examples")
    image_set = load_images(meta["data"], size=size, classes=list(classes), limit=len(classes),
                            workers=settings.decode_workers)  # one image per class
    if image_set.labels is None or not len(image_set):
        raise ValueError(f"{meta['data']}: the examples need labelled images")
    return example_sheet(plan, image_set, settings, path)


def evaluate(*, spec: Path | None, data: str | None, limit: int | None, out: Path | None, local: bool,
             adaptive: bool, mode: str | None, settings: Settings, progress=lambda done, total, what: None,
             model: str | None = None, twin: str | None = None, defence: str | None = None) -> Path:
    """`waveshield evaluate`: the plan of ``spec`` (default: the paper's), on the workers or here; the report's path.

    ``adaptive`` adds the attacks through the Haar defence to the paper's
    plan; ``mode`` runs it staged or fused; ``spec``'s ``data`` and
    ``limit`` apply where ``data`` and ``limit`` are not given. ``model``
    runs the paper's grid on that model instead (:func:`model_plan`): raw,
    behind ``defence`` (default: its card's, else haar), and its ``twin``
    (default: its card's, else one fine-tuned from it behind that defence)
    behind the same defence.

    Raises
    ------
    ValueError
        If ``adaptive`` or ``model`` meets a spec, ``twin`` or ``defence`` comes without ``model``, or no Redis
        is found and ``local`` is not set.
    ConnectionError
        If REDIS_URL is set and does not answer (and ``local`` is not set).
    """
    from producers.local import run_evaluation
    from producers.stack import require_redis_url
    from shared.evaluation.plan import paper_plan
    from shared.evaluation.spec import load_spec

    if model is None and (twin or defence):
        raise ValueError("--twin and --defence go with --model (a spec names its configurations itself)")
    if model is not None and spec:
        raise ValueError("--model runs the paper's grid on that model; a spec names its models itself")
    plan, run = load_spec(spec) if spec else (None, {})
    if model is not None:
        plan = plan_for_model(model, twin, defence, settings, adaptive=adaptive)
    elif adaptive:
        if spec:
            raise ValueError("--adaptive extends the built-in plan; in a spec, give attacks a 'through' instead")
        plan = paper_plan(adaptive=True)
    if mode:
        plan = {**(plan or paper_plan()), "mode": mode}
    redis_url = None if local else require_redis_url(settings.redis_url, or_local=True)
    return run_evaluation(data=data or run.get("data", "sample"), limit=run.get("limit") if limit is None else limit,
                          out=out or settings.output_dir / "evaluate", settings=settings, redis_url=redis_url,
                          plan=plan, progress=progress, strict=spec is not None)


def plan_for_model(model: str, twin: str | None, defence: str | None, settings: Settings, *,
                   adaptive: bool = False) -> dict:
    """The paper's grid on ``model``, its twin and defence from the options, else from its card.

    Raises
    ------
    ValueError
        If a model is unknown, the twin reads other images than the model, or the defence is unknown (one line).
    """
    from shared.dwt import defences
    from shared.evaluation.plan import model_plan
    from shared.models.registry import ModelRegistry
    from shared.models.store import ModelStore

    registry = ModelRegistry(settings.weights_dir, settings.models_dir)
    card = registry.card(model)
    defence = defence or card.defended_by or "haar"
    defences.get(defence, settings.weights_dir)  # an unknown defence: one line listing the valid ones
    twin = twin or registry.twin_for(model, defence)  # the card's twin, or one fine-tuned from it (train --from)
    if twin:
        ModelStore(settings.weights_dir, models_dir=settings.models_dir).inputs([model, twin], "--twin")
    return model_plan(model, defence, twin, adaptive=adaptive)


def demo(limit: int, settings: Settings, *, say=lambda line: None, progress=lambda done, total, what: None) -> Path:
    """`waveshield demo`: Redis and one worker per queue, the shipped models on the embedded sample; the report's path.

    Raises
    ------
    shared.models.store.MissingWeights
        Before anything starts, when a model's weights are missing (with the command that trains them).
    """
    from producers.local import available_plan, run_evaluation
    from producers.stack import Stack, resolve_redis_url
    from shared.evaluation.plan import paper_plan
    from shared.pipeline import QUEUES

    available_plan(paper_plan(), settings.weights_dir)  # fail fast, with the train command, when weights are missing
    logs = settings.output_dir / "demo" / "logs"
    say(f"starting Redis and one worker per queue ({', '.join(QUEUES)}); their logs: {logs}")
    with Stack(resolve_redis_url(settings.redis_url), log_dir=logs) as stack:
        return run_evaluation(data="sample", limit=limit, out=settings.output_dir / "demo", settings=settings,
                              redis_url=stack.redis_url, progress=progress)
