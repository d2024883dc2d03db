"""Checking a ``webhook_url`` at submit time, so a URL Steno would refuse to call is a 422.

The same policy as every delivery (``service.core.egress``): http(s) only, no credentials,
and no private, loopback, link-local (metadata), CGNAT, multicast or reserved address in
any spelling; a host name is resolved here and refused if ANY of its addresses is. Nothing
is sent to the URL now. Deliveries check again (and pin the address), since DNS may change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from urllib.parse import urlsplit

import httpx

from service.core.egress import EgressPolicy, Resolver, literal_address, system_resolver
from service.core.errors import InvalidUrl

MAX_URL_CHARS = 4096
RESOLVE_TIMEOUT_SECONDS = 5.0


def _valid(url: str) -> str:
    text = url.strip()
    try:
        parts = urlsplit(text)
        hostname, _ = parts.hostname, parts.port
        _ = httpx.URL(text).host
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidUrl(f"webhook_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidUrl("webhook_url must be an absolute http:// or https:// URL")
    if re.search(r"[\s\x00-\x1f\x7f]", text) or len(text) > MAX_URL_CHARS:
        raise InvalidUrl("webhook_url is not a valid URL")
    return text


async def check_webhook_url(
    value: str | None, policy: EgressPolicy, *, resolver: Resolver = system_resolver
) -> str | None:
    """The webhook URL to store (None when none was sent); raises ``InvalidUrl`` for a URL
    that does not parse or whose host does not resolve, ``UrlForbidden`` for one the egress
    refuses."""
    if value is None or not value.strip():
        return None
    url = _valid(value)
    parsed = policy.check_url(url)
    host = parsed.host
    if policy.allows_name(host) or literal_address(host) is not None:
        return url  # allowed by name, or a literal address check_url already checked
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            answers = await resolver(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (OSError, TimeoutError) as exc:
        raise InvalidUrl(f"webhook_url's host {host} does not resolve") from exc
    if not answers:
        raise InvalidUrl(f"webhook_url's host {host} does not resolve")
    for answer in answers:
        policy.check_address(ipaddress.ip_address(answer), host=host)
    return url
