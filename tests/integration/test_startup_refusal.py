"""Startup refuses a Redis visibility timeout that would hand a live task out twice."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_a_worker_refuses_a_visibility_timeout_shorter_than_twice_the_longest_limit() -> None:
    # given a visibility timeout of 60 s while a transcription may run for hours
    env = {**os.environ, "STENO_VISIBILITY_TIMEOUT_SECONDS": "60"}

    # when a worker and the steno CLI start with it
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "gpu"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    cli = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", "gpu"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # then both exit non-zero with one clear line, not a traceback
    for done in (worker, cli):
        assert done.returncode != 0
        assert "refusing to start: STENO_VISIBILITY_TIMEOUT_SECONDS=60 is shorter" in done.stderr
        assert "Traceback" not in done.stderr
