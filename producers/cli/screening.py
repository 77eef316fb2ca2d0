"""Commands that screen images and build adversarial corpora: screen, results, corpus."""

from __future__ import annotations

import json
import os
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
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="--no-wait: a producer in the background feeds the workers and writes --out when the job is done; "
                   "fetch the records so far with `results`.")
@click.option("--local", is_flag=True, help="Screen in this process, without a broker.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--mode", type=click.Choice(["staged", "fused"]), default="staged", show_default=True,
              help="On the workers: each stage on its own queue, or a batch's stages in one "
                   "task on the fused queue, only records through Redis (fused).")
@click.option("--source", default=None, metavar="NAME",
              help="Flag with the calibration `waveshield calibrate --source NAME` made for this source "
                   "[default: the calibration the score was fitted with].")
@click.option("--fresh", is_flag=True, help="Screen again inputs a job already screened (or is screening).")
@click.option("--job", "job_id", default=None, hidden=True, help="Feed this open job (how `resume` restarts an intake).")
def screen(paths, watch_dir, max_wait, out, wait, local, batch_size, mode, source, fresh, job_id):
    """Screen images (folders, zips, npz files, image files, globs) for adversarial manipulation.

    Each item gets a label and confidence (DWT reconstruction + the defended model), the
    standard model's raw label, a suspicion score and a flag; an unreadable item gets its reason.
    Images stream to the workers as they are read; running the same command again continues
    an interrupted job without screening an image twice.
    """
    from producers import screen as screen_mod

    cfg = settings_mod.load()
    out = out or cfg.output_dir / "screen"
    chosen = screen_mod.screening_settings(cfg, source)  # an unknown --source fails before any image is read
    if watch_dir is not None:
        return _watch(watch_dir, out, cfg, local, batch_size, max_wait, mode, source)
    if not paths:
        raise ValueError("give PATH... to screen, or --watch DIR")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if local:
        return _screen_here(paths, out, cfg, batch_size, chosen)
    from producers import ingest
    from producers.stack import connect
    from shared.pipeline import Pipeline

    url, client = connect(cfg.redis_url, or_local=True)
    background = job_id is not None  # a producer that `--no-wait` or `resume` started
    if not background:
        job_id, found = ingest.start_job(client, list(paths), {**chosen, "mode": mode}, batch_size, fresh=fresh)
    else:
        found = True
    if not wait:
        return _hand_over(client, url, job_id, found, paths, out, cfg, batch_size, mode, source)
    if background:
        click.echo(f"job {job_id}: producer {os.getpid()} reading from item {Pipeline(client).progress(job_id)['read']}",
                   err=True)
    elif found:
        state = Pipeline(client).progress(job_id)
        click.echo(f"job {job_id}: " + (f"reading on after the {state['read']} items it counted" if state["ingesting"]
                                        else "these inputs were screened before (--fresh screens them again)"),
                   err=True)
    else:
        click.echo(f"job {job_id}: started", err=True)
    _follow(client, job_id, paths, out, cfg, batch_size)


def _screen_here(paths, out, cfg, batch_size, chosen):
    """``--local``: read, screen and write chunk by chunk in this process."""
    from producers import screen as screen_mod
    from shared.intake import iter_chunks, iter_items, prefetch

    chunks = prefetch(iter_chunks(iter_items(paths, max_bytes=cfg.max_item_bytes), batch_size,
                                  workers=cfg.decode_workers))
    with screen_mod.RecordWriter(out, chosen["calibration"]) as writer:
        for found in screen_mod.screen_chunks(chunks, cfg, chosen):
            writer.write(found)
            click.echo(f"\rscreened {writer.tally.images} item(s)", nl=False, err=True)
        click.echo("", err=True)
        summary = writer.close()
    _report(summary, out)


def _hand_over(client, url, job, found, paths, out, cfg, batch_size, mode, source):
    """``--no-wait``: a detached producer feeds the job (unless it is sealed) and writes ``out`` at the end."""
    from producers import ingest
    from shared.pipeline import Pipeline

    state = Pipeline(client).progress(job)
    if who := ingest.producer_alive(client, job):
        click.echo(f"job {job}: its producer ({who}) is still reading its input ({state['read']} items so far); "
                   f"records so far: waveshield results {job} --out DIR")
        return
    if not state["ingesting"]:
        click.echo(f"job {job} {'was ' if found else ''}submitted ({state['read']} items, {state['screened']} "
                   f"screened so far); fetch it with: waveshield results {job} --out DIR")
        return
    log_path = cfg.output_dir / "producers" / f"{job}.log"
    argv = ["screen", *map(str, paths), "--job", job, "--out", str(out), "--batch-size", str(batch_size),
            "--mode", mode, *(["--source", source] if source else [])]
    pid = ingest.detach(argv, log_path, url)
    click.echo(f"job {job} submitted: a producer (pid {pid}, log {log_path}) feeds the workers as they keep up and "
               f"writes {out} when the job is done; records so far: waveshield results {job} --out DIR")


