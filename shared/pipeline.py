"""The distributed evaluation, stage by stage, on Redis: what every worker task calls.

Routing slip: a job's plan is stored once; each stage reads it and returns
the messages of the stages after it, as ``(queue, kwargs)`` pairs of plain
JSON, which the worker sends. No chords, no results backend.

    attack   clean blob -> attack on the source model -> adversarial blob
    dwt      adversarial blob -> reconstruct() -> reconstructed blob
    classify blob -> predictions of every model configured on that input
    collect  correct/total of one (batch, attack, configuration) cell, once

Exactly once: a stage that already finished (its done-marker is set) only
re-sends its messages and releases its input; the collector records each
cell with HSETNX inside a Lua script, so a redelivered message never counts
twice. Blobs are released by their consumers (see :mod:`shared.blobstore`).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable

import numpy as np
import torch

from .blobstore import BlobMissing, BlobStore
from . import corpus as corpus_files
from . import screening
from .evaluation import (CLEAN, FUSED, Cell, attack_id, attack_model, classify, configuration_id, craft, defend,
                         evaluate_batch, validate_plan)

RAW = "raw"  # the "defence" of configurations that classify unreconstructed input
#: The queues, in the order of the data flow; one worker process serves each. ``fused``
#: runs all of a batch's stages in one task, for jobs in fused mode.
QUEUES = ("attack", "dwt", "classify", "collect", "fused")
#: Every task the stages send, and the queue it runs on.
TASK_QUEUES = {"attack": "attack", "dwt": "dwt", "classify": "classify", "collect": "collect",
               "fused": "fused", "collect_cells": "collect",
               "screen_dwt": "dwt", "screen_classify": "classify", "screen_collect": "collect",
               "screen_fused": "fused", "corpus_attack": "attack", "corpus_collect": "collect"}
KEEP_JOB_S = 7 * 86400  # how long a finished job's counts stay in Redis

# Each collector is one script, so that recording a result, counting it and completing
# the job happen together or not at all: a worker killed at any point leaves either
# nothing or everything, and its redelivered message, finding the result recorded,
# still completes a job whose last result it carries.
#
# Shared tail: complete the job once every expected result is in (KEYS[1] is the
# job's meta hash; the other keys get the finished job's lifetime).
_COMPLETE = """
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '-1')
local expected = tonumber(redis.call('HGET', KEYS[1], 'expected') or '-1')
if done >= 0 and done >= expected and redis.call('HGET', KEYS[1], 'status') ~= 'complete' then
  redis.call('HSET', KEYS[1], 'status', 'complete', 'finished', ARGV[1])
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
"""
# Evaluation: KEYS meta, cells, agg, ...; ARGV finished, keep_s, then per cell: cell, "correct,total",
# "attack|configuration", correct, total. Returns how many cells were new.
_COLLECT = """
local new = 0
for i = 3, #ARGV, 5 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[3], ARGV[i + 2] .. '|correct', ARGV[i + 3])
    redis.call('HINCRBY', KEYS[3], ARGV[i + 2] .. '|total', ARGV[i + 4])
    redis.call('HINCRBY', KEYS[1], 'done', 1)
    new = new + 1
  end
end
""" + _COMPLETE + "return new"
# Screening: KEYS meta, records, ...; ARGV finished, keep_s, batch, records JSON.
_SCREEN_COLLECT = """
local new = redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
if new == 1 then redis.call('HINCRBY', KEYS[1], 'done', 1) end
""" + _COMPLETE + "return new"
# Corpus: KEYS meta, cells, corpus shard set; ARGV cell. Completing a corpus writes its
# manifest first, so the script only says whether that is due: {new, due}.
_CORPUS_COLLECT = """
local new = redis.call('HSETNX', KEYS[2], ARGV[1], 1)
if new == 1 then
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'done', 1)
end
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '-1')
local expected = tonumber(redis.call('HGET', KEYS[1], 'expected') or '-1')
local due = done >= 0 and done >= expected and redis.call('HGET', KEYS[1], 'status') ~= 'complete'
return {new, due and 1 or 0}
"""
#: The keys of a job that outlive it by KEEP_JOB_S (done-markers carry their own expiry).
_JOB_KEYS = ("meta", "plan", "cells", "agg", "labels", "ids", "records", "errors", "traffic")


def _k(job: str, *parts) -> str:
    return ":".join(["ws", "job", job, *map(str, parts)])


def _to_float(images_u8: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images_u8).to(device).permute(0, 3, 1, 2).float().div(255).contiguous()


def corpus_output(output_dir, name: str):
    """The corpus folder ``name`` inside the collector's output directory (no escaping it)."""
    from pathlib import Path

    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"corpus name {name!r} must be a relative folder inside the output directory")
    return Path(output_dir) / relative


