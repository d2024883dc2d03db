"""A private throwaway redis-server on 127.0.0.1 and a free port; it keeps nothing on disk."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from service.cli.infra.host import LOOPBACK, START_ATTEMPTS, InfraError, Log, free_port, log_tail
from service.cli.infra.probes import redis_answers, run_sync

__all__ = ["PrivateRedis"]

_READY_TIMEOUT = 15.0


class PrivateRedis:
    """One private redis-server, a child of this process."""

    def __init__(self, redis_server: str, *, log: Log) -> None:
        """Prepare with the ``redis-server`` binary; nothing starts until start()."""
        self._binary, self._log = redis_server, log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, state_dir: Path) -> str:
        """Start the server (its log under ``state_dir``); return its URL once it answers.

        Raises InfraError with the server's log when it does not start.
        """
        folder = state_dir / "redis"
        folder.mkdir(exist_ok=True)
        log_path = folder / "redis.log"
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            url = f"redis://{LOOPBACK}:{port}/0"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [
                        self._binary,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--port",
                        str(port),
                        "--bind",
                        LOOPBACK,
                        "--daemonize",
                        "no",
                        "--dir",
                        str(folder),
                    ],
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            self._process = process
            if _wait_until_ready(process, url):
                self._log(f"Redis: started a private server on {LOOPBACK}:{port}")
                return url
            self._process = None
            if process.poll() is None:
                process.kill()
            process.wait()
        raise InfraError(f"Could not start a private Redis: {log_path}:\n{log_tail(log_path)}")

    def stop(self) -> None:
        """Stop the server if one runs here; safe to call more than once."""
        if self._process is None:
            return
        process, self._process = self._process, None
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._log(f"Redis: stopped the private server (pid {process.pid})")


def _wait_until_ready(process: subprocess.Popen[bytes], url: str) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if run_sync(redis_answers(url, timeout=0.5)):
            return True
        time.sleep(0.05)
    return False
