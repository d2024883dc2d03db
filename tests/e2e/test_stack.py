"""The README's first command and `just dev`: the whole stack as a newcomer runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.core.settings import Settings
from tests.audio import word_error_rate
from tests.conftest import ROOT, child_env, descendants, free_port

SAMPLE_TEXT = (ROOT / "service" / "samples" / "steno-sample.txt").read_text().strip()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stack_env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = child_env(settings, STENO_DATA_DIR=str(tmp_path), **extra)
    env.pop("STENO_PORT", None)
    env.update(extra)
    return env


def test_demo_transcribes_the_sample_and_exits_zero(settings: Settings, tmp_path: Path) -> None:
    # Given the configured services, when a newcomer runs the demo
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo"],
        env=_stack_env(settings, tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )

    # then it exits 0 after printing the sample's transcript, with prefixed process logs
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    transcript = [
        line.split("|", 1)[1].strip() for line in lines if " demo " in line and "|" in line
    ]
    spoken = min(transcript, key=lambda line: word_error_rate(SAMPLE_TEXT, line), default="")
    assert word_error_rate(SAMPLE_TEXT, spoken) <= 0.2, done.stdout[-3000:]
    for name in ("api", "worker-io", "worker-gpu", "beat"):
        assert any(f" {name} " in line.split("|", 1)[0] + " " for line in lines), name
    assert "demo stopped (rc=0)" in done.stdout


def test_dev_runs_the_stack_and_sigterm_stops_every_process(
    settings: Settings, tmp_path: Path
) -> None:
    # Given `steno dev` on a free port
    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dev"],
        env=_stack_env(settings, tmp_path, STENO_PORT=str(port)),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        # when it is ready, it serves the API on that port
        deadline = time.monotonic() + 180
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert ready, (tmp_path / "dev.log").read_text()[-4000:]
        children = descendants(dev.pid)
        assert len(children) >= 4

        # and SIGTERM stops it and every process it started
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)], (tmp_path / "dev.log").read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if dev.poll() is None:
            os.kill(dev.pid, signal.SIGKILL)
            dev.wait()
        log.close()
