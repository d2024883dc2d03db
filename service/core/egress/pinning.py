"""Connections pinned to checked addresses: resolve a host once, refuse it if any address it
resolves to is refused, and connect to exactly those addresses.

``PinnedNetwork`` is an httpcore network backend: httpcore asks it for a TCP stream to the
URL's host and port, and it hands back a stream to an address it resolved and checked
itself, so a DNS answer that changes between the check and the connection (rebinding) can't
reach anything else. The connection pool, TLS and the Host header still see the URL's host
name: https certificates are verified against that name (it is the SNI server name too).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore
import httpx

from service.core.egress.policy import EgressPolicy, literal_address

# host, port -> the addresses (as text) the host resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to through the system resolver, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


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
        literal = literal_address(host)
        if literal is not None:
            found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [literal]
        else:
            try:
                async with asyncio.timeout(timeout):
                    answers = await self._resolve(host, port)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} took too long") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
            found = list(dict.fromkeys(ipaddress.ip_address(a) for a in answers))
            if not found:
                raise httpcore.ConnectError(f"{host} resolves to no address")
        if not self._policy.allows_name(host):
            # Refused if ANY answer is: the pool could otherwise pick a refused one later.
            for ip in found:
                self._policy.check_address(ip, host=host)
        return [str(ip) for ip in found]

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
