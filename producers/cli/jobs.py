"""Commands that run and watch evaluation jobs: evaluate, demo, up, status, report."""

from __future__ import annotations

from pathlib import Path

import click

from producers.cli.progress import ProgressBar
from shared import settings as settings_mod


@click.command()
@click.option("--spec", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML, YAML or JSON spec: data, batch size, source model, attacks, configurations [default: the paper's].")
@click.option("--data", default=None, help="Image set: folder, zip, npz, cifar10:test or 'sample' [default: sample].")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N images (class-balanced).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: $WAVESHIELD_OUTPUT_DIR/evaluate].")
@click.option("--local", is_flag=True, help="Run the same plan in this process, without a broker.")
@click.option("--adaptive", is_flag=True, help="Add BIM and PGD crafted through the full Haar defence with BPDA "
              "(at the paper's eps and 8/255) to the paper's plan.")
@click.option("--mode", type=click.Choice(["staged", "fused"]), default=None,
              help="On the workers: each stage on its own queue (staged, the default), or a batch's stages in one "
                   "task on the fused queue, only counts through Redis (fused). See docs/scaling.md.")
def evaluate(spec, data, limit, out, local, adaptive, mode):
    """Reproduce the experiment's accuracy grid: attacks x DWT defences x models.

    Runs on the workers behind REDIS_URL (or a running `waveshield up`); --local runs in this process.
    """
    from producers.local import run_evaluation
    from producers.stack import resolve_redis_url

    from shared.evaluation import paper_plan
    from shared.spec import load_spec

    cfg = settings_mod.load()
    plan, run = load_spec(spec) if spec else (None, {})
    if adaptive:
        if spec:
            raise ValueError("--adaptive extends the built-in plan; in a spec, give attacks a 'through' instead")
        plan = paper_plan(adaptive=True)
    if mode:
        plan = {**(plan or paper_plan()), "mode": mode}
    redis_url = None if local else resolve_redis_url(cfg.redis_url)
    if not local and redis_url is None:
        raise ValueError("no Redis: start `waveshield up` (or set REDIS_URL to one with workers), or pass --local")
    with ProgressBar() as bar:
        report = run_evaluation(data=data or run.get("data", "sample"), limit=limit or run.get("limit"),
                                out=out or cfg.output_dir / "evaluate", settings=cfg, redis_url=redis_url, plan=plan,
                                progress=bar)
    click.echo(f"report: {report}")


@click.command()
@click.option("--limit", type=int, default=200, show_default=True, help="Images of the embedded sample to use.")
def demo(limit):
    """Start Redis and one worker per queue, evaluate the shipped models on the embedded sample, stop."""
    from producers.local import available_plan, run_evaluation
    from producers.stack import Stack, resolve_redis_url
    from shared.evaluation import paper_plan
    from shared.pipeline import QUEUES

    cfg = settings_mod.load()
    available_plan(paper_plan(), cfg.weights_dir)  # fail fast, with the train command, when weights are missing
    logs = cfg.output_dir / "demo" / "logs"
    click.echo(f"starting Redis and one worker per queue ({', '.join(QUEUES)}); their logs: {logs}")
    with Stack(resolve_redis_url(cfg.redis_url), log_dir=logs) as stack, ProgressBar() as bar:
        report = run_evaluation(data="sample", limit=limit, out=cfg.output_dir / "demo", settings=cfg,
                                redis_url=stack.redis_url, progress=bar)
    click.echo(report.read_text())
    click.echo(f"report: {report}")


@click.command()
@click.option("--flower", is_flag=True, help="Also run Flower on 127.0.0.1:5555 (needs FLOWER_BASIC_AUTH=user:password).")
def up(flower):
    """Run Redis (REDIS_URL, or the bundled server) and one worker per queue until Ctrl-C."""
    from producers.stack import serve

    serve(settings_mod.load(), flower=flower, say=click.echo)


@click.command()
@click.argument("job", required=False)
def status(job):
    """Queue lengths, workers, and job progress, read from Redis."""
    from producers.status import status_lines

    for line in status_lines(settings_mod.load().redis_url, job):
        click.echo(line)


@click.command()
@click.argument("job")
def resume(job):
    """Re-send a stalled job's unfinished work (messages a Redis crash lost); finished stages are skipped.

    A screening job whose producer is gone before it read all its inputs gets a new producer in the
    background, which reads on from the first chunk not yet counted.
    """
    from producers.ingest import restart_intake
    from producers.stack import connect
    from producers.submit import redrive
    from shared.pipeline import Pipeline
    from workers.app import app

    cfg = settings_mod.load()
    url, client = connect(cfg.redis_url)
    pipe = Pipeline(client)
    in_flight = pipe.in_flight()
    messages = redrive(pipe, app, job)
    click.echo(f"job {job}: {len(messages)} unfinished unit(s) re-sent"
               + (f"; {in_flight} message(s) were still in flight, and their work may run twice" if in_flight and
                  messages else "") + ("; follow it with: waveshield status " + job if messages else ""))
    intake = restart_intake(client, job, cfg, url)
    if intake:
        click.echo(f"job {job}: {intake}")


@click.command()
@click.argument("job")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: $WAVESHIELD_OUTPUT_DIR/JOB, or the report.json's own folder].")
def report(job, out):
    """Render a report again: JOB from the counts in Redis, or a report.json file."""
    from shared import report as report_mod

    if job.endswith(".json"):
        cells, plan, meta = report_mod.read(job)
        path = report_mod.write(cells, out or Path(job).parent, plan=plan, meta=meta, notes=meta.get("notes", []))
        click.echo(f"report: {path}")
        return
    from producers.stack import connect
    from shared.pipeline import Pipeline

    cfg = settings_mod.load()
    pipe = Pipeline(connect(cfg.redis_url)[1])
    try:
        cells, plan, state = pipe.cells(job), pipe.plan(job), pipe.progress(job)
    except KeyError:
        raise ValueError(f"no job {job!r} in Redis") from None
    path = report_mod.write(cells, out or cfg.output_dir / job, plan=plan, meta=state,
                            notes=[f"job {job}: {state['status']}, {state['done']}/{state['expected']} cells"])
    click.echo(f"report: {path}")
