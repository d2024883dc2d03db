"""Connections pinned to checked addresses: resolve a host once, refuse it if any address it
resolves to is refused, and connect to exactly those addresses.

Two transports do this, both under httpx's API (``EgressClient``):

- ``PinnedAiohttpTransport`` (the default): httpx-aiohttp's transport on an aiohttp
  connector whose resolver is ``PinnedResolver``. aiohttp asks the resolver for the
  addresses of each new connection's host (its DNS cache is off, so once per connection)
  and connects only to the addresses it returns; the resolver checks every one of them first.
  A host written as an address skips the resolver: ``EgressPolicy.check_url`` has checked
  it, for every hop, before the request is built. About 4x cheaper in CPU per request than
  httpcore (see README, "Benchmarks").
- ``PinnedTransport``: httpx's own transport with its httpcore pool on ``PinnedNetwork``, a
  network backend that hands httpcore a stream to an address it resolved and checked.

Either way a DNS answer that changes between the check and the connection (rebinding) can't
reach anything else, and the connection pool, TLS and the Host header still see the URL's
host name: https certificates are verified against that name (it is the SNI server name too).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import aiohttp
import aiohttp.abc
import httpcore
import httpx
from httpx_aiohttp import AiohttpTransport

from service.core.egress.policy import EgressPolicy, literal_address

# host, port -> the addresses (as text) the host resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


# The address aiohttp is about to connect a new socket to -> that socket (a test seam).
AddrInfo = tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]]
SocketFactory = Callable[[AddrInfo], socket.socket]


@runtime_checkable
class SocketSource(Protocol):
    """A network the aiohttp transport can connect through (tests record and stub it)."""

    def socket_factory(self, addr_info: AddrInfo) -> socket.socket:
        """A new socket for a connection to ``addr_info``'s address."""
        ...


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to through the system resolver, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def checked_addresses(
    policy: EgressPolicy, resolve: Resolver, host: str, port: int, timeout: float | None
) -> list[str]:
    """The addresses a new connection to ``host`` may use: all of them checked, in the
    resolver's order. Raises ``UrlForbidden`` if ANY is refused (a pool could otherwise pick
    a refused one later), ``TimeoutError`` past ``timeout`` and ``OSError`` when ``host``
    does not resolve."""
    literal = literal_address(host)
    if literal is not None:
        found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [literal]
    else:
        async with asyncio.timeout(timeout):
            answers = await resolve(host, port)
        found = list(dict.fromkeys(ipaddress.ip_address(a) for a in answers))
        if not found:
            raise OSError(f"{host} resolves to no address")
    if not policy.allows_name(host):
        for ip in found:
            policy.check_address(ip, host=host)
    return [str(ip) for ip in found]


class PinnedNetwork(httpcore.AsyncNetworkBackend):
    """Resolves and checks each new connection's host once, then connects to a checked
    address through ``network`` (httpcore's anyio backend unless a test passes another)."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver
        self._network = network or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A stream to the first of ``host``'s checked addresses that accepts; raises
        ``UrlForbidden`` before any connection when any address is refused."""
        addresses = await self._checked_addresses(host, port, timeout)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._network.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def _checked_addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        try:
            return await checked_addresses(self._policy, self._resolve, host, port, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Refused: nothing leaves Steno through a local socket."""
        raise httpcore.ConnectError("unix sockets are not an egress")

    async def sleep(self, seconds: float) -> None:
        """httpcore's retry pause, on the wrapped backend."""
        await self._network.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own HTTP transport (request/response mapping, exception mapping, pooling),
    with its connection pool built on a ``PinnedNetwork``; never through a proxy."""

    def __init__(
        self,
        network: PinnedNetwork,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        super().__init__(verify=verify, limits=limits, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("this httpx keeps no connection pool in _pool: pinning unchecked")
        # httpx takes no network backend, so its pool is swapped for one that has ours. The
        # CA bundle may come from SSL_CERT_FILE/SSL_CERT_DIR (an on-premises CA); proxies and
        # .netrc never do (the client ignores the environment otherwise).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=True),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=network,
        )


class PinnedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver for the egress: a host's addresses, every one checked first.

    The result names the host as asked (``hostname``) and each checked address (``host``):
    aiohttp connects to those addresses and still verifies TLS against the URL's name.
    """

    def __init__(self, policy: EgressPolicy, resolver: Resolver = system_resolver) -> None:
        self._policy = policy
        self._resolve = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        """The checked addresses of ``host``; raises ``UrlForbidden`` if any is refused."""
        addresses = await checked_addresses(self._policy, self._resolve, host, port, None)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


# aiohttp's errors as httpx's, most specific first (httpx-aiohttp's own table maps a
# certificate failure to ConnectTimeout; callers and tests tell these apart).
_AIOHTTP_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.TimeoutException),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientConnectionError, httpx.NetworkError),
)


class PinnedAiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport on one aiohttp session made for the egress: connections
    through ``PinnedResolver``, no DNS cache (each new connection resolves and checks its
    host once), no cookie jar, no proxy or .netrc from the environment."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
        network: SocketSource | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        # The CA bundle may come from SSL_CERT_FILE/SSL_CERT_DIR (an on-premises CA).
        tls = httpx.create_ssl_context(verify=verify, trust_env=True)
        super().__init__(verify=tls, limits=limits, trust_env=False)
        self._pinned_resolver = PinnedResolver(policy, resolver)
        self._socket_factory = network.socket_factory if network is not None else None
        self.client = self._session  # made on first use: a session needs a running loop

    def _session(self) -> aiohttp.ClientSession:
        # httpx's None (no expiry) has no aiohttp spelling: aiohttp's default (15 s) then.
        expiry = self.limits.keepalive_expiry
        connector = aiohttp.TCPConnector(
            resolver=self._pinned_resolver,
            use_dns_cache=False,
            ssl=self.ssl_context,
            limit=self.limits.max_connections or 0,  # 0: no limit, as httpx's None
            keepalive_timeout=15.0 if expiry is None else expiry,
            socket_factory=self._socket_factory,
        )
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; aiohttp's transport errors come out as httpx's."""
        # The body as bytes: httpx-aiohttp would send an unread stream (a redirect's empty
        # one included) chunked. The egress only sends small bodies (webhook payloads).
        await request.aread()
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _as_httpx(exc) from exc.__cause__
        except aiohttp.ClientError as exc:
            raise _as_httpx(exc) from exc
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _MappedStream(stream)
        return response


class _MappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            raise _as_httpx(exc) from exc.__cause__

    async def aclose(self) -> None:
        await self._inner.aclose()


def _as_httpx(exc: BaseException) -> httpx.TransportError:
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    for aiohttp_error, httpx_error in _AIOHTTP_ERRORS:
        if isinstance(cause, aiohttp_error):
            return httpx_error(str(cause))
    return exc if isinstance(exc, httpx.TransportError) else httpx.TransportError(str(exc))
