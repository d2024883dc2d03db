"""The ``sse`` benchmark's load generator: many SSE clients on raw asyncio protocols.

Each client is an ``asyncio.Protocol`` speaking just enough HTTP/1.1 (one ``GET``, a status
line, headers, a chunked or close-delimited body) and SSE (messages split on blank lines;
of each ``progress`` message only ``at`` is decoded). No client library and no per-line
reads: a ``data_received`` costs a few microseconds, so that, on a small machine, the clients
take little of the CPU the server under test needs (aiohttp's took about as much as the
server). ``tests/bench/poll.py``'s generator is raw asyncio for the same reason.

The receive time is read once per ``data_received``, before parsing: everything in one read
arrived together.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec


class _Published(msgspec.Struct):
    at: float


_decode_published = msgspec.json.Decoder(_Published).decode

PROGRESS = b"event: progress\n"


class Tally:
    """What the clients of one process received, together."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.latencies: list[float] = []
        self.connected = 0
        self.finished = 0
        self.failures = 0
        self.errors: list[str] = []
        self.all_connected = asyncio.Event()
        self.all_finished = asyncio.Event()

    def joined(self) -> None:
        """Count a client whose stream opened (200)."""
        self.connected += 1
        self._settled()

    def fail(self, error: str) -> None:
        """Count a client that could not follow its stream to the end."""
        self.failures += 1
        self.errors.append(error[:200])
        self._settled()
        self.done()

    def done(self) -> None:
        """Count a client whose stream is over (whole, or failed)."""
        self.finished += 1
        if self.finished == self.count:
            self.all_finished.set()

    def _settled(self) -> None:
        if self.connected + self.failures >= self.count:
            self.all_connected.set()

    def figures(self) -> dict[str, Any]:
        """The tally, for the parent process."""
        return {
            "latencies": self.latencies,
            "received": len(self.latencies),
            "failures": self.failures,
            "errors": sorted(set(self.errors))[:5],
        }


class SseClient(asyncio.Protocol):
    """One ``GET`` of an event stream, followed to its end."""

    def __init__(self, request: bytes, tally: Tally) -> None:
        self._request = request
        self._tally = tally
        self._transport: asyncio.Transport | None = None
        self._head = b""  # the response head, until it is whole
        self._status = 0
        self._chunked = False
        self._raw = b""  # body bytes still in chunked framing, not yet decoded
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = False  # a chunk's closing CRLF comes next
        self._text = b""  # SSE text after the last complete message
        self._ended = False
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the request."""
        self._transport = transport  # type: ignore[assignment]
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        """Parse what came: the head once, then the body's SSE messages."""
        now = time.time()
        if not self._status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._status = int(head[9:12])
            self._chunked = b"transfer-encoding: chunked" in head.lower()
            if self._status != 200:
                self._end(f"HTTP {self._status}: {data[:200]!r}")
                return
            self._tally.joined()
        text = self._text + (self._dechunk(data) if self._chunked else data)
        *messages, self._text = text.split(b"\n\n")
        latencies = self._tally.latencies
        for message in messages:
            if PROGRESS in message:
                latencies.append(now - _decode_published(message.partition(b"data: ")[2]).at)
        if self._ended and self._transport is not None:
            self._transport.close()

    def _dechunk(self, data: bytes) -> bytes:
        raw = self._raw + data if self._raw else data
        body = []
        at = 0
        while at < len(raw):
            if self._left:
                piece = raw[at : at + self._left]
                body.append(piece)
                at += len(piece)
                self._left -= len(piece)
                self._crlf = not self._left
            elif self._crlf:
                if len(raw) - at < 2:
                    break
                at += 2
                self._crlf = False
            else:
                line_end = raw.find(b"\r\n", at)
                if line_end < 0:
                    break
                size = int(raw[at:line_end].partition(b";")[0], 16)
                at = line_end + 2
                if size == 0:
                    self._ended = True
                    break
                self._left = size
        self._raw = raw[at:]
        return b"".join(body)

    def connection_lost(self, exc: Exception | None) -> None:
        """Count the stream over: whole when the body ended, else a failure."""
        if self._counted:
            return
        self._counted = True
        if self._ended or (self._status == 200 and not self._chunked and exc is None):
            self._tally.done()
        else:
            self._tally.fail(f"connection lost before the end of the stream: {exc!r}")

    def _end(self, error: str) -> None:
        self._counted = self._ended = True
        self._tally.fail(error)
        if self._transport is not None:
            self._transport.close()


async def follow(
    host: str, port: int, paths: list[str], headers: dict[str, str], tally: Tally
) -> None:
    """Open one client per path (a few hundred connects at a time, so none is refused)."""
    loop = asyncio.get_running_loop()
    connecting = asyncio.Semaphore(200)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    async def connect(path: str) -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
        async with connecting:
            try:
                await loop.create_connection(lambda: SseClient(request, tally), host, port)
            except OSError as exc:
                tally.fail(repr(exc))

    await asyncio.gather(*(connect(path) for path in paths))
