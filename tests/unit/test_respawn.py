"""The batched GPU worker's keeper: a killed process starts again; exit 0 or SIGTERM ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from service.cli.respawn import respawn


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_a_killed_process_is_started_again_and_a_clean_exit_ends_the_watch(
    tmp_path: Path,
) -> None:
    # given a process that kills itself on its first two runs, then exits cleanly
    runs = tmp_path / "runs"
    argv = _script(
        tmp_path,
        "import os, signal, pathlib\n"
        f"p = pathlib.Path({str(runs)!r})\n"
        "n = len(p.read_text()) if p.exists() else 0\n"
        "p.write_text('x' * (n + 1))\n"
        "if n < 2: os.kill(os.getpid(), signal.SIGKILL)\n",
    )
    lines: list[str] = []
    delays: list[float] = []

    # when it runs under respawn
    code = respawn(argv, sleep=delays.append, log=lines.append)

    # then it ran three times, restarted after each kill (with a growing delay), and ended 0
    assert runs.read_text() == "xxx"
    assert code == 0
    assert len(lines) == 2 and all("ended by signal 9" in line for line in lines)
    assert delays == [2.0, 4.0]


def test_sigterm_is_passed_on_and_ends_the_watch(tmp_path: Path) -> None:
    # given respawn keeping a process that records the SIGTERM it gets, then exits 0
    marker = tmp_path / "terminated"
    child = (
        "import signal, sys, time, pathlib\n"
        f"def bye(*_): pathlib.Path({str(marker)!r}).write_text('term'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    argv = _script(tmp_path, child)
    keeper = subprocess.Popen(
        [sys.executable, "-m", "service.cli.respawn", *argv],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert keeper.stdout is not None
        assert keeper.stdout.readline().strip() == b"ready"

        # when the keeper alone gets SIGTERM (as a container's PID 1 does)
        os.kill(keeper.pid, signal.SIGTERM)

        # then the process got it and exited, and the keeper ended without a restart
        assert keeper.wait(20) == 0
        assert marker.read_text() == "term"
    finally:
        if keeper.poll() is None:
            os.killpg(keeper.pid, signal.SIGKILL)
            keeper.wait()
        if keeper.stdout is not None:
            keeper.stdout.close()