def records_key(job: str, batch: int) -> str:
    """Where a screening batch's records wait for the collector."""
    return _k(job, "batch_records", batch)


def clean_key(job, batch):
    return f"ws:blob:{job}:{batch}:clean"


def adversarial_key(job, batch, attack):
    return f"ws:blob:{job}:{batch}:adv:{attack}"


def reconstructed_key(job, batch, attack, defence):
    return f"ws:blob:{job}:{batch}:rec:{attack}:{defence}"


class Pipeline:
    """Stage functions over one Redis.

    Parameters
    ----------
    redis : redis.Redis
        Client for blobs, plans and counts.
    get_model : callable
        Model name -> network in eval mode on ``device`` (cached by the caller).
    defence_options : callable
        Defence name -> reconstruct() options.
    device : str
        Where tensors go.
    blob_ttl_s : int
        Lifetime of a blob nobody consumes.
    """

    def __init__(self, redis, *, get_model: Callable | None = None, defence_options: Callable | None = None,
                 device: str = "cpu", blob_ttl_s: int = 86400):
        self.redis = redis
        self.blobs = BlobStore(redis, blob_ttl_s)
        self.get_model = get_model
        self.defence_options = defence_options
        self.device = device
        self._collect = redis.register_script(_COLLECT)
        self._screen_collect = redis.register_script(_SCREEN_COLLECT)
        self._corpus_collect = redis.register_script(_CORPUS_COLLECT)

    # ------------------------------------------------------------- producer
    def create_job(self, plan: dict, labels: np.ndarray, *, job: str | None = None) -> str:
        """Store a job's plan, labels and expected cell count; return its id. Batches follow with add_batch."""
        validate_plan(plan)
        job = job or uuid.uuid4().hex[:12]
        size = int(plan.get("batch_size", 250))
        batches = range(0, len(labels), size)
        pipe = self.redis.pipeline()
        pipe.set(_k(job, "plan"), json.dumps(plan))
        pipe.hset(_k(job, "meta"), mapping={
            "expected": len(batches) * len(plan["attacks"]) * len(plan["configurations"]), "done": 0,
            "images": len(labels), "batches": len(batches), "started": time.time(), "status": "running"})
        pipe.zadd("ws:jobs", {job: time.time()})
        for b, start in enumerate(batches):
            pipe.hset(_k(job, "labels"), b, json.dumps(labels[start:start + size].tolist()))
        pipe.execute()
        return job

    def add_batch(self, job: str, batch: int, images: np.ndarray) -> list:
        """Store one batch of clean uint8 NHWC images; return its first messages (attacks, or the fused task)."""
        plan = self.plan(job)
        if plan.get("mode") == FUSED:
            self.blobs.put(clean_key(job, batch), images, ["fused"], stage="producer")
            return [("fused", {"job": job, "batch": batch})]
        attacks = range(len(plan["attacks"]))
        self.blobs.put(clean_key(job, batch), images, [f"attack:{a}" for a in attacks], stage="producer")
        return [("attack", {"job": job, "batch": batch, "attack": a}) for a in attacks]

    # --------------------------------------------------------------- stages
    def plan(self, job: str) -> dict:
        raw = self.redis.get(_k(job, "plan"))
        if raw is None:
            raise KeyError(f"no job {job!r} in Redis")
        return json.loads(raw)

    def labels(self, job: str, batch: int) -> torch.Tensor:
        return torch.tensor(json.loads(self.redis.hget(_k(job, "labels"), batch)), device=self.device)

    def _done(self, marker: str) -> bool:
        return bool(self.redis.exists(marker))

    def _finish(self, marker: str, input_key: str, consumer: str, messages: list) -> list:
        self.redis.set(marker, 1, ex=KEEP_JOB_S)
        self.blobs.release(input_key, consumer)
        return messages

    def attack(self, job: str, batch: int, attack: int) -> list:
        """Craft one attack on one batch; route to every defence that reads it."""
        plan = self.plan(job)
        defences = sorted({c.get("defence") or RAW for c in plan["configurations"]})
        messages = [("dwt", {"job": job, "batch": batch, "attack": attack, "defence": d}) for d in defences if d != RAW]
        if RAW in defences:
            messages.append(("classify", {"job": job, "batch": batch, "attack": attack, "defence": RAW}))
        marker = _k(job, "done", "attack", batch, attack)
        if not self._done(marker):
            x = _to_float(self.blobs.get(clean_key(job, batch), stage="attack"), self.device)
            spec = plan["attacks"][attack]
            model = None if spec["name"] == CLEAN else attack_model(plan, spec, self.get_model, self.defence_options)
            adversarial = craft(model, x, self.labels(job, batch), spec, threads=plan.get("threads"))
            self.blobs.put(adversarial_key(job, batch, attack), adversarial.cpu().numpy(),
                           [f"defence:{d}" for d in defences], stage="attack")
        return self._finish(marker, clean_key(job, batch), f"attack:{attack}", messages)

    def dwt(self, job: str, batch: int, attack: int, defence: str) -> list:
        """Reconstruct one attacked batch with one named defence."""
        messages = [("classify", {"job": job, "batch": batch, "attack": attack, "defence": defence})]
        marker = _k(job, "done", "dwt", batch, attack, defence)
        source = adversarial_key(job, batch, attack)
        if not self._done(marker):
            x = torch.from_numpy(self.blobs.get(source, stage="dwt")).to(self.device)
            rec = defend(x, self.defence_options(defence))
            self.blobs.put(reconstructed_key(job, batch, attack, defence), rec.cpu().numpy(), ["classify"], stage="dwt")
        return self._finish(marker, source, f"defence:{defence}", messages)

    def classify(self, job: str, batch: int, attack: int, defence: str) -> list:
        """Predict with every model configured on this input; one collect message per configuration."""
        plan = self.plan(job)
        configs = [c for c in plan["configurations"] if (c.get("defence") or RAW) == defence]
        marker = _k(job, "done", "classify", batch, attack, defence)
        source = adversarial_key(job, batch, attack) if defence == RAW else reconstructed_key(job, batch, attack, defence)
        consumer = f"defence:{RAW}" if defence == RAW else "classify"
        if self._done(marker):  # counts were sent before; the collector drops repeats
            cached = self.redis.get(marker + ":messages")
            return self._finish(marker, source, consumer, json.loads(cached) if cached else [])
        x = torch.from_numpy(self.blobs.get(source, stage="classify")).to(self.device)
        y = self.labels(job, batch)
        messages = []
        for config in configs:
            correct = int((classify(self.get_model(config["model"]), x) == y).sum())
            messages.append(("collect", {"job": job, "batch": batch, "attack": attack,
                                         "configuration": configuration_id(config), "correct": correct, "total": len(y)}))
        self.redis.set(marker + ":messages", json.dumps(messages), ex=KEEP_JOB_S)
        return self._finish(marker, source, consumer, messages)

    def fused(self, job: str, batch: int) -> list:
        """Every stage of one batch in this process (attack, DWT, classify); only its counts go on, in one message."""
        marker = _k(job, "done", "fused", batch)
        if self._done(marker):  # counts were sent before; the collector drops repeats
            cached = self.redis.get(marker + ":messages")
            return self._finish(marker, clean_key(job, batch), "fused", json.loads(cached) if cached else [])
        plan = self.plan(job)
        x = _to_float(self.blobs.get(clean_key(job, batch), stage="fused"), self.device)
        cells = evaluate_batch(plan, x, self.labels(job, batch), self.get_model,
                               functools.lru_cache(maxsize=None)(self.defence_options))
        messages = [("collect_cells", {"job": job, "batch": batch, "cells": [list(c) for c in cells]})]
        self.redis.set(marker + ":messages", json.dumps(messages), ex=KEEP_JOB_S)
        return self._finish(marker, clean_key(job, batch), "fused", messages)

    def collect(self, job: str, batch: int, attack: int, configuration: str, correct: int, total: int) -> bool:
        """Record one cell exactly once; the job completes with its last cell. True if newly counted."""
        return bool(self.collect_cells(job, batch, [[attack, configuration, correct, total]]))

    def collect_cells(self, job: str, batch: int, cells: list) -> int:
        """Record a batch's cells ``[attack, configuration, correct, total]`` exactly once, in one atomic step.

        Returns how many were new; the job completes with its last cell.
        """
        plan = self.plan(job)
        args = [time.time(), KEEP_JOB_S]
        for attack, configuration, correct, total in cells:
            args += [f"{batch}|{attack}|{configuration}", f"{correct},{total}",
                     f"{attack_id(plan['attacks'][attack])}|{configuration}", correct, total]
        keys = [_k(job, "meta"), _k(job, "cells"), _k(job, "agg"), *(_k(job, k) for k in _JOB_KEYS[1:])]
        return int(self._collect(keys=keys, args=args))

    def record_error(self, job: str, where: str, reason: str) -> None:
        """Note a stage that gave up (bad input, too many redeliveries)."""
        self.redis.rpush(_k(job, "errors"), json.dumps({"where": where, "reason": reason, "at": time.time()}))

    # ------------------------------------------------------------ screening
    def create_screen_job(self, settings: dict, batch_ids: list[list[str]], errors: list[dict], classes: list[str],
                          *, job: str | None = None) -> str:
        """Store a screening job: its settings, the item ids per batch, and the records of unreadable items."""
        job = job or uuid.uuid4().hex[:12]
        plan = {"kind": "screen", **settings, "classes": list(classes)}
        pipe = self.redis.pipeline()
        pipe.set(_k(job, "plan"), json.dumps(plan))
        pipe.hset(_k(job, "meta"), mapping={
            "expected": len(batch_ids), "done": 0, "images": sum(map(len, batch_ids)) + len(errors),
            "batches": len(batch_ids), "started": time.time(), "status": "running" if batch_ids else "complete"})
        pipe.zadd("ws:jobs", {job: time.time()})
        for b, ids in enumerate(batch_ids):
            pipe.hset(_k(job, "ids"), b, json.dumps(ids))
        pipe.hset(_k(job, "records"), "errors", json.dumps(errors))
        pipe.execute()
        return job

    def add_screen_batch(self, job: str, batch: int, images: np.ndarray) -> list:
        """Store one batch of uint8 NHWC images to screen; return its first message."""
        if self.plan(job).get("mode") == FUSED:
            self.blobs.put(clean_key(job, batch), images, ["screen_fused"], stage="producer")
            return [("screen_fused", {"job": job, "batch": batch})]
        self.blobs.put(clean_key(job, batch), images, ["screen_dwt", "screen_classify"], stage="producer")
        return [("screen_dwt", {"job": job, "batch": batch})]

    def screen_fused(self, job: str, batch: int) -> list:
        """DWT and both classifications of a screening batch in this process; only its records go on."""
        marker = _k(job, "done", "screen_fused", batch)
        if not self._done(marker):
            plan = self.plan(job)
            x = _to_float(self.blobs.get(clean_key(job, batch), stage="screen_fused"), self.device)
            self._score_batch(job, batch, plan, x, defend(x, self.defence_options(plan["defence"])))
        return self._finish(marker, clean_key(job, batch), "screen_fused",
                            [("screen_collect", {"job": job, "batch": batch})])

    def _score_batch(self, job: str, batch: int, plan: dict, x: torch.Tensor, rec: torch.Tensor) -> None:
        """The records of one screening batch, kept for the collector."""
        p_raw, p_def, suspicion = screening.score(self.get_model(plan["raw_model"]),
                                                  self.get_model(plan["defended_model"]), x, rec)
        ids = json.loads(self.redis.hget(_k(job, "ids"), batch))
        found = screening.records(ids, p_raw, p_def, suspicion, plan["threshold"], plan["classes"])
        self.redis.set(records_key(job, batch), json.dumps(found), ex=KEEP_JOB_S)

    def screen_dwt(self, job: str, batch: int) -> list:
        """Reconstruct a screening batch with the job's defence."""
        messages = [("screen_classify", {"job": job, "batch": batch})]
        marker = _k(job, "done", "screen_dwt", batch)
        if not self._done(marker):
            plan = self.plan(job)
            x = _to_float(self.blobs.get(clean_key(job, batch), stage="screen_dwt"), self.device)
            rec = defend(x, self.defence_options(plan["defence"]))
            self.blobs.put(reconstructed_key(job, batch, 0, plan["defence"]), rec.cpu().numpy(), ["screen_classify"],
                           stage="screen_dwt")
        return self._finish(marker, clean_key(job, batch), "screen_dwt", messages)

    def screen_classify(self, job: str, batch: int) -> list:
        """Both paths (raw standard, reconstructed defended) and the records of one batch."""
        plan = self.plan(job)
        rec_key = reconstructed_key(job, batch, 0, plan["defence"])
        marker = _k(job, "done", "screen_classify", batch)
        if not self._done(marker):
            x = _to_float(self.blobs.get(clean_key(job, batch), stage="screen_classify"), self.device)
            rec = torch.from_numpy(self.blobs.get(rec_key, stage="screen_classify")).to(self.device)
            self._score_batch(job, batch, plan, x, rec)
        messages = [("screen_collect", {"job": job, "batch": batch})]
        self.blobs.release(rec_key, "screen_classify")
        return self._finish(marker, clean_key(job, batch), "screen_classify", messages)

    def screen_collect(self, job: str, batch: int) -> bool:
        """Move a batch's records into the job exactly once; the job completes with its last batch."""
        found = self.redis.get(records_key(job, batch))
        if found is None:
            raise BlobMissing(f"records of batch {batch} of job {job}")
        keys = [_k(job, "meta"), _k(job, "records"), *(_k(job, k) for k in _JOB_KEYS[1:] if k != "records")]
        return bool(self._screen_collect(keys=keys, args=[time.time(), KEEP_JOB_S, batch, found]))

    def screen_records(self, job: str) -> list[dict]:
        """Every record of a screening job so far: batches in order, then unreadable items."""
        stored = {k.decode(): json.loads(v) for k, v in self.redis.hgetall(_k(job, "records")).items()}
        batches = sorted(int(k) for k in stored if k != "errors")
        return [r for b in batches for r in stored[str(b)]] + stored.get("errors", [])

    # --------------------------------------------------------------- corpus
    def create_corpus_job(self, plan: dict, labels: np.ndarray, shard_ids: list[list[str]], todo: list[tuple[int, int]],
                          *, job: str | None = None) -> str:
        """Store a corpus job; ``todo`` lists the (shard, attack) pairs still to compute."""
        validate_plan({**plan, "configurations": [{"model": plan["source_model"], "defence": None}]})
        job = job or uuid.uuid4().hex[:12]
        pipe = self.redis.pipeline()
        pipe.set(_k(job, "plan"), json.dumps({"kind": "corpus", **plan, "shards": len(shard_ids)}))
        pipe.hset(_k(job, "meta"), mapping={"expected": len(todo), "done": 0, "images": len(labels),
                                            "batches": len(shard_ids), "started": time.time(),
                                            "status": "running" if todo else "complete"})
        pipe.zadd("ws:jobs", {job: time.time()})
        size = int(plan["shard_size"])
        for b, ids in enumerate(shard_ids):
            pipe.hset(_k(job, "labels"), b, json.dumps(labels[b * size:(b + 1) * size].tolist()))
            pipe.hset(_k(job, "ids"), b, json.dumps(ids))
        pipe.execute()
        return job

    def add_corpus_shard(self, job: str, shard: int, images: np.ndarray, attacks: list[int]) -> list:
        """Store one shard's clean images for the attacks still to run on it."""
        self.blobs.put(clean_key(job, shard), images, [f"corpus_attack:{a}" for a in attacks], stage="producer")
        return [("corpus_attack", {"job": job, "shard": shard, "attack": a}) for a in attacks]

    def corpus_attack(self, job: str, shard: int, attack: int) -> list:
        """Attack one shard; keep the float result and its manifest lines for the collector."""
        messages = [("corpus_collect", {"job": job, "shard": shard, "attack": attack})]
        marker = _k(job, "done", "corpus_attack", shard, attack)
        if not self._done(marker):
            plan = self.plan(job)
            spec = plan["attacks"][attack]
            model = self.get_model(plan["source_model"])
            x = _to_float(self.blobs.get(clean_key(job, shard), stage="corpus_attack"), self.device)
            y = self.labels(job, shard)
            params = dict(spec.get("params", {}))
            if spec["name"] == "pgd":
                params.setdefault("seed", plan["seed"] + shard)
            adversarial = craft(model, x, y, {**spec, "params": params}, threads=plan.get("threads"))
            ids = json.loads(self.redis.hget(_k(job, "ids"), shard))
            lines = corpus_files.manifest_lines(model, x, adversarial, y, ids, spec, seed=plan["seed"],
                                                model_sha256=plan["source_model_sha256"])
            key = f"ws:blob:{job}:{shard}:corpus:{attack}"
            self.blobs.put(key, adversarial.cpu().numpy().astype(plan["dtype"]), ["corpus_collect"], stage="corpus_attack")
            self.redis.set(marker + ":lines", json.dumps(lines), ex=KEEP_JOB_S)
        return self._finish(marker, clean_key(job, shard), f"corpus_attack:{attack}", messages)

    def corpus_collect(self, job: str, shard: int, attack: int, output_dir) -> bool:
        """Write one shard (the collector is the corpus's single writer); finish the corpus with the last."""
        plan = self.plan(job)
        out = corpus_output(output_dir, plan["out"])
        spec = plan["attacks"][attack]
        key = f"ws:blob:{job}:{shard}:corpus:{attack}"
        if not corpus_files.shard_done(out, spec, shard):
            lines = json.loads(self.redis.get(_k(job, "done", "corpus_attack", shard, attack) + ":lines"))
            corpus_files.write_shard(out, spec, shard, self.blobs.get(key, stage="corpus_collect"),
                                     np.array([l["label"] for l in lines]),
                                     [l["id"] for l in lines], lines, plan["dtype"])
        self.blobs.release(key, "corpus_collect")
        new, due = self._corpus_collect(keys=[_k(job, "meta"), _k(job, "cells"),
                                              f"ws:corpus:{plan['corpus_key']}:shards"], args=[f"{shard}|{attack}"])
        if due:  # the last shard, or a redelivery of it after a crash before the manifest was written
            corpus_files.finish(out, plan["attacks"], plan["shards"])
            corpus_files.preview(out, plan["attacks"])
            complete = self.redis.pipeline(transaction=True)  # one step: complete and set to expire
            complete.hset(_k(job, "meta"), mapping={"status": "complete", "finished": time.time()})
            for name in _JOB_KEYS:
                complete.expire(_k(job, name), KEEP_JOB_S)
            complete.execute()
        return bool(new)

    # ------------------------------------------------------------ read side
    def progress(self, job: str) -> dict:
        """Cells done and expected, images/s, status, errors."""
        meta = {k.decode(): v.decode() for k, v in self.redis.hgetall(_k(job, "meta")).items()}
        if not meta:
            raise KeyError(f"no job {job!r} in Redis")
        done, expected = int(meta["done"]), int(meta["expected"])
        elapsed = float(meta.get("finished", time.time())) - float(meta["started"])
        images_done = int(meta["images"]) * done / expected if expected else 0
        errors = [json.loads(e) for e in self.redis.lrange(_k(job, "errors"), 0, -1)]
        return {"job": job, "status": meta["status"], "done": done, "expected": expected, "images": int(meta["images"]),
                "images_per_s": images_done / elapsed if elapsed > 0 else 0.0, "seconds": elapsed, "errors": errors}

    def traffic(self, job: str) -> dict[str, dict[str, int]]:
        """Blob bytes each stage of a job wrote to Redis (``in``) and read from it (``out``)."""
        out: dict[str, dict[str, int]] = {}
        for field, value in self.redis.hgetall(_k(job, "traffic")).items():
            stage, direction = field.decode().rsplit(":", 1)
            out.setdefault(stage, {"in": 0, "out": 0})[direction] = int(value)
        return out

    def cells(self, job: str) -> list[Cell]:
        """The aggregated cells of a job, in plan order."""
        plan = self.plan(job)
        agg = {k.decode(): int(v) for k, v in self.redis.hgetall(_k(job, "agg")).items()}
        out = []
        for attack in plan["attacks"]:
            for config in plan["configurations"]:
                aid, cid = attack_id(attack), configuration_id(config)
                out.append(Cell(aid, cid, config["model"], config.get("defence"), agg.get(f"{aid}|{cid}|correct", 0),
                                agg.get(f"{aid}|{cid}|total", 0)))
        return out

    def deliveries(self, task_id: str) -> int:
        """Count one more delivery of a task (for the redelivery cap)."""
        key = f"ws:deliveries:{task_id}"
        count = self.redis.incr(key)
        self.redis.expire(key, KEEP_JOB_S)
        return int(count)
