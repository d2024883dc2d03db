"""Checking, at submit time, that an ``audio_url`` can be read.

The IO worker does the real download; this check only asks for the first byte, so a URL
that is unreachable, answers an error, serves a web page or announces too much data is
refused with a 4xx before a job exists. It asks with ``GET`` and a ``Range`` header rather
than ``HEAD`` because presigned object-store URLs are often signed for GET only. The request
goes through the egress client, so a URL (or a redirect) to a forbidden address is refused
with ``UrlForbidden`` before anything connects to it.
"""

from __future__ import annotations

import httpx

from service.core.audio import content_type_accepted
from service.core.egress import EgressClient, redact
from service.core.errors import EmptyFile, PayloadTooLarge, UnsupportedMediaType, UrlUnreadable


async def check_url_readable(client: EgressClient, url: str, *, max_bytes: int) -> None:
    """Raise ``UrlForbidden``, ``UrlUnreadable``, ``EmptyFile``, ``UnsupportedMediaType`` or
    ``PayloadTooLarge`` when ``url`` clearly can't give usable audio; return quietly otherwise.
    Details name the URL without its query (a presigned URL's signature stays out)."""
    shown = redact(url)
    try:
        async with client.stream("GET", url, headers={"range": "bytes=0-0"}) as response:
            status = response.status_code
            headers = response.headers
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise UrlUnreadable(f"{shown} did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise UrlUnreadable(f"could not connect to {shown}: {exc or type(exc).__name__}") from exc
    if status == 416:
        raise EmptyFile("the URL serves an empty file")
    if status >= 400:
        raise UrlUnreadable(f"the server answered {status} for {shown}")
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
