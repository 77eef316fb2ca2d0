"""Pipeline efficiency: images/s and Redis bytes per image through the workers, staged and fused, against --local.

Same plan (the paper's), same data, same shipped weights, measured one after
the other in one run; the workers run on this machine (one per queue).

    python benchmarks/bench_pipeline.py [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import CIFAR_TEST, machine
from producers.local import run_evaluation
from producers.stack import Stack, resolve_redis_url
from shared import settings
from shared.evaluation.plan import paper_plan


def _cells(report_json: Path) -> list:
    return [(c["attack"], c["configuration"], c["correct"], c["total"]) for c in json.loads(report_json.read_text())["cells"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--modes", default="staged,fused", help="comma-separated: staged, fused")
    args = parser.parse_args()
    cfg = settings.load()
    data = str(CIFAR_TEST) if CIFAR_TEST.is_file() else "sample"
    out = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    print(f"# pipeline efficiency, {args.n} images from {data}, batches of {args.batch_size}\n# {machine()}")
    plan = paper_plan(batch_size=args.batch_size)
    start = time.perf_counter()
    run_evaluation(data=data, limit=args.n, out=out / "local", settings=cfg, plan=plan)
    local = args.n / (time.perf_counter() - start)
    reference = _cells(out / "local" / "report.json")
    rows = [("--local (one process)", local, "", "", "")]
    with Stack(resolve_redis_url(cfg.redis_url), log_dir=out / "logs") as stack:
        for mode in args.modes.split(","):
            start = time.perf_counter()
            run_evaluation(data=data, limit=args.n, out=out / mode, settings=cfg, redis_url=stack.redis_url,
                           plan={**plan, "mode": mode})
            rate = args.n / (time.perf_counter() - start)
            traffic = json.loads((out / mode / "report.json").read_text())["meta"]["redis_traffic"]
            same = "yes" if _cells(out / mode / "report.json") == reference else "NO"
            rows.append((f"Celery workers, {mode}", rate, f"{rate / local:.2f}",
                         f"{traffic['redis_kib_per_image']:.1f} ({traffic['blob_kib_per_image']:.1f} blobs)", same))
    print("| runner | images/s | vs --local | Redis KiB per image | identical counts |\n| --- | --- | --- | --- | --- |")
    for name, rate, ratio, kib, same in rows:
        print(f"| {name} | {rate:.2f} | {ratio} | {kib} | {same} |")
    print("\nblob KiB per image by stage: " + "; ".join(
        f"{m}: {json.loads((out / m / 'report.json').read_text())['meta']['redis_traffic']['blob_kib_per_image_by_stage']}"
        for m in args.modes.split(",")))


if __name__ == "__main__":
    main()
