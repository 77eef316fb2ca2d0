"""`waveshield corpus`: adversarial corpora generated on the attack queue, written by the collector."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from shared.data import load_images
from shared.evaluation import PAPER_EPS
from shared.pipeline import Pipeline
from shared.model_store import ModelStore
from shared.settings import Settings

PAPER_ATTACKS = [f"{a}:eps={e}" for a in ("fgsm", "bim") for e in PAPER_EPS] + ["deepfool"]


def parse_attack(text: str) -> dict:
    """``bim:eps=0.007,steps=3`` -> {"name": "bim", "params": {"eps": 0.007, "steps": 3}}."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"attack {text!r}: parameters are key=value, separated by commas")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"attack {text!r}: {key}={value} is not a number") from None
    return {"name": name.strip().lower(), "params": params}


def submit_corpus(client, app, *, data: str, attacks: list[str], name: str, settings: Settings, dtype: str = "float16",
                  shard_size: int = 500, seed: int = 0, limit: int | None = None,
                  source_model: str = "standard") -> tuple[str, int, int]:
    """Queue the (shard, attack) pairs not yet written; return job id, pairs queued, pairs already done."""
    from producers.submit import send
    from shared.corpus import DTYPES
    from shared.pipeline import corpus_output

    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}")
    corpus_output(settings.output_dir, name)  # refuses a name that leaves the output directory
    card = ModelStore(settings.weights_dir).card(source_model)
    image_set = load_images(data, limit=limit)
    if image_set.labels is None or not len(image_set):
        raise ValueError(f"{data}: a corpus needs labelled images")
    specs = [parse_attack(a) for a in attacks]
    plan = {"source_model": source_model, "source_model_sha256": card["sha256"], "attacks": specs, "dtype": dtype,
            "shard_size": shard_size, "seed": seed, "out": name, "data": str(data)}
    identity = json.dumps({**plan, "ids": image_set.ids}, sort_keys=True).encode()
    plan["corpus_key"] = hashlib.sha256(identity).hexdigest()[:16]
    done = {m.decode() for m in client.smembers(f"ws:corpus:{plan['corpus_key']}:shards")}
    starts = range(0, len(image_set), shard_size)
    todo = [(b, a) for b in range(len(starts)) for a in range(len(specs)) if f"{b}|{a}" not in done]
    pipe = Pipeline(client, blob_ttl_s=settings.blob_ttl_s)
    job = pipe.create_corpus_job(plan, np.asarray(image_set.labels), [image_set.ids[s:s + shard_size] for s in starts],
                                 todo)
    for b, start in enumerate(starts):
        pending = [a for (bb, a) in todo if bb == b]
        if pending:
            send(app, pipe.add_corpus_shard(job, b, image_set.images[start:start + shard_size], pending))
    return job, len(todo), len(starts) * len(specs) - len(todo)
