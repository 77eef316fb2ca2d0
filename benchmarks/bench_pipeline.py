"""Pipeline efficiency: images/s through Redis + Celery workers divided by images/s of --local.

Same plan (the paper's), same data, same shipped weights, measured one after
the other in one run; the workers run on this machine (one per queue).

    python benchmarks/bench_pipeline.py [--n 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import CIFAR_TEST, machine
from producers.local import run_evaluation
from producers.stack import Stack, resolve_redis_url
from shared import settings
from shared.evaluation import paper_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()
    cfg = settings.load()
    data = str(CIFAR_TEST) if CIFAR_TEST.is_file() else "sample"
    out = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    print(f"# pipeline efficiency, {args.n} images from {data}, batches of {args.batch_size}\n# {machine()}")
    start = time.perf_counter()
    plan = paper_plan(batch_size=args.batch_size)
    run_evaluation(data=data, limit=args.n, out=out / "local", settings=cfg, plan=plan)
    local = args.n / (time.perf_counter() - start)
    with Stack(resolve_redis_url(cfg.redis_url), log_dir=out / "logs") as stack:
        start = time.perf_counter()
        run_evaluation(data=data, limit=args.n, out=out / "pipeline", settings=cfg, redis_url=stack.redis_url, plan=plan)
        pipeline = args.n / (time.perf_counter() - start)
    same = (out / "local" / "report.json").read_text().split('"cells"')[1].split('"average_drop"')[0] == \
        (out / "pipeline" / "report.json").read_text().split('"cells"')[1].split('"average_drop"')[0]
    print("| runner | images/s |\n| --- | --- |")
    print(f"| --local (one process) | {local:.2f} |\n| Celery pipeline (4 workers) | {pipeline:.2f} |")
    print(f"\nefficiency: {pipeline / local:.2f}; identical counts: {same}")


if __name__ == "__main__":
    main()
