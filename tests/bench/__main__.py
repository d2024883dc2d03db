"""``just bench [NAME...]``: run the benchmarks (all, or those named); figures in bench-results/,
issue 13's ratios in bench-results/summary.md.

Benchmarks compare numbers measured side by side in one run; they are never timed unit tests.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.bench import (
    arq_concurrency,
    batching,
    diarization,
    httpx_loop,
    inference,
    padding,
    pipeline,
    poll,
    sse,
    submit,
    task_events,
)
from tests.bench.summary import write_summary

BENCHMARKS = {
    "inference": inference.run,
    "batching": batching.run,
    "padding": padding.run,
    "diarization": diarization.run,
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
    machine = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "gpu": _gpu(),
    }
    for name in names:
        run = BENCHMARKS[name]
        started = time.perf_counter()
        figures = run()
        figures["machine"] = machine
        figures["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        figures["benchmark_seconds"] = round(time.perf_counter() - started, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(f"{name}: {json.dumps(figures, indent=2)}")
    print(f"figures written to {RESULTS}/; the table of ratios: {write_summary(RESULTS)}")
    return 0


def _gpu() -> str:
    """The CUDA device the inference benchmarks could use, or "no GPU"."""
    try:
        import torch
    except ImportError:
        return "no GPU"
    if not torch.cuda.is_available():
        return "no GPU"
    return str(torch.cuda.get_device_name(0))


if __name__ == "__main__":
    sys.exit(main())
