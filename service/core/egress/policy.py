"""Which URLs and addresses an outbound request may reach, and URLs made safe to show.

Refused: every address that is not public unicast (loopback, RFC 1918, link-local with the
cloud metadata address, CGNAT, unique-local, multicast, unspecified, reserved, broadcast,
documentation and benchmarking ranges), and the IPv6 forms that carry a refused IPv4 address
(IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo). ``STENO_EGRESS_ALLOW`` names networks
and host names let through anyway.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from service.core.errors import InvalidUrl, UrlForbidden

if TYPE_CHECKING:
    from service.core.settings import Settings

log = logging.getLogger("steno.egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Checked in order, so an address gets the most specific reason; anything else that
# ``ipaddress`` does not call global is refused too.
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local, cloud metadata"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol"),
        ("192.0.2.0/24", "documentation"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached (``"loopback"``, ``"private, NAT64"``...), or None for
    a public unicast address. The allow list is not consulted here."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # without a zone id, which ``in`` would compare
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, inner = embedded
            reason = refusal(inner)
            if reason is not None:
                return f"{reason}, {form}"
            if form in ("IPv4-mapped", "NAT64"):
                # The packet goes to (or is translated to) a public IPv4 address.
                return None
    for network, reason in _REFUSED:
        if ip.version == network.version and ip in network:
            return reason
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "not public"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form the system resolver reads without DNS
    (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``[::1]``, a zone id, a
    trailing dot); None when ``host`` is a name."""
    text = host.strip().removeprefix("[").removesuffix("]").removesuffix(".")
    text = text.replace("%25", "%", 1)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if not text or ":" in text or "%" in text:
        return None
    try:
        # inet_aton is what getaddrinfo applies to IPv4: decimal, hex, octal, short forms.
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def redact(url: str | httpx.URL) -> str:
    """``url`` without credentials, query or fragment: what logs and error details show (a
    presigned URL's signature lives in its query). Never raises, whatever ``url`` holds."""
    text = str(url).split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text[:200]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"[:500]


def _host_key(host: str) -> str:
    return host.strip().lower().removesuffix(".")


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The allow list, parsed once, and the checks every outbound URL and address passes."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        """A policy letting through these CIDRs/addresses and host names (a
        ``STENO_EGRESS_ALLOW`` list); raises ``ValueError`` on an empty entry."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        for entry in entries:
            if not entry.strip():
                raise ValueError("an empty STENO_EGRESS_ALLOW entry")
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                names.add(_host_key(entry))
        return cls(networks=tuple(networks), names=frozenset(names))

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """The policy ``settings.egress_allow`` describes."""
        return cls.from_entries(settings.egress_allow)

    def allows_name(self, host: str) -> bool:
        """Whether ``host`` is a name on the allow list (its addresses are not checked)."""
        return _host_key(host) in self.names

    def _allows_address(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            candidates[0] = ipaddress.IPv6Address(int(ip))
            if ip.ipv4_mapped is not None:
                candidates.append(ip.ipv4_mapped)
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)

    def check_address(self, ip: IPAddress, *, host: str) -> None:
        """Raise ``UrlForbidden`` unless ``ip`` (that ``host`` gave) may be reached."""
        if self._allows_address(ip):
            return
        reason = refusal(ip)
        if reason is None:
            return
        log.warning("egress refused %s -> %s (%s)", host, ip, reason)
        if literal_address(host) is not None:
            raise UrlForbidden(f"{host} is a forbidden address ({reason}); Steno does not reach it")
        # The resolved address stays in the log: a client learns nothing of internal DNS.
        raise UrlForbidden(
            f"{host} resolves to a forbidden address ({reason}); Steno does not reach it"
        )

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """``url`` parsed as the HTTP client will parse it.

        Raises ``InvalidUrl`` when it does not parse, and ``UrlForbidden`` when it is not
        http(s), carries credentials, or spells a refused address in any form. A host name
        is checked when it is resolved, at connection time (``service.core.egress.pinning``).
        """
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
            host = parsed.raw_host.decode("ascii")
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidUrl(f"{redact(url)} is not a valid URL") from exc
        if parsed.scheme not in ("http", "https"):
            log.warning("egress refused %s: scheme %r", redact(url), parsed.scheme)
            raise UrlForbidden(f"{redact(url)}: only http and https URLs are fetched")
        if parsed.userinfo:
            log.warning("egress refused %s: credentials in the URL", redact(url))
            raise UrlForbidden(f"{redact(url)}: URLs with credentials (user:password@) are refused")
        if not host:
            raise InvalidUrl(f"{redact(url)} has no host")
        if not self.allows_name(host):
            address = literal_address(host)
            if address is not None:
                self.check_address(address, host=host)
        return parsed
