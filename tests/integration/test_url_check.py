"""The submit-time check of ``audio_url``: unreadable URLs are a 4xx, and no job is made."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from service.core.db.models import Job

AUDIO = b"RIFF" + b"\0" * 64


class _Handler(BaseHTTPRequestHandler):
    """Routes by path to the answers a real remote server might give."""

    def do_HEAD(self) -> None:
        # Like a URL presigned for GET only.
        self.send_response(403)
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/audio.wav":
            self._answer(206, "audio/wav", AUDIO[:1], content_range=f"bytes 0-0/{len(AUDIO)}")
        elif self.path == "/whole.mp3":  # ignores Range, sends everything
            self._answer(200, "audio/mpeg", AUDIO)
        elif self.path == "/page.html":
            self._answer(200, "text/html; charset=utf-8", b"<html>hello</html>")
        elif self.path == "/huge.wav":
            self._answer(206, "audio/wav", b"R", content_range="bytes 0-0/999999999999")
        elif self.path == "/empty.wav":
            self._answer(416, "text/plain", b"")
        elif self.path == "/broken.wav":
            self._answer(500, "text/plain", b"oops")
        else:
            self._answer(404, "text/plain", b"not here")

    def _answer(
        self, status: int, content_type: str, body: bytes, content_range: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        if content_range:
            self.send_header("content-range", content_range)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    """A local stand-in for the remote server holding the audio."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _job_count(sessions: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/missing.wav", 422, "url_unreadable"),
        ("/broken.wav", 422, "url_unreadable"),
        ("/page.html", 415, "unsupported_media_type"),
        ("/huge.wav", 413, "payload_too_large"),
        ("/empty.wav", 422, "empty_file"),
    ],
)
async def test_a_url_that_cannot_give_audio_is_refused_before_a_job_exists(
    api: Any, sessions: Any, remote: str, path: str, status: int, code: str
) -> None:
    # Given a URL whose server answers badly
    before = await _job_count(sessions)

    # when it is submitted
    response = await api.post("/v1/jobs", json={"audio_url": remote + path})

    # then it is refused with a clear code, and no job was made
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert await _job_count(sessions) == before


async def test_an_unreachable_host_is_url_unreadable(api: Any, sessions: Any) -> None:
    # Given a URL nothing listens at
    before = await _job_count(sessions)
    url = f"http://127.0.0.1:{_refused_port()}/a.wav"

    # when it is submitted, then it is refused and no job was made
    response = await api.post("/v1/jobs", json={"audio_url": url})
    assert response.status_code == 422
    assert response.json()["code"] == "url_unreadable"
    assert await _job_count(sessions) == before


@pytest.mark.parametrize("path", ["/audio.wav", "/whole.mp3"])
async def test_a_readable_url_is_accepted_even_when_head_is_forbidden(
    api: Any, remote: str, path: str
) -> None:
    # Given a server that refuses HEAD (a GET-only presigned URL) but serves the audio
    # when the URL is submitted, then the job is accepted
    response = await api.post("/v1/jobs", json={"audio_url": remote + path})
    assert response.status_code == 202, response.text
    assert response.json()["source"] == "url"
