"""How a `waveshield screen` runs: in this process, fed to the workers and followed, handed to a background
producer, or watching a folder. Progress and messages reach the caller through callbacks; nothing here prints."""

from __future__ import annotations

import os
from pathlib import Path

from producers.screening import ingest
from producers.screening import screen as screen_mod
from shared.settings import Settings


def screen_here(paths, out: Path, settings: Settings, batch_size: int, chosen: dict,
                on_progress=lambda screened, errors: None) -> dict:
    """``--local``: read, screen and write chunk by chunk in this process; return the summary.

    ``on_progress`` gets the images screened and the items that could not be
    read so far (the summary's ``screened`` and ``errors``) after each chunk.

    The caller checks the inputs first (:func:`shared.images.intake.check_inputs`):
    one that cannot be read at all becomes an error record here.
    """
    from shared.images.intake import iter_chunks, iter_items, prefetch

    chunks = prefetch(iter_chunks(iter_items(paths, max_bytes=settings.max_item_bytes), batch_size,
                                  workers=settings.decode_workers))
    writer = screen_mod.RecordWriter(out, chosen["calibration"], defence=chosen["defence"])
    return screen_mod.screen_and_write(chunks, writer, settings, chosen, on_progress)


def default_out(settings: Settings, paths, chosen: dict, batch_size: int, job: str | None = None) -> Path:
    """Where a screening writes without ``--out``: a folder per job, so that one job never overwrites another.

    A job on the workers writes ``$WAVESHIELD_OUTPUT_DIR/screen/JOB``; a
    ``--local`` one ``screen/local-DIGEST``, the digest of its inputs (paths,
    sizes, modification times) and plan as a job's id is
    (:func:`producers.screening.ingest.job_identity`): the same inputs
    screened again rewrite their own folder, and only theirs.
    """
    name = job or "local-" + ingest.job_identity(list(map(str, paths)), {**chosen, "mode": "local"}, batch_size)
    return settings.output_dir / "screen" / name


def start(client, paths, chosen: dict, *, mode: str, batch_size: int, fresh: bool, job: str | None) -> tuple[str, str]:
    """Open (or find) the job of ``paths`` and this plan; return its id and what it is doing, in a line.

    ``job`` names the job of a background producer (``--job``), which feeds it on. The caller
    checks a new job's inputs first (:func:`shared.images.intake.check_inputs`); a background
    producer does not, and an input gone since stays an error record.
    """
    from shared.pipeline import Pipeline

    if job is not None:
        return job, f"job {job}: producer {os.getpid()} reading from item {Pipeline(client).progress(job)['read']}"
    job, found = ingest.start_job(client, list(paths), {**chosen, "mode": mode}, batch_size, fresh=fresh)
    if not found:
        return job, f"job {job}: started"
    state = Pipeline(client).progress(job)
    return job, f"job {job}: " + (f"reading on after the {state['read']} items it counted" if state["ingesting"]
                                  else "these inputs were screened before (--fresh screens them again)")


def hand_over(client, url: str, job: str, paths, out: Path, settings: Settings, *, batch_size: int, mode: str,
              source: str | None) -> str:
    """``--no-wait``: a detached producer feeds the job (unless it is sealed or fed) and writes ``out`` at the end.

    Returns what happened, in a line.
    """
    from shared.pipeline import Pipeline

    state = Pipeline(client).progress(job)
    if who := ingest.producer_alive(client, job):
        return (f"job {job}: its producer ({who}) is still reading its input ({state['read']} items so far); "
                f"records so far: waveshield results {job} --out DIR")
    if not state["ingesting"]:
        return (f"job {job} submitted ({state['read']} items, {state['screened']} screened so far); fetch it with: "
                f"waveshield results {job} --out DIR")
    from producers.submit import warn_if_no_worker

    warn_if_no_worker(client, job)  # here, not only in the background producer's log
    log_path = settings.output_dir / "producers" / f"{job}.log"
    argv = ["screen", *map(str, paths), "--job", job, "--out", str(out), "--batch-size", str(batch_size),
            "--mode", mode, *(["--source", source] if source else [])]
    pid = ingest.detach(argv, log_path, url)
    return (f"job {job} submitted: a producer (pid {pid}, log {log_path}) feeds the workers as they keep up and "
            f"writes {out} when the job is done; records so far: waveshield results {job} --out DIR")


