"""DeepFool throughput and quality: waveshield's batched DeepFool vs torchattacks.DeepFool.

Same model, same images (correctly classified CIFAR-10 test images), same
steps (50) and overshoot (0.02), measured side by side in one run; ours with
the paper's overshoot rule (the default) on its default 4 candidate classes
and on all 10, and with torchattacks' rule on all 10. The median L2 is
compared on the images that both ours and torchattacks fool, image by image.

    python benchmarks/bench_deepfool.py [--n 500] [--weights weights/standard.safetensors]
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
    parser.add_argument("--n", type=int, default=500)
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
        ("waveshield deepfool (paper's rule, 4 candidate classes, default)", lambda: attacks.deepfool(model, x, y)),
        ("waveshield deepfool (paper's rule, all classes)", lambda: attacks.deepfool(model, x, y, candidates=None)),
        ("waveshield deepfool (torchattacks' rule, all classes)",
         lambda: attacks.deepfool(model, x, y, candidates=None, rule="torchattacks")),
        ("torchattacks.DeepFool", lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)),
    ):
        start = time.perf_counter()
        adv = run()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        rows.append((name, len(x) / seconds, fooled, (adv - x).flatten(1).norm(dim=1)))
    _, theirs_speed, theirs_fooled, theirs_l2 = rows[-1]
    print("| implementation | images/s | success rate | median L2 of successes | median L2 / torchattacks' on the "
          "images both fool |\n| --- | --- | --- | --- | --- |")
    for name, speed, fooled, l2 in rows:
        both = fooled & theirs_fooled
        ratio = (l2[both].median() / theirs_l2[both].median()).item()
        print(f"| {name} | {speed:.1f} | {100 * fooled.float().mean():.1f} % | {l2[fooled].median():.4f} | "
              f"{ratio:.3f} ({int(both.sum())} images) |")
    for name, speed, fooled, _ in rows[:-1]:
        print(f"\n{name}: {speed / theirs_speed:.1f}x torchattacks' speed, success "
              f"{100 * (fooled.float().mean() - theirs_fooled.float().mean()):+.1f} points")


if __name__ == "__main__":
    main()
