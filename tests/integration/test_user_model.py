"""A classifier the user brings, at its own input size: registered with `model add`, evaluated on a labelled folder
of their own through real Celery workers on a real Redis (staged and fused) with the counts of one process."""

import json

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


@pytest.fixture()
def user_model(tmp_path, tiny_weights, sample):
    """A torchvision ShuffleNet for 48x48 inputs, trained briefly here on 200 sample images (so that its decisions
    differ from image to image and attacks change them) and registered as the user would; and 40 of those images
    (4 a class) saved as an ImageFolder of PNG files at 40x40, which the card's shorter-side policy brings to 48."""
    import torch.nn.functional as F

    from shared.images.geometry import InputSize
    from shared.images.load import load_images

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
