"""``steno dev`` and ``steno demo``: the whole stack in one terminal, with prefixed logs.

PostgreSQL and Redis are the configured ones when they answer, else private throwaway ones
(see ``service.cli.infra``); the database is migrated, a local API key made (or reused) and
the model installed before the api, worker-io, worker-gpu and beat processes start.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from honcho.manager import Manager

from service.cli.infra import PrivateServices, resolve_services
from service.cli.infra.host import free_port
from service.cli.keys import local_key
from service.cli.processes import ROOT, install_models, migrate, process_argv, python_module
from service.core.settings import Settings, load_settings

__all__ = ["SAMPLE", "run_stack"]

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "steno-sample.ogg"
"""The clip ``steno demo`` transcribes."""


def run_stack(settings: Settings, *, demo: bool) -> int:
    """Run api, worker-io, worker-gpu and beat with prefixed logs until one stops or a signal.

    With ``demo`` a client process submits the bundled sample, prints the transcript and
    exits, which stops the rest; the exit code is the client's.
    """
    resolved, private = _prepare_stack(settings, pick_port=demo and "STENO_PORT" not in os.environ)
    env = {**os.environ, **resolved.as_env(), "PYTHONUNBUFFERED": "1"}
    manager = Manager()
    for name in ("api", "worker-io", "worker-gpu", "beat"):
        manager.add_process(name, shlex.join(process_argv(name, resolved)), env=env, cwd=str(ROOT))
    if demo:
        client = python_module(
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


def _prepare_stack(
    settings: Settings, *, pick_port: bool
) -> tuple[Settings, PrivateServices | None]:
    """Find or start PostgreSQL and Redis, migrate, install the model; settings to run with."""
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
        overrides["port"] = free_port()
    resolved = load_settings(_env_with(settings.as_env(), overrides))
    migrate(resolved)
    key_file = resolved.data_dir / "api-key"
    resolved = dataclasses.replace(resolved, api_key=local_key(resolved, key_file))
    print(
        f"steno: API key for this stack (kept in {key_file}): {resolved.api_key}\n"
        "steno:   the web page asks for it once; for the CLI: "
        f"export STENO_API_KEY=$(cat {key_file})",
        flush=True,
    )
    if not (resolved.models_dir / f"{resolved.whisper_model}.pt").is_file():
        install_models(resolved, [resolved.whisper_model])
    return resolved, private


def _env_with(env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, str]:
    merged = dict(env)
    for key, value in overrides.items():
        merged["STENO_" + key.upper()] = str(value)
    return merged
