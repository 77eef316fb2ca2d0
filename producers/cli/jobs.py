"""Commands that run and watch evaluation jobs: evaluate, demo, up, status, report."""

from __future__ import annotations

from pathlib import Path

import click

from producers.cli.options import COUNT
from producers.cli.progress import ProgressBar
from shared import settings as settings_mod
from shared.evaluation.plan import RUN_MODES


@click.command()
@click.option("--spec", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML, YAML or JSON spec: data, batch size, source model, attacks, configurations [default: the paper's].")
@click.option("--data", default=None, help="Image set: folder, zip, npz, cifar10:test or 'sample' [default: sample].")
@click.option("--limit", type=COUNT, default=None, help="Evaluate only the first N images (class-balanced).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: $WAVESHIELD_OUTPUT_DIR/evaluate].")
@click.option("--local", is_flag=True, help="Run the same plan in this process, without a broker.")
@click.option("--adaptive", is_flag=True, help="Add BIM and PGD crafted through the full Haar defence with BPDA "
              "(at the paper's eps and 8/255) to the paper's plan.")
@click.option("--mode", type=click.Choice(RUN_MODES), default=None,
              help="On the workers: each stage on its own queue (staged, the default), or a batch's stages in one "
                   "task on the fused queue, only counts through Redis (fused). See docs/scaling.md.")
@click.option("--model", default=None, help="Run the paper's grid on this model (shipped or registered with "
                                            "`waveshield model add`), at its input size and with its classes.")
@click.option("--twin", default=None, help="With --model: its DWT-trained twin [default: the card's].")
@click.option("--defence", default=None, help="With --model: the input defence [default: the card's, else haar].")
def evaluate(spec, data, limit, out, local, adaptive, mode, model, twin, defence):
    """Reproduce the experiment's accuracy grid: attacks x DWT defences x models.

    Runs on the workers behind REDIS_URL (or a running `waveshield up`); --local runs in this process.
    """
    from producers.jobs import evaluate as run

    with ProgressBar() as bar:
        report = run(spec=spec, data=data, limit=limit, out=out, local=local, adaptive=adaptive, mode=mode,
                     settings=settings_mod.load(), progress=bar, model=model, twin=twin, defence=defence)
    click.echo(f"report: {report}")


@click.command()
@click.option("--limit", type=COUNT, default=200, show_default=True, help="Images of the embedded sample to use.")
def demo(limit):
    """Start Redis and one worker per queue, evaluate the shipped models on the embedded sample, stop."""
    from producers.jobs import demo as run

    with ProgressBar() as bar:
        report = run(limit, settings_mod.load(), say=click.echo, progress=bar)
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
    from producers.jobs import resume as resume_job

    for line in resume_job(job, settings_mod.load()):
        click.echo(line)


@click.command()
@click.argument("job", metavar="JOB|REPORT.json")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: $WAVESHIELD_OUTPUT_DIR/JOB, or the report.json's own folder].")
@click.option("--examples", is_flag=True, help="An evaluation's report.json: draw examples.png again from its data "
              "and the models in WAVESHIELD_WEIGHTS_DIR (ten images, one per class).")
def report(job, out, examples):
    """Render a report again: JOB from the counts in Redis, or a report.json file (an evaluation's, with its
    charts and report.html, or fit-detector's, with detector.md and roc.png)."""
    from producers.jobs import render_report

    click.echo(f"report: {render_report(job, out, settings_mod.load(), examples=examples)}")
