"""Corpus jobs: attack -> shard written by the collector, resumable by shard."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np

from shared.images.image_set import to_float_nchw
from shared.pipeline.base import JobStore
from shared.pipeline.keys import (
    _JOB_KEYS,
    JOBS_KEY,
    KEEP_JOB_S,
    clean_key,
    corpus_blob_key,
    corpus_output,
    corpus_shards_key,
    job_key,
)


class CorpusStages(JobStore):
    """The stages of an adversarial-corpus job."""

    def create_corpus_job(self, plan: dict, labels: np.ndarray, shard_ids: list[list[str]], todo: list[tuple[int, int]],
                          *, job: str | None = None) -> str:
        """Store a corpus job; ``todo`` lists the (shard, attack) pairs still to compute."""
        from shared.evaluation.run import validate_plan

        validate_plan({**plan, "configurations": [{"model": plan["source_model"], "defence": None}]})
        job = job or uuid.uuid4().hex[:12]
        pipe = self.redis.pipeline()
        pipe.set(job_key(job, "plan"), json.dumps({"kind": "corpus", **plan, "shards": len(shard_ids),
                                                 "todo": [list(pair) for pair in todo]}))
        pipe.hset(job_key(job, "meta"), mapping={"expected": len(todo), "done": 0, "images": len(labels),
                                            "batches": len(shard_ids), "started": time.time(),
                                            "status": "running" if todo else "complete"})
        pipe.zadd(JOBS_KEY, {job: time.time()})
        size = int(plan["shard_size"])
        for b, ids in enumerate(shard_ids):
            pipe.hset(job_key(job, "labels"), b, json.dumps(labels[b * size:(b + 1) * size].tolist()))
            pipe.hset(job_key(job, "ids"), b, json.dumps(ids))
        pipe.execute()
        return job

    def add_corpus_shard(self, job: str, shard: int, images: np.ndarray, attacks: list[int]) -> list:
        """Store one shard's clean images for the attacks still to run on it."""
        self.blobs.put(clean_key(job, shard), images, [f"corpus_attack:{a}" for a in attacks], stage="producer")
        self.note_fed(job, shard)
        return [("corpus_attack", {"job": job, "shard": shard, "attack": a}) for a in attacks]

    def corpus_attack(self, job: str, shard: int, attack: int) -> list:
        """Attack one shard; keep the float result and its manifest lines for the collector."""
        from shared.evaluation import corpus as corpus_files
        from shared.evaluation.run import craft

        messages = [("corpus_collect", {"job": job, "shard": shard, "attack": attack})]
        marker = job_key(job, "done", "corpus_attack", shard, attack)
        if not self._done(marker):
            plan = self.plan(job)
            spec = plan["attacks"][attack]
            model = self.get_model(plan["source_model"])
            x = to_float_nchw(self.blobs.get(clean_key(job, shard), stage="corpus_attack"), self.device)
            y = self.labels(job, shard)
            params = dict(spec.get("params", {}))
            if spec["name"] == "pgd":
                params.setdefault("seed", plan["seed"] + shard)
            adversarial = craft(model, x, y, {**spec, "params": params}, threads=plan.get("threads"))
            ids = json.loads(self.redis.hget(job_key(job, "ids"), shard))
            lines = corpus_files.manifest_lines(model, x, adversarial, y, ids, spec, seed=plan["seed"],
                                                model_sha256=plan["source_model_sha256"])
            key = corpus_blob_key(job, shard, attack)
            self.blobs.put(key, adversarial.cpu().numpy().astype(plan["dtype"]), ["corpus_collect"], stage="corpus_attack")
            self.redis.set(marker + ":lines", json.dumps(lines), ex=KEEP_JOB_S)
        return self._finish(marker, clean_key(job, shard), f"corpus_attack:{attack}", messages)

    def corpus_collect(self, job: str, shard: int, attack: int, output_dir) -> bool:
        """Write one shard (the collector is the corpus's single writer); finish the corpus with the last."""
        from shared.evaluation import corpus as corpus_files

        plan = self.plan(job)
        out = corpus_output(output_dir, plan["out"])
        spec = plan["attacks"][attack]
        key = corpus_blob_key(job, shard, attack)
        if not corpus_files.shard_done(out, spec, shard):
            lines = json.loads(self.redis.get(job_key(job, "done", "corpus_attack", shard, attack) + ":lines"))
            corpus_files.write_shard(out, spec, shard, self.blobs.get(key, stage="corpus_collect"),
                                     np.array([l["label"] for l in lines]),
                                     [l["id"] for l in lines], lines, plan["dtype"])
        self.blobs.release(key, "corpus_collect")
        new, due = self._corpus_collect(keys=[job_key(job, "meta"), job_key(job, "cells"),
                                              corpus_shards_key(plan["corpus_key"])], args=[f"{shard}|{attack}"])
        if due:  # the last shard, or a redelivery of it after a crash before the manifest was written
            corpus_files.finish(out, plan["attacks"], plan["shards"])
            corpus_files.pictures(out, plan["attacks"], plan.get("classes"))
            self._corpus_complete(keys=[job_key(job, name) for name in _JOB_KEYS], args=[time.time(), KEEP_JOB_S])
        return bool(new)

    def unfinished_corpus(self, job: str, plan: dict, stored: int) -> list:
        """The attack message of each (shard, attack) of the ``stored`` shards not yet collected (for recovery)."""
        recorded = {k.decode() for k in self.redis.hkeys(job_key(job, "cells"))}
        return [("corpus_attack", {"job": job, "shard": s, "attack": a})
                for s, a in plan["todo"] if f"{s}|{a}" not in recorded and s < stored]
