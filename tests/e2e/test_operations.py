"""Operations end to end, on a stack of its own: metrics move as a job runs, every process logs
JSON lines with the job bound, and Flower sees both pools and their tasks.

The stack (API on granian, worker-io, worker-gpu, beat, Flower) runs with
``STENO_LOG_FORMAT=json`` against a private Redis and a database of its own, so no other
worker takes its job and its counters count only its own work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from service.cli.infra import asyncpg_dsn, find_binary
from service.cli.processes import migrate, process_argv
from service.core.settings import Settings
from tests.audio import speak
from tests.conftest import (
    WorkerProcess,
    bearer,
    free_port,
    make_key,
    recreate_database,
    start_api,
    wait_for_queues,
)
from tests.integration.test_operations import samples

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Stack:
    """The processes, their settings, keys and URLs."""

    settings: Settings
    processes: dict[str, WorkerProcess]
    api: str
    plain: dict[str, str]
    admin: dict[str, str]
    flower: str

    def scrape(self, family: str) -> Scrape:
        """One scrape of the API (``api``) or of a worker pool's exporter (``io``, ``gpu``)."""
        if family == "api":
            url, headers = f"{self.api}/metrics", self.admin
        else:
            port = getattr(self.settings, f"{family}_metrics_port")
            url, headers = f"http://127.0.0.1:{port}/metrics", {}
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return samples(response.text)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own (nothing on disk)."""
    binary = find_binary("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (deploy/bootstrap.sh installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path_factory.mktemp("redis"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def stack(
    settings: Settings, private_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The whole stack with JSON logs, exporters on free ports and Flower."""
    base, _, name = settings.database_url.rpartition("/")
    own = dataclasses.replace(
        settings,
        database_url=f"{base}/{name.split('?')[0]}_ops",
        redis_url=private_redis,
        broker_url="",
        data_dir=tmp_path_factory.mktemp("ops-data"),
        log_format="json",
        metrics_dir=tmp_path_factory.mktemp("ops-metrics"),
        io_metrics_port=free_port(),
        gpu_metrics_port=free_port(),
        flower_port=free_port(),
        task_events=True,
        # A short wait before Whisper (the chaos hook) keeps the job running while its event
        # stream is open.
        transcribe_delay_seconds=2.0,
    )
    _run(recreate_database(own.database_url))
    migrate(own)
    logs = tmp_path_factory.mktemp("ops-logs")
    processes: dict[str, WorkerProcess] = {}
    try:
        processes["flower"] = WorkerProcess(
            "flower", own, logs, argv=process_argv("flower", own), FLOWER_UNAUTHENTICATED_API="1"
        )
        for name in ("worker-io", "worker-gpu", "beat"):
            processes[name] = WorkerProcess(name, own, logs)
        wait_for_queues(own, {"io", "gpu"})
        processes["api"], url = start_api(own, logs)
        yield Stack(
            settings=dataclasses.replace(own, port=int(url.rsplit(":", 1)[1])),
            processes=processes,
            api=url,
            plain=bearer(make_key(own, "ops-plain")),
            admin=bearer(make_key(own, "ops-admin", admin=True)),
            flower=f"http://127.0.0.1:{own.flower_port}",
        )
    finally:
        for process in processes.values():
            process.stop()
        _run(_drop_database(own.database_url))


def _run(coro: Any) -> None:
    asyncio.run(coro)


