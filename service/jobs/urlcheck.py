"""Checking, at submit time, that an ``audio_url`` can be read.

The IO worker does the real download; this check only asks for the first byte, so a URL
that is unreachable, answers an error, serves a web page or announces too much data is
refused with a 4xx before a job exists. It asks with ``GET`` and a ``Range`` header rather
than ``HEAD`` because presigned object-store URLs are often signed for GET only.
"""

from __future__ import annotations

import httpx

from service.core.audio import content_type_accepted
from service.core.errors import EmptyFile, PayloadTooLarge, UnsupportedMediaType, UrlUnreadable


async def check_url_readable(client: httpx.AsyncClient, url: str, *, max_bytes: int) -> None:
    """Raise ``UrlUnreadable``, ``EmptyFile``, ``UnsupportedMediaType`` or ``PayloadTooLarge``
    when ``url`` clearly can't give usable audio; return quietly otherwise."""
    try:
        async with client.stream("GET", url, headers={"range": "bytes=0-0"}) as response:
            status = response.status_code
            headers = response.headers
    except httpx.TimeoutException as exc:
        raise UrlUnreadable(f"{url} did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise UrlUnreadable(f"could not connect to {url}: {exc or type(exc).__name__}") from exc
    if status == 416:
        raise EmptyFile("the URL serves an empty file")
    if status >= 400:
        raise UrlUnreadable(f"the server answered {status} for {url}")
    content_type = headers.get("content-type")
    if not content_type_accepted(content_type):
        raise UnsupportedMediaType(f"the URL serves {content_type!r}, not audio")
    total = _total_size(headers, partial=status == 206)
    if total is not None and total > max_bytes:
        raise PayloadTooLarge(f"the audio at the URL is larger than {max_bytes} bytes")


def _total_size(headers: httpx.Headers, *, partial: bool) -> int | None:
    if partial:
        # Content-Range: bytes 0-0/12345
        total = headers.get("content-range", "").rpartition("/")[2]
    else:
        total = headers.get("content-length", "")
    return int(total) if total.isdigit() else None
