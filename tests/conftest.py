"""Shared fixtures: real PostgreSQL, Redis, Celery worker processes and the API.

The suite uses its own database (``steno_test``, recreated per run) and Redis database
(15, flushed per run) on the configured servers; when none answers it starts private ones.
Override with ``STENO_TEST_DATABASE_URL`` / ``STENO_TEST_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from cryptography.fernet import Fernet
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.auth.keys import create_key
from service.cli.infra import asyncpg_dsn, resolve_services
from service.cli.processes import migrate, process_argv
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
# The owner of the session's API key: jobs tests insert directly belong to it.
TEST_OWNER = "tests"
FINAL = ("completed", "failed", "cancelled")
LOOPBACK_ALLOWED = ("127.0.0.1/32", "::1/128")

# One INFO line per polling request would bury a failing test's own output.
logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def test_slot() -> Iterator[int]:
    """A slot no other test run on this machine holds (runs may overlap: a developer and CI).

    Slot N uses Redis database N and PostgreSQL database ``steno_test_N``, so two runs never
    consume each other's task messages or drop each other's tables.
    """
    for slot in range(15, 7, -1):
        handle = Path(tempfile.gettempdir(), f"steno-test-slot-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield slot
        finally:
            handle.close()
        return
    raise RuntimeError("more than 8 test runs at once on this machine")


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, test_slot: int) -> Iterator[Settings]:
    """Settings for the whole run, pointing at a fresh test database and Redis db."""
    database_url = os.environ.get(
        "STENO_TEST_DATABASE_URL",
        f"postgresql+asyncpg://postgres@127.0.0.1:5432/steno_test_{test_slot}",
    )
    redis_url = os.environ.get("STENO_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{test_slot}")
    state = tmp_path_factory.mktemp("services")
    database_url, redis_url, private = resolve_services(database_url, redis_url, state)
    asyncio.run(recreate_database(database_url))
    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path_factory.mktemp("steno-data")
    base = load_settings()
    test_settings = load_settings(
        {},
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        model_dir=base.models_dir.resolve(),
        io_concurrency=50,
        db_pool_size=10,
        outbox_sweep_seconds=1.0,
        outbox_grace_seconds=0.5,
        lease_seconds=8.0,
        log_level="INFO",
        # STENO_GPU_BATCH_SIZE=4 runs the suite with batched inference (a threads-pool worker).
        gpu_batch_size=base.gpu_batch_size,
        gpu_batch_flush_ms=base.gpu_batch_flush_ms,
        # The suites submit hundreds of jobs a minute; the limit has tests of its own.
        submits_per_minute=0,
        # Some tests leave jobs queued on purpose; a wider fair share keeps them from holding
        # back the owner's later jobs (tests/e2e/test_priorities.py measures fairness with it).
        fair_share_per_owner=8,
        # Audio URLs in tests are served on loopback, which the egress refuses by default.
        egress_allow=LOOPBACK_ALLOWED,
        # Webhook retries within seconds, not minutes; signing secrets sealed as in production.
        webhook_retry_base_seconds=1.0,
        webhook_timeout_seconds=5.0,
        webhook_secrets_key=(Fernet.generate_key().decode(),),
        # Prometheus files and worker exporters of this run only (runs may overlap).
        metrics_dir=tmp_path_factory.mktemp("metrics"),
        io_metrics_port=free_port(),
        gpu_metrics_port=free_port(),
    )
    migrate(test_settings)
    # Child processes (the CLI) present this key through STENO_API_KEY.
    key = make_key(test_settings, "tests", owner=TEST_OWNER)
    test_settings = dataclasses.replace(test_settings, api_key=key)
    yield test_settings
    if private is not None:
        private.stop()


async def recreate_database(url: str) -> None:
    """Drop the URL's database (even with sessions open) and create it empty."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    connection = await asyncpg.connect(asyncpg_dsn(url, database="postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a Steno child process runs with under these settings."""
    return {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1", **extra}


class WorkerProcess:
    """A real Steno process (``worker-io``, ``worker-gpu``, ``beat``) with its log file."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        log_dir: Path,
        *,
        argv: list[str] | None = None,
        cwd: Path | None = None,
        **env: str,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv or process_argv(name, settings),
            env=child_env(settings, **env),
            cwd=cwd or ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The main process's pid."""
        return self.process.pid

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL the whole process group after ``timeout``."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def descendants(pid: int, *, depth: int | None = None) -> set[int]:
    """Live processes below ``pid`` (children only with ``depth=1``), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier, level = {pid}, 0
    while frontier and (depth is None or level < depth):
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
        level += 1
    return found


def wait_for_queues(settings: Settings, queues: set[str], timeout: float = 120.0) -> None:
    """Block until some worker consumes each of ``queues`` (asked over the broker)."""
    from celery import Celery

    app = Celery(broker=settings.broker, set_as_current=False)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            replies = app.control.inspect(timeout=1.0).active_queues() or {}
            seen = {q["name"] for qs in replies.values() for q in qs}
            if queues <= seen:
                return
            time.sleep(0.5)
    finally:
        app.close()
    raise TimeoutError(f"no worker consumed {queues} within {timeout} s")


@pytest.fixture(scope="session")
def workers(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProcess]]:
    """One IO worker, one GPU worker (one child, model loaded) and beat, for the session."""
    log_dir = tmp_path_factory.mktemp("logs")
    started = {
        name: WorkerProcess(name, settings, log_dir) for name in ("worker-io", "worker-gpu", "beat")
    }
    try:
        wait_for_queues(settings, {"io", "gpu"})
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest.fixture(scope="session")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test database, for checking what the service wrote."""
    engine = make_engine(settings, pool_size=5)
    yield make_sessionmaker(engine)
    await engine.dispose()


def make_key(
    settings: Settings, name: str, *, admin: bool = False, owner: str | None = None
) -> str:
    """A new API key in the settings' database (blocking; call it outside an event loop)."""

    async def create() -> str:
        engine = make_engine(settings, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                key, _ = await create_key(session, name=name, admin=admin, owner=owner)
        finally:
            await engine.dispose()
        return key

    return asyncio.run(create())


def bearer(key: str) -> dict[str, str]:
    """The request header that presents ``key``."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def api_key(settings: Settings) -> str:
    """The plain API key (its own owner) the session's clients present."""
    return settings.api_key


@pytest.fixture(scope="session")
async def api(settings: Settings, api_key: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """The real Litestar app, in process, on the test database and broker, with a key."""
    async with AsyncTestClient(create_app(settings), timeout=60) as client:
        client.headers.update(bearer(api_key))
        yield client


async def wait_for_job(
    client: AsyncTestClient[Any] | httpx.AsyncClient, job_id: str, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job is final; returns the last view."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        await asyncio.sleep(0.25)


_MEASURED: list[tuple[str, float, str]] = []


@pytest.fixture
def wer_log() -> Any:
    """Record a measured word error rate; the run's summary lists them all."""

    def record(name: str, wer: float, text: str) -> None:
        _MEASURED.append((name, wer, text))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the word error rates the end-to-end tests measured."""
    if _MEASURED:
        terminalreporter.section("word error rate (tiny.en, espeak-ng speech)")
        for name, wer, text in _MEASURED:
            terminalreporter.write_line(f"{name:>12}: WER {wer:.3f}  {text.strip()!r}")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(settings: Settings, log_dir: Path, **overrides: Any) -> tuple[WorkerProcess, str]:
    """A real API process (granian) on a free port; returns it and its base URL once ready."""

    api_settings = dataclasses.replace(settings, port=free_port(), **overrides)
    process = WorkerProcess("api", api_settings, log_dir)
    base = f"http://127.0.0.1:{api_settings.port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.process.poll() is not None or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"the API did not start: {process.log()[-3000:]}")
        time.sleep(0.2)
