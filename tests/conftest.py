"""Shared fixtures: the embedded CIFAR-10 sample, real dataset paths, a small trained model."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from producers.redis_server import EmbeddedRedis, reachable
from shared.images.load import load_images
from shared.models.training import Recipe, train

REPO = Path(__file__).resolve().parent.parent
CIFAR_JPEG = REPO.parent / "shared" / "datasets" / "cifar10-jpeg"
LOCAL_REDIS = "redis://127.0.0.1:6379/13"  # a database of the tests' own, flushed
# Every process the suite starts inherits this mark, even one whose parent died. A new
# one per session: a suite started by a test tracks (and may kill) only its own processes.
SESSION_MARK = "WAVESHIELD_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex
# The suite (and every worker it starts) registers models in a folder of its own: never the user's, never another run's.
os.environ["WAVESHIELD_MODELS"] = tempfile.mkdtemp(prefix="waveshield-test-models-")
atexit.register(shutil.rmtree, os.environ["WAVESHIELD_MODELS"], True)


def _marked_processes() -> list[tuple[int, str]]:
    """Live processes other than this one that carry this session's mark: (pid, command line)."""
    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if state == "Z":
                continue  # a zombie is already dead; its parent reaps it
            if int(parent) == os.getpid() and b"multiprocessing.resource_tracker" in (entry / "cmdline").read_bytes():
                continue  # multiprocessing's helper for this process (the decoding pool's): it ends with it
            found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """After the suite, no process it started is still running (they are killed and reported)."""
    yield
    from shared.images import decode

    decode.close_pool()  # this process's decoding workers live as long as it; the check is for the rest
    if not Path("/proc").is_dir():
        return
    import time

    deadline = time.monotonic() + 10  # give processes that were just told to stop a moment
    while (left := _marked_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, "processes left running by the tests (now killed): " + "; ".join(f"{p} {c[:120]}" for p, c in left)


@pytest.fixture(scope="session")
def sample():
    """The 1,000-image CIFAR-10 test sample shipped with the package."""
    return load_images("sample")


@pytest.fixture(scope="session")
def cifar_test_zip():
    """The CIFAR-10 JPEG mirror's test split (10,000 images), read in place."""
    path = CIFAR_JPEG / "test.zip"
    if not path.is_file():
        pytest.skip(f"CIFAR-10 JPEG mirror not found at {path}")
    return path


@pytest.fixture(scope="session")
def canonical_prefix():
    """5,085 canonical CIFAR-10 training images (never JPEG): (uint8 NHWC images, labels)."""
    path = REPO.parent / "shared" / "datasets" / "cifar10-canonical-prefix" / "train-prefix.npz"
    if not path.is_file():
        pytest.skip(f"canonical CIFAR-10 prefix not found at {path}")
    with np.load(path) as arrays:
        return arrays["x"], arrays["y"]


@pytest.fixture(scope="session")
def photo_crops_zip(tmp_path_factory):
    """A zip of 32x32 PNG crops of two downsampled photographs (scikit-image's cat and coffee): another source."""
    import zipfile

    import skimage

    from shared.images.encodings import encode, photo_crops

    folder = Path(skimage.__file__).resolve().parent / "data"
    path = tmp_path_factory.mktemp("photos") / "crops.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, crop in photo_crops([folder / "chelsea.png", folder / "coffee.png"], per_size=30):
            archive.writestr(name, encode(crop, "png"))
    return path


@pytest.fixture(scope="session")
def trained_model(sample, tmp_path_factory):
    """A width-8 ResNet18 trained for a few epochs on the sample by the real training loop.

    Small enough to train in seconds; trained enough that attacks face a
    real decision boundary (well above chance on its own training images).
    """
    torch.manual_seed(0)
    recipe = Recipe(width=8, epochs=8, batch_size=64, lr_peak=0.1, precision="fp32")
    model, _ = train(sample, recipe, checkpoint=tmp_path_factory.mktemp("ckpt") / "m.safetensors")
    return model.eval()


@pytest.fixture(scope="session")
def correctly_classified(trained_model, sample):
    """Up to 64 sample images the trained model classifies correctly, with labels."""
    x, y = sample.to_tensor(), torch.from_numpy(sample.labels)
    with torch.no_grad():
        keep = trained_model(x).argmax(1) == y
    return x[keep][:64], y[keep][:64]


@pytest.fixture(scope="session")
def redis_url():
    """REDIS_URL when set, else the local server when it answers, else an embedded one."""
    if os.environ.get("REDIS_URL"):
        url, server = os.environ["REDIS_URL"], None
    elif reachable(LOCAL_REDIS):
        url, server = LOCAL_REDIS, None
    else:
        server = EmbeddedRedis().start()
        url = server.url
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()
    if server:
        server.stop()
