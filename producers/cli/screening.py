"""Commands that screen images and build adversarial corpora: screen, results, corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from producers.cli.options import COUNT
from shared import settings as settings_mod
from shared.evaluation.plan import CORPUS_DTYPES, RUN_MODES, STAGED


@click.command()
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option("--watch", "watch_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Keep running: screen files as they land in this folder (Ctrl-C stops).")
@click.option("--max-wait", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True, help="With --watch: seconds before a partial batch is closed.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where records.jsonl, records.csv and summary.json go [default: a folder per job, "
                   "$WAVESHIELD_OUTPUT_DIR/screen/JOB (--local: screen/local-DIGEST of the inputs); with --watch, "
                   "$WAVESHIELD_OUTPUT_DIR/screen].")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="--no-wait: a producer in the background feeds the workers and writes --out when the job is done; "
                   "fetch the records so far with `results`.")
@click.option("--local", is_flag=True, help="Screen in this process, without a broker.")
@click.option("--batch-size", type=COUNT, default=256, show_default=True)
@click.option("--mode", type=click.Choice(RUN_MODES), default=STAGED, show_default=True,
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
    from producers.screening import runs as screen_runs
    from producers.screening import screen as screen_mod
    from shared.images.intake import check_inputs

    cfg = settings_mod.load()
    chosen = screen_mod.screening_settings(cfg, source)  # an unknown --source fails before any image is read
    if watch_dir is not None:
        return _watch(watch_dir, out or cfg.output_dir / "screen", cfg, chosen, local, batch_size, max_wait, mode)
    if not paths:
        raise ValueError("give PATH... to screen, or --watch DIR")
    if job_id is None:  # a typo is one line and status 2 before anything starts; `resume`'s producer reads on
        check_inputs(paths)
    if local:
        if out is None:
            out = screen_runs.default_out(cfg, paths, chosen, batch_size)
            click.echo(f"writing {out} (these inputs' own folder: screening them again rewrites it; "
                       "--out DIR writes elsewhere)", err=True)
        summary = screen_runs.screen_here(paths, out, cfg, batch_size, chosen, on_progress=_local_progress)
        click.echo("", err=True)
        return _report(summary, out)
    from producers.stack import connect

    url, client = connect(cfg.redis_url, or_local=True)
    job, what = screen_runs.start(client, paths, chosen, mode=mode, batch_size=batch_size, fresh=fresh, job=job_id)
    out = out or screen_runs.default_out(cfg, paths, chosen, batch_size, job)
    if not wait:
        click.echo(screen_runs.hand_over(client, url, job, paths, out, cfg, batch_size=batch_size, mode=mode,
                                         source=source))
        return
    click.echo(what, err=True)
    live = sys.stderr.isatty()  # a terminal gets one line rewritten; a log gets a line every 10 s
    summary = screen_runs.follow(client, job, paths, out, cfg, batch_size, on_progress=_ProgressLine(job, live))
    if live:
        click.echo("", err=True)
    _report(summary, out)


def _local_progress(screened: int, errors: int) -> None:
    """``--local``'s progress on stderr, one line rewritten: images screened and errors, as the summary counts them."""
    click.echo(f"\r{screened} screened, {errors} error(s)", nl=False, err=True)


class _ProgressLine:
    """A screening job's progress on stderr: one line rewritten each second on a terminal, else a line every 10 s.

    Items read that were not enqueued could not be read: the summary's ``errors``.
    """

    def __init__(self, job: str, live: bool):
        self.job, self.live, self.at = job, live, 0.0

    def __call__(self, state: dict) -> None:
        import time

        if time.monotonic() - self.at >= (1.0 if self.live else 10.0) or state["status"] == "complete":
            self.at = time.monotonic()
            of = "" if state["ingesting"] else f" of {state['enqueued']}"
            click.echo(("\r" if self.live else "") + f"job {self.job}: {state['read']} item(s) read, "
                       f"{state['enqueued']} enqueued, {state['screened']}{of} screened, "
                       f"{state['read'] - state['enqueued']} error(s)", nl=not self.live, err=True)


def _report(summary: dict, out: Path, note: str = "") -> None:
    """Print a screening summary, indented, then ``note`` and the records' path, always the last line.

    The source check's warning goes to stderr first when it holds.
    """
    check = summary.get("source_check") or {}
    if check.get("warning"):
        click.echo(f"warning: {check['message']}", err=True)
    click.echo(json.dumps(summary, indent=2))
    if note:
        click.echo(note.strip())
    click.echo(f"records: {out / 'records.jsonl'}")


@click.command()
@click.argument("job")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory [default: $WAVESHIELD_OUTPUT_DIR/JOB].")
def results(job, out):
    """Fetch a screening job's records (as far as it has got) into JSONL, CSV and a summary."""
    from producers.screening.runs import fetch_results

    cfg = settings_mod.load()
    summary, out, note = fetch_results(cfg.redis_url, job, out, cfg)
    _report(summary, out, note)


@click.command()
@click.option("--data", default=None, help="Labelled image set to attack.  [required]")
@click.option("--attacks", "attack_list", multiple=True,
              help="NAME[:key=value,...], repeatable, e.g. --attacks bim:eps=0.007 [default: the paper's seven].")
@click.option("--out", "name", default=None, help="Corpus folder inside the collector's WAVESHIELD_OUTPUT_DIR.  [required]")
@click.option("--dtype", type=click.Choice(CORPUS_DTYPES), default=CORPUS_DTYPES[0], show_default=True)
@click.option("--shard-size", type=COUNT, default=500, show_default=True, help="Images per shard.")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=COUNT, default=None, help="Only the first N images.")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Send the shards and follow the job here; --no-wait: a producer in the background sends them as "
                   "the workers keep up.")
@click.option("--model", default="standard", show_default=True,
              help="The model the attacks are crafted on (shipped, or registered with `waveshield model add`): the "
                   "images take its input size and classes.")
@click.option("--job", "job_id", default=None, hidden=True, help="Send the shards of this job (the background producer).")
def corpus(data, attack_list, name, dtype, shard_size, seed, limit, wait, model, job_id):
    """Generate an adversarial corpus in the background; rerun the same command to finish missing shards."""
    from producers.cli.progress import ProgressBar
    from producers.corpus import run_corpus

    with ProgressBar() as bar:
        run_corpus(data=data, attacks=list(attack_list), name=name, settings=settings_mod.load(), dtype=dtype,
                   shard_size=shard_size, seed=seed, limit=limit, wait=wait, job=job_id, model=model,
                   say=lambda line: (bar.close(), click.echo(line)),
                   on_progress=lambda state: bar(state["done"], state["expected"], f"job {state['job']}"))


def _watch(directory, out, cfg, chosen, local, batch_size, max_wait, mode="staged"):
    """Screen files landing in ``directory`` until Ctrl-C or SIGTERM."""
    import signal as signal_mod

    from producers.screening.runs import watch_folder

    stop = {"now": False}
    signal_mod.signal(signal_mod.SIGTERM, lambda *_: stop.update(now=True))
    signal_mod.signal(signal_mod.SIGINT, lambda *_: stop.update(now=True))
    total = watch_folder(directory, out, cfg, chosen, local=local, batch_size=batch_size, max_wait=max_wait, mode=mode,
                         should_stop=lambda: stop["now"], say=click.echo,
                         warn=lambda line: click.echo(line, err=True))
    click.echo(f"stopped; {total} file(s) screened this run")
