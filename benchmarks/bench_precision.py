"""Training precision: bf16 autocast against fp32 on the CPU, same recipe, seed and data.

Trains the standard width-16 model twice (``--train`` images for ``--epochs``
epochs), once with bf16 autocast and once in fp32, and reports each run's
test accuracy on ``--test`` images and its training speed, side by side.

    python benchmarks/bench_precision.py [--train 10000] [--epochs 5] [--test 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import CIFAR_TEST, machine
from shared.images.load import load_images
from shared.models.training import Recipe, accuracy, autocast_dtype, train

CIFAR_TRAIN = CIFAR_TEST.with_name("train.zip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test", type=int, default=10_000)
    args = parser.parse_args()
    if autocast_dtype("cpu", "auto") is None:
        raise SystemExit("this CPU has no bf16 support: nothing to compare")
    train_set = load_images(CIFAR_TRAIN, limit=args.train)
    test_set = load_images(CIFAR_TEST, limit=args.test)
    x_test, y_test = test_set.to_tensor(), torch.from_numpy(test_set.labels)
    print(f"# {len(train_set)} training images x {args.epochs} epochs, tested on {len(test_set)}; {machine()}")
    print("| precision | test accuracy | training images/s |\n| --- | --- | --- |")
    results = {}
    for precision in ("bf16", "fp32"):
        recipe = Recipe(epochs=args.epochs, precision=precision)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            model, _ = train(train_set, recipe, checkpoint=Path(tmp) / "run.safetensors")
            seconds = time.perf_counter() - start
        results[precision] = accuracy(model, x_test, y_test), len(train_set) * args.epochs / seconds
        print(f"| {precision} | {100 * results[precision][0]:.2f} % | {results[precision][1]:.0f} |")
    gap = 100 * (results["bf16"][0] - results["fp32"][0])
    print(f"\nbf16 - fp32: {gap:+.2f} points; bf16 speed-up {results['bf16'][1] / results['fp32'][1]:.2f}x")


if __name__ == "__main__":
    main()
