"""Re-running a cancelled upload and a failed URL job through the real API, workers and Whisper."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audio import SENTENCES, speak
from tests.conftest import bearer, wait_for_job
from tests.sse import read_events

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder and the base URL of a local HTTP server (the internet) serving it."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_a_cancelled_upload_rerun_completes_with_its_transcript(
    api: Any, live_api: str, api_key: str, tmp_path: Path
) -> None:
    # Given an uploaded job cancelled at once (queued, or already running)
    clip = speak(SENTENCES[1], tmp_path / "notes.wav")
    with clip.open("rb") as audio:
        submitted = await api.post("/v1/jobs", files={"file": ("notes.wav", audio, "audio/wav")})
    job_id = submitted.json()["id"]
    cancelled = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # (a worker that had claimed it is stopped by its next fenced write)

    # when its owner re-runs it
    response = await api.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 202, response.text

    # then it completes, with a transcript of the speech
    job = await wait_for_job(api, job_id)
    assert job["status"] == "completed", job
    assert job["error"] is None
    transcript = (await api.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"})).text
    assert "quarterly report" in transcript.lower()
    # and its event stream tells the new run to the end, not the cancelled one
    async with httpx.AsyncClient(base_url=live_api, headers=bearer(api_key)) as client:
        kinds = [message.event for message in await read_events(client, job_id)]
    assert kinds[-1] == "completed" and "cancelled" not in kinds, kinds


async def test_a_failed_url_job_rerun_fetches_again_and_completes(
    api: Any, served: tuple[Path, str], tmp_path: Path
) -> None:
    # Given a URL job that failed because the URL served something that is not audio
    folder, base = served
    (folder / "talk.wav").write_bytes(b"not audio yet\n" * 64)
    response = await api.post("/v1/jobs", json={"audio_url": f"{base}/talk.wav"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    failed = await wait_for_job(api, job_id)
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_audio", failed

    # when the URL serves speech now and the job is re-run
    speak(SENTENCES[2], tmp_path / "talk.wav").replace(folder / "talk.wav")
    response = await api.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 202, response.text

    # then the IO worker fetches it again and the job completes with its transcript
    job = await wait_for_job(api, job_id)
    assert job["status"] == "completed", job
    transcript = (await api.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"})).text
    assert "new office" in transcript.lower()
