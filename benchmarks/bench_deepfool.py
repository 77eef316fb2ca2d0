"""DeepFool throughput and quality: waveshield's batched DeepFool vs torchattacks.DeepFool.

Same model, same images (correctly classified CIFAR-10 test images), same
steps (50) and overshoot (0.02), measured side by side in one run; ours with
its default 4 candidate classes and with all 10.

    python benchmarks/bench_deepfool.py [--n 256] [--weights weights/standard.safetensors]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks

from _common import REPO, machine, test_images
from shared import attacks
from shared.models import network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--weights", default=str(REPO / "weights" / "standard.safetensors"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model, card = network.load(args.weights, device=args.device)
    x, y, source = test_images(4 * args.n)
    with torch.no_grad():
        keep = (model(x.to(args.device)).argmax(1).cpu() == y).nonzero().squeeze(1)[: args.n]
    x, y = x[keep].to(args.device), y[keep].to(args.device)
    print(f"# DeepFool, {len(x)} correctly classified images from {source}")
    print(f"# model {args.weights} (width {card['width']}), {machine()}")
    rows = []
    for name, run in (
        ("waveshield deepfool (4 candidate classes, default)", lambda: attacks.deepfool(model, x, y)),
        ("waveshield deepfool (all classes)", lambda: attacks.deepfool(model, x, y, candidates=None)),
        ("torchattacks.DeepFool", lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)),
    ):
        start = time.perf_counter()
        adv = run()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        l2 = (adv - x).flatten(1).norm(dim=1)[fooled]
        rows.append((name, len(x) / seconds, fooled.float().mean().item(), l2.median().item()))
    print("| implementation | images/s | success rate | median L2 of successes |\n| --- | --- | --- | --- |")
    for name, speed, success, l2 in rows:
        print(f"| {name} | {speed:.1f} | {100 * success:.1f} % | {l2:.4f} |")
    for row in rows[:2]:
        print(f"\n{row[0]}: {row[1] / rows[-1][1]:.1f}x torchattacks' speed, median L2 ratio {row[3] / rows[-1][3]:.3f}")


if __name__ == "__main__":
    main()
