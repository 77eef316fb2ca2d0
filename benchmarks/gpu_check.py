"""The GPU check: every CUDA path of waveshield timed on one card, in one table.

Needs nothing beyond the working tree and its Python packages: the images are
the embedded 1,000-image CIFAR-10 sample, repeated to the sizes below (timing
only; accuracies come from docs/results.md), and the models are the shipped
weights. ``--cpu-smoke`` runs every section at a CI size on the CPU, so the
script cannot rot between GPU sessions.

    python benchmarks/gpu_check.py [--cpu-smoke] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import machine
from shared import attacks, settings
from shared.dwt import defences
from shared.models import network
from shared.images.load import load_images
from shared.evaluation.plan import paper_plan
from shared.models.training import Recipe, train
from shared.dwt.transform import reconstruct

# Sizes: (GPU run, CPU smoke run).
SIZES = {"dwt": (10_000, 256), "attack": (10_000, 32), "deepfool_oracle": (500, 2), "train": (50_000, 128),
         "grid": (10_000, 20), "cpu_dwt": (2_000, 256)}


def _repeat(n: int):
    """``n`` images and labels: the embedded sample repeated (float NCHW on the CPU, uint8 NHWC, labels)."""
    sample = load_images("sample")
    idx = np.arange(n) % len(sample)
    return sample.to_tensor()[idx], sample.images[idx], torch.from_numpy(sample.labels[idx])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _batched(fn, x, y, batch: int):
    return torch.cat([fn(x[s:s + batch], y[s:s + batch]) for s in range(0, len(x), batch)])


def check_dwt(device, size, cpu_size, rows) -> None:
    """Reconstruction with the shipped Haar defence: this device against the CPU path on 2 threads."""
    options = defences.get("haar", settings.load().weights_dir)
    x, _, _ = _repeat(size)
    x = x.to(device)
    reconstruct(x[:256], **options)  # warm-up (kernels, allocator)
    seconds, _ = _timed(lambda: [reconstruct(x[s:s + 2500], **options) for s in range(0, len(x), 2500)], device)
    rows.append((f"DWT reconstruction (haar, {device})", size, seconds, ""))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the 2-core CPU path the target compares with
    try:
        cpu_x, _, _ = _repeat(cpu_size)
        cpu_seconds, _ = _timed(lambda: reconstruct(cpu_x, **options), "cpu")
    finally:
        torch.set_num_threads(threads)
    ratio = (size / seconds) / (cpu_size / cpu_seconds)
    rows.append(("DWT reconstruction (haar, CPU, 2 threads)", cpu_size, cpu_seconds, f"{device} is {ratio:.1f}x this"))


def check_attacks(device, size, oracle_size, rows) -> None:
    """FGSM, BIM and DeepFool on the shipped standard model; DeepFool also against torchattacks."""
    model = network.load(settings.load().weights_dir / "standard.safetensors", device=device)[0]
    x, _, y = _repeat(size)
    x, y = x.to(device), y.to(device)
    for name, params in (("fgsm", {"eps": 0.01}), ("bim", {"eps": 0.01}), ("deepfool", {})):
        fn = functools.partial(attacks.get(name), model, **params)
        fn(x[:32], y[:32])  # warm-up
        seconds, adversarial = _timed(lambda: _batched(fn, x, y, 1000), device)
        with torch.no_grad():
            fooled = float((_batched(lambda a, _: model(a).argmax(1), adversarial, y, 1000) != y).float().mean())
        rows.append((f"{name} {params.get('eps', '')}".strip() + f" ({device})", size, seconds,
                     f"{100 * fooled:.1f} % misclassified"))
    try:
        import torchattacks
    except ImportError:
        rows.append(("DeepFool against torchattacks", oracle_size, float("nan"), "torchattacks not installed"))
        return
    xs, ys = x[:oracle_size], y[:oracle_size]
    ours_s, ours = _timed(lambda: attacks.deepfool(model, xs, ys), device)
    theirs_s, theirs = _timed(lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(xs, ys), device)
    with torch.no_grad():
        rates = [float((model(a).argmax(1) != ys).float().mean()) for a in (ours, theirs)]
    rows.append((f"DeepFool, waveshield ({device})", oracle_size, ours_s, f"{100 * rates[0]:.1f} % misclassified"))
    rows.append((f"DeepFool, torchattacks ({device})", oracle_size, theirs_s,
                 f"{100 * rates[1]:.1f} % misclassified; waveshield {theirs_s / ours_s:.1f}x faster"))
    # The paper's rule (ours by default) fools more than torchattacks' by design; with torchattacks' own rule the
    # success rates compare like for like.
    same_s, same = _timed(lambda: attacks.deepfool(model, xs, ys, rule="torchattacks"), device)
    with torch.no_grad():
        same_rate = float((model(same).argmax(1) != ys).float().mean())
    rows.append((f"DeepFool, waveshield with torchattacks' rule ({device})", oracle_size, same_s,
                 f"{100 * same_rate:.1f} % misclassified ({100 * (same_rate - rates[1]):+.1f} points); "
                 f"{theirs_s / same_s:.1f}x faster"))


def check_training(device, size, width, rows) -> None:
    """One epoch of the real training loop (bf16 autocast where supported, channels_last)."""
    sample = load_images("sample")
    idx = np.arange(size) % len(sample)
    train_set = type(sample)(sample.images[idx], sample.labels[idx], [sample.ids[i] for i in idx])
    recipe = Recipe(width=width, epochs=1, batch_size=256 if device.startswith("cuda") else 64)
    with tempfile.TemporaryDirectory() as tmp:
        seconds, (_, log) = _timed(lambda: train(train_set, recipe, checkpoint=Path(tmp) / "c.safetensors",
                                                 device=device), device)
    rows.append((f"training, width {width}, 1 epoch ({device}, {log['precision']})", size, seconds,
                 f"{log['epochs'][0]['seconds']:.1f} s in the loop"))


def check_grid(device, size, rows) -> None:
    """The paper's grid through Redis and one worker per queue, all on this device."""
    from producers.local import run_evaluation
    from producers.stack import Stack, resolve_redis_url

    cfg = settings.load()
    _, images, labels = _repeat(size)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "grid.npz"
        np.savez(data, x=images, y=labels.numpy())
        env = {**os.environ, "WAVESHIELD_DEVICE": device}
        with Stack(resolve_redis_url(cfg.redis_url), env=env, log_dir=Path(tmp) / "logs") as stack:
            start = time.perf_counter()
            run_evaluation(data=str(data), limit=None, out=Path(tmp) / "report", settings=cfg,
                           redis_url=stack.redis_url, plan=paper_plan(batch_size=1000 if device != "cpu" else 25))
            seconds = time.perf_counter() - start
    rows.append((f"paper's grid, staged pipeline (workers on {device})", size, seconds, "8 attacks x 5 configurations"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="CI sizes on the CPU")
    parser.add_argument("--out", type=Path, default=Path("waveshield-out") / "gpu_check.md")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out: dwt,attacks,train,grid")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        parser.error("no CUDA device; use --cpu-smoke for the CPU-sized run")
    device = "cpu" if smoke else "cuda"
    size = {k: v[1] if smoke else v[0] for k, v in SIZES.items()}
    skip = set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, int, float, str]] = []
    sections = {
        "dwt": lambda: check_dwt(device, size["dwt"], SIZES["cpu_dwt"][1 if smoke else 0], rows),
        "attacks": lambda: check_attacks(device, size["attack"], size["deepfool_oracle"], rows),
        "train": lambda: check_training(device, size["train"], 64 if not smoke else 8, rows),
        "grid": lambda: check_grid(device, size["grid"], rows),
    }
    for name, run in sections.items():
        if name in skip:
            continue
        try:
            run()
        except Exception as exc:  # one failing section must not hide the others' numbers
            rows.append((f"{name}: FAILED", 0, float("nan"), f"{type(exc).__name__}: {exc}"[:200]))
    table = [f"# GPU check{' (CPU smoke run)' if smoke else ''}", f"# {machine()}", "",
             "| check | images | seconds | images/s | note |", "| --- | --- | --- | --- | --- |"]
    for name, n, seconds, note in rows:
        rate = f"{n / seconds:,.0f}" if n and seconds == seconds and seconds > 0 else ""
        table.append(f"| {name} | {n:,} | {seconds:.2f} | {rate} | {note} |")
    text = "\n".join(table) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if any("FAILED" in r[0] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
