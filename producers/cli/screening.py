"""Commands that screen images and build adversarial corpora: screen, results, corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shared import settings as settings_mod


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--watch", "watch_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Keep running: screen files as they land in this folder (Ctrl-C stops).")
@click.option("--max-wait", default=2.0, show_default=True, help="With --watch: seconds before a partial batch is closed.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where records.jsonl, records.csv and summary.json go [default: $WAVESHIELD_OUTPUT_DIR/screen].")
@click.option("--wait/--no-wait", default=True, show_default=True, help="--no-wait: return at once; fetch with `results`.")
@click.option("--local", is_flag=True, help="Screen in this process, without a broker.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--mode", type=click.Choice(["staged", "fused"]), default="staged", show_default=True,
              help="On the workers: each stage on its own queue, or a batch's stages in one "
                   "task on the fused queue, only records through Redis (fused).")
@click.option("--source", default=None, metavar="NAME",
              help="Flag with the calibration `waveshield calibrate --source NAME` made for this source "
                   "[default: the calibration the score was fitted with].")
def screen(paths, watch_dir, max_wait, out, wait, local, batch_size, mode, source):
    """Screen images (folders, zips, npz files, image files, globs) for adversarial manipulation.

    Each item gets a label and confidence (DWT reconstruction + the defended model), the
    standard model's raw label, a suspicion score and a flag; an unreadable item gets its reason.
    """
    from producers import screen as screen_mod
    from shared.data import load_many

    cfg = settings_mod.load()
    out = out or cfg.output_dir / "screen"
    chosen = screen_mod.screening_settings(cfg, source)  # an unknown --source fails before any image is read
    if watch_dir is not None:
        return _watch(watch_dir, out, cfg, local, batch_size, max_wait, mode, source)
    if not paths:
        raise ValueError("give PATH... to screen, or --watch DIR")
    image_set = load_many(paths)
    if local:
        records = screen_mod.screen_local(image_set, cfg, batch_size, chosen=chosen)
        _report(screen_mod.write_outputs(records, out, chosen["calibration"]), out)
        return
    from producers.stack import connect
    from producers.submit import wait as wait_job
    from shared.pipeline import Pipeline
    from workers.app import app

    _, client = connect(cfg.redis_url, or_local=True)
    job = screen_mod.submit_screen(client, app, image_set, cfg, batch_size, mode=mode, source=source)
    if not wait:
        click.echo(f"job {job} submitted ({len(image_set)} images, {len(image_set.errors)} unreadable); "
                   f"fetch it with: waveshield results {job} --out DIR")
        return
    with click.progressbar(length=1000, label=f"job {job}", file=sys.stderr) as bar:
        wait_job(client, job, lambda st: bar.update(int(1000 * st["done"] / max(st["expected"], 1)) - bar.pos),
                 stall_timeout_s=cfg.stall_timeout_s, app=app, redrive_after_s=cfg.redrive_after_s)
    pipe = Pipeline(client)
    _report(screen_mod.write_outputs(pipe.screen_records(job), out, pipe.plan(job).get("calibration")), out)


def _report(summary: dict, out: Path, note: str = "") -> None:
    """Print a screening summary, the source check's warning first when it holds."""
    check = summary.get("source_check") or {}
    if check.get("mismatch"):
        click.echo(f"warning: {check['message']}", err=True)
    click.echo(f"{json.dumps(summary)}{note}\nrecords: {out / 'records.jsonl'}")


@click.command()
@click.argument("job")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory [default: $WAVESHIELD_OUTPUT_DIR/JOB].")
def results(job, out):
    """Fetch a screening job's records (as far as it has got) into JSONL, CSV and a summary."""
    from producers import screen as screen_mod
    from producers.stack import connect
    from shared.pipeline import Pipeline

    cfg = settings_mod.load()
    pipe = Pipeline(connect(cfg.redis_url)[1])
    try:
        state = pipe.progress(job)
    except KeyError:
        raise ValueError(f"no job {job!r} in Redis") from None
    out = out or cfg.output_dir / job
    summary = screen_mod.write_outputs(pipe.screen_records(job), out, pipe.plan(job).get("calibration"))
    note = "" if state["status"] == "complete" else f" (partial: {state['done']}/{state['expected']} batches done)"
    _report(summary, out, note)


