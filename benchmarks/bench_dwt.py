"""DWT reconstruction throughput: waveshield's batched reconstruct() vs scikit-image.

Side by side in one run, on the same 1,024 real CIFAR-10 test images and the
same options: scikit-image's denoise_wavelet called image by image (the way
a per-image pipeline would) against one reconstruct() call on the batch.

    python benchmarks/bench_dwt.py [--n 1024] [--device cuda]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.restoration import denoise_wavelet

from _common import best_of, machine, test_images
from shared.dwt.transform import reconstruct

CONFIGS = [
    {"wavelet": "haar"},
    {"wavelet": "db2"},
    {"wavelet": "haar", "convert2ycbcr": True},
    {"wavelet": "db4", "method": "VisuShrink", "mode": "hard"},
]


def skimage_loop(batch: np.ndarray, options: dict) -> np.ndarray:
    kw = {"wavelet": options["wavelet"], "mode": options.get("mode", "soft"), "method": options.get("method", "BayesShrink"),
          "convert2ycbcr": options.get("convert2ycbcr", False)}
    return np.stack([np.clip(denoise_wavelet(im, channel_axis=0, **kw), 0, 1) for im in batch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    x, _, source = test_images(args.n)
    batch = x.numpy()
    on_device = x.to(args.device)
    print(f"# DWT reconstruction, {len(batch)} images from {source}\n# {machine()}")
    print("| options | scikit-image loop (img/s) | reconstruct (img/s) | ratio | max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for options in CONFIGS:
        t_ref = best_of(lambda: skimage_loop(batch, options), repeats=1)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        t_ours = best_of(lambda: (reconstruct(on_device, **options), sync()), repeats=5)
        diff = np.abs(reconstruct(batch, **options) - skimage_loop(batch, options)).max()
        label = ", ".join(f"{k}={v}" for k, v in options.items())
        print(f"| {label} | {len(batch) / t_ref:,.0f} | {len(batch) / t_ours:,.0f} | {t_ref / t_ours:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
