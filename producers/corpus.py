"""`waveshield corpus`: adversarial corpora generated on the attack queue, written by the collector."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from shared.attacks.external import parse_value
from shared.evaluation.plan import paper_attacks
from shared.evaluation.spec import attack_name
from shared.images.geometry import CIFAR, InputSize
from shared.images.image_set import iter_batches
from shared.images.load import load_images
from shared.models.store import ModelStore
from shared.pipeline import Pipeline
from shared.pipeline.keys import corpus_shards_key
from shared.settings import Settings

#: The paper's attacks as ``--attacks`` texts (the command's default).
PAPER_ATTACKS = [a["name"] + (":" + ",".join(f"{k}={v}" for k, v in a["params"].items()) if a["params"] else "")
                 for a in paper_attacks()]


def parse_attack(text: str) -> dict:
    """``bim:eps=0.007,steps=3`` -> {"name": "bim", "params": {"eps": 0.007, "steps": 3}}.

    ``torchattacks:Square:eps=8/255,n_queries=1000`` names a torchattacks attack;
    a value is a number, a fraction (``8/255``), true/false or a word (``Linf``).
    """
    name, _, rest = text.partition(":")
    if name.strip().lower() == "torchattacks":
        cls, _, rest = rest.partition(":")
        name = f"torchattacks:{cls.strip()}"
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"attack {text!r}: parameters are key=value, separated by commas")
        try:
            params[key.strip()] = parse_value(value)
        except ValueError as exc:
            raise ValueError(f"attack {text!r}: {key}={value}: {exc}") from None
    return {"name": attack_name(name), "params": params}


def submit_corpus(client, app, *, data: str, attacks: list[str], name: str, settings: Settings, dtype: str = "float16",
                  shard_size: int = 500, seed: int = 0, limit: int | None = None,
                  source_model: str = "standard") -> tuple[str, int, int]:
    """Queue the (shard, attack) pairs not yet written, with backpressure; return job id, pairs queued, pairs done."""
    job, image_set, queued, done = prepare_corpus(client, data=data, attacks=attacks, name=name, settings=settings,
                                                  dtype=dtype, shard_size=shard_size, seed=seed, limit=limit,
                                                  source_model=source_model)
    feed_corpus(client, app, job, image_set, settings)
    return job, queued, done


def prepare_corpus(client, *, data: str, attacks: list[str], name: str, settings: Settings, dtype: str = "float16",
                   shard_size: int = 500, seed: int = 0, limit: int | None = None,
                   source_model: str = "standard"):
    """Create the job for the (shard, attack) pairs not yet written; return job, image set, pairs queued, pairs done.

    Nothing is sent yet: :func:`feed_corpus` sends the shards.
    """
    from shared.evaluation.plan import CORPUS_DTYPES
    from shared.pipeline import corpus_output

    if dtype not in CORPUS_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(CORPUS_DTYPES)}")
    corpus_output(settings.output_dir, name)  # refuses a name that leaves the output directory
    store = ModelStore(settings.weights_dir, models_dir=settings.models_dir)
    card = store.card(source_model)
    size, classes = store.inputs([source_model], "corpus")  # the model's own images: its size, its classes
    image_set = load_images(data, size=size, classes=list(classes), limit=limit, workers=settings.decode_workers)
    if image_set.labels is None or not len(image_set):
        raise ValueError(f"{data}: a corpus needs labelled images")
    specs = [parse_attack(a) for a in attacks]
    plan = {"source_model": source_model, "source_model_sha256": card["sha256"], "attacks": specs, "dtype": dtype,
            "shard_size": shard_size, "seed": seed, "out": name, "data": str(data),
            "input_size": size.as_dict(), "classes": list(classes)}
    plan["corpus_key"] = corpus_key(plan, image_set.ids)
    done = {m.decode() for m in client.smembers(corpus_shards_key(plan["corpus_key"]))}
    shards = list(iter_batches(len(image_set), shard_size))
    todo = [(b, a) for b in range(len(shards)) for a in range(len(specs)) if f"{b}|{a}" not in done]
    from producers.submit import when_room

    job = when_room(client, settings, lambda: Pipeline(client, blob_ttl_s=settings.blob_ttl_s).create_corpus_job(
        {**plan, "limit": limit}, np.asarray(image_set.labels), [image_set.ids[s] for s in shards], todo))
    return job, image_set, len(todo), len(shards) * len(specs) - len(todo)


def corpus_key(plan: dict, ids: list[str]) -> str:
    """What names a corpus across runs: its plan and the ids of its images."""
    identity = json.dumps({**{k: v for k, v in plan.items() if k != "limit"}, "ids": ids}, sort_keys=True).encode()
    return hashlib.sha256(identity).hexdigest()[:16]


def load_corpus_input(plan: dict, workers: int = 1):
    """The image set of a corpus job, read again (how a detached producer feeds a job another command created).

    Raises
    ------
    ValueError
        If the data no longer holds the images the job was made for.
    """
    size = InputSize(**plan["input_size"]) if "input_size" in plan else CIFAR  # a job of an earlier release: 32x32
    image_set = load_images(plan["data"], size=size, classes=plan.get("classes"), limit=plan.get("limit"),
                            workers=workers)
    if corpus_key({k: v for k, v in plan.items() if k in _PLAN_KEYS}, image_set.ids) != plan["corpus_key"]:
        raise ValueError(f"{plan['data']} no longer holds the images this corpus job was made for; run the corpus "
                         "command again")
    return image_set


_PLAN_KEYS = ("source_model", "source_model_sha256", "attacks", "dtype", "shard_size", "seed", "out", "data",
              "input_size", "classes")


def feed_corpus(client, app, job: str, image_set, settings: Settings, on_wait=None) -> int:
    """Send the job's shards from the first not yet sent (``fed`` in its meta), with backpressure; return shards sent.

    At most ``WAVESHIELD_IN_FLIGHT_MIB`` of blobs stay unfinished
    (:func:`shared.pipeline.inflight.corpus_batch_bytes`).
    """
    from producers.submit import Throttle, store_batch
    from shared.pipeline.inflight import batches_allowed, corpus_batch_bytes

    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    plan = pipe.plan(job)
    size, attacks = int(plan["shard_size"]), len(plan["attacks"])
    peak = corpus_batch_bytes(plan, min(size, len(image_set)), image_set.images.itemsize, attacks,
                              image_set.images.shape[1:3])
    throttle = Throttle(client, job, batches_allowed(peak, settings.in_flight_mib) * attacks, on_wait=on_wait,
                        stall_timeout_s=settings.stall_timeout_s)
    pending: dict[int, list[int]] = {}
    for shard, attack in plan["todo"]:
        pending.setdefault(shard, []).append(attack)
    first = pipe.batches_fed(job)
    sent = 0
    for shard in sorted(s for s in pending if s >= first):
        throttle.wait_for_room(len(pending[shard]))
        store_batch(client, app, settings, peak, lambda: pipe.add_corpus_shard(
            job, shard, image_set.images[shard * size:(shard + 1) * size], pending[shard]), job, on_wait)
        throttle.sent_units(len(pending[shard]))
        sent += 1
    return sent


def run_corpus(*, data: str | None, attacks: list[str], name: str | None, settings: Settings, dtype: str,
               shard_size: int, seed: int, limit: int | None, wait: bool, job: str | None = None,
               say=lambda line: None, on_progress=lambda state: None, model: str = "standard") -> None:
    """`waveshield corpus`: create the job of the pairs not yet written, then follow it here or hand it over.

    ``job`` is the background producer's own (``--job``): it sends that job's
    shards and follows it. ``model`` is the model the attacks are crafted on
    (shipped or registered), whose input size and classes the images take. ``say`` gets a line of what happens,
    ``on_progress`` the job's progress while it is followed here.

    Raises
    ------
    ValueError
        If ``data`` or ``name`` is missing, or the input is not a labelled set.
    """
    from producers.stack import connect
    from workers.app import app

    url, client = connect(settings.redis_url)
    if job is not None:  # the background producer of a job another command created
        image_set = load_corpus_input(Pipeline(client).plan(job), settings.decode_workers)
        feed_and_follow(client, app, job, image_set, settings, on_progress)
        say("complete: manifest.jsonl, preview.png and report.html written")
        return
    if not data or not name:
        raise ValueError("corpus needs --data (the labelled images to attack) and --out (the corpus folder)")
    job, image_set, queued, done = prepare_corpus(
        client, data=data, attacks=attacks or PAPER_ATTACKS, name=name, settings=settings, dtype=dtype,
        shard_size=shard_size, seed=seed, limit=limit, source_model=model)
    say(f"job {job}: {queued} (shard, attack) pair(s) to compute, {done} already written; output: {name}/ in the "
        "collector's WAVESHIELD_OUTPUT_DIR")
    if not queued:
        return
    if wait:
        feed_and_follow(client, app, job, image_set, settings, on_progress)
        say("complete: manifest.jsonl, preview.png and report.html written")
        return
    pid, log_path = hand_over(job, settings, url)
    say(f"a producer (pid {pid}, log {log_path}) sends the shards as the workers keep up; follow it with: "
        f"waveshield status {job}")


def feed_and_follow(client, app, job: str, image_set, settings: Settings, on_progress=lambda state: None) -> None:
    """Send a corpus job's shards (with backpressure), then follow it to the end; ``on_progress`` gets its progress."""
    from producers.submit import wait

    pipe = Pipeline(client)

    def show(state=None):
        on_progress(state or pipe.progress(job))

    feed_corpus(client, app, job, image_set, settings, on_wait=show)
    wait(client, job, show, stall_timeout_s=settings.stall_timeout_s, app=app, redrive_after_s=settings.redrive_after_s)


def hand_over(job: str, settings: Settings, redis_url: str) -> tuple[int, Path]:
    """A detached producer sends the job's shards as the workers keep up; return its pid and its log's path."""
    from producers.screening.ingest import detach

    log_path = settings.output_dir / "producers" / f"{job}.log"
    return detach(["corpus", "--job", job], log_path, redis_url), log_path
