"""The client every outbound request goes through: each hop checked, redirects followed by
hand (a bounded number), one deadline over the whole exchange, bodies read under a byte cap."""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import httpcore
import httpx

from service.core.egress.pinning import (
    PinnedAiohttpTransport,
    PinnedNetwork,
    PinnedTransport,
    Resolver,
    SocketSource,
    system_resolver,
)
from service.core.egress.policy import EgressPolicy, redact
from service.core.errors import PayloadTooLarge, UrlUnreadable

if TYPE_CHECKING:
    from service.core.settings import Settings

MAX_REDIRECTS = 5
# "aiohttp": httpx-aiohttp's transport on a pinned aiohttp connector (the default: about 4x
# less CPU per request); "httpcore": httpx's own transport on a pinned httpcore backend.
Transport = Literal["aiohttp", "httpcore"]
CHUNK_BYTES = 256 * 1024
# httpx logs each request's URL (INFO), httpcore each response's headers, Location included
# (DEBUG): their lines lose queries and credentials, so no presigned signature is logged.
_CLIENT_LOGGERS = ("httpx", *(f"httpcore.{n}" for n in ("connection", "http11", "http2", "proxy")))
_QUERY = re.compile(r"\?[^\s'\"]*")
_CREDENTIALS = re.compile(r"(://)[^/\s'\"@]*@")


class _RedactedUrls(logging.Filter):
    """Takes queries and credentials out of a client library's log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # logging reports the broken record itself
        if "?" in message or "@" in message:
            scrubbed = _CREDENTIALS.sub(r"\1", _QUERY.sub("", message))
            record.msg, record.args = scrubbed, ()
        return True


def _redact_client_logs() -> None:
    for name in _CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactedUrls) for f in logger.filters):
            logger.addFilter(_RedactedUrls())


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """One shared client serves every job: no cookie of one server reaches another request."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class EgressClient:
    """An httpx client whose connections go only where ``policy`` allows.

    The URL of every hop is checked before its request is built (scheme, credentials,
    addresses in any spelling) and every new connection resolves its host once and connects
    to a checked address (``PinnedResolver`` on aiohttp, ``PinnedNetwork`` on httpcore:
    ``transport``). ``network`` is a test seam: an httpcore backend for the httpcore
    transport, a ``SocketSource`` for aiohttp (``tests/egress.py`` is both). Proxies from
    the environment are never used (a proxy would connect in our place, unchecked), and no
    cookie is kept between requests.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        deadline: float,
        timeout: httpx.Timeout,
        user_agent: str,
        limits: httpx.Limits | None = None,
        max_redirects: int = MAX_REDIRECTS,
        verify: ssl.SSLContext | bool = True,
        resolver: Resolver = system_resolver,
        network: httpcore.AsyncNetworkBackend | SocketSource | None = None,
        transport: Transport = "aiohttp",
    ) -> None:
        _redact_client_logs()
        self.policy = policy
        self.deadline = deadline
        self.max_redirects = max_redirects
        pinned: httpx.AsyncBaseTransport
        if transport == "aiohttp":
            if network is not None and not isinstance(network, SocketSource):
                raise TypeError("the aiohttp egress connects through a SocketSource")
            pinned = PinnedAiohttpTransport(
                policy, resolver=resolver, verify=verify, limits=limits, network=network
            )
        else:
            if network is not None and not isinstance(network, httpcore.AsyncNetworkBackend):
                raise TypeError("the httpcore egress connects through an httpcore backend")
            backend = PinnedNetwork(policy, resolver=resolver, network=network)
            pinned = PinnedTransport(backend, verify=verify, limits=limits)
        self._http = httpx.AsyncClient(
            transport=pinned,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            # Compressed bodies would be inflated past the byte cap before it could count them.
            headers={"user-agent": user_agent, "accept-encoding": "identity"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> EgressClient:
        """A client under ``STENO_EGRESS_ALLOW`` on ``STENO_EGRESS_TRANSPORT``; ``options`` as
        for the constructor."""
        options.setdefault("transport", settings.egress_transport)
        return cls(EgressPolicy.from_settings(settings), **options)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        deadline: float | None = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request, following up to ``max_redirects`` redirects (none when not
        ``follow_redirects``: a webhook's 3xx is its answer), and yield the final response
        with its body unread (read it with ``body_chunks``).

        Raises ``InvalidUrl`` or ``UrlForbidden`` before connecting anywhere refused (for a
        redirect too), ``UrlUnreadable`` after too many redirects, ``httpx.HTTPError`` on
        network trouble, and ``TimeoutError`` once ``deadline`` seconds (the client's by
        default) have passed since the call, reading the body inside the block included.
        """
        async with asyncio.timeout(self.deadline if deadline is None else deadline):
            response = await self._send(method, url, headers, content, follow_redirects)
            try:
                yield response
            finally:
                await response.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        follow_redirects: bool = True,
    ) -> httpx.Response:
        target = self.policy.check_url(url)
        request = self._http.build_request(method, target, headers=headers, content=content)
        for _ in range(self.max_redirects + 1):
            response = await self._http.send(request, stream=True)
            # httpx builds the next request (method, body and headers as a redirect wants).
            following = response.next_request
            if following is None or not follow_redirects:
                return response
            await response.aclose()
            self.policy.check_url(following.url)
            request = following
        raise UrlUnreadable(f"{redact(url)} redirected more than {self.max_redirects} times")

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._http.aclose()


async def body_chunks(
    response: httpx.Response, *, max_bytes: int, what: str = "the response"
) -> AsyncIterator[bytes]:
    """The body of ``response`` in chunks; raises ``PayloadTooLarge`` ("``what`` is larger
    than ...") as soon as the response announces or sends more than ``max_bytes``."""
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise PayloadTooLarge(f"{what} is larger than {max_bytes} bytes")
    size = 0
    async for chunk in response.aiter_bytes(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"{what} is larger than {max_bytes} bytes")
        yield chunk
