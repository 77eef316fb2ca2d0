"""Evaluation jobs: attack -> DWT -> classify -> collect (staged), or one fused task per batch."""

from __future__ import annotations

import functools
import json
import time
import uuid

import numpy as np

from shared.evaluation.plan import CLEAN, DEFAULT_BATCH_SIZE, FUSED, AttackSpec, Cell, ModelPath
from shared.images.image_set import iter_batches, to_float_nchw
from shared.pipeline.base import JobStore
from shared.pipeline.keys import (
    _JOB_KEYS,
    JOBS_KEY,
    KEEP_JOB_S,
    RAW,
    adversarial_key,
    clean_key,
    job_key,
    reconstructed_key,
)


class EvaluateStages(JobStore):
    """The stages of an evaluation job."""

    def create_job(self, plan: dict, labels: np.ndarray, *, job: str | None = None, data: str = "",
                   unreadable: int = 0) -> str:
        """Store a job's plan, labels and expected cell count; return its id. Batches follow with add_batch.

        ``data`` names the image set and ``unreadable`` counts its items that
        could not be read, for a report rendered again from Redis.
        """
        from shared.evaluation.run import validate_plan

        validate_plan(plan)
        job = job or uuid.uuid4().hex[:12]
        size = int(plan.get("batch_size", DEFAULT_BATCH_SIZE))
        batches = list(iter_batches(len(labels), size))
        pipe = self.redis.pipeline()
        pipe.set(job_key(job, "plan"), json.dumps(plan))
        pipe.hset(job_key(job, "meta"), mapping={
            "expected": len(batches) * len(plan["attacks"]) * len(plan["configurations"]), "done": 0,
            "images": len(labels), "batches": len(batches), "started": time.time(), "status": "running",
            "data": data, "unreadable": unreadable})
        pipe.zadd(JOBS_KEY, {job: time.time()})
        for b, batch in enumerate(batches):
            pipe.hset(job_key(job, "labels"), b, json.dumps(labels[batch].tolist()))
        pipe.execute()
        return job

    def add_batch(self, job: str, batch: int, images: np.ndarray) -> list:
        """Store one batch of clean NHWC images (uint8, or float32 kept exact); return its first messages (attacks, or the fused task)."""
        plan = self.plan(job)
        if plan.get("mode") == FUSED:
            self.blobs.put(clean_key(job, batch), images, ["fused"], stage="producer")
            messages = [("fused", {"job": job, "batch": batch})]
        else:
            attacks = range(len(plan["attacks"]))
            self.blobs.put(clean_key(job, batch), images, [f"attack:{a}" for a in attacks], stage="producer")
            messages = [("attack", {"job": job, "batch": batch, "attack": a}) for a in attacks]
        self.note_fed(job, batch)
        return messages

    def attack(self, job: str, batch: int, attack: int) -> list:
        """Craft one attack on one batch; route to every defence that reads it."""
        from shared.evaluation.run import attack_model, craft

        plan = self.plan(job)
        defences = sorted({c.get("defence") or RAW for c in plan["configurations"]})
        messages = [("dwt", {"job": job, "batch": batch, "attack": attack, "defence": d}) for d in defences if d != RAW]
        if RAW in defences:
            messages.append(("classify", {"job": job, "batch": batch, "attack": attack, "defence": RAW}))
        marker = job_key(job, "done", "attack", batch, attack)
        if not self._done(marker):
            x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="attack"), self.device)
            spec = plan["attacks"][attack]
            model = None if spec["name"] == CLEAN else attack_model(plan, spec, self.get_model, self.defence_options)
            adversarial = craft(model, x, self.labels(job, batch), spec, threads=plan.get("threads"))
            self.blobs.put(adversarial_key(job, batch, attack), adversarial.cpu().numpy(),
                           [f"defence:{d}" for d in defences], stage="attack")
        return self._finish(marker, clean_key(job, batch), f"attack:{attack}", messages)

    def dwt(self, job: str, batch: int, attack: int, defence: str) -> list:
        """Reconstruct one attacked batch with one named defence."""
        import torch

        from shared.evaluation.run import defend

        messages = [("classify", {"job": job, "batch": batch, "attack": attack, "defence": defence})]
        marker = job_key(job, "done", "dwt", batch, attack, defence)
        source = adversarial_key(job, batch, attack)
        if not self._done(marker):
            x = torch.from_numpy(self.blobs.get(source, stage="dwt")).to(self.device)
            rec = defend(x, self.defence_options(defence))
            self.blobs.put(reconstructed_key(job, batch, attack, defence), rec.cpu().numpy(), ["classify"], stage="dwt")
        return self._finish(marker, source, f"defence:{defence}", messages)

    def classify(self, job: str, batch: int, attack: int, defence: str) -> list:
        """Predict with every model configured on this input; one collect message per configuration."""
        import torch

        from shared.evaluation.run import classify

        plan = self.plan(job)
        configs = [c for c in plan["configurations"] if (c.get("defence") or RAW) == defence]
        marker = job_key(job, "done", "classify", batch, attack, defence)
        source = adversarial_key(job, batch, attack) if defence == RAW else reconstructed_key(job, batch, attack, defence)
        consumer = f"defence:{RAW}" if defence == RAW else "classify"
        sent = self._sent_before(marker)
        if sent is not None:  # counts were sent before; the collector drops repeats
            return self._finish(marker, source, consumer, sent)
        x = torch.from_numpy(self.blobs.get(source, stage="classify")).to(self.device)
        y = self.labels(job, batch)
        messages = []
        for config in configs:
            correct = int((classify(self.get_model(config["model"]), x) == y).sum())
            messages.append(("collect", {"job": job, "batch": batch, "attack": attack,
                                         "configuration": ModelPath.of(config).id, "correct": correct, "total": len(y)}))
        return self._finish(marker, source, consumer, messages, remember=True)

    def fused(self, job: str, batch: int) -> list:
        """Every stage of one batch in this process (attack, DWT, classify); only its counts go on, in one message."""
        from shared.evaluation.run import evaluate_batch

        marker = job_key(job, "done", "fused", batch)
        sent = self._sent_before(marker)
        if sent is not None:  # counts were sent before; the collector drops repeats
            return self._finish(marker, clean_key(job, batch), "fused", sent)
        plan = self.plan(job)
        x = to_float_nchw(self.blobs.get(clean_key(job, batch), stage="fused"), self.device)
        cells = evaluate_batch(plan, x, self.labels(job, batch), self.get_model,
                               functools.lru_cache(maxsize=None)(self.defence_options))
        messages = [("collect_cells", {"job": job, "batch": batch, "cells": [list(c) for c in cells]})]
        return self._finish(marker, clean_key(job, batch), "fused", messages, remember=True)

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
                     f"{AttackSpec.of(plan['attacks'][attack]).id}|{configuration}", correct, total]
        keys = [job_key(job, "meta"), job_key(job, "cells"), job_key(job, "agg"),
                *(job_key(job, name) for name in _JOB_KEYS[1:])]
        return int(self._collect(keys=keys, args=args))

    def cells(self, job: str) -> list:
        """The aggregated cells of a job, in plan order."""
        plan = self.plan(job)
        agg = {k.decode(): int(v) for k, v in self.redis.hgetall(job_key(job, "agg")).items()}
        out = []
        for spec in map(AttackSpec.of, plan["attacks"]):
            for path in map(ModelPath.of, plan["configurations"]):
                key = f"{spec.id}|{path.id}"
                out.append(Cell(spec, path, agg.get(f"{key}|correct", 0), agg.get(f"{key}|total", 0)))
        return out

    def unfinished_evaluate(self, job: str, plan: dict, stored: int) -> list:
        """The first message of each (batch, attack) of the ``stored`` batches missing a cell (for recovery).

        Fused jobs: one message per batch.
        """
        recorded = {k.decode() for k in self.redis.hkeys(job_key(job, "cells"))}
        configs = [ModelPath.of(c).id for c in plan["configurations"]]
        missing = [(b, a) for b in range(stored) for a in range(len(plan["attacks"]))
                   if any(f"{b}|{a}|{c}" not in recorded for c in configs)]
        if plan.get("mode") == FUSED:
            return [("fused", {"job": job, "batch": b}) for b in sorted({b for b, _ in missing})]
        return [("attack", {"job": job, "batch": b, "attack": a}) for b, a in missing]
