"""The ``waveshield`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from shared import settings as settings_mod

# Mistakes a user can make (bad option, missing file, unreachable service):
# one clear line and exit status 2, never a traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError)


class _Group(click.Group):
    def invoke(self, ctx):
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

        from producers.submit import JobFailed

        try:
            return super().invoke(ctx)
        except _USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (RedisConnectionError, RedisTimeoutError) as exc:  # past the retry window
            window = settings_mod.load().redis_retry_s
            click.echo(f"error: lost Redis for more than {window} s (WAVESHIELD_REDIS_RETRY): {exc}", err=True)
            sys.exit(1)
        except JobFailed as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="waveshield")
def main():
    """Screen images for adversarial manipulation and measure DWT defences."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def config(as_json):
    """Print the settings read from the environment."""
    current = settings_mod.load()
    click.echo(json.dumps(current.as_dict(), indent=2) if as_json else current.as_text())


@main.command()
@click.option("--defence", type=click.Choice(["none", "haar", "daubechies"]), default="none", show_default=True,
              help="none = the standard model; haar/daubechies = trained on originals + their DWT copies.")
@click.option("--width", default=16, show_default=True, help="ResNet18 width (64 = the standard ResNet18).")
@click.option("--epochs", default=30, show_default=True, help="Passes over the training set (DWT copies included).")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--data", default="cifar10:train", show_default=True, help="Training set: folder, zip, npz or cifar10:train.")
@click.option("--test-data", default="cifar10:test", show_default=True, help="Held-out set for the card's accuracy.")
@click.option("--name", default=None, help="Checkpoint name in the weights directory [default: standard/haar/daubechies].")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--limit", type=int, default=None, help="Use only the first N training images (smoke runs).")
@click.option("--stop-after", type=int, default=None, help="Stop after this epoch, as an interruption would.")
def train(defence, width, epochs, batch_size, seed, data, test_data, name, precision, limit, stop_after):
    """Train a CIFAR ResNet18 and write safetensors + model card to the weights directory.

    Resumable: rerun the same command after an interruption and it continues
    from the last finished epoch.
    """
    from shared import defences, models
    from shared.data import load_images
    from shared.training import Recipe, model_card
    from shared.training import train as run_training

    cfg = settings_mod.load()
    device = settings_mod.resolve_device(cfg.device)
    name = name or ("standard" if defence == "none" else defence)
    options = None if defence == "none" else defences.get(defence, cfg.weights_dir)
    recipe = Recipe(width=width, epochs=epochs, batch_size=batch_size, seed=seed, defence=options, precision=precision)
    train_set = load_images(data, limit=limit)
    test_set = load_images(test_data)
    click.echo(f"training {name}: {len(train_set)} images from {data}" + (f" + DWT copies ({options['wavelet']})" if options else "")
               + f", width {width}, {epochs} epochs, on {device}")
    checkpoint = cfg.checkpoint_dir / f"{name}.safetensors"
    started = time.perf_counter()
    model, log = run_training(train_set, recipe, checkpoint=checkpoint, device=device, progress=_EpochProgress(),
                              stop_after_epoch=stop_after)
    if stop_after is not None and stop_after < epochs:
        click.echo(f"stopped after epoch {stop_after}; rerun the same command to resume from {checkpoint}")
        return
    card = model_card(model, log, recipe, train_source=str(data), train_images=len(train_set), test_set=test_set,
                      test_source=str(test_data), device=device, seconds=time.perf_counter() - started)
    out = cfg.weights_dir / f"{name}.safetensors"
    models.save(model, out, card)
    click.echo(f"wrote {out} (test accuracy {card['test_accuracy']:.4f})")


@main.command()
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
    report = run_evaluation(data=data or run.get("data", "sample"), limit=limit or run.get("limit"),
                            out=out or cfg.output_dir / "evaluate", settings=cfg, redis_url=redis_url, plan=plan)
    click.echo(f"report: {report}")


@main.command()
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
    with Stack(resolve_redis_url(cfg.redis_url), log_dir=logs) as stack:
        report = run_evaluation(data="sample", limit=limit, out=cfg.output_dir / "demo", settings=cfg,
                                redis_url=stack.redis_url)
    click.echo(report.read_text())
    click.echo(f"report: {report}")


