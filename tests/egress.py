"""Test helpers for the egress: a network that records every connection attempt, a resolver
stub, and a loopback HTTP server that records every request it gets.

Nothing here ever opens a socket to a non-loopback address: ``RecordingNetwork`` answers
those from memory, so a test can both prove that a connection was (or was not) attempted and
never reach the metadata service or any other real address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx

from service.core.egress import EgressClient, EgressPolicy
from service.core.egress.client import Transport

AUDIO = b"RIFF" + b"\0" * 60


def http_answer(
    status: int = 200,
    body: bytes = AUDIO,
    *,
    content_type: str = "audio/wav",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Raw bytes of an HTTP/1.1 response, as a server would send them."""
    lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}"]
    lines.append(f"content-length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RecordingNetwork(httpcore.AsyncNetworkBackend):
    """Records every TCP connection the egress attempts (address, port), on either transport.

    Loopback addresses get a real connection (to a test server); any other address gets a
    canned answer from memory (``answers[address]``, by default 200 with a little audio), so
    no packet leaves this machine. For httpcore it is the network backend; for aiohttp it
    makes each connection's socket (``socket_factory``), and a socket for any other address
    is connected to a loopback server sending the canned answer instead (plain TCP only:
    an https URL to a canned address can't complete its TLS handshake there).
    """

    def __init__(self, answers: Mapping[str, bytes] | None = None) -> None:
        self.attempts: list[tuple[str, int]] = []
        self._answers = dict(answers or {})
        self._real = httpcore.AnyIOBackend()
        self._canned: dict[str, _CannedServer] = {}

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp's seam: a socket for a connection to ``addr_info``'s address."""
        family, kind, proto, _, address = addr_info
        host, port = str(address[0]), int(address[1])
        self.attempts.append((host, port))
        if ipaddress.ip_address(host).is_loopback:
            return socket.socket(family, kind, proto)
        if host not in self._canned:
            self._canned[host] = _CannedServer(self._answers.get(host, http_answer()), family)
        return _Diverted(family, kind, proto, target=self._canned[host].address)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        # Only addresses reach here, never names: the egress resolved them already.
        if ipaddress.ip_address(host).is_loopback:
            return await self._real.connect_tcp(host, port, timeout=timeout)
        # The answer a few times over, for requests on a kept-alive connection.
        return httpcore.AsyncMockStream([self._answers.get(host, http_answer())] * 3)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Diverted(socket.socket):
    """A socket whose connect goes to ``target`` (a loopback stand-in), not the address asked."""

    def __init__(self, *args: Any, target: tuple[str, int]) -> None:
        super().__init__(*args)
        self._target = target

    def connect(self, address: Any) -> None:
        super().connect(self._target)

    def connect_ex(self, address: Any) -> int:
        return super().connect_ex(self._target)


class _CannedServer:
    """A loopback server answering every request on a connection with ``answer`` (as
    ``httpcore.AsyncMockStream`` does, a few times over)."""

    def __init__(self, answer: bytes, family: int) -> None:
        self._answer = answer
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self._listener.listen(16)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer_all, args=(conn,), daemon=True).start()

    def _answer_all(self, conn: socket.socket) -> None:
        with conn:
            pending = b""
            for _ in range(3):
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                pending = pending.split(b"\r\n\r\n", 1)[1]
                try:
                    conn.sendall(self._answer)
                except OSError:
                    return
                if b"connection: close" in self._answer.lower():
                    return


class StubResolver:
    """A DNS stand-in: ``answers[name]`` is the list of successive answers (the last one
    repeats); an unknown name does not resolve. Records every name asked."""

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]] | None = None) -> None:
        self.asked: list[str] = []
        self._answers = {name: list(seq) for name, seq in (answers or {}).items()}

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        answers = self._answers.get(host.lower())
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answers.pop(0) if len(answers) > 1 else answers[0])


def egress(
    *allow: str,
    resolver: StubResolver | None = None,
    network: RecordingNetwork | None = None,
    deadline: float = 10.0,
    verify: ssl.SSLContext | bool = True,
    transport: Transport = "aiohttp",
) -> EgressClient:
    """An egress client allowing ``allow`` (CIDRs or names), on the given stubs and
    ``transport``."""
    options: dict[str, Any] = {}
    if resolver is not None:
        options["resolver"] = resolver
    return EgressClient(
        EgressPolicy.from_entries(allow),
        deadline=deadline,
        timeout=httpx.Timeout(5.0),
        user_agent="steno-test",
        network=network,
        verify=verify,
        transport=transport,
        **options,
    )


@dataclass
class Seen:
    """One request a ``LocalServer`` received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case


# A route answers (status, headers, body); body may be a list of chunks sent with a pause.
Answer = tuple[int, dict[str, str], bytes | list[bytes]]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading (a refused redirect, a deadline) is part of the tests.
        pass


@dataclass
class LocalServer:
    """An HTTP server on 127.0.0.1 that answers from ``routes`` and records every request."""

    routes: dict[str, Callable[[], Answer]] = field(default_factory=dict)
    pause: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.seen.append(Seen("GET", self.path, headers))
                route = server.routes.get(self.path.split("?")[0])
                status, extra, body = route() if route else (404, {}, b"not here")
                chunks = body if isinstance(body, list) else [body]
                self.send_response(status)
                for key, value in {"content-type": "audio/wav", **extra}.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(sum(len(c) for c in chunks)))
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if server.pause:
                        time.sleep(server.pause)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def url(self, path: str, *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        """The URL of ``path`` on this server, written with ``host``."""
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def redirect(location: str, status: int = 302) -> Callable[[], Answer]:
    """A route that redirects to ``location``."""
    return lambda: (status, {"location": location}, b"")


def audio(body: bytes | list[bytes] = AUDIO) -> Callable[[], Answer]:
    """A route that serves audio."""
    return lambda: (200, {}, body)
