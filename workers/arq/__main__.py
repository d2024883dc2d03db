"""``python -m workers.arq path.to.WorkerSettings [--burst] [--check]`` (arq's CLI).

Starts a Celery worker on the gevent pool serving exactly the settings' functions and cron
jobs from the settings' queue. ``--burst`` stops it once the queue (and its deferred jobs)
is empty; ``--check`` exits 0 if a worker of that queue recorded its health-check key within
its ``health_check_interval`` (as arq's), else 1. SIGTERM and Ctrl-C stop it gracefully
(Celery's warm shutdown: running jobs finish, or are sent again).
"""

from __future__ import annotations

# The package's __init__ has monkey-patched the standard library for gevent already.
import argparse
import importlib
import logging
import os
import sys
from typing import Any

from workers.arq.worker import check_health, create_worker


def import_string(path: str) -> Any:
    """The attribute at ``package.module.Attribute``."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise SystemExit(f"{path!r} is not an import path of the form module.WorkerSettings")
    return getattr(importlib.import_module(module_name), attribute)


def main(argv: list[str] | None = None) -> int:
    """Parse arq's arguments and run (or check) the worker."""
    parser = argparse.ArgumentParser(prog="python -m workers.arq", description=__doc__)
    parser.add_argument("worker_settings", help="import path of a WorkerSettings class")
    parser.add_argument("--burst", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--check", action="store_true", help="run a health check and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-n", "--hostname", help="Celery node name (default <queue>@<host>)")
    args = parser.parse_args(argv)
    sys.path.append(os.getcwd())
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = import_string(args.worker_settings)
    if args.check:
        return check_health(settings)
    overrides: dict[str, Any] = {} if args.burst is None else {"burst": args.burst}
    if args.hostname:
        overrides["hostname"] = args.hostname
    create_worker(settings, **overrides).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
