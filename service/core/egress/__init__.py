"""One egress for every HTTP request that leaves Steno (design decision 12).

``audio_url`` checks (API), downloads (IO worker) and, later, webhook deliveries use an
``EgressClient``; nothing else in Steno makes outbound HTTP requests. It refuses:

- anything but http and https, and URLs with credentials (``user:pass@``);
- hosts that are, or resolve to, anything but public unicast addresses: loopback, RFC 1918,
  link-local (the 169.254.169.254 metadata service), CGNAT, unique-local, multicast,
  unspecified, reserved, broadcast, and the IPv6 forms carrying such an IPv4 address
  (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo), in every spelling the resolver
  accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]``,
  zone ids, trailing dots); a name is refused if ANY address it resolves to is refused;
- redirects to any of these: redirects are followed by hand, at most ``MAX_REDIRECTS``,
  each hop checked as the first;
- bodies over a byte cap (``body_chunks``) and exchanges past a total deadline.

``STENO_EGRESS_ALLOW`` (CIDRs or host names) lets chosen private addresses through: tests
serving audio on 127.0.0.1, storage on the premises.

Why a client of our own rather than hooks on a shared ``httpx.AsyncClient``: the checks
must hold for every hop and every connection, which a caller's client (with
``follow_redirects=True``, environment proxies, its own resolver) can't promise. So the API's
and the IO worker's shared clients *are* ``EgressClient``s, made in their lifecycle hooks.
The host is resolved once per connection, by the network backend the connection pool uses
(``pinning.PinnedNetwork``), which connects to exactly the addresses it checked: a DNS answer
that changes between check and connect can't redirect the connection. TLS and the Host
header still use the URL's name, so certificates are verified against it.

Error details and log lines show URLs through ``redact`` (no query, fragment or
credentials): a presigned URL's signature never reaches a log or a client.
"""

from service.core.egress.client import MAX_REDIRECTS, EgressClient, body_chunks
from service.core.egress.pinning import PinnedNetwork, Resolver, system_resolver
from service.core.egress.policy import EgressPolicy, literal_address, redact, refusal

__all__ = [
    "MAX_REDIRECTS",
    "EgressClient",
    "EgressPolicy",
    "PinnedNetwork",
    "Resolver",
    "body_chunks",
    "literal_address",
    "redact",
    "refusal",
    "system_resolver",
]
