"""Receiving a multipart upload straight to disk, bounded, and refusing any malformed body.

The body is parsed as it streams in (python-multipart's push parser); the audio part goes
to a temporary file and is never held in memory, and the other parts are small form fields.
Everything the client controls is bounded: the boundary, the number of parts, each part's
headers, the bytes beside the audio and the audio itself. A body that is not well-formed
``multipart/form-data`` is a ``BadRequest`` whatever the parser raised, and no file is left.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, ParamSpec

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.core.errors import BadRequest, PayloadTooLarge, ValidationFailed

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger(__name__)

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024
# The form has one file and four options; browsers add nothing. Generous, yet no body of tiny
# parts can keep the parser and the fields dict busy.
MAX_PARTS = 16
# A part needs Content-Disposition and maybe Content-Type; long filenames fit in a line.
MAX_HEADERS_PER_PART = 8
MAX_HEADER_LINE_BYTES = 8 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
# RFC 2046 section 5.1.1: 1 to 70 of these characters, the last one not a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")

_P = ParamSpec("_P")


@dataclass(slots=True)
class ReceivedUpload:
    """An audio part saved to ``path`` and the plain form fields sent beside it."""

    path: Path
    size: int
    filename: str | None
    content_type: str | None
    fields: dict[str, str] = field(default_factory=dict)
    # Every value of each field in the order sent; ``fields`` keeps the last. A field may
    # repeat, as OpenAI's ``timestamp_granularities[]`` does.
    values: dict[str, list[str]] = field(default_factory=dict)
    # The audio's SHA-256 (hex), computed as it streamed in.
    sha256: str = ""


@dataclass(slots=True)
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    header_bytes: int = 0
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class _Receiver:
    """The parser's callbacks: routes the file part to disk and fields to memory."""

    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.values: dict[str, list[str]] = {}
        self.file: IO[bytes] | None = None
        self.file_size = 0
        self.file_hash = hashlib.sha256()
        self.other_bytes = 0
        self.file_seen = False
        self.filename: str | None = None
        self.content_type: str | None = None
        self.parts = 0
        self.ended = False
        self.raised: BaseException | None = None
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        """The callbacks to hand the parser, each noting what it raises (see ``feed``)."""
        return {
            "on_part_begin": self._noted(self.on_part_begin),
            "on_header_field": self._noted(self.on_header_field),
            "on_header_value": self._noted(self.on_header_value),
            "on_header_end": self._noted(self.on_header_end),
            "on_headers_finished": self._noted(self.on_headers_finished),
            "on_part_data": self._noted(self.on_part_data),
            "on_part_end": self._noted(self.on_part_end),
            "on_end": self._noted(self.on_end),
        }

    def feed(self, step: Callable[[], object]) -> None:
        """Run one parser step; whatever the parser itself raises becomes a ``BadRequest``.

        What a callback raised (a refusal, a full disk, a bug) goes on unchanged.
        """
        try:
            step()
        except Exception as exc:
            if exc is self.raised:
                raise
            if not isinstance(exc, FormParserError):
                log.warning("python-multipart failed on an upload: %r", exc)
                raise BadRequest("the multipart body could not be parsed") from exc
            raise BadRequest(f"the multipart body could not be parsed: {exc}") from exc

    def discard(self) -> None:
        """Close and remove the partly written file, if any."""
        if self.file is not None:
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.dest.unlink()

    def _noted(self, callback: Callable[_P, None]) -> Callable[_P, None]:
        def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
            try:
                callback(*args, **kwargs)
            except BaseException as exc:
                self.raised = exc
                raise

        return run

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"the multipart body has more than {MAX_PARTS} parts")
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _count_header_bytes(self, size: int) -> None:
        # The parser bounds each line and the number of lines; this bounds their sum.
        self._part.header_bytes += size
        if self._part.header_bytes > MAX_PART_HEADER_BYTES:
            raise BadRequest(
                f"the headers of a multipart part exceed {MAX_PART_HEADER_BYTES} bytes"
            )

    def on_header_end(self) -> None:
        # The parser lets only token characters into a header's name.
        name = self._header_field.decode("latin-1").strip().lower()
        if b"\x00" in self._header_value:
            # Part headers (filename, content type) are stored; PostgreSQL text can't hold NUL.
            raise BadRequest("multipart part headers may not contain NUL characters")
        try:
            value = self._header_value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the multipart part header {name[:64]!r} is not UTF-8 text") from exc
        if name in self._part.headers:
            raise BadRequest(f"a multipart part repeats its {name[:64]!r} header")
        self._part.headers[name] = value.strip()
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = _disposition(self._part.headers.get("content-disposition", ""))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("each multipart part needs a Content-Disposition: form-data name")
        part = self._part
        # Steno's field names are ASCII; anything else is a client's encoding mistake.
        name = options[b"name"]
        if not (name.isascii() and name.decode("ascii").isprintable()):
            raise BadRequest("a multipart part's name must be printable ASCII")
        part.name = name.decode("ascii")
        if b"filename" in options or part.name == FILE_FIELD:
            try:
                # Browsers send a filename's UTF-8 bytes as they are (RFC 7578 section 4.2).
                part.filename = options.get(b"filename", b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest("a multipart part's filename is not UTF-8 text") from exc
        if part.name == FILE_FIELD:
            if self.file_seen:
                raise ValidationFailed("send exactly one 'file' part")
            self.file_seen = True
            part.is_file = True
            self.filename = part.filename or None
            self.content_type = part.headers.get("content-type")
            self.file = self.dest.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part.is_file:
            self.file_size += len(chunk)
            if self.file_size > self.max_bytes:
                raise PayloadTooLarge(
                    f"the upload is larger than the limit of {self.max_bytes} bytes"
                )
            assert self.file is not None
            self.file.write(chunk)
            self.file_hash.update(chunk)
        else:
            # Everything beside the audio (fields, and other file parts, which are ignored)
            # shares one small budget, so a body of many parts can't fill memory.
            self.other_bytes += len(chunk)
            if self.other_bytes > MAX_FIELD_BYTES:
                raise PayloadTooLarge(
                    f"the form fields beside 'file' exceed {MAX_FIELD_BYTES} bytes"
                )
            if self._part.filename is None:
                self._part.value += chunk

    def on_part_end(self) -> None:
        if self._part.is_file and self.file is not None:
            self.file.close()
        elif self._part.filename is None and self._part.name:
            value = self._part.value.decode("utf-8", errors="replace")
            self.fields[self._part.name] = value
            self.values.setdefault(self._part.name, []).append(value)

    def on_end(self) -> None:
        self.ended = True


def _disposition(value: str) -> tuple[bytes, dict[bytes, bytes]]:
    """A part's Content-Disposition as python-multipart splits it, bytes as the client sent.

    ``parse_options_header`` encodes its ``str`` to Latin-1, which fails above U+00FF; the
    header's UTF-8 bytes go in as Latin-1 characters, one per byte, and come out unchanged.
    """
    try:
        return parse_options_header(value.encode("utf-8").decode("latin-1"))
    except Exception as exc:
        raise BadRequest("a multipart part's Content-Disposition could not be parsed") from exc


def _boundary(content_type: str) -> bytes:
    """The boundary the request's Content-Type names; ``BadRequest`` unless RFC 2046 allows it."""
    try:
        _, options = parse_options_header(content_type)
    except Exception as exc:
        raise BadRequest("the multipart Content-Type could not be parsed") from exc
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data needs a boundary parameter")
    if len(boundary) > 70:
        raise BadRequest("the multipart boundary is longer than 70 characters")
    if not _BOUNDARY.fullmatch(boundary):
        raise BadRequest("the multipart boundary holds characters RFC 2046 does not allow")
    return boundary


async def receive_upload(
    body: AsyncIterator[bytes], content_type: str, *, dest: Path, max_bytes: int
) -> ReceivedUpload:
    """Stream a ``multipart/form-data`` body; the ``file`` part goes to ``dest``.

    Raises ``PayloadTooLarge`` as soon as the file part passes ``max_bytes`` (without reading
    the rest), ``ValidationFailed`` when there is no ``file`` part or more than one, and
    ``BadRequest`` when the body is not valid multipart: a bad boundary, a body cut short,
    more than ``MAX_PARTS`` parts, headers past their limits or not UTF-8, a part name that is
    not ASCII, or anything python-multipart refuses. ``dest`` is removed on any error.
    """
    boundary = _boundary(content_type)
    receiver = _Receiver(dest, max_bytes)
    parser = MultipartParser(
        boundary,
        receiver.callbacks(),
        max_header_count=MAX_HEADERS_PER_PART,
        max_header_size=MAX_HEADER_LINE_BYTES,
    )
    try:
        async for chunk in body:
            receiver.feed(functools.partial(parser.write, chunk))
        receiver.feed(parser.finalize)
        if not receiver.ended:
            raise BadRequest("the multipart body ended before its closing boundary")
        if not receiver.file_seen:
            raise ValidationFailed("the multipart body has no 'file' part with the audio")
    except BaseException:
        receiver.discard()
        raise
    return ReceivedUpload(
        path=dest,
        size=receiver.file_size,
        filename=receiver.filename,
        content_type=receiver.content_type,
        fields=receiver.fields,
        values=receiver.values,
        sha256=receiver.file_hash.hexdigest(),
    )
