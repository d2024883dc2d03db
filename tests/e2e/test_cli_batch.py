"""End to end: ``steno submit`` with several files and a URL, followed to the end, writes
each transcript where asked, with one progress line per job and a total."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job
from service.core.settings import Settings
from tests.audio import SENTENCES, speak
from tests.conftest import ROOT, child_env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("batch")
    return [
        speak(SENTENCES[0], folder / "first.wav"),
        speak(SENTENCES[1], folder / "second.ogg"),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local HTTP server standing in for the internet, serving one spoken clip."""
    folder = tmp_path_factory.mktemp("served")
    clip = speak(SENTENCES[2], folder / "third.wav")
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/third.wav", clip
    server.shutdown()
    server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _steno(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the ``steno`` command as a user would, with the session's key."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv],
        env=child_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_many_sources_are_followed_and_each_transcript_is_written(
    settings: Settings,
    live_api: str,
    inputs: list[Path],
    served: tuple[str, Path],
    tmp_path: Path,
) -> None:
    # given two audio files and a URL
    url, _ = served
    out = tmp_path / "transcripts"

    # when they are submitted at once and followed, transcripts to a folder
    done = _steno(
        settings,
        *("submit", *map(str, inputs), url, "--follow", "--output-dir", str(out)),
        *("--api", live_api, "--concurrency", "2"),
    )

    # then it succeeds, with a line per job reaching "completed" and a total
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("first.wav", "second.ogg", "third.wav"):
        assert any(name in line and "completed" in line for line in done.stderr.splitlines()), (
            done.stderr
        )
    assert "steno: 3 of 3 completed, 0 failed, 0 cancelled, 0 refused" in done.stderr
    # and each transcript is in the folder, named after its input, and is of its own audio
    # (tiny.en on a short espeak-ng sentence: a telling word, not the exact text)
    for stem, word in (("first", "morning"), ("second", "report"), ("third", "office")):
        text = (out / f"{stem}.txt").read_text()
        assert word in text.lower(), (stem, text)


def test_without_an_output_dir_transcripts_go_beside_their_files(
    settings: Settings, live_api: str, inputs: list[Path]
) -> None:
    # when the files are submitted and followed, in SRT
    done = _steno(
        settings, "submit", *map(str, inputs), "--follow", "--format", "srt", "--api", live_api
    )

    # then each .srt lies next to its audio
    assert done.returncode == 0, done.stdout + done.stderr
    for source in inputs:
        assert source.with_suffix(".srt").read_text().startswith("1\n00:00:0")


async def test_a_fetched_url_job_records_the_audio_hash(
    settings: Settings,
    live_api: str,
    served: tuple[str, Path],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # given the URL submitted and fetched by the IO pool
    url, clip = served
    done = await asyncio.to_thread(_steno, settings, "submit", url, "--follow", "--api", live_api)
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split("steno: job ", 1)[1].split()[0]

    # then the job carries the SHA-256 of the bytes fetched (dedupe can match it)
    async with sessions() as session:
        job = await session.get(Job, uuid.UUID(job_id))
    assert job is not None
    assert job.audio_sha256 == hashlib.sha256(clip.read_bytes()).hexdigest()