@click.command()
@click.option("--data", required=True, help="Labelled image set to attack.")
@click.option("--attacks", "attack_list", multiple=True,
              help="NAME[:key=value,...], repeatable, e.g. --attacks bim:eps=0.007 [default: the paper's seven].")
@click.option("--out", "name", required=True, help="Corpus folder inside the collector's WAVESHIELD_OUTPUT_DIR.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--shard-size", default=500, show_default=True, help="Images per shard.")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow the job until the corpus is written.")
def corpus(data, attack_list, name, dtype, shard_size, seed, limit, wait):
    """Generate an adversarial corpus in the background; rerun the same command to finish missing shards."""
    from producers.corpus import PAPER_ATTACKS, submit_corpus
    from producers.stack import connect
    from producers.submit import wait as wait_job
    from workers.app import app

    cfg = settings_mod.load()
    _, client = connect(cfg.redis_url)
    job, queued, done = submit_corpus(client, app, data=data, attacks=list(attack_list) or PAPER_ATTACKS, name=name,
                                      settings=cfg, dtype=dtype, shard_size=shard_size, seed=seed, limit=limit)
    click.echo(f"job {job}: {queued} shard(s) queued, {done} already written; output: {name}/ in the collector's "
               "WAVESHIELD_OUTPUT_DIR")
    if wait and queued:
        with click.progressbar(length=queued, label=f"job {job}", file=sys.stderr) as bar:
            wait_job(client, job, lambda st: bar.update(st["done"] - bar.pos), stall_timeout_s=cfg.stall_timeout_s,
                     app=app, redrive_after_s=cfg.redrive_after_s)
        click.echo("complete: manifest.jsonl and preview.png written")


def _watch(directory, out, cfg, local, batch_size, max_wait, mode="staged", source=None):
    """Screen files landing in ``directory`` until Ctrl-C or SIGTERM."""
    import signal as signal_mod
    from collections import deque

    from producers import screen as screen_mod
    from producers.watch import watch
    from shared.screening import source_check

    chosen = screen_mod.screening_settings(cfg, source)
    recent = deque(maxlen=1000)  # the source check reads the last 1,000 records
    warned = {"now": False}

    def check(found):
        recent.extend(found)
        result = source_check(list(recent), chosen["calibration"])
        if result["mismatch"] and not warned["now"]:
            click.echo(f"warning (last {len(recent)} images): {result['message']}", err=True)
        warned["now"] = result["mismatch"]
        return found

    if local:
        def screen_batch(image_set):
            return check(screen_mod.screen_local(image_set, cfg, batch_size, chosen=chosen))
    else:
        from producers.stack import connect
        from producers.submit import wait as wait_job
        from shared.pipeline import Pipeline
        from workers.app import app

        _, client = connect(cfg.redis_url, or_local=True)

        def screen_batch(image_set):
            job = screen_mod.submit_screen(client, app, image_set, cfg, batch_size, mode=mode, source=source)
            wait_job(client, job, poll_s=0.1, stall_timeout_s=cfg.stall_timeout_s, app=app,
                     redrive_after_s=cfg.redrive_after_s)
            return check(Pipeline(client).screen_records(job))

    stop = {"now": False}
    signal_mod.signal(signal_mod.SIGTERM, lambda *_: stop.update(now=True))
    signal_mod.signal(signal_mod.SIGINT, lambda *_: stop.update(now=True))
    click.echo(f"watching {directory}; records go to {out / 'records.jsonl'} (Ctrl-C stops)")
    total = watch(directory, out, screen_batch, batch_size=batch_size, max_wait_s=max_wait,
                  should_stop=lambda: stop["now"],
                  on_start=lambda mode: click.echo("new files found by file-system events" if mode == "events" else
                                                   "new files found by walking the folder at each poll (no "
                                                   "file-system events here)"),
                  on_batch=lambda n, t: click.echo(f"screened {n} file(s), {t} this run"))
    click.echo(f"stopped; {total} file(s) screened this run")
