"""Logs and metrics plumbing without services: JSON lines with the bound context, the command
lines under JSON logs, Flower's, and which Prometheus files a family's first process keeps."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.cli.processes import process_argv
from service.core import exporter, logs
from service.core.settings import SettingsError, load_settings


def _line(record: logging.LogRecord) -> dict[str, object]:
    logs.ContextFilter().filter(record)
    parsed: dict[str, object] = json.loads(logs.JsonFormatter("worker-gpu").format(record))
    return parsed


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("workers.gpu", logging.INFO, __file__, 1, msg, args, None)


def test_a_json_line_carries_the_bound_context_only_while_bound() -> None:
    # given a job bound around one record, and one after the block
    with logs.bound(job_id="j1", attempt=2):
        inside = _line(_record("job %s: claimed", "j1"))
    outside = _line(_record("idle"))

    # then the first names the job and its attempt, the second neither
    assert inside["msg"] == "job j1: claimed"
    assert (inside["job_id"], inside["attempt"], inside["process"]) == ("j1", 2, "worker-gpu")
    assert "job_id" not in outside and outside["level"] == "INFO"


def test_a_json_line_keeps_the_traceback_and_celerys_task_id() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        failing.exc_info = sys.exc_info()
    received = _record("Task %(name)s[%(id)s] received", {"name": "gpu.transcribe", "id": "t9"})

    assert "ValueError: boom" in str(_line(failing)["exc"])
    assert _line(received)["task_id"] == "t9"


def test_a_tasks_signals_bind_its_job_queue_and_id_then_forget_them() -> None:
    # given Steno's transcription task as Celery's task_prerun signal names it
    job_id = str(uuid.uuid4())
    task = SimpleNamespace(
        name="gpu.transcribe", request=SimpleNamespace(delivery_info={"routing_key": "gpu"})
    )

    # when the task starts, then ends
    logs._bind_task(task_id="t1", task=task, args=[job_id])
    during = dict(logs.log_context())
    logs._unbind_task()

    # then its lines had the job, the queue and the task's id, and later lines have none
    assert during == {"task_id": "t1", "queue": "gpu", "job_id": job_id}
    assert dict(logs.log_context()) == {}


def test_json_logs_change_the_command_lines(tmp_path: Path) -> None:
    # given JSON logs
    settings = load_settings({}, data_dir=tmp_path, log_format="json", flower_port=5600)

    # then granian gets a logging config whose formatters are Steno's, Celery prints no
    # banner, and Flower listens on loopback only
    api = process_argv("api", settings)
    config = json.loads(Path(api[api.index("--log-config") + 1]).read_text())
    assert config["formatters"]["generic"]["()"] == "service.core.logs.JsonFormatter"
    assert "--quiet" in process_argv("worker-gpu", settings)
    assert "--quiet" in process_argv("beat", settings)
    flower = process_argv("flower", settings)
    assert "--address=127.0.0.1" in flower and "--port=5600" in flower
    text = dataclasses.replace(settings, log_format="text")
    assert "--log-config" not in process_argv("api", text)
    assert "--quiet" not in process_argv("worker-gpu", text)
    with pytest.raises(SettingsError):
        load_settings({"STENO_LOG_FORMAT": "xml"})


def _files(folder: Path, *pids: int) -> None:
    for pid in pids:
        (folder / f"counter_{pid}.db").write_bytes(b"")
        (folder / f"gauge_livesum_{pid}.db").write_bytes(b"")


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_familys_first_process_empties_its_folder_and_a_late_one_keeps_the_counts(
    tmp_path: Path,
) -> None:
    dead, live = _dead_pid(), os.getppid()
    # given the files of a family that stopped (a dead pid, and this pid: a predecessor's)
    _files(tmp_path, dead, os.getpid())
    # when its first process starts, then everything goes
    exporter._tidy(tmp_path, first=not exporter._live_writers(tmp_path, me=False), me=False)
    assert list(tmp_path.iterdir()) == []

    # given a live sibling and a dead one
    _files(tmp_path, dead, live)
    # when a process joins them, then the dead one's counters stay and its live gauge goes
    exporter._tidy(tmp_path, first=not exporter._live_writers(tmp_path, me=False), me=False)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([f"counter_{dead}.db", f"counter_{live}.db", f"gauge_livesum_{live}.db"])


@pytest.mark.parametrize(
    ("environ", "pool", "slots"),
    [
        ({}, "prefork", 1),
        ({"STENO_GPU_CONCURRENCY": "3"}, "prefork", 3),
        # Batched: task threads for two batches, whatever the prefork concurrency says.
        ({"STENO_GPU_BATCH_SIZE": "4", "STENO_GPU_CONCURRENCY": "3"}, "threads", 8),
    ],
)
def test_the_gpu_worker_runs_as_many_jobs_as_its_task_slots(
    tmp_path: Path, environ: dict[str, str], pool: str, slots: int
) -> None:
    settings = load_settings(environ, data_dir=tmp_path)

    argv = process_argv("worker-gpu", settings)

    assert settings.gpu_task_slots == slots
    assert argv[argv.index("-P") + 1] == pool
    assert argv[argv.index("-c") + 1] == str(slots)
