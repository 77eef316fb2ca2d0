"""A classifier the user brings, at its own input size: registered with `model add`, evaluated on a labelled folder
of their own through real Celery workers on a real Redis (staged and fused) with the counts of one process."""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from producers.jobs import plan_for_model
from producers.local import run_evaluation
from shared.models.registry import ModelRegistry
from shared.pipeline import QUEUES
from shared.settings import load as load_settings

from .conftest import Workers

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


@pytest.fixture(scope="module")
def user_model(tmp_path_factory, tiny_weights, sample):
    """A torchvision ShuffleNet for 48x48 inputs, trained briefly here on 200 sample images (so that its decisions
    differ from image to image and attacks change them) and registered as the user would; and 40 of those images
    (4 a class) saved as an ImageFolder of PNG files at 40x40, which the card's shorter-side policy brings to 48."""
    import torch.nn.functional as F

    from shared.images.geometry import InputSize
    from shared.images.load import load_images

    tmp_path = tmp_path_factory.mktemp("user-model")
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    train = load_images("sample", size=InputSize(48, 48, "shorter-side"))
    x, y = train.to_tensor()[::5], torch.from_numpy(train.labels[::5])
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    optimiser = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(20):
        for batch in torch.randperm(len(x)).split(50):
            loss = F.cross_entropy(net(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    save_file({k: v.contiguous() for k, v in net.eval().state_dict().items()}, str(tmp_path / "shuffle.safetensors"))
    models = tmp_path / "models"
    ModelRegistry(tiny_weights, models).add(
        "shuffle48", architecture="torchvision:shufflenet_v2_x0_5", arch_args={"num_classes": 10},
        weights=tmp_path / "shuffle.safetensors", input_size=(48, 48), resize="shorter-side", mean=MEAN, std=STD,
        classes=CLASSES, defended_by="haar")
    folder = tmp_path / "photos"
    for i in range(0, len(sample), 25):
        (folder / CLASSES[sample.labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.images[i]).resize((40, 40)).save(folder / CLASSES[sample.labels[i]] / f"{i:03d}.png")
    return models, folder


def _counts(report_json):
    return {(c["attack"], c["configuration"]): (c["correct"], c["total"])
            for c in json.loads(report_json.read_text())["cells"]}


def test_a_registered_torchvision_model_at_48_counts_on_workers_as_in_one_process(
        redis_url, worker_env, tiny_weights, user_model, tmp_path, monkeypatch):
    models, folder = user_model
    monkeypatch.setenv("WAVESHIELD_MODELS", str(models))
    monkeypatch.setenv("WAVESHIELD_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("WAVESHIELD_OUTPUT_DIR", str(tmp_path / "out"))
    settings = load_settings()
    plan = plan_for_model("shuffle48", None, None, settings)
    assert [c["model"] + "+" + str(c["defence"]) for c in plan["configurations"]] == ["shuffle48+None",
                                                                                    "shuffle48+haar"]
    # The paper's seven attacks and, through the defended path, PGD with BPDA.
    plan["attacks"].append({"name": "pgd", "params": {"eps": 0.01, "steps": 3},
                            "through": {"model": "shuffle48", "defence": "haar"}})
    plan["batch_size"] = 15
    local = run_evaluation(data=str(folder), limit=None, out=tmp_path / "local", settings=settings, plan=plan)
    expected = _counts(local.parent / "report.json")
    assert len(expected) == 9 * 2 and all(total == 40 for _, total in expected.values())
    # Counts worth comparing: the model gets most clean images right, and the attacks take some of them away.
    clean = expected[("clean", "shuffle48+raw")][0]
    assert clean >= 24 and expected[("bim eps=0.01", "shuffle48+raw")][0] < clean - 8, expected

    from workers.app import use_broker

    monkeypatch.setenv("REDIS_URL", redis_url)
    use_broker(redis_url)
    pool = Workers({**worker_env, "WAVESHIELD_MODELS": str(models)}, tmp_path)
    try:
        for queue in QUEUES:
            pool.start(queue)
        for mode in ("staged", "fused"):
            report = run_evaluation(data=str(folder), limit=None, out=tmp_path / mode, settings=load_settings(),
                                    plan={**plan, "mode": mode}, redis_url=redis_url)
            assert _counts(report.parent / "report.json") == expected, mode
    finally:
        pool.stop_all()


def test_a_corpus_on_a_registered_model_is_crafted_at_its_size_and_named_with_its_classes(
        redis_client, redis_url, worker_env, tiny_weights, user_model, tmp_path, monkeypatch):
    from producers import submit as producer
    from producers.corpus import submit_corpus
    from shared import attacks
    from shared.images.geometry import InputSize
    from shared.images.load import load_images
    from shared.models.registry import ModelRegistry

    models, folder = user_model
    for key, value in (("WAVESHIELD_MODELS", str(models)), ("WAVESHIELD_WEIGHTS_DIR", str(tiny_weights)),
                       ("WAVESHIELD_OUTPUT_DIR", str(tmp_path / "out")), ("REDIS_URL", redis_url)):
        monkeypatch.setenv(key, value)
    from workers.app import app, use_broker

    use_broker(redis_url)
    settings = load_settings()
    pool = Workers({**worker_env, "WAVESHIELD_MODELS": str(models), "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out")},
                   tmp_path)
    try:
        pool.start("attack")
        pool.start("collect")
        job, queued, _ = submit_corpus(redis_client, app, data=str(folder), attacks=["fgsm:eps=0.01"], name="mine",
                                       settings=settings, shard_size=20, source_model="shuffle48")
        assert queued == 2
        producer.wait(redis_client, job, timeout_s=300)
    finally:
        pool.stop_all()
    out = settings.output_dir / "mine"
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 40 and manifest[0]["source_model_sha256"] == ModelRegistry(
        tiny_weights, models).card("shuffle48").sha256
    with np.load(out / "fgsm_eps0.01" / "shard-00000.npz") as shard:
        x, ids = shard["x"], list(shard["ids"])
    assert x.shape == (20, 3, 48, 48)
    images = load_images(str(folder), size=InputSize(48, 48, "shorter-side"), classes=CLASSES)
    model = ModelRegistry(tiny_weights, models).load("shuffle48")
    expected = attacks.fgsm(model, images.to_tensor()[:20], torch.from_numpy(images.labels[:20]), eps=0.01)
    assert ids == images.ids[:20] and np.abs(x.astype(np.float32) - expected.numpy()).max() < 1e-3
    assert (out / "preview.png").is_file()
