"""Bulk screening through the dwt, classify and collect workers: one record per item, as in one process."""

import io

import numpy as np
import pytest
from PIL import Image

from producers import submit as producer
from producers.screening import screen as screen_mod
from shared.images.load import load_many
from shared.pipeline import Pipeline
from shared.settings import load as load_settings


def _save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture()
def incoming(tmp_path, sample):
    """Real CIFAR images in every awkward form, plus broken files, in nested folders and a zip."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "incoming"
    (folder / "nested").mkdir(parents=True)
    for i in range(40):
        Image.fromarray(sample.images[i]).resize((96, 64)).save(folder / f"photo{i}.png")
    rgb = Image.fromarray(sample.images[50])
    files = {
        "nested/cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "nested/palette.gif": _save(rgb.convert("P"), "GIF"),
        "nested/rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "nested/sixteen.png": _save(Image.fromarray(rng.integers(0, 65535, (32, 32)).astype(np.uint16)), "PNG"),
        "nested/animated.gif": _save(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")]),
        "empty.jpg": b"",
        "readme.txt": b"not an image",
        "truncated.png": _save(rgb, "PNG")[:60],
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    # A float set (a corpus shard, say): kept at its precision, a third of an 8-bit level included.
    np.savez(tmp_path / "extra.npz", x=(sample.images[100:130] / np.float32(255) + np.float32(1 / 765)).clip(0, 1))
    return [str(folder), str(tmp_path / "extra.npz"), str(tmp_path / "*.nomatch")]


@pytest.mark.parametrize("mode", ["staged", "fused"])
def test_screen_on_workers_gives_one_record_per_item_equal_to_local(redis_client, redis_url, workers, incoming,
                                                                      tiny_weights, monkeypatch, mode):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("WAVESHIELD_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("WAVESHIELD_DEVICE", "cpu")
    from workers.app import app, use_broker

    use_broker(redis_url)
    settings = load_settings()
    image_set = load_many(incoming)
    assert image_set.images.dtype == np.float32  # one float source makes the whole set float, nothing rounded
    job = screen_mod.submit_screen(redis_client, app, image_set, settings, batch_size=16, mode=mode)
    state = producer.wait(redis_client, job, timeout_s=300)
    assert state["status"] == "complete" and not state["errors"]
    records = Pipeline(redis_client).screen_records(job)
    assert len(records) == 40 + 5 + 3 + 30 + 1  # images, odd modes, broken files, npz rows, the empty pattern
    assert len({r["id"] for r in records}) == len(records)
    errors = {r["id"].rsplit("/", 1)[-1]: r["error"] for r in records if r["error"]}
    assert set(errors) == {"empty.jpg", "readme.txt", "truncated.png", "*.nomatch"}
    local = {r["id"]: r for r in screen_mod.screen_local(image_set, settings, batch_size=16)}
    for r in records:
        assert r["label"] == local[r["id"]]["label"] and r["raw_label"] == local[r["id"]]["raw_label"]
        if r["error"] is None:
            assert abs(r["suspicion"] - local[r["id"]]["suspicion"]) < 1e-4
            assert 0 <= r["suspicion"] <= 1 and 0 < r["confidence"] <= 1
    assert not list(redis_client.scan_iter(match="ws:blob:*"))
    # The stages that ran left their done-markers: one fused task per batch, or DWT then classify.
    ran = {k.decode().split(":")[4] for k in redis_client.scan_iter(match=f"ws:job:{job}:done:*")}
    assert ran == ({"screen_fused"} if mode == "fused" else {"screen_dwt", "screen_classify"})


@pytest.fixture()
def detector_weights(tiny_weights, tmp_path, sample):
    """The tiny models plus a detector fitted on their features, selected by screening.json."""
    import functools
    import json
    import shutil

    import torch

    from shared import attacks
    from shared.dwt import defences
    from shared.models.store import ModelStore
    from shared.screening import detector

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    store = ModelStore(weights)
    options = functools.lru_cache(maxsize=None)(lambda name: defences.get(name, weights))
    x, y = sample.to_tensor()[:200], torch.from_numpy(sample.labels[:200])
    adversarial = attacks.get("fgsm")(store.get("standard"), x, y, eps=0.03)
    # All five paths (a card without "paths" reads them all) and the colour statistic.
    reading = {"statistics": ("chroma",)}
    model = detector.fit(detector.features(x, store.get, options, **reading),
                         detector.features(adversarial, store.get, options, **reading), epochs=100)
    detector.save(model, weights / detector.WEIGHTS_NAME,
                  {"features": detector.feature_names(**reading), "statistics": ["chroma"]})
    (weights / "screening.json").write_text(json.dumps({"score": "detector", "threshold": 0.5}))
    return weights


def test_screen_with_the_learned_detector_on_workers_equals_local(redis_client, redis_url, worker_env, detector_weights,
                                                                   incoming, tmp_path, monkeypatch):
    from workers.app import app, use_broker

    from .conftest import QUEUES, Workers

    pool = Workers({**worker_env, "WAVESHIELD_WEIGHTS_DIR": str(detector_weights)}, tmp_path)
    try:
        for queue in QUEUES:
            pool.start(queue)
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("WAVESHIELD_WEIGHTS_DIR", str(detector_weights))
        monkeypatch.setenv("WAVESHIELD_DEVICE", "cpu")
        use_broker(redis_url)
        settings = load_settings()
        image_set = load_many(incoming)
        job = screen_mod.submit_screen(redis_client, app, image_set, settings, batch_size=16)
        state = producer.wait(redis_client, job, timeout_s=300)
    finally:
        pool.stop_all()
    assert state["status"] == "complete" and not state["errors"]
    local = {r["id"]: r for r in screen_mod.screen_local(image_set, settings, batch_size=16)}
    records = [r for r in Pipeline(redis_client).screen_records(job) if r["error"] is None]
    assert len(records) == len(image_set) and {r["signal"] for r in records} != {"disagreement"}
    for r in records:
        assert r["signal"] == local[r["id"]]["signal"] and r["label"] == local[r["id"]]["label"]
        assert abs(r["suspicion"] - local[r["id"]]["suspicion"]) < 1e-4
        assert r["flagged"] == (r["suspicion"] > 0.5)
