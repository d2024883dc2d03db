"""The fault-injection suite's harness (`just chaos`): private services, real workers, audits.

Every scenario runs against a private PostgreSQL and a private Redis (free ports, temporary
folders) that the suite may stop and kill; the machine's shared servers are never touched.
Each test gets a fresh database and an emptied Redis, starts real ``worker-io``,
``worker-gpu`` and ``beat`` processes, submits real jobs through the API, injects its fault,
and then audits every job that got a ``202``: it must end in exactly one final state, a
completed job with exactly one transcript and one committed completion, any other with none.
A scenario that gives its jobs a ``webhook_url`` also audits the webhooks: exactly one event
per finished job, delivered to the receiver (which may see it more than once, always under
that one ``webhook-id``). Each audit is one row of the table written to
``chaos-results/summary.md``.

The GPU pool runs the production code path with ``STENO_TRANSCRIBE_DELAY_SECONDS`` (a wait
before Whisper that keeps the lease and checks cancellation) so that kills land mid-job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from service.app import create_app
from service.auth.keys import create_key
from service.cli.infra import PrivateServices, find_binary
from service.cli.processes import migrate, process_argv
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.db.models import Transcript, WebhookEvent
from service.core.settings import Settings, load_settings
from tests.audio import SENTENCES, speak
from tests.conftest import (
    FINAL,
    LOOPBACK_ALLOWED,
    ROOT,
    WorkerProcess,
    bearer,
    descendants,
    recreate_database,
    wait_for_queues,
)
from tests.webhooks import Receiver

RESULTS = ROOT / "chaos-results"
# Settings every scenario runs with, unless it overrides them.
CHAOS_SETTINGS: dict[str, Any] = {
    "io_concurrency": 20,
    "gpu_concurrency": 2,
    "db_pool_size": 5,
    "submits_per_minute": 0,
    "lease_seconds": 6.0,
    "outbox_sweep_seconds": 1.0,
    "outbox_grace_seconds": 0.5,
    # A queued job whose message sat with a dead worker is re-sent after this (not an hour).
    "redrive_after_seconds": 20.0,
    "url_check_timeout_seconds": 0.0,
    # The audio servers of these scenarios listen on loopback.
    "egress_allow": LOOPBACK_ALLOWED,
    "transcribe_delay_seconds": 1.5,
    "log_level": "INFO",
    # Webhook retries within seconds, so a receiver's recovery shows in a scenario's time.
    "webhook_retry_base_seconds": 1.0,
    "webhook_timeout_seconds": 5.0,
}


@dataclasses.dataclass
class Row:
    """One scenario's outcome, as the note's table shows it."""

    scenario: str
    submitted: int
    completed: int
    failed: int
    cancelled: int
    lost: int
    duplicated: int
    seconds: float
    # Distinct webhook events the receiver got / finished jobs, and the POSTs it took.
    webhooks: str = ""


ROWS: list[Row] = []
_SUITE_STARTED = time.monotonic()


class PrivateRedis:
    """A private redis-server on a fixed free port that keeps nothing on disk; killable."""

    def __init__(self, folder: Path) -> None:
        binary = find_binary("redis-server")
        assert binary, "redis-server is needed (deploy/bootstrap.sh installs it)"
        self.binary, self.folder = binary, folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, empty."""
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert time.monotonic() < deadline, "private Redis did not start"
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL the server: everything it held is gone (nothing is on disk)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServices]:
    """A private PostgreSQL the suite may stop and start."""
    services = PrivateServices()
    services.start(tmp_path_factory.mktemp("chaos-pg"), need_postgres=True, need_redis=False)
    try:
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private Redis the suite may kill."""
    server = PrivateRedis(tmp_path_factory.mktemp("chaos-redis"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short spoken sentence (about 3 s): real Whisper work that stays fast."""
    return speak(SENTENCES[0], tmp_path_factory.mktemp("chaos-audio") / "short.wav")


_DATABASES = itertools.count(1)


