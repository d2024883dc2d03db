"""``just bench``: run every benchmark and write its figures to ``bench-results/``.

Benchmarks compare numbers measured side by side in one run; they are never timed unit tests.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from tests.bench import inference, pipeline, sse

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"


BENCHMARKS = {"inference": inference.run, "pipeline": pipeline.run, "sse": sse.run}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or those named), print a summary, write one JSON file each."""
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
        return 2
    RESULTS.mkdir(exist_ok=True)
    machine = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name, run in ((name, BENCHMARKS[name]) for name in names):
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
