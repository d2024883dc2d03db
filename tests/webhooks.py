"""A webhook receiver for tests: a loopback HTTP server that records every POST and answers
as the test says (fail, redirect, hang, then recover)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

# Given the request's number (0-based) and path: the status and extra headers to answer.
Answering = Callable[[int, str], tuple[int, dict[str, str]]]


def always(status: int = 204) -> Answering:
    """Answer every request with ``status``."""
    return lambda _n, _path: (status, {})


def failing_first(count: int, status: int = 500) -> Answering:
    """Answer the first ``count`` requests with ``status``, then 204."""
    return lambda n, _path: (status, {}) if n < count else (204, {})


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        """Its ``webhook-id`` header."""
        return self.headers.get("webhook-id", "")

    def verify(self, secret: str) -> Any:
        """The payload, once ``standardwebhooks`` verified the signature with ``secret``."""
        return Webhook(secret).verify(self.body, self.headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a killed worker, a deadline) is part of the tests


@dataclass
class Receiver:
    """Records every POST on 127.0.0.1; ``answer`` decides each reply, after ``delay`` s."""

    answer: Answering = field(default_factory=always)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    number = len(receiver.received)
                    receiver.received.append(Received(self.path, headers, body, time.time()))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, extra = receiver.answer(number, self.path)
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def for_job(self, job_id: str) -> list[Received]:
        """The POSTs whose payload is about ``job_id``."""
        return [r for r in list(self.received) if job_id.encode() in r.body]

    def event_ids(self) -> set[str]:
        """Every distinct ``webhook-id`` received."""
        return {r.webhook_id for r in list(self.received)}

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
