"""Collectors killed at every point: a redelivered message completes the job with the same counts.

A collector's client "dies" after its first N Redis commands, as a worker killed
with kill -9 would stop; the message is then delivered again to a healthy one.
N runs from 0 until the collector gets through without dying, so every point
between two commands is tried.
"""

import json

import numpy as np
import pytest

from shared.evaluation import corpus as corpus_files
from shared.evaluation.plan import paper_plan
from shared.pipeline import Pipeline, records_key

from .conftest import DyingRedis, Killed


def _evaluate_job(client, tmp_path):
    """A 1-batch job of 2 attacks x 2 configurations with all cells but the last collected."""
    plan = {**paper_plan(batch_size=10), "configurations": [{"model": "standard", "defence": None},
                                                            {"model": "haar", "defence": "haar"}]}
    plan["attacks"] = plan["attacks"][:2]
    pipe = Pipeline(client)
    job = pipe.create_job(plan, np.zeros(10, np.int64))
    messages = [dict(job=job, batch=0, attack=a, configuration=c, correct=3 + a + i, total=10)
                for a in range(2) for i, c in enumerate(("standard+raw", "haar+haar"))]
    for message in messages[:-1]:
        assert pipe.collect(**message)

    def result(p):
        return sorted((c.attack.id, c.configuration, c.correct, c.total) for c in p.cells(job))

    expected = sorted((a, c, 3 + i + j, 10) for i, a in enumerate(("clean", "fgsm eps=0.004"))
                      for j, c in enumerate(("standard+raw", "haar+haar")))
    return job, lambda p: p.collect(**messages[-1]), result, expected


def _screen_job(client, tmp_path):
    """A 2-batch screening job with its first batch collected."""
    pipe = Pipeline(client)
    ids = [["a.png", "b.png"], ["c.png"]]
    job = pipe.create_screen_job({"defence": "haar", "threshold": 0.5}, ids, [{"id": "bad.png", "error": "x"}], ["cat"])
    for batch, names in enumerate(ids):
        records = [{"id": n, "label": "cat"} for n in names]
        client.set(records_key(job, batch), json.dumps(records))
    assert pipe.screen_collect(job, 0)
    expected = [{"id": n, "label": "cat"} for n in ("a.png", "b.png", "c.png")] + [{"id": "bad.png", "error": "x"}]
    return job, lambda p: p.screen_collect(job, 1), lambda p: p.screen_records(job), expected


def _corpus_job(client, tmp_path):
    """A corpus of 2 shards x 1 attack with its first shard collected; the last one writes the manifest."""
    pipe = Pipeline(client)
    attack = {"name": "fgsm", "params": {"eps": 0.01}}
    plan = {"source_model": "standard", "attacks": [attack], "shard_size": 2, "dtype": "float32", "seed": 0,
            "out": "corp", "corpus_key": f"k{tmp_path.name}", "source_model_sha256": "0" * 64}
    ids = [["a", "b"], ["c", "d"]]
    job = pipe.create_corpus_job(plan, np.array([1, 2, 3, 4]), ids, [(0, 0), (1, 0)])
    for shard, names in enumerate(ids):
        pipe.blobs.put(f"ws:blob:{job}:{shard}:corpus:0", np.full((2, 3, 4, 4), shard, np.float32), ["corpus_collect"])
        lines = [{"id": n, "label": 1 + 2 * shard + i, "pred_before": 0, "pred_after": 1} for i, n in enumerate(names)]
        client.set(f"ws:job:{job}:done:corpus_attack:{shard}:0:lines", json.dumps(lines))
    assert pipe.corpus_collect(job, 0, 0, tmp_path)

    def result(p):
        manifest = (tmp_path / "corp" / "manifest.jsonl")
        members = sorted(m.decode() for m in client.smembers(f"ws:corpus:{plan['corpus_key']}:shards"))
        return manifest.read_text() if manifest.is_file() else None, members

    expected = ("".join(json.dumps({"id": n, "label": i + 1, "pred_before": 0, "pred_after": 1}) + "\n"
                        for i, n in enumerate("abcd")), ["0|0", "1|0"])
    return job, lambda p: p.corpus_collect(job, 1, 0, tmp_path), result, expected


@pytest.mark.parametrize("make_job", [_evaluate_job, _screen_job, _corpus_job], ids=["evaluate", "screen", "corpus"])
def test_collector_killed_after_any_command_completes_on_redelivery(redis_client, tmp_path, make_job):
    after = 0
    while True:
        redis_client.flushdb()
        folder = tmp_path / f"after{after}"
        folder.mkdir()
        job, collect_last, result, expected = make_job(redis_client, folder)
        try:
            collect_last(Pipeline(DyingRedis(redis_client.connection_pool, after)))
            survived = True
        except Killed:
            survived = False
        healthy = Pipeline(redis_client)
        collect_last(healthy)  # the redelivery
        assert not collect_last(healthy)  # and another one changes nothing
        state = healthy.progress(job)
        assert (state["status"], state["done"]) == ("complete", state["expected"]), f"killed after {after} commands"
        assert result(healthy) == expected, f"killed after {after} commands"
        assert redis_client.ttl(f"ws:job:{job}:meta") > 0  # a finished job expires
        if survived:
            break
        after += 1
    assert after >= 2  # there were points in between to kill it at


def test_corpus_killed_while_writing_its_manifest_completes_on_redelivery(redis_client, tmp_path, monkeypatch):
    job, collect_last, result, expected = _corpus_job(redis_client, tmp_path)
    real_finish = corpus_files.finish

    def dies(*args):
        raise Killed("manifest")

    monkeypatch.setattr(corpus_files, "finish", dies)
    with pytest.raises(Killed):
        collect_last(Pipeline(redis_client))
    assert Pipeline(redis_client).progress(job)["status"] == "running"  # not complete without its manifest
    monkeypatch.setattr(corpus_files, "finish", real_finish)
    assert not collect_last(Pipeline(redis_client))  # already counted; completes all the same
    assert Pipeline(redis_client).progress(job)["status"] == "complete" and result(Pipeline(redis_client)) == expected
