"""httpx at concurrency 50 on plain asyncio against the IO pool's loop thread, nothing else.

Separates the HTTP client's own cost from the arq layer's: the same 1,000 GETs to the local
server that answers after 100 ms (``slow_http.py``), 50 at a time, each in its own process:

- ``plain``: ``asyncio.run``, no gevent;
- ``loop_thread``: ``workers.arq.loop.LoopThread`` in a gevent-patched process, the IO pool's
  setup (the loop thread's selector is gevent's, DESIGN.md decision 4);
- ``loop_thread_epoll``: the same thread on the original (unpatched) epoll selector, to
  measure what decision 4's choice costs.

Each runs with httpx's own transport (httpcore) and with httpx-aiohttp's transport.
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
MODES = ("plain", "loop_thread", "loop_thread_epoll")
TRANSPORTS = ("httpx", "aiohttp")


async def _requests_per_second(url: str, transport: str) -> float:
    from tests.bench.arq_jobs import http_client

    async with http_client(CONCURRENCY, transport) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                (await client.get(url)).raise_for_status()

        await one()  # the first connection is not part of the figure
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(REQUESTS)))
        return REQUESTS / (time.perf_counter() - started)


def _mode(mode: str, transport: str, url: str) -> None:
    """Child process: print requests/s for ``mode`` on ``transport``."""
    if mode == "plain":
        rate = asyncio.run(_requests_per_second(url, transport))
    else:
        from gevent import monkey

        from workers.arq.loop import LoopThread

        class EpollLoopThread(LoopThread):
            def _main(self) -> None:
                # The URL is an address: no lookup, so no executor is needed here.
                selector = monkey.get_original("selectors", "EpollSelector")()
                loop = asyncio.SelectorEventLoop(selector)
                asyncio.set_event_loop(loop)
                self._loop = loop
                try:
                    loop.run_forever()
                finally:
                    loop.close()
                    self._stopped = True

        thread = LoopThread() if mode == "loop_thread" else EpollLoopThread()
        thread.start()
        # A timeout keeps a timer in the hub, which otherwise sees nothing to wait for.
        rate = thread.run(_requests_per_second(url, transport), timeout=120)
    print(json.dumps({"requests_per_second": round(rate, 1)}))


def run() -> dict[str, Any]:
    """Every mode on both transports side by side, with ratios to plain asyncio + httpx."""
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
        for transport in TRANSPORTS:
            for mode in MODES:
                # gevent patches before anything else is imported, as `python -m workers.arq`.
                patch = "from gevent import monkey; monkey.patch_all(); " if mode != "plain" else ""
                code = (
                    f"{patch}from tests.bench.httpx_loop import _mode; "
                    f"_mode({mode!r}, {transport!r}, {url!r})"
                )
                out = subprocess.run(
                    [sys.executable, "-c", code],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=True,
                )
                rate = json.loads(out.stdout.strip().splitlines()[-1])["requests_per_second"]
                figures[f"{mode}_{transport}"] = rate
        for transport in TRANSPORTS:
            plain = figures[f"plain_{transport}"]
            figures[f"plain_{transport}_vs_ideal"] = round(plain / IDEAL, 2)
            for mode in MODES[1:]:
                figures[f"{mode}_{transport}_vs_plain"] = round(
                    figures[f"{mode}_{transport}"] / plain, 2
                )
        figures["aiohttp_vs_httpx_plain"] = round(
            figures["plain_aiohttp"] / figures["plain_httpx"], 2
        )
        return figures
    finally:
        server.terminate()
        server.wait(10)
