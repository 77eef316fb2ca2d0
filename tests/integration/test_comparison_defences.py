"""The comparison defences and torchattacks attacks through real Celery workers on a real Redis: the same counts
as one process, staged (the input-transformation queue serves every defence) and fused."""

from producers import submit as producer
from shared.settings import load as load_settings

from .conftest import local_counts, pipeline_counts

DEFENCES = ["jpeg:quality=30", "bit-depth:bits=3", "median:size=2", "resize-pad:shrink=0.05"]


def _plan(mode: str) -> dict:
    via = {"model": "standard"}
    attacks = [{"name": "clean", "params": {}},
               {"name": "fgsm", "params": {"eps": 0.01}},
               # BPDA through JPEG (no gradient), the median's own gradient, EOT over resize-and-pad's draws
               {"name": "pgd", "params": {"eps": 0.01, "steps": 3}, "through": {**via, "defence": "jpeg:quality=30"}},
               {"name": "pgd", "params": {"eps": 0.01, "steps": 3}, "through": {**via, "defence": "median:size=2"}},
               {"name": "torchattacks:APGD", "params": {"eps": 0.01, "steps": 3},
                "through": {**via, "defence": "resize-pad:shrink=0.05"}}]
    configurations = [{"model": "standard", "defence": None}, *({"model": "standard", "defence": d} for d in DEFENCES),
                      {"model": "haar", "defence": "haar"}]
    return {"source_model": "standard", "attacks": attacks, "configurations": configurations, "batch_size": 15,
            "threads": 2, "mode": mode}


def test_comparison_defences_count_on_workers_as_in_one_process(redis_client, redis_url, workers, job_images,
                                                                  tiny_weights, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    from workers.app import app, use_broker

    use_broker(redis_url)
    images = type(job_images)(job_images.images[:30], job_images.labels[:30], job_images.ids[:30])
    for mode in ("staged", "fused"):  # one set of workers for both jobs
        plan = _plan(mode)
        job = producer.submit(redis_client, app, plan, images, load_settings())
        state = producer.wait(redis_client, job, timeout_s=600)
        assert state["done"] == state["expected"] and not state["errors"], (mode, state["errors"])
        counts = pipeline_counts(redis_client, job)
        assert counts == local_counts(plan, images, tiny_weights), mode
        # In staged mode each defence reached the input-transformation queue under its own name. (Whether the
        # defences change what a model sees is not asked of these counts: the tiny models, trained for two epochs,
        # can give one class to every image on one CPU's kernels, and every defence then counts alike.)
        if mode == "staged":
            done = [k.decode() for k in redis_client.scan_iter(match=f"ws:job:{job}:done:dwt:*")]
            assert all(any(key.endswith(f":{d}") for key in done) for d in DEFENCES)