def _follow(client, job, paths, out, cfg, batch_size):
    """Feed the job from where it stopped, then follow it, writing its records as its batches finish."""
    import time

    from producers import ingest
    from producers import screen as screen_mod
    from producers.submit import wait as wait_job
    from shared.pipeline import Pipeline
    from workers.app import app

    pipe = Pipeline(client)
    shown = {"at": 0.0}
    live = sys.stderr.isatty()  # a terminal gets one line rewritten; a log gets a line every 10 s

    with screen_mod.RecordWriter(out, pipe.plan(job).get("calibration")) as writer:
        records = screen_mod.JobRecords(pipe, job, writer)

        def progress(state):
            records.drain()
            if time.monotonic() - shown["at"] >= (1.0 if live else 10.0) or state["status"] == "complete":
                shown["at"] = time.monotonic()
                of = "" if state["ingesting"] else f" of {state['enqueued']}"
                click.echo(("\r" if live else "") + f"job {job}: {state['read']} item(s) read, {state['enqueued']} "
                           f"enqueued, {state['screened']}{of} screened", nl=not live, err=True)

        ingest.ingest(client, app, job, list(paths), cfg, batch_size, on_progress=progress)
        wait_job(client, job, progress, stall_timeout_s=cfg.stall_timeout_s, app=app,
                 redrive_after_s=cfg.redrive_after_s)
        if live:
            click.echo("", err=True)
        records.finish()
        summary = writer.close()
    _report(summary, out)


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
    summary = screen_mod.write_outputs(pipe.iter_screen_records(job), out, pipe.plan(job).get("calibration"))
    note = "" if state["status"] == "complete" else (
        f" (partial: {state['done']}/{state['expected']} batches done"
        + (f"; {state['read']} items read so far, the producer is still reading" if state["ingesting"] else "") + ")")
    _report(summary, out, note)


@click.command()
@click.option("--data", default=None, help="Labelled image set to attack.  [required]")
@click.option("--attacks", "attack_list", multiple=True,
              help="NAME[:key=value,...], repeatable, e.g. --attacks bim:eps=0.007 [default: the paper's seven].")
@click.option("--out", "name", default=None, help="Corpus folder inside the collector's WAVESHIELD_OUTPUT_DIR.  [required]")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--shard-size", default=500, show_default=True, help="Images per shard.")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Send the shards and follow the job here; --no-wait: a producer in the background sends them as "
                   "the workers keep up.")
@click.option("--job", "job_id", default=None, hidden=True, help="Send the shards of this job (the background producer).")
def corpus(data, attack_list, name, dtype, shard_size, seed, limit, wait, job_id):
    """Generate an adversarial corpus in the background; rerun the same command to finish missing shards."""
    from producers import corpus as corpus_mod
    from producers.stack import connect
    from shared.pipeline import Pipeline
    from workers.app import app

    cfg = settings_mod.load()
    url, client = connect(cfg.redis_url)
    if job_id is not None:  # the background producer of a job another command created
        image_set = corpus_mod.load_corpus_input(Pipeline(client).plan(job_id))
        return _send_and_follow(client, app, job_id, image_set, cfg)
    if not data or not name:
        raise ValueError("corpus needs --data (the labelled images to attack) and --out (the corpus folder)")
    job, image_set, queued, done = corpus_mod.prepare_corpus(
        client, data=data, attacks=list(attack_list) or corpus_mod.PAPER_ATTACKS, name=name, settings=cfg, dtype=dtype,
        shard_size=shard_size, seed=seed, limit=limit)
    click.echo(f"job {job}: {queued} (shard, attack) pair(s) to compute, {done} already written; output: {name}/ in the collector's "
               "WAVESHIELD_OUTPUT_DIR")
    if not queued:
        return
    if wait:
        _send_and_follow(client, app, job, image_set, cfg)
        return
    from producers.ingest import detach

    log_path = cfg.output_dir / "producers" / f"{job}.log"
    pid = detach(["corpus", "--job", job], log_path, url)
    click.echo(f"a producer (pid {pid}, log {log_path}) sends the shards as the workers keep up; follow it with: "
               f"waveshield status {job}")


def _send_and_follow(client, app, job, image_set, cfg):
    """Send a corpus job's shards (with backpressure), then follow it to the end."""
    from producers.corpus import feed_corpus
    from producers.submit import wait as wait_job
    from shared.pipeline import Pipeline

    pipe = Pipeline(client)
    with click.progressbar(length=pipe.progress(job)["expected"], label=f"job {job}", file=sys.stderr) as bar:
        def show(state=None):
            bar.update((state or pipe.progress(job))["done"] - bar.pos)

        feed_corpus(client, app, job, image_set, cfg, on_wait=show)
        wait_job(client, job, show, stall_timeout_s=cfg.stall_timeout_s, app=app, redrive_after_s=cfg.redrive_after_s)
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
