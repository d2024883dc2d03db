"""What ``steno`` runs on this machine: each process's command line, and migrate/install first.

``api``, ``worker-io``, ``worker-gpu`` and ``beat`` are exec'd (one process each, for
supervisors) or run side by side by ``steno dev``; ``migrate`` and ``models install`` are the
one-shot steps a stack needs before it starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.core.routing import GPU_QUEUES
from service.core.settings import Settings

__all__ = ["ROOT", "exec_process", "install_models", "migrate", "process_argv", "python_module"]

ROOT = Path(__file__).resolve().parents[2]
"""The source checkout: migrations/ lies here, and the stack's processes run from here."""


def python_module(*argv: str) -> list[str]:
    """The command line running ``python -m argv...`` with this interpreter."""
    return [sys.executable, "-m", *argv]


def process_argv(name: str, settings: Settings) -> list[str]:
    """The command line of one Steno process (``api``, ``worker-io``, ``worker-gpu``, ``beat``,
    ``flower``)."""
    json_logs = settings.log_format == "json"
    # With JSON logs Celery prints no banner (it writes it outside logging).
    celery = python_module("celery", "-A", "workers.app", *(["--quiet"] if json_logs else []))
    quiet = ["--without-mingle", "--without-gossip", "--loglevel", settings.log_level]
    if name == "api":
        return python_module(
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "service.app:create_app",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--log-level",
            settings.log_level.lower(),
            *(["--log-config", str(_granian_log_config(settings))] if json_logs else []),
        )
    if name == "worker-io":
        # The arq layer's CLI: a Celery worker on the gevent pool serving Steno's IO functions
        # (concurrency, queue and log level come from the settings, see workers/io/worker.py).
        return python_module("workers.arq", "workers.io.worker.WorkerSettings", "-n", "io@%h")
    if name == "worker-gpu" and settings.gpu_batch_size > 1:
        # Batched inference: one process, one model, task threads for two batches feeding
        # the window batcher (workers/gpu/batching); one such worker per GPU. The threads
        # pool has no master to replace it when it is killed mid-job: respawn does that.
        threads = ["-P", "threads", "-c", str(settings.gpu_task_slots)]
        worker = [*celery, "worker", *threads, "-Q", ",".join(GPU_QUEUES), "-n", "gpu@%h"]
        return python_module("service.cli.respawn", *worker, *quiet)
    if name == "worker-gpu":
        return [
            *celery,
            "worker",
            "-P",
            "prefork",
            "-c",
            str(settings.gpu_concurrency),
            # Every priority lane, highest first: polled in this order (workers/app.py).
            "-Q",
            ",".join(GPU_QUEUES),
            "-n",
            "gpu@%h",
            # Recycle children now and then: long-lived CUDA processes leak.
            "--max-tasks-per-child",
            "200",
            *quiet,
        ]
    if name == "beat":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        schedule = settings.data_dir / "celerybeat-schedule"
        return [*celery, "beat", "--schedule", str(schedule), "--loglevel", settings.log_level]
    if name == "flower":
        # Celery's web monitor, on loopback only: it has no authentication of its own.
        return [*celery, "flower", "--address=127.0.0.1", f"--port={settings.flower_port}"]
    raise SystemExit(f"unknown process {name!r}")


def _granian_log_config(settings: Settings) -> Path:
    """granian's logging configuration for JSON lines, written under the data folder."""
    from service.core.logs import granian_log_config

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "granian-logging.json"
    path.write_text(json.dumps(granian_log_config("api")))
    return path.resolve()


def exec_process(name: str, settings: Settings) -> int:
    """Replace this process with Steno process ``name``, so a supervisor's signals reach it."""
    argv = process_argv(name, settings)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 1  # pragma: no cover


def migrate(settings: Settings) -> None:
    """Create the configured database if it is missing, then upgrade it to the newest schema."""
    from alembic import command
    from alembic.config import Config

    from service.cli.infra import ensure_database_exists

    if asyncio.run(ensure_database_exists(settings.database_url)):
        print("created the database")
    # A source checkout has migrations/ beside service/; an installed package runs from
    # a directory that holds them (the Docker images' WORKDIR).
    folder = next(
        (p for p in (ROOT / "migrations", Path.cwd() / "migrations") if p.is_dir()),
        ROOT / "migrations",
    )
    config = Config(str(folder / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    print("database schema is up to date")


def install_models(settings: Settings, names: Sequence[str]) -> None:
    """Import real Whisper weights into the model directory (``STENO_MODEL_DIR``)."""
    # Lazily: the weight import belongs to the GPU worker (numpy, then torch to convert),
    # which no other subcommand needs.
    from workers.gpu.weights import install_model

    for name in names:
        if name == "diarization":
            # The diarization weights come inside the silero-vad and Resemblyzer wheels:
            # nothing to copy, only their pinned checksums to check.
            from workers.gpu.diarize.weights import WEIGHTS, verify

            for pinned in WEIGHTS:
                print(f"diarization: {verify(pinned)} matches its pinned sha256")
            continue
        install_model(name, settings.models_dir)