@main.command()
@click.option("--flower", is_flag=True, help="Also run Flower on 127.0.0.1:5555 (needs FLOWER_BASIC_AUTH=user:password).")
def up(flower):
    """Run Redis (REDIS_URL, or the bundled server) and one worker per queue until Ctrl-C."""
    import os

    from producers.stack import serve

    auth = os.environ.get("FLOWER_BASIC_AUTH")
    if flower and (not auth or ":" not in auth):
        raise ValueError("Flower never runs without authentication: set FLOWER_BASIC_AUTH=user:password")
    serve(settings_mod.load().redis_url, flower_auth=auth if flower else None, say=click.echo)


@main.command()
@click.argument("job", required=False)
def status(job):
    """Queue lengths, workers, and job progress, read from Redis."""
    from producers.stack import connect
    from producers.submit import queue_lengths
    from shared.pipeline import Pipeline
    from workers.app import app

    _, client = connect(settings_mod.load().redis_url)
    click.echo("queues: " + ", ".join(f"{q} {n}" for q, n in queue_lengths(client).items()))
    stats = client.info("stats")
    click.echo(f"Redis traffic now: {stats['instantaneous_input_kbps']:.0f} KB/s in, "
               f"{stats['instantaneous_output_kbps']:.0f} KB/s out")
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    consumers = {q["name"]: w for w, qs in replies.items() for q in qs}
    click.echo("workers: " + (", ".join(f"{q} <- {w}" for q, w in sorted(consumers.items())) or "none"))
    pipe = Pipeline(client)
    jobs = [job] if job else [j.decode() for j in client.zrevrange("ws:jobs", 0, 9)]
    for j in jobs:
        try:
            p = pipe.progress(j)
        except KeyError:
            raise ValueError(f"no job {j!r} in Redis") from None
        click.echo(f"job {j}: {p['status']}, {p['done']}/{p['expected']} cells, {p['images']} images, "
                   f"{p['images_per_s']:.1f} images/s, {len(p['errors'])} errors")


@main.command()
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


