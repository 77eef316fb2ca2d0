"""Adversarial corpora on the attack queue, written by the collector; resumable."""

import json

import numpy as np
import torch

from producers import submit as producer
from producers.corpus import submit_corpus
from shared import attacks
from shared.images.load import load_images
from shared.models import network
from shared.settings import load as load_settings


def test_corpus_shards_manifest_preview_and_resume(redis_client, redis_url, workers, worker_env, tiny_weights,
                                                   monkeypatch, tmp_path):
    for key in ("REDIS_URL", "WAVESHIELD_WEIGHTS_DIR", "WAVESHIELD_OUTPUT_DIR"):
        monkeypatch.setenv(key, worker_env[key])
    from workers.app import app, use_broker

    use_broker(redis_url)
    settings = load_settings()
    out = settings.output_dir / "corp"
    spec = dict(data="sample", attacks=["fgsm:eps=0.004", "bim:eps=0.01"], name="corp", settings=settings,
                dtype="float16", shard_size=15, limit=40)
    job, queued, done = submit_corpus(redis_client, app, **spec)
    assert (queued, done) == (3 * 2, 0)
    producer.wait(redis_client, job, timeout_s=300)

    manifest = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 2 * 40 and (out / "preview.png").is_file()
    page = (out / "report.html").read_text()
    assert 'src="preview.png"' in page and "<td>fgsm eps=0.004 (1/255)</td><td>40</td>" in page
    first = manifest[0]
    assert first["params"] == {"eps": 0.004, "eps_255": 1.02} and first["seed"] == 0
    assert first["source_model_sha256"] == json.loads((tiny_weights / "standard.json").read_text())["sha256"]
    assert all(m["linf"] <= m["params"]["eps"] + 1e-3 for m in manifest)  # fp16 storage rounds a little

    with np.load(out / "bim_eps0.01" / "shard-00000.npz") as shard:
        x, y, ids = shard["x"], shard["y"], list(shard["ids"])
    assert x.dtype == np.float16 and x.shape == (15, 3, 32, 32)
    sample = load_images("sample", limit=40)
    clean = sample.to_tensor()[:15]
    model = network.load(tiny_weights / "standard.safetensors")[0]
    expected = attacks.bim(model, clean, torch.from_numpy(sample.labels[:15]), eps=0.01)
    assert np.abs(x.astype(np.float32) - expected.numpy()).max() < 1e-3  # the float perturbation, not uint8-rounded
    assert ids == sample.ids[:15] and y.tolist() == sample.labels[:15].tolist()
    assert np.abs(np.round(x.astype(np.float32) * 255) / 255 - x.astype(np.float32)).max() > 1e-4

    # Lose a shard, run the same spec again: only it is computed.
    (out / "fgsm_eps0.004" / "shard-00001.npz").unlink()
    redis_client.srem(next(iter(redis_client.scan_iter(match="ws:corpus:*:shards"))), "1|0")
    job, queued, done = submit_corpus(redis_client, app, **spec)
    assert (queued, done) == (1, 5)
    producer.wait(redis_client, job, timeout_s=300)
    assert (out / "fgsm_eps0.004" / "shard-00001.npz").is_file()
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 80
    assert not list(redis_client.scan_iter(match="ws:blob:*"))
