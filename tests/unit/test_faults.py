"""The GPU child's fault-injection hooks, reached through ``workers.gpu.faults.checkpoint``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from service.core.settings import load_settings
from service.core.transitions import Claim
from workers.gpu import faults

ROOT = Path(__file__).resolve().parents[2]


class Cancelled(Exception):
    pass


def claim(filename: str | None = "talk.wav") -> Claim:
    return Claim(
        job_id=uuid.uuid4(),
        token=1,
        audio_path="/nowhere.wav",
        audio_seconds=3.0,
        model="tiny.en",
        language=None,
        word_timestamps=False,
        initial_prompt=None,
        filename=filename,
    )


@pytest.mark.parametrize("point", ["claimed", "before_whisper"])
def test_unarmed_hooks_return_at_once_without_touching_the_claim(point: faults.Point) -> None:
    # given the default settings: every hook off
    checks: list[None] = []
    started = time.monotonic()

    # when a job passes the checkpoint
    faults.checkpoint(load_settings({}), point, claim(), check_claim=lambda: checks.append(None))

    # then nothing happened
    assert time.monotonic() - started < 1.0  # an armed delay waits at least a second
    assert checks == []


def test_the_delay_waits_before_whisper_and_checks_the_claim_every_second() -> None:
    # given a 1.2 s transcription delay
    settings = load_settings({"STENO_TRANSCRIBE_DELAY_SECONDS": "1.2"})
    checks: list[float] = []
    started = time.monotonic()

    # when a job passes both checkpoints
    faults.checkpoint(settings, "claimed", claim())
    faults.checkpoint(
        settings, "before_whisper", claim(), check_claim=lambda: checks.append(time.monotonic())
    )

    # then only the one before Whisper waited, checking the claim after 1 s and at the end
    assert 1.2 <= time.monotonic() - started < 3.0
    assert len(checks) == 2
    assert checks[0] - started >= 1.0 and checks[1] - started >= 1.2


def test_a_lost_claim_ends_the_delay() -> None:
    # given a long delay, and a claim that is gone by the first check
    settings = load_settings({"STENO_TRANSCRIBE_DELAY_SECONDS": "30"})

    def cancelled() -> None:
        raise Cancelled

    # when the job waits before Whisper, then the check's error ends the wait
    with pytest.raises(Cancelled):
        faults.checkpoint(settings, "before_whisper", claim(), check_claim=cancelled)


def _checkpoint_in_a_child(filename: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from service.core.settings import load_settings\n"
        "from tests.unit.test_faults import claim\n"
        "from workers.gpu import faults\n"
        "settings = load_settings({'STENO_FAULT_CRASH_MARKER': 'poison'})\n"
        f"faults.checkpoint(settings, 'claimed', claim({filename!r}))\n"
        f"faults.checkpoint(settings, 'before_whisper', claim({filename!r}))\n"
        "print('survived')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_a_poison_job_kills_its_child_once_claimed() -> None:
    # given the crash marker "poison", when a job named after it passes the claim checkpoint
    proc = _checkpoint_in_a_child("poison.wav")

    # then the process is SIGKILLed there, saying why
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "survived" not in proc.stdout
    assert "fault injection: poison job, killing this child" in proc.stderr


def test_other_jobs_pass_the_crash_marker_unharmed() -> None:
    # given the crash marker "poison", when another job passes both checkpoints
    proc = _checkpoint_in_a_child("talk.wav")

    # then it goes on
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "survived\n"