@main.command()
@click.option("--data", default="sample", show_default=True, help="Labelled images to tune on.")
@click.option("--n", "n", default=256, show_default=True, help="Number of images.")
@click.option("--min-psnr", default=30.0, show_default=True, help="Clean PSNR a setting must keep (dB).")
@click.option("--wavelets", default=",".join(("haar", "db2", "db3", "db4", "sym4")), show_default=True,
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
    chosen = run_tune(data=data, n=n, out=out, settings=cfg, min_psnr=min_psnr, objective=objective,
                      wavelets=tuple(w.strip() for w in wavelets.split(",") if w.strip()))
    for family, row in chosen.items():
        click.echo(f"{family}: {row['wavelet']} levels={row['levels']} {row['mode']} {row['method']} "
                   f"sigma x{row['sigma_scale']}{' YCbCr' if row['convert2ycbcr'] else ''}: clean PSNR "
                   f"{row['clean_psnr']:.2f} dB, mean attenuation {row['mean_attenuation']:+.2f} dB, "
                   f"mean gain {row['mean_gain']:+.2f} dB")
    click.echo(f"table: {out / 'tune.md'}; settings: {cfg.weights_dir / 'defences.json'}")


@main.command()
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
def screen(paths, watch_dir, max_wait, out, wait, local, batch_size, mode):
    """Screen images (folders, zips, npz files, image files, globs) for adversarial manipulation.

    Each item gets a label and confidence (DWT reconstruction + the defended model), the
    standard model's raw label, a suspicion score and a flag; an unreadable item gets its reason.
    """
    from producers import screen as screen_mod
    from shared.data import load_many

    cfg = settings_mod.load()
    out = out or cfg.output_dir / "screen"
    if watch_dir is not None:
        return _watch(watch_dir, out, cfg, local, batch_size, max_wait, mode)
    if not paths:
        raise ValueError("give PATH... to screen, or --watch DIR")
    image_set = load_many(paths)
    if local:
        summary = screen_mod.write_outputs(screen_mod.screen_local(image_set, cfg, batch_size), out)
        click.echo(f"{json.dumps(summary)}\nrecords: {out / 'records.jsonl'}")
        return
    from producers.stack import connect
    from producers.submit import wait as wait_job
    from shared.pipeline import Pipeline
    from workers.app import app

    _, client = connect(cfg.redis_url, or_local=True)
    job = screen_mod.submit_screen(client, app, image_set, cfg, batch_size, mode=mode)
    if not wait:
        click.echo(f"job {job} submitted ({len(image_set)} images, {len(image_set.errors)} unreadable); "
                   f"fetch it with: waveshield results {job} --out DIR")
        return
    with click.progressbar(length=1000, label=f"job {job}", file=sys.stderr) as bar:
        wait_job(client, job, lambda st: bar.update(int(1000 * st["done"] / max(st["expected"], 1)) - bar.pos),
                 stall_timeout_s=cfg.stall_timeout_s)
    summary = screen_mod.write_outputs(Pipeline(client).screen_records(job), out)
    click.echo(f"{json.dumps(summary)}\nrecords: {out / 'records.jsonl'}")


@main.command()
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
    summary = screen_mod.write_outputs(pipe.screen_records(job), out)
    note = "" if state["status"] == "complete" else f" (partial: {state['done']}/{state['expected']} batches done)"
    click.echo(f"{json.dumps(summary)}{note}\nrecords: {out / 'records.jsonl'}")


@main.command()
@click.option("--data", default="sample", show_default=True, help="Labelled clean images.")
@click.option("--n", "n", default=1000, show_default=True, help="Number of images.")
@click.option("--fpr", default=0.05, show_default=True, help="False-positive rate allowed on clean images.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where calibration.md goes [default: $WAVESHIELD_OUTPUT_DIR/calibrate].")
def calibrate(data, n, fpr, out):
    """Set the screening flag's threshold at a false-positive rate; report detection per attack."""
    from producers.calibrate import run_calibration

    cfg = settings_mod.load()
    out = out or cfg.output_dir / "calibrate"
    result = run_calibration(data=data, n=n, fpr=fpr, settings=cfg, out=out)
    click.echo(f"threshold {result['threshold']:.4f} (false positives on clean: {100 * result['measured_fpr']:.1f} %)")
    for attack, rate in result["detection"].items():
        click.echo(f"  {attack}: {100 * rate:.1f} % flagged ({100 * result['detection_of_fooling'][attack]:.1f} % "
                   "of those that fool the standard model)")
    click.echo(f"settings: {cfg.weights_dir / 'screening.json'}; table: {out / 'calibration.md'}")


@main.command()
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
            wait_job(client, job, lambda st: bar.update(st["done"] - bar.pos), stall_timeout_s=cfg.stall_timeout_s)
        click.echo("complete: manifest.jsonl and preview.png written")


def _watch(directory, out, cfg, local, batch_size, max_wait, mode="staged"):
    """Screen files landing in ``directory`` until Ctrl-C or SIGTERM."""
    import signal as signal_mod

    from producers import screen as screen_mod
    from producers.watch import watch

    if local:
        def screen_batch(image_set):
            return screen_mod.screen_local(image_set, cfg, batch_size)
    else:
        from producers.stack import connect
        from producers.submit import wait as wait_job
        from shared.pipeline import Pipeline
        from workers.app import app

        _, client = connect(cfg.redis_url, or_local=True)

        def screen_batch(image_set):
            job = screen_mod.submit_screen(client, app, image_set, cfg, batch_size, mode=mode)
            wait_job(client, job, poll_s=0.1, stall_timeout_s=cfg.stall_timeout_s)
            return Pipeline(client).screen_records(job)

    stop = {"now": False}
    signal_mod.signal(signal_mod.SIGTERM, lambda *_: stop.update(now=True))
    signal_mod.signal(signal_mod.SIGINT, lambda *_: stop.update(now=True))
    click.echo(f"watching {directory}; records go to {out / 'records.jsonl'} (Ctrl-C stops)")
    total = watch(directory, out, screen_batch, batch_size=batch_size, max_wait_s=max_wait,
                  should_stop=lambda: stop["now"],
                  on_batch=lambda n, t: click.echo(f"screened {n} file(s), {t} this run"))
    click.echo(f"stopped; {total} file(s) screened this run")


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


if __name__ == "__main__":
    main()
