"""Live progress end to end: real Whisper publishing events, followed over SSE by Python
and by the ``steno`` command as a real subprocess."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.core.settings import Settings
from tests.audio import SENTENCES, speak, word_error_rate
from tests.conftest import ROOT, bearer, child_env
from tests.sse import read_events

SPOKEN = " ".join(SENTENCES[:3])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(SPOKEN, tmp_path_factory.mktemp("clip") / "spoken.wav")


def _steno(
    settings: Settings, *argv: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv],
        env=child_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def test_whisper_publishes_progress_and_segments_as_it_decodes(
    live_api: str, clip: Path, api_key: str
) -> None:
    # Given an uploaded spoken clip
    async with httpx.AsyncClient(base_url=live_api, timeout=60, headers=bearer(api_key)) as client:
        response = await client.post(
            "/v1/jobs", files={"file": (clip.name, clip.read_bytes(), "audio/wav")}
        )
        assert response.status_code == 202
        job_id = response.json()["id"]

        # when a client follows its events to the end
        messages = await read_events(client, job_id, timeout=180)

        # then it saw it start, progress by decoded audio, each segment, and completion
        kinds = [m.event for m in messages]
        assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "completed", kinds
        progress = [json.loads(m.data) for m in messages if m.event == "progress"]
        percents = [p["percent"] for p in progress]
        assert percents == sorted(percents) and percents[-1] > 50, percents
        last = progress[-1]
        assert last["stage"] == "transcribing"
        assert 0 < last["audio_seconds_done"] <= last["audio_seconds"] + 0.5
        assert last["percent"] == pytest.approx(
            min(99.0, 100 * last["audio_seconds_done"] / last["audio_seconds"]), abs=0.2
        )
        segments = [json.loads(m.data) for m in messages if m.event == "segment"]
        assert segments and all(s["end"] > s["start"] for s in segments)
        live_text = " ".join(s["text"] for s in segments)
        transcript = (await client.get(f"/v1/jobs/{job_id}/transcript?format=text")).text
        assert word_error_rate(transcript, live_text) == 0.0
        assert word_error_rate(SPOKEN, live_text) <= 0.2

        # and the job view shows the final progress to polling clients
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["progress"]["stage"] == "completed" and job["progress"]["percent"] == 100.0


def test_steno_submit_follow_draws_progress_prints_segments_and_the_transcript(
    settings: Settings, live_api: str, clip: Path, tmp_path: Path
) -> None:
    # When a user submits a file and follows it, saving the SRT
    out = tmp_path / "talk.srt"
    done = _steno(
        settings,
        "submit",
        str(clip),
        "--follow",
        "--segments",
        "--format",
        "srt",
        "--output",
        str(out),
        "--api",
        live_api,
    )

    # then it exits 0, having shown stages and percent, the segments, and saved the SRT
    assert done.returncode == 0, done.stdout + done.stderr
    assert "steno: transcribing" in done.stderr and "%" in done.stderr, done.stderr
    segment_lines = [line for line in done.stdout.splitlines() if line.startswith("[0:")]
    assert segment_lines, done.stdout
    live_text = " ".join(line.split("] ", 1)[1] for line in segment_lines)
    assert word_error_rate(SPOKEN, live_text) <= 0.2
    srt = out.read_text()
    assert srt.startswith("1\n") and "-->" in srt

    # and `steno jobs ls` lists the job, and `steno watch` prints its transcript again
    job_id = done.stdout.split("job ", 1)[1].split()[0]
    listing = _steno(settings, "jobs", "ls", "--api", live_api)
    assert listing.returncode == 0 and job_id in listing.stdout
    line = next(row for row in listing.stdout.splitlines() if job_id in row)
    assert "completed" in line
    watched = _steno(settings, "watch", job_id, "--api", live_api)
    assert watched.returncode == 0, watched.stderr
    assert word_error_rate(SPOKEN, watched.stdout.split("transcript (text):", 1)[1]) <= 0.2


@pytest.fixture
def junk_server() -> Iterator[str]:
    """A local server that serves bytes announced as audio that are not audio."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"this is not audio at all" * 100
            self.send_response(200)
            self.send_header("content-type", "audio/mpeg")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/talk.mp3"
    server.shutdown()
    server.server_close()


def test_steno_follow_exits_nonzero_with_the_reason_when_the_job_fails(
    settings: Settings, live_api: str, junk_server: str
) -> None:
    # When the audio at a URL turns out not to be audio
    done = _steno(settings, "submit", junk_server, "--follow", "--api", live_api)

    # then the command says why and exits non-zero
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed: invalid_audio" in done.stderr, done.stderr
    assert "steno: fetching" in done.stderr, done.stderr


def test_steno_watch_of_an_unknown_job_says_so(settings: Settings, live_api: str) -> None:
    done = _steno(settings, "watch", "00000000-0000-0000-0000-000000000000", "--api", live_api)
    assert done.returncode == 1
    assert "job_not_found" in done.stderr