async def _drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    connection = await asyncpg.connect(asyncpg_dsn(url, database="postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@dataclass
class Ran:
    """One job run through the stack, with scrapes before and after it."""

    job: dict[str, Any]
    before: dict[str, Scrape]
    after: dict[str, Scrape]
    streams_open: float
    queues: list[dict[str, Any]]


@pytest.fixture(scope="module")
def ran(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """Submit one upload, follow its events to the end, scrape around it."""
    clip = speak("Metrics move as the job runs.", tmp_path_factory.mktemp("clip") / "m.ogg")
    before = {family: stack.scrape(family) for family in ("api", "io", "gpu")}
    with httpx.Client(base_url=stack.api, headers=stack.plain, timeout=60) as client:
        with clip.open("rb") as audio:
            submitted = client.post("/v1/jobs", files={"file": ("m.ogg", audio, "audio/ogg")})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as events:
            lines = events.iter_lines()
            next(lines)  # the stream is open once its first line arrived
            streams_open = stack.scrape("api")[("steno_sse_streams", ())]
            for line in lines:
                if line in ("event: completed", "event: failed"):
                    break
        job = client.get(f"/v1/jobs/{job_id}").json()
    deadline = time.monotonic() + 10  # the stream's close is counted right after it ends
    while stack.scrape("api")[("steno_sse_streams", ())] and time.monotonic() < deadline:
        time.sleep(0.1)
    after = {family: stack.scrape(family) for family in ("api", "io", "gpu")}
    queues = httpx.get(f"{stack.api}/v1/queues", headers=stack.admin, timeout=30).json()
    return Ran(job, before, after, streams_open, queues["queues"])


def _moved(ran: Ran, family: str, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return ran.after[family].get(key, 0.0) - ran.before[family].get(key, 0.0)


def test_a_job_moves_the_counters_the_histograms_and_the_stream_gauge(ran: Ran) -> None:
    # Given one upload that completed (and an SSE client that followed it)
    assert ran.job["status"] == "completed", ran.job

    # then the API counted the submission and the open stream (closed again by now)
    assert _moved(ran, "api", "steno_jobs_submitted_total", source="upload") == 1
    assert ran.streams_open == 1
    assert ran.after["api"][("steno_sse_streams", ())] == 0
    route = {"method": "POST", "route": "/v1/jobs", "status": "202"}
    assert _moved(ran, "api", "steno_http_requests_total", **route) == 1
    # the GPU pool counted one claim, one completion and observed its stages and rate
    gpu: dict[str, dict[str, str]] = {
        "steno_jobs_finished_total": {"status": "completed"},
        "steno_job_attempts_total": {},
        "steno_job_duration_seconds_count": {"status": "completed"},
        "steno_stage_duration_seconds_count": {"stage": "transcribe"},
        "steno_transcribe_realtime_factor_count": {},
    }
    for name, labels in gpu.items():
        assert _moved(ran, "gpu", name, **labels) == 1, (name, labels)
    assert _moved(ran, "gpu", "steno_stage_duration_seconds_count", stage="queued") == 1
    assert _moved(ran, "gpu", "steno_stage_duration_seconds_sum", stage="transcribe") > 0
    # nothing finished twice anywhere (the IO pool and the API finished nothing)
    for family in ("api", "io"):
        assert _moved(ran, family, "steno_jobs_finished_total", status="completed") == 0
    # and with nothing left waiting, the queue is empty and a new job would start at once
    assert ran.after["api"][("steno_queue_depth_jobs", (("queue", "gpu"),))] == 0
    gpu_queue = {q["name"]: q for q in ran.queues}["gpu"]
    assert gpu_queue["workers"] and gpu_queue["concurrency"] >= 1, gpu_queue
    assert gpu_queue["realtime_factor"] > 0
    assert gpu_queue["eta_seconds_for_new_job"] == 0.0
    io_queue = {q["name"]: q for q in ran.queues}["io"]
    assert io_queue["workers"] and io_queue["concurrency"] >= 1, io_queue


def test_every_process_logs_json_lines_with_the_job_bound(stack: Stack, ran: Ran) -> None:
    # Given the stack ran one job under STENO_LOG_FORMAT=json
    job_id = ran.job["id"]
    about_the_job: list[dict[str, Any]] = []
    for name in ("api", "worker-io", "worker-gpu", "beat"):
        lines = [line for line in stack.processes[name].log().splitlines() if line.strip()]
        assert lines, f"{name} logged nothing"
        for line in lines:
            # then every line of every process is one JSON object
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{name} logged a line that is not JSON: {line!r}")
            assert {"ts", "level", "logger", "msg", "process"} <= entry.keys(), line
            if job_id in entry["msg"]:
                about_the_job.append(entry)
    # and every line about the job names it, with its task, queue and attempt once claimed
    assert about_the_job, "no line mentions the job"
    assert all(entry.get("job_id") == job_id for entry in about_the_job), about_the_job
    claimed = [e for e in about_the_job if "claimed (attempt 1)" in e["msg"]]
    assert claimed and claimed[0]["attempt"] == 1, about_the_job
    assert claimed[0]["queue"] == "gpu" and claimed[0]["task_id"], claimed
    assert claimed[0]["process"] == "worker-gpu"


def test_flower_lists_both_workers_and_the_jobs_task(stack: Stack, ran: Ran) -> None:
    # Given Flower started beside the stack (task events on)
    deadline = time.monotonic() + 60
    while True:
        try:
            workers = httpx.get(f"{stack.flower}/api/workers?refresh=1", timeout=10).json()
            tasks = httpx.get(f"{stack.flower}/api/tasks", timeout=10).json()
        except (httpx.TransportError, json.JSONDecodeError):
            workers, tasks = {}, {}
        pools = {name.split("@")[0] for name in workers}
        names = {task.get("name") for task in tasks.values()}
        if {"io", "gpu"} <= pools and "gpu.transcribe" in names:
            break
        assert time.monotonic() < deadline, (workers, tasks, stack.processes["flower"].log())
        time.sleep(1)

    # then it lists both pools' workers, and the job's task from its events
    transcribe = [t for t in tasks.values() if t.get("name") == "gpu.transcribe"]
    assert any(ran.job["id"] in str(t.get("args")) for t in transcribe), transcribe
    assert any(t.get("state") == "SUCCESS" for t in transcribe), transcribe


def test_the_exporters_are_the_families_own(stack: Stack) -> None:
    # Given the pools' exporters: each reads only its own family's folder
    folders = sorted(p.name for p in Path(stack.settings.metrics_root).iterdir())
    assert folders == sorted(
        [
            f"api-{stack.settings.port}",
            f"worker-gpu-{stack.settings.gpu_metrics_port}",
            f"worker-io-{stack.settings.io_metrics_port}",
        ]
    ), folders
    assert os.listdir(Path(stack.settings.metrics_root) / folders[0])
