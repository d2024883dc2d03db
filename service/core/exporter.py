"""Serving a process family's series: its folder of files, the text of a scrape, a listener.

A *family* is the processes one exporter answers for: one API (its granian workers), one IO
worker, one GPU worker (its prefork children). Each keeps its files in
``<STENO_METRICS_DIR>/<family>-<port>`` (the port it is scraped on, so two families on one host
never share a folder). The API serves them at ``/metrics``; each worker pool's main process
serves them on its own port (``STENO_IO_METRICS_PORT``, ``STENO_GPU_METRICS_PORT``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from service.core.metrics import write_to
from service.core.settings import Settings

__all__ = ["exposition", "family_folder", "record_family", "serve_family"]

log = logging.getLogger(__name__)

_PID = re.compile(r"_(\d+)\.db$")


def family_folder(settings: Settings, family: str, port: int) -> Path:
    """The folder of one family's files."""
    return settings.metrics_root / f"{family}-{port}"


def record_family(settings: Settings, family: str, port: int) -> Path:
    """Make this process write its series into its family's folder, and tidy the folder.

    The first process of a family to start (no other live process writes there) empties
    it, so a restarted family counts from zero; a process that joins live siblings (a
    respawned granian worker) keeps their files and those of its dead predecessors, whose
    counts still belong to the family's totals.
    """
    folder = family_folder(settings, family, port)
    if write_to(folder):
        # Files of this very pid (it wrote none yet) are a predecessor's that had the same pid.
        _tidy(folder, first=not _live_writers(folder, me=False), me=False)
    return folder


def _pids(folder: Path) -> set[int]:
    return {int(m.group(1)) for f in folder.glob("*.db") if (m := _PID.search(f.name))}


def _alive(pid: int, *, me: bool) -> bool:
    if pid == os.getpid():
        return me
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_writers(folder: Path, *, me: bool = True) -> set[int]:
    return {pid for pid in _pids(folder) if _alive(pid, me=me)}


def _tidy(folder: Path, *, first: bool, me: bool = True) -> None:
    for pid in _pids(folder) - _live_writers(folder, me=me):
        if first:
            for stale in folder.glob(f"*_{pid}.db"):
                stale.unlink(missing_ok=True)
        else:
            # Gauges of live processes only ("livesum"): a dead process's count of open
            # streams is no longer open.
            mark_process_dead(pid, str(folder))


def exposition(folder: Path, extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of a family's series (and of ``extra`` collectors), for a scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if folder.is_dir():
        _tidy(folder, first=False)
        MultiProcessCollector(registry, path=str(folder))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _FamilyCollector:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def collect(self) -> Any:
        _tidy(self._folder, first=False)
        return MultiProcessCollector(None, path=str(self._folder)).collect()


def serve_family(settings: Settings, folder: Path, port: int) -> bool:
    """Serve the family's series on ``host:port`` from a thread of this process.

    Returns False (after a warning) when the port can't be bound: a worker without its
    exporter still works.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FamilyCollector(folder))
    try:
        start_http_server(port, addr=settings.host, registry=registry)
    except OSError as exc:
        log.warning(
            "metrics: could not listen on %s:%d (%s); no exporter", settings.host, port, exc
        )
        return False
    log.info("metrics: Prometheus exporter on http://%s:%d/metrics", settings.host, port)
    return True
