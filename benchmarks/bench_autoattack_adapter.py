"""AutoAttack through the registry's ``torchattacks:AutoAttack`` against torchattacks' own call.

Same model (the shipped standard one), same CIFAR-10 test images, same
configuration (L-inf, eps 8/255, version "standard", 10 classes, seed 0),
same batches, one run each: robust accuracy of each and their difference in
points (0 expected: the adapter only adds eval mode, a forked RNG and the
filled-in n_classes/seed), whether the adversarial images are identical, and
wall time of each.

    python benchmarks/bench_autoattack_adapter.py [--limit 500] [--data PATH] [--batch 250] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks
from _common import CIFAR_TEST, REPO, machine

from shared import attacks
from shared.images.image_set import iter_batches
from shared.images.load import load_images
from shared.models import network
from shared.settings import load as load_settings

EPS = 8 / 255


def attack_all(run, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[torch.Tensor, float]:
    """``run(images, labels)`` over the batches: the adversarial images and the wall time in seconds."""
    start = time.perf_counter()
    # detached: torchattacks' own APGD/AutoAttack return images that still require grad
    adversarial = torch.cat([run(x[s], y[s]).detach() for s in iter_batches(len(x), batch)])
    if x.is_cuda:
        torch.cuda.synchronize()
    return adversarial, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", "--n", type=int, default=500, help="number of test images (default 500)")
    parser.add_argument("--data", default=str(CIFAR_TEST), help="image set (default: the CIFAR-10 JPEG test split)")
    parser.add_argument("--weights", default=str(REPO / "weights" / "standard.safetensors"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=250, help="images per attack call, the same for both")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, card = network.load(args.weights, device=args.device)
    images = load_images(args.data, limit=args.limit, workers=load_settings().decode_workers)
    x, y = images.to_tensor().to(args.device), torch.from_numpy(images.labels).to(args.device)
    print(f"# AutoAttack (Linf, eps 8/255, standard, seed 0) on {len(x)} images of {args.data}, "
          f"batches of {args.batch}")
    print(f"# model {args.weights} (width {card['width']}), {machine()}")
    with torch.no_grad():  # also the warm-up, so that neither timed run pays for the first call
        clean = sum((model(x[s]).argmax(1) == y[s]).sum().item() for s in iter_batches(len(x), args.batch)) / len(x)

    adapter = attacks.get("torchattacks:AutoAttack")
    ours, ours_s = attack_all(lambda i, l: adapter(model, i, l, norm="Linf", eps=EPS, version="standard", seed=0),
                              x, y, args.batch)
    direct = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    theirs, theirs_s = attack_all(direct, x, y, args.batch)

    with torch.no_grad():
        acc_ours, acc_theirs = (sum((model(adv[s]).argmax(1) == y[s]).sum().item()
                                    for s in iter_batches(len(x), args.batch)) / len(x) for adv in (ours, theirs))
    print("| run | robust accuracy | wall time | images/s |\n| --- | --- | --- | --- |")
    print(f"| clean | {100 * clean:.2f} % | | |")
    for name, acc, seconds in (("adapter torchattacks:AutoAttack", acc_ours, ours_s),
                               ("torchattacks.AutoAttack", acc_theirs, theirs_s)):
        print(f"| {name} | {100 * acc:.2f} % | {seconds:.1f} s | {len(x) / seconds:.1f} |")
    print(f"\ndifference (adapter - torchattacks): {100 * (acc_ours - acc_theirs):+.2f} points; "
          f"adversarial images identical: {torch.equal(ours, theirs)}; "
          f"max |adapter - torchattacks| {float((ours - theirs).abs().max()):.3g}; "
          f"max L-inf from clean {float((ours - x).abs().max()):.5f} (eps {EPS:.5f})")


if __name__ == "__main__":
    main()
