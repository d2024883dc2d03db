"""Receiving a multipart upload straight to disk, refusing it once it grows too large.

The body is parsed as it streams in (python-multipart's push parser); the audio part goes
to a temporary file and is never held in memory, and the other parts are small form fields.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.core.errors import BadRequest, PayloadTooLarge, ValidationFailed

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024


@dataclass(slots=True)
class ReceivedUpload:
    """An audio part saved to ``path`` and the plain form fields sent beside it."""

    path: Path
    size: int
    filename: str | None
    content_type: str | None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
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
        self.file: IO[bytes] | None = None
        self.file_size = 0
        self.other_bytes = 0
        self.file_seen = False
        self.filename: str | None = None
        self.content_type: str | None = None
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        if b"\x00" in self._header_value:
            # Part headers (filename, content type) are stored; PostgreSQL text can't hold NUL.
            raise BadRequest("multipart part headers may not contain NUL characters")
        self._part.headers[name] = self._header_value.decode("utf-8", errors="replace").strip()
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self._part.headers.get("content-disposition", "")
        )
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("each multipart part needs a Content-Disposition: form-data name")
        part = self._part
        part.name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" in options or part.name == FILE_FIELD:
            part.filename = options.get(b"filename", b"").decode("utf-8", errors="replace")
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
            self.fields[self._part.name] = self._part.value.decode("utf-8", errors="replace")


async def receive_upload(
    body: AsyncIterator[bytes], content_type: str, *, dest: Path, max_bytes: int
) -> ReceivedUpload:
    """Stream a ``multipart/form-data`` body; the ``file`` part goes to ``dest``.

    Raises ``PayloadTooLarge`` as soon as the file part passes ``max_bytes`` (without reading
    the rest), ``ValidationFailed`` when there is no ``file`` part, ``BadRequest`` when the
    body is not valid multipart. ``dest`` is removed on any error.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data needs a boundary parameter")
    receiver = _Receiver(dest, max_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        if not receiver.file_seen:
            raise ValidationFailed("the multipart body has no 'file' part with the audio")
    except BaseException as exc:
        if receiver.file is not None:
            receiver.file.close()
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        if isinstance(exc, FormParserError) and not isinstance(exc, OSError):
            raise BadRequest(f"the multipart body could not be parsed: {exc}") from exc
        raise
    return ReceivedUpload(
        path=dest,
        size=receiver.file_size,
        filename=receiver.filename,
        content_type=receiver.content_type,
        fields=receiver.fields,
    )
