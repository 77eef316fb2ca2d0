"""Helpers shared by the benchmark scripts: data, timing, machine description."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
CIFAR_TEST = REPO.parent / "shared" / "datasets" / "cifar10-jpeg" / "test.zip"


def test_images(n: int):
    """``n`` real CIFAR-10 test images (JPEG mirror, else the embedded sample) as float NCHW + labels."""
    from shared.images.load import load_images
    from shared.settings import load as load_settings

    source = CIFAR_TEST if CIFAR_TEST.is_file() else "sample"
    images = load_images(source, limit=n, workers=load_settings().decode_workers)
    return images.to_tensor(), torch.from_numpy(images.labels), str(source)


def best_of(fn, repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> str:
    """One line naming the CPU, core count and torch build."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"
