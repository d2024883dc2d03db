"""End to end: speech in, transcript out, through the real API, Redis, workers and Whisper."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.core.settings import Settings
from tests.audio import speak, word_error_rate
from tests.conftest import bearer, wait_for_job

SPOKEN = (
    "The meeting starts at nine in the morning. "
    "Please bring the quarterly report and your notes. "
    "We will talk about the new office and the budget."
)
MAX_WER = 0.25
SRT_CUE = re.compile(
    r"^(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n(.+)$", re.M
)
VTT_CUE = re.compile(
    r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)\n(.+)$", re.M
)

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three spoken sentences as an Ogg/Opus file."""
    return speak(SPOKEN, tmp_path_factory.mktemp("speech") / "meeting.ogg", rate=130)


@pytest.fixture(scope="module")
def audio_server(speech: Path) -> Iterator[str]:
    """A local HTTP server (standing in for the internet) serving the speech file."""
    handler = functools.partial(_QuietHandler, directory=str(speech.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_uploaded_speech_is_transcribed(api: Any, speech: Path, wer_log: Any) -> None:
    # Given spoken English, when it is uploaded with word timestamps
    with speech.open("rb") as audio:
        response = await api.post(
            "/v1/jobs",
            files={"file": ("meeting.ogg", audio, "audio/ogg")},
            data={"word_timestamps": "true", "language": "en"},
        )
    assert response.status_code == 202, response.text

    # then the job completes with one attempt, and the text matches what was said
    job = await wait_for_job(api, response.json()["id"])
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert job["progress"] == {
        "stage": "completed",
        "percent": 100.0,
        "audio_seconds_done": pytest.approx(job["audio_seconds"], abs=0.01),
        "eta_seconds": None,
    }
    assert job["language"] == "en"
    assert job["started_at"] and job["finished_at"]
    assert job["audio_seconds"] == pytest.approx(9.0, abs=4.0)
    text = (await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"})).text
    wer = word_error_rate(SPOKEN, text)
    wer_log("upload", wer, text)
    assert wer <= MAX_WER, text

    # and verbose_json has ordered segments with words inside their segment
    verbose = (
        await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "verbose_json"})
    ).json()
    assert verbose["task"] == "transcribe"
    assert verbose["language"] == "english"
    assert verbose["duration"] == pytest.approx(job["audio_seconds"], abs=0.1)
    segments = verbose["segments"]
    assert segments and all(s["start"] <= s["end"] for s in segments)
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    assert verbose["words"], "word timestamps were asked for"
    assert all(s["words"] for s in segments), "each segment carries its words"
    starts = [w["start"] for w in verbose["words"]]
    assert starts == sorted(starts)
    assert verbose["words"][-1]["end"] <= verbose["duration"] + 0.5


async def test_audio_url_is_fetched_and_transcribed(
    api: Any, audio_server: str, wer_log: Any
) -> None:
    # Given audio behind a URL, when its URL is submitted
    response = await api.post("/v1/jobs", json={"audio_url": f"{audio_server}/meeting.ogg"})
    assert response.status_code == 202, response.text
    assert response.json()["source"] == "url"

    # then the IO pool fetches it, the GPU pool transcribes it
    job = await wait_for_job(api, response.json()["id"])
    assert job["status"] == "completed", job
    assert job["audio_seconds"] and job["audio_seconds"] > 5
    text = (await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"})).text
    wer = word_error_rate(SPOKEN, text)
    wer_log("audio_url", wer, text)
    assert wer <= MAX_WER, text


async def test_unreadable_url_is_refused_at_submit(api: Any, audio_server: str) -> None:
    # Given a URL the server answers 404 for, when it is submitted
    response = await api.post("/v1/jobs", json={"audio_url": f"{audio_server}/missing.ogg"})

    # then it is refused at once with url_unreadable, saying why
    assert response.status_code == 422
    assert response.json()["code"] == "url_unreadable"
    assert "404" in response.json()["detail"]


async def test_url_unreadable_by_the_worker_fails_the_job_with_a_clear_code(
    settings: Settings, audio_server: str, api_key: str
) -> None:
    # Given a URL that breaks after submit (modelled by turning the submit-time check off)
    unchecked = dataclasses.replace(settings, url_check_timeout_seconds=0)
    async with AsyncTestClient(create_app(unchecked), timeout=60) as client:
        client.headers.update(bearer(api_key))
        response = await client.post("/v1/jobs", json={"audio_url": f"{audio_server}/missing.ogg"})
        assert response.status_code == 202

        # then the IO worker fails the job with url_unreadable and says why
        job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "url_unreadable"
    assert "404" in job["error"]["detail"]


async def test_url_serving_non_audio_fails_with_invalid_audio(
    api: Any, audio_server: str, speech: Path
) -> None:
    # Given a URL that serves text, not audio
    (speech.parent / "notes.bin").write_bytes(
        b"these are not the sounds you are looking for\n" * 50
    )
    response = await api.post("/v1/jobs", json={"audio_url": f"{audio_server}/notes.bin"})
    assert response.status_code == 202

    # then the job fails as invalid audio, with nothing stored
    job = await wait_for_job(api, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_audio"


async def test_every_transcript_format(api: Any, speech: Path) -> None:
    # Given a completed job
    with speech.open("rb") as audio:
        response = await api.post("/v1/jobs", files={"file": ("m.ogg", audio, "audio/ogg")})
    job = await wait_for_job(api, response.json()["id"])
    assert job["status"] == "completed"
    url = f"/v1/jobs/{job['id']}/transcript"

    # json is OpenAI's {"text": ...}; default format
    plain = await api.get(url)
    assert plain.headers["content-type"].startswith("application/json")
    assert set(plain.json()) == {"text"}
    text = plain.json()["text"]
    assert text.strip()

    # text is the same words with a newline
    as_text = await api.get(url, params={"format": "text"})
    assert as_text.headers["content-type"].startswith("text/plain")
    assert as_text.text == text.strip() + "\n"

    # srt: numbered cues with comma milliseconds that cover the words
    srt = await api.get(url, params={"format": "srt"})
    cues = SRT_CUE.findall(srt.text)
    assert cues, srt.text
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    assert " ".join(c[-1] for c in cues).split() == text.split()

    # vtt: a WEBVTT header and dotted milliseconds
    vtt = await api.get(url, params={"format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n")
    assert len(VTT_CUE.findall(vtt.text)) == len(cues)

    # verbose_json without word timestamps has no words
    verbose = (await api.get(url, params={"format": "verbose_json"})).json()
    assert "words" not in verbose
    assert verbose["text"] == text

    # an unknown format is a validation error
    bad = await api.get(url, params={"format": "docx"})
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"