class Chaos:
    """One scenario's stack: settings, worker processes, an API client, and the audit."""

    def __init__(
        self,
        postgres: PrivateServices,
        redis_server: PrivateRedis,
        clip: Path,
        folder: Path,
        name: str,
    ) -> None:
        self.postgres, self.redis, self.clip, self.folder = postgres, redis_server, clip, folder
        self.name = name
        self.processes: list[WorkerProcess] = []
        self._exit = contextlib.AsyncExitStack()
        self.started = time.monotonic()

    async def open(self, **overrides: Any) -> Chaos:
        """Fresh database and Redis, migrated; the in-process API on them."""
        base = self.postgres.urls["database_url"].rsplit("/", 1)[0]
        database_url = f"{base}/chaos_{os.getpid()}_{next(_DATABASES)}"
        await recreate_database(database_url)
        redis.Redis.from_url(self.redis.url).flushall()
        self.settings: Settings = load_settings(
            {},
            database_url=database_url,
            redis_url=self.redis.url,
            data_dir=self.folder / "data",
            model_dir=load_settings().models_dir.resolve(),
            # STENO_GPU_BATCH_SIZE > 1 runs the scenarios with batched inference.
            gpu_batch_size=load_settings().gpu_batch_size,
            **{**CHAOS_SETTINGS, **overrides},
        )
        await asyncio.to_thread(migrate, self.settings)
        self.api = await self._exit.enter_async_context(
            AsyncTestClient(create_app(self.settings), timeout=60)
        )
        engine = make_engine(self.settings, pool_size=2)
        self._exit.push_async_callback(engine.dispose)
        self.sessions = make_sessionmaker(engine)
        async with self.sessions() as session, session.begin():
            key, _ = await create_key(session, name="chaos")
        self.api.headers.update(bearer(key))
        return self

    async def secret(self) -> str:
        """The signing secret of the scenario's key."""
        secret: str = (await self.api.get("/v1/webhooks/secret")).json()["secret"]
        return secret

    def start(self, name: str, *, node: str | None = None, wait: bool = True) -> WorkerProcess:
        """Start ``worker-io``, ``worker-gpu`` or ``beat`` (``node`` renames a worker)."""
        argv = process_argv(name, self.settings)
        if node is not None:
            argv[argv.index("-n") + 1] = node
        process = WorkerProcess(name, self.settings, self.folder, argv=argv)
        self.processes.append(process)
        if wait and name != "beat":
            self.wait_for_queues({"io" if name == "worker-io" else "gpu"})
        return process

    def wait_for_queues(self, queues: set[str]) -> None:
        """Block until workers consume ``queues``; a broker connection dropped under the
        control client (after a Redis restart) is retried."""
        for attempt in range(3):
            try:
                return wait_for_queues(self.settings, queues)
            except redis.ConnectionError:
                if attempt == 2:
                    raise
                time.sleep(1.0)

    def start_all(self) -> dict[str, WorkerProcess]:
        """One IO worker, one GPU worker and beat, ready to take work."""
        started = {name: self.start(name, wait=False) for name in ("worker-io", "worker-gpu")}
        started["beat"] = self.start("beat")
        self.wait_for_queues({"io", "gpu"})
        return started

    async def submit(
        self, count: int = 1, *, filename: str = "clip.wav", webhook_url: str | None = None
    ) -> list[str]:
        """Upload the clip ``count`` times; every answer must be a 202."""
        ids = []
        for _ in range(count):
            ids.append(await self.submit_one(filename, webhook_url=webhook_url))
        return ids

    async def submit_one(
        self, filename: str = "clip.wav", *, webhook_url: str | None = None
    ) -> str:
        """Upload the clip once (with ``webhook_url`` if given); the job id of the 202."""
        fields = {"webhook_url": webhook_url} if webhook_url else {}
        with self.clip.open("rb") as audio:
            response = await self.api.post(
                "/v1/jobs", files={"file": (filename, audio, "audio/wav")}, data=fields
            )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    async def wait_until(self, condition: Any, timeout: float = 60.0, what: str = "") -> None:
        """Poll the async ``condition()`` until it is true."""
        deadline = time.monotonic() + timeout
        while not await condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
            await asyncio.sleep(0.1)

    async def count_running(self, ids: list[str]) -> int:
        """How many of the jobs are running now."""
        jobs = [(await self.api.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]
        return sum(job.get("status") == "running" for job in jobs)

    async def wait_running(self, ids: list[str], count: int = 1, timeout: float = 120.0) -> None:
        """Wait until at least ``count`` of the jobs are running."""

        async def enough() -> bool:
            return await self.count_running(ids) >= count

        await self.wait_until(enough, timeout, f"{count} running job(s)")

    async def running_child(
        self, ids: list[str], *, stage: str = "transcribing"
    ) -> tuple[str, int] | None:
        """A job running in ``stage`` and the pid of the GPU child that claimed it (from its
        log)."""
        for job_id in ids:
            view = (await self.api.get(f"/v1/jobs/{job_id}")).json()
            if view["status"] != "running" or view["progress"]["stage"] != stage:
                continue
            pattern = rf"job {job_id}: claimed \(attempt {view['attempts']}\) on \S+ pid (\d+)"
            for process in self.processes:
                if process.name == "worker-gpu" and (found := re.findall(pattern, process.log())):
                    if int(found[-1]) in descendants(process.pid, depth=1):
                        return job_id, int(found[-1])
        return None

    async def settle(self, ids: list[str], timeout: float = 240.0) -> dict[str, dict[str, Any]]:
        """Wait until every job is final (or the time is up); the last view of each."""
        deadline = time.monotonic() + timeout
        views: dict[str, dict[str, Any]] = {}
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                response = await self.api.get(f"/v1/jobs/{job_id}")
                if response.status_code == 200:
                    views[job_id] = response.json()
                    if views[job_id]["status"] in FINAL:
                        pending.remove(job_id)
            if pending:
                await asyncio.sleep(0.5)
        return views

    def completions(self) -> collections.Counter[str]:
        """Committed completions per job id, read from every GPU worker's log."""
        found: collections.Counter[str] = collections.Counter()
        for process in self.processes:
            if process.name == "worker-gpu":
                found.update(re.findall(r"job ([0-9a-f-]{36}): completed,", process.log()))
        return found

    async def audit(
        self,
        ids: list[str],
        timeout: float = 240.0,
        *,
        record: bool = True,
        receiver: Receiver | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Settle the jobs, record the scenario's row, and assert none is lost or doubled.

        A job is lost when it never reached a final state; duplicated when it has more
        than one transcript or committed completion, or a transcript while not completed.
        With a ``receiver``, a finished job is also lost when its webhook event never
        reached it, and duplicated when it has more than one event (or webhook-id).
        """
        views = await self.settle(ids, timeout)
        async with self.sessions() as session:
            rows = await session.execute(
                select(Transcript.job_id, func.count()).group_by(Transcript.job_id)
            )
            transcripts = {str(job_id): count for job_id, count in rows.all()}
        completions = self.completions()
        statuses = collections.Counter(views.get(i, {}).get("status") for i in ids)
        lost = [i for i in ids if views.get(i, {}).get("status") not in FINAL]
        duplicated = [
            i
            for i in ids
            if transcripts.get(i, 0) > 1
            or completions[i] > 1
            or (views.get(i, {}).get("status") != "completed" and transcripts.get(i, 0) > 0)
            or (views.get(i, {}).get("status") == "completed" and transcripts.get(i, 0) != 1)
        ]
        hooks = ""
        if receiver is not None:
            finished = [i for i in ids if i not in lost]
            events, received = await self.webhook_events(finished, receiver, timeout)
            lost += [i for i in finished if not received[i]]
            duplicated += [i for i in finished if events[i] > 1 or len(received[i]) > 1]
            posts = sum(len(receiver.for_job(i)) for i in finished)
            events_seen = sum(len(received[i]) for i in finished)
            hooks = f"{events_seen}/{len(finished)} ({posts} POST{'' if posts == 1 else 's'})"
        if record:
            ROWS.append(
                Row(
                    scenario=self.name,
                    submitted=len(ids),
                    completed=statuses["completed"],
                    failed=statuses["failed"],
                    cancelled=statuses["cancelled"],
                    lost=len(lost),
                    duplicated=len(duplicated),
                    seconds=time.monotonic() - self.started,
                    webhooks=hooks,
                )
            )
        assert not lost, {i: views.get(i) for i in lost}
        assert not duplicated, {i: (views.get(i), transcripts.get(i)) for i in duplicated}
        return views

    async def webhook_events(
        self, ids: list[str], receiver: Receiver, timeout: float
    ) -> tuple[dict[str, int], dict[str, set[str]]]:
        """Wait (up to ``timeout``) until each job's events are delivered; per job, how many
        events PostgreSQL holds and the distinct webhook-ids the receiver got."""
        wanted = [uuid.UUID(i) for i in ids]
        deadline = time.monotonic() + timeout
        while True:
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        select(WebhookEvent.job_id, WebhookEvent.state).where(
                            WebhookEvent.job_id.in_(wanted)
                        )
                    )
                ).all()
            delivered = {str(job_id) for job_id, state in rows if state == "delivered"}
            if set(ids) <= delivered or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        events = collections.Counter(str(job_id) for job_id, _ in rows)
        received = {i: {r.webhook_id for r in receiver.for_job(i)} for i in ids}
        return {i: events[i] for i in ids}, received

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of every process's log, for an assertion message."""

        def tail(process: WorkerProcess) -> str:
            # beat's relay sweep every second would bury everything else
            kept = [line for line in process.log().splitlines() if "relay" not in line]
            return f"--- {process.name}\n" + "\n".join(kept[-lines:])

        return "\n".join(tail(process) for process in self.processes)

    async def close(self) -> None:
        """Stop every process (SIGKILL what ignores SIGTERM) and the API."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
            process.stop(timeout=15)
        await self._exit.aclose()


@pytest.fixture
async def chaos(
    request: pytest.FixtureRequest,
    private_postgres: PrivateServices,
    private_redis: PrivateRedis,
    clip: Path,
    tmp_path: Path,
) -> AsyncIterator[Chaos]:
    """The scenario's stack; the test calls ``await chaos.open(**overrides)`` first."""
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    stack = Chaos(private_postgres, private_redis, clip, tmp_path, doc)
    try:
        yield stack
    finally:
        await stack.close()


def _table() -> str:
    lines = [
        "| scenario | submitted | completed | failed | cancelled | lost | duplicated "
        "| webhook events | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(ROWS, key=lambda row: int(row.scenario.split(".")[0])):
        lines.append(
            f"| {row.scenario} | {row.submitted} | {row.completed} | {row.failed} | "
            f"{row.cancelled} | {row.lost} | {row.duplicated} | {row.webhooks or '-'} | "
            f"{row.seconds:.0f} |"
        )
    lines.append("")
    lines.append(f"Suite wall time: {time.monotonic() - _SUITE_STARTED:.0f} s")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the scenarios' table and write it to ``chaos-results/summary.md``."""
    if not ROWS:
        return
    table = _table()
    terminalreporter.section("chaos: every 202 job ends once, with one transcript")
    for line in table.splitlines():
        terminalreporter.write_line(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text(table + "\n")


def slow_server(clip: Path, delay: float) -> tuple[httpx.URL, Any]:
    """A local HTTP server (a thread) that answers every GET with the clip after ``delay`` s."""
    import http.server
    import threading

    body = clip.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            self.send_response(200)
            self.send_header("content-type", "audio/wav")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return httpx.URL(f"http://127.0.0.1:{server.server_address[1]}/"), server