def follow(client, job: str, paths, out: Path, settings: Settings, batch_size: int,
           on_progress=lambda state: None) -> dict:
    """Feed the job from where it stopped, then follow it to the end, writing its records as its batches finish.

    ``on_progress`` gets the job's progress (read, enqueued, screened...) at
    each look. Returns the summary.
    """
    from producers.submit import wait as wait_job
    from shared.pipeline import Pipeline
    from workers.app import app

    pipe = Pipeline(client)
    with screen_mod.JobRecords(pipe, job, out, pipe.plan(job).get("calibration")) as records:

        def progress(state):
            records.drain()
            on_progress(state)

        ingest.ingest(client, app, job, list(paths), settings, batch_size, on_progress=progress)
        wait_job(client, job, progress, stall_timeout_s=settings.stall_timeout_s, app=app,
                 redrive_after_s=settings.redrive_after_s)
        return records.close()


def fetch_results(redis_url: str | None, job: str, out: Path | None, settings: Settings) -> tuple[dict, Path, str]:
    """`waveshield results`: a job's records so far into ``out``; return the summary, ``out`` and a note if partial.

    Raises
    ------
    shared.pipeline.meta.JobNotFound
        If the job is not in Redis.
    ValueError
        If it is not a screening job (the message names the command for its kind).
    """
    from producers.jobs import require_kind
    from producers.stack import connect
    from shared.pipeline import Pipeline

    pipe = Pipeline(connect(redis_url)[1])
    state, plan = pipe.progress(job), pipe.plan(job)
    require_kind(job, plan, "screen")
    out = out or settings.output_dir / job  # never screen/JOB, which the job's own producer may be writing
    summary = screen_mod.write_outputs(pipe.iter_screen_records(job), out, plan.get("calibration"), plan.get("defence"))
    note = "" if state["status"] == "complete" else (
        f" (partial: {state['done']}/{state['expected']} batches done"
        + (f"; {state['read']} items read so far, the producer is still reading" if state["ingesting"] else "") + ")")
    return summary, out, note


def watch_folder(directory: Path, out: Path, settings: Settings, chosen: dict, *, local: bool, batch_size: int,
                 max_wait: float, mode: str = "staged", should_stop=lambda: False, say=lambda line: None,
                 warn=lambda line: None) -> int:
    """Screen files landing in ``directory`` until ``should_stop()``; return how many were screened.

    ``chosen``: the settings of :func:`producers.screening.screen.screening_settings`,
    read once for every batch. ``say`` gets a line at the start and after
    each batch; ``warn`` the source check's warning when the flags of the
    last :data:`~shared.screening.verdicts.WATCH_WINDOW` records start to
    run far over the calibrated rate.
    """
    from producers.screening.watch import watch
    from shared.screening.verdicts import RecentCheck

    guard = RecentCheck(chosen["calibration"])

    def check(found):
        line = guard.add(found)
        if line:
            warn(line)
        return found

    screen_batch = (_local_batches(settings, batch_size, chosen) if local
                    else _worker_batches(settings, batch_size, mode, chosen))
    say(f"watching {directory}; records go to {out / 'records.jsonl'}, the page to {out / 'report.html'} (Ctrl-C stops)")
    page = screen_mod.RecordPage(out, chosen["calibration"], chosen["defence"])
    return watch(directory, out, lambda image_set: check(screen_batch(image_set)), batch_size=batch_size,
                 max_wait_s=max_wait, should_stop=should_stop, decode_workers=settings.decode_workers, page=page,
                 on_start=lambda how: say("new files found by file-system events" if how == "events" else
                                          "new files found by walking the folder at each poll (no file-system "
                                          "events here)"),
                 on_batch=lambda n, t: say(f"screened {n} file(s), {t} this run"))


def _local_batches(settings: Settings, batch_size: int, chosen: dict):
    def screen_batch(image_set):
        return screen_mod.screen_local(image_set, settings, batch_size, chosen=chosen)
    return screen_batch


def _worker_batches(settings: Settings, batch_size: int, mode: str, chosen: dict):
    from producers.stack import connect
    from producers.submit import wait as wait_job
    from shared.pipeline import Pipeline, durable
    from workers.app import app

    _, client = connect(settings.redis_url, or_local=True)
    pipe, me = Pipeline(client), durable.who("watch")

    def screen_batch(image_set):
        # A job a batch, whose records this watch reads: it holds the job's writer lease throughout (so the
        # collector leaves them in Redis), and the job is forgotten once they are read: Redis keeps nothing
        # of a watch's finished batches, however long it runs.
        def renew(state):
            mover = durable.RecordMover(pipe, state["job"], me)
            mover.renew() or mover.try_acquire()  # taken back after a pause longer than the lease

        job = screen_mod.submit_screen(client, app, image_set, settings, batch_size, mode=mode, chosen=chosen,
                                       writer=me, on_progress=renew)
        wait_job(client, job, renew, poll_s=0.1, stall_timeout_s=settings.stall_timeout_s, app=app,
                 redrive_after_s=settings.redrive_after_s)
        found = pipe.screen_records(job)
        pipe.forget_job(job)
        return found
    return screen_batch
