"""httpx at concurrency 50 on plain asyncio against the IO pool's loop thread, nothing else.

Separates httpx's own cost from the arq layer's: the same 1,000 GETs to the local server that
answers after 100 ms (``slow_http.py``), 50 at a time, once under ``asyncio.run`` with no
gevent, once on ``workers.arq.loop.LoopThread`` in a gevent-patched process (the IO pool's
setup: the loop thread's selector is gevent's). Each mode runs in its own process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY, REQUESTS = 50, 1000
IDEAL = CONCURRENCY / 0.1


async def _requests_per_second(url: str) -> float:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                (await client.get(url)).raise_for_status()

        await one()  # the first connection is not part of the figure
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(REQUESTS)))
        return REQUESTS / (time.perf_counter() - started)


def _mode(mode: str, url: str) -> None:
    """Child process: print requests/s for ``mode`` (``plain`` or ``loop_thread``)."""
    if mode == "plain":
        rate = asyncio.run(_requests_per_second(url))
    else:
        from workers.arq.loop import LoopThread

        loop = LoopThread()
        loop.start()
        # A timeout keeps a timer in the hub, which otherwise sees nothing to wait for.
        rate = loop.run(_requests_per_second(url), timeout=120)
    print(json.dumps({"requests_per_second": round(rate, 1)}))


def run() -> dict[str, Any]:
    """Both modes side by side, with the ratio of the loop thread to plain asyncio."""
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "bench" / "slow_http.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/"
        figures: dict[str, Any] = {
            "concurrency": CONCURRENCY,
            "requests": REQUESTS,
            "ideal_requests_per_second": IDEAL,
        }
        for mode in ("plain", "loop_thread"):
            # gevent patches before anything else is imported, as `python -m workers.arq` does.
            patch = "from gevent import monkey; monkey.patch_all(); " if mode != "plain" else ""
            code = f"{patch}from tests.bench.httpx_loop import _mode; _mode({mode!r}, {url!r})"
            out = subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            figures[mode] = json.loads(out.stdout.strip().splitlines()[-1])["requests_per_second"]
        figures["loop_thread_vs_plain"] = round(figures["loop_thread"] / figures["plain"], 2)
        figures["plain_vs_ideal"] = round(figures["plain"] / IDEAL, 2)
        return figures
    finally:
        server.terminate()
        server.wait(10)
