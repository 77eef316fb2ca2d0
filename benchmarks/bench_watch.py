"""What a watched inbox costs while nothing new lands: CPU seconds per minute, events against polling.

An inbox holding ``--files`` files that are all screened already (their ids
in records.jsonl), watched for ``--seconds`` by ``producers.screening.watch.watch``
with the shipped poll interval, once finding new files through file-system
events and once walking the folder at each poll; side by side in one run.
The screening function is never called (nothing is new), so what is
measured is the discovery alone: this process's CPU time, all threads.

    python benchmarks/bench_watch.py [--files 100000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from _common import machine
from producers.screening.watch import watch


def cpu_per_minute(inbox: Path, out: Path, seconds: float, events: bool) -> tuple[float, str]:
    stop, modes = threading.Event(), []

    def never(image_set):
        raise AssertionError(f"nothing is new, yet {len(image_set)} items were handed to screening")

    runner = threading.Thread(target=watch, args=(inbox, out, never),
                              kwargs={"should_stop": stop.is_set, "events": events, "on_start": modes.append})
    start_cpu, start = time.process_time(), time.monotonic()
    runner.start()
    time.sleep(seconds)
    stop.set()
    runner.join()
    return (time.process_time() - start_cpu) / (time.monotonic() - start) * 60, modes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"# watch, {args.files} screened files in the inbox, {args.seconds:.0f} s each; {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        inbox, out = Path(tmp) / "inbox", Path(tmp) / "out"
        for folder in range(args.files // 1000 + 1):
            (inbox / f"{folder:04d}").mkdir(parents=True)
        paths = [inbox / f"{i // 1000:04d}" / f"{i:07d}.png" for i in range(args.files)]
        for path in paths:
            path.write_bytes(b"")
        out.mkdir()
        (out / "records.jsonl").write_text("".join(json.dumps({"id": str(p)}) + "\n" for p in paths))
        results = {}
        for events in (False, True):
            results[events] = cpu_per_minute(inbox, out, args.seconds, events)
            print(f"{results[events][1]:>8}: {results[events][0]:6.2f} CPU s per minute", flush=True)
    print(f"events / polling CPU: {results[True][0] / results[False][0]:.4f}")


if __name__ == "__main__":
    main()
