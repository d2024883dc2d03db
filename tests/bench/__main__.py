"""``just bench [NAME...]``: run the benchmarks (all, or those named); figures in bench-results/.

Benchmarks compare numbers measured side by side in one run; they are never timed unit tests.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from tests.bench import (
    arq_concurrency,
    batching,
    httpx_loop,
    inference,
    pipeline,
    poll,
    sse,
    submit,
    task_events,
)

BENCHMARKS = {
    "inference": inference.run,
    "batching": batching.run,
    "pipeline": pipeline.run,
    "arq_concurrency": arq_concurrency.run,
    "httpx_loop": httpx_loop.run,
    "sse": sse.run,
    "task_events": task_events.run,
    "poll": poll.run,
    "submit": submit.run,
}

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or those named), print a summary, write one JSON file each."""
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    machine = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        run = BENCHMARKS[name]
        started = time.perf_counter()
        figures = run()
        figures["machine"] = machine
        figures["benchmark_seconds"] = round(time.perf_counter() - started, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(f"{name}: {json.dumps(figures, indent=2)}")
    print(f"figures written to {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
