"""Many IO tasks overlap inside ONE IO worker process (DESIGN.md decision 4).

A local HTTP server stands in for the remote audio host: it answers each request only after
a delay and records when each request was in flight and which process opened the connection.
If the worker ran its async handlers one at a time (or blocked its hub while waiting), the
requests would queue up behind each other.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.core.settings import Settings
from tests.audio import speak
from tests.conftest import WorkerProcess, bearer, make_key, wait_for_job

JOBS = 12
DELAY_SECONDS = 1.5


@dataclass(frozen=True, slots=True)
class Fetch:
    """One request as the server saw it."""

    path: str
    started: float
    ended: float
    peer_port: int
    # Every process holding the client end: the IO worker, and for a moment any child it
    # forks (ffprobe, ffmpeg) between fork and exec, which shares its descriptors.
    pids: frozenset[int]


def _socket_inode(local_port: int) -> str | None:
    """The inode of the 127.0.0.1 TCP socket bound to ``local_port`` (from /proc/net/tcp)."""
    wanted = f"0100007F:{local_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        # ESTABLISHED only: a TIME_WAIT socket of an earlier connection may share the port
        # (and has no inode, so no owner).
        if fields[1] == wanted and fields[3] == "01" and fields[9] != "0":
            return fields[9]
    return None


def _owner_pids(local_port: int) -> frozenset[int]:
    """The processes holding the client end of a connection to our server."""
    inode = _socket_inode(local_port)
    if inode is None:
        return frozenset()
    target = f"socket:[{inode}]"
    owners = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                owners.add(int(entry.name))
        except OSError:  # the process ended, or is not ours to read
            continue
    return frozenset(owners)


class SlowAudioServer(ThreadingHTTPServer):
    """Serves one audio file to any GET, ``DELAY_SECONDS`` after the request arrived."""

    daemon_threads = True

    def __init__(self, audio: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.audio = audio
        self.fetches: list[Fetch] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _SlowHandler(BaseHTTPRequestHandler):
    server: SlowAudioServer

    def do_GET(self) -> None:
        if "range" in self.headers:
            # The API's submit-time URL check: answer at once, it is not a fetch.
            self.send_response(206)
            self.send_header("content-type", "audio/wav")
            self.send_header("content-range", f"bytes 0-0/{len(self.server.audio)}")
            self.send_header("content-length", "1")
            self.end_headers()
            self.wfile.write(self.server.audio[:1])
            return
        started = time.monotonic()
        peer_port = int(self.client_address[1])
        pids = _owner_pids(peer_port)
        time.sleep(max(0.0, DELAY_SECONDS - (time.monotonic() - started)))
        body = self.server.audio
        self.send_response(200)
        self.send_header("content-type", "audio/wav")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        with self.server.lock:
            self.server.fetches.append(Fetch(self.path, started, time.monotonic(), peer_port, pids))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def audio_server(tmp_path: Path) -> Iterator[SlowAudioServer]:
    audio = speak("One of many.", tmp_path / "many.wav").read_bytes()
    server = SlowAudioServer(audio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _max_in_flight(fetches: list[Fetch]) -> int:
    events = sorted(
        [(f.started, 1) for f in fetches] + [(f.ended, -1) for f in fetches],
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def _io_consumers(settings: Settings) -> list[str]:
    app = Celery(broker=settings.broker, set_as_current=False)
    try:
        replies = app.control.inspect(timeout=2.0).active_queues() or {}
    finally:
        app.close()
    return sorted(w for w, queues in replies.items() if any(q["name"] == "io" for q in queues))


async def test_url_fetches_overlap_in_one_io_worker_process(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    audio_server: SlowAudioServer,
) -> None:
    # given one IO worker process, a slow audio host, and a key of an owner of its own (jobs
    # other tests left queued don't take its fair share of the GPU lane)
    key = await asyncio.to_thread(make_key, settings, "io-concurrency")
    async with AsyncTestClient(create_app(settings), timeout=60) as api:
        api.headers.update(bearer(key))
        await _fetch_many(settings, workers, api, audio_server)


async def _fetch_many(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    api: AsyncTestClient[Any],
    audio_server: SlowAudioServer,
) -> None:
    io_worker = workers["worker-io"]
    assert [name for name in workers if name.startswith("worker-io")] == ["worker-io"]
    assert len(await asyncio.to_thread(_io_consumers, settings)) == 1

    # when many URL jobs are submitted at once
    base = f"http://127.0.0.1:{audio_server.port}/x.wav"
    responses = await asyncio.gather(
        *(api.post("/v1/jobs", json={"audio_url": f"{base}?i={i}"}) for i in range(JOBS))
    )
    assert [r.status_code for r in responses] == [202] * JOBS, [r.text for r in responses]
    job_ids = [r.json()["id"] for r in responses]
    finals = await asyncio.gather(*(wait_for_job(api, j, timeout=300.0) for j in job_ids))

    # then every job was fetched once and transcribed
    assert [j["status"] for j in finals] == ["completed"] * JOBS, finals
    fetches = list(audio_server.fetches)
    assert sorted(f.path for f in fetches) == sorted(f"/x.wav?i={i}" for i in range(JOBS))

    # and every fetch came from the one IO worker process
    assert all(io_worker.pid in f.pids for f in fetches), [sorted(f.pids) for f in fetches]

    # and the fetches overlapped: many at once, all done in a fraction of the serial time
    in_flight = _max_in_flight(fetches)
    span = max(f.ended for f in fetches) - min(f.started for f in fetches)
    assert in_flight >= JOBS // 2, f"at most {in_flight} fetches in flight at once"
    assert span < JOBS * DELAY_SECONDS / 3, f"{JOBS} fetches took {span:.1f} s"
