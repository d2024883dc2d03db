"""The egress policy: which URLs and addresses are refused, in every spelling, before any
connection; the allow list; URLs made safe to show."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from service.core.egress import EgressPolicy, literal_address, redact, refusal
from service.core.errors import InvalidUrl, StenoError, UrlForbidden
from service.core.settings import SettingsError, load_settings
from tests.egress import RecordingNetwork, StubResolver, egress

# (url, what it is) — every one is refused as written, without DNS and without connecting.
FORBIDDEN_LITERALS = [
    # loopback, in every spelling the resolver reads
    ("http://127.0.0.1/a.wav", "loopback"),
    ("http://127.1/", "loopback short form"),
    ("http://2130706433/", "loopback decimal"),
    ("http://0x7f000001/", "loopback hex"),
    ("http://0x7f.1/", "loopback hex short"),
    ("http://0x7f.0.0.1/", "loopback hex dotted"),
    ("http://017700000001/", "loopback octal"),
    ("http://0177.0.0.1/", "loopback octal dotted (httpx: invalid)"),
    ("http://127.0.0.1./", "loopback trailing dot"),
    ("http://127.255.255.254:6379/", "loopback, another port"),
    ("https://127.0.0.1/", "loopback over https"),
    ("http://[::1]/", "IPv6 loopback"),
    ("http://[0:0:0:0:0:0:0:1]:8080/", "IPv6 loopback long form"),
    # private (RFC 1918)
    ("http://10.0.0.1/", "private"),
    ("http://10.1/", "private short form"),
    ("http://167772161/", "private decimal"),
    ("http://0xa.0.0.1/", "private hex"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://0300.0250.1.1/", "private octal (httpx: invalid)"),
    # link-local and the metadata service
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://2852039166/latest/meta-data/", "metadata decimal"),
    ("http://0xa9fea9fe/", "metadata hex"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "metadata hex dotted"),
    ("http://0251.0376.0251.0376/", "metadata octal dotted (httpx: invalid)"),
    ("http://169.254.43518/", "metadata short form"),
    ("http://[fe80::1]/", "IPv6 link-local"),
    ("http://[fe80::1%25eth0]/", "IPv6 link-local with a zone id"),
    ("http://[fd00:ec2::254]/", "IPv6 metadata (unique-local)"),
    # shared (CGNAT), unique-local, multicast, unspecified, reserved, broadcast
    ("http://100.64.0.1/", "CGNAT"),
    ("http://100.127.255.254/", "CGNAT"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://[ff02::1]/", "IPv6 multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified short form"),
    ("http://[::]/", "IPv6 unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://192.0.0.8/", "IETF protocol assignments"),
    ("http://198.18.0.1/", "benchmarking"),
    # IPv6 forms carrying a forbidden IPv4 address
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped loopback, hex"),
    ("http://[0:0:0:0:0:ffff:a9fe:a9fe]/", "IPv4-mapped metadata"),
    ("http://[::ffff:10.0.0.1]/", "IPv4-mapped private"),
    ("http://[::127.0.0.1]/", "IPv4-compatible loopback"),
    ("http://[::a9fe:a9fe]/", "IPv4-compatible metadata"),
    ("http://[64:ff9b::7f00:1]/", "NAT64 loopback"),
    ("http://[64:ff9b::169.254.169.254]/", "NAT64 metadata"),
    ("http://[64:ff9b:1::a00:1]/", "local-use NAT64"),
    ("http://[2002:7f00:1::]/", "6to4 loopback"),
    ("http://[2002:a9fe:a9fe::1]/", "6to4 metadata"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "Teredo of loopback"),
    # not http(s), or with credentials
    ("ftp://example.com/a.wav", "ftp"),
    ("file:///etc/passwd", "file"),
    ("gopher://example.com/", "gopher"),
    ("http://user:pass@example.com/a.wav", "credentials"),
    ("http://user@example.com/a.wav", "user name"),
    ("http://127.0.0.1:80@example.com/", "credentials that look like a host"),
]

# Names whose DNS answers hold a forbidden address (ANY one is enough).
FORBIDDEN_NAMES = [
    ("http://localhost/", {"localhost": [["127.0.0.1", "::1"]]}),
    ("http://LOCALHOST:8080/", {"localhost": [["127.0.0.1"]]}),
    ("http://localhost./", {"localhost.": [["127.0.0.1"]]}),
    ("http://metadata.google.internal/", {"metadata.google.internal": [["169.254.169.254"]]}),
    ("http://mixed.example/", {"mixed.example": [["93.184.216.34", "10.0.0.1"]]}),
    ("http://v6.example/", {"v6.example": [["2606:2800:220:1::1", "fd00::5"]]}),
    ("http://mapped.example/", {"mapped.example": [["::ffff:192.168.0.1"]]}),
    ("http://nat64.example/", {"nat64.example": [["64:ff9b::a9fe:a9fe"]]}),
    ("http://cgnat.example/", {"cgnat.example": [["100.100.100.100"]]}),
    ("https://zero.example/", {"zero.example": [["0.0.0.0"]]}),
]


@pytest.mark.parametrize(
    ("url", "what"), FORBIDDEN_LITERALS, ids=[w for _, w in FORBIDDEN_LITERALS]
)
async def test_a_forbidden_url_is_refused_before_any_connection(url: str, what: str) -> None:
    # given an egress allowing nothing private, on a network that records every attempt
    network, resolver = RecordingNetwork(), StubResolver()
    client = egress(network=network, resolver=resolver)

    # when the URL is requested
    with pytest.raises((UrlForbidden, InvalidUrl)) as refused:
        async with client.stream("GET", url):
            pass
    await client.aclose()

    # then it is refused without resolving or connecting anything: url_forbidden, except the
    # dotted octal forms httpx itself can't parse (invalid_url; the resolver would read them
    # as the address they spell, see the spelling tests below)
    assert network.attempts == []
    assert resolver.asked == []
    expected = InvalidUrl if "(httpx: invalid)" in what else UrlForbidden
    assert type(refused.value) is expected


@pytest.mark.parametrize(("url", "dns"), FORBIDDEN_NAMES, ids=[u for u, _ in FORBIDDEN_NAMES])
async def test_a_name_resolving_to_a_forbidden_address_is_refused_before_connecting(
    url: str, dns: dict[str, list[list[str]]]
) -> None:
    # given a name whose DNS answers include a forbidden address
    network, resolver = RecordingNetwork(), StubResolver(dns)
    client = egress(network=network, resolver=resolver)

    # when it is requested
    with pytest.raises(UrlForbidden) as refused:
        async with client.stream("GET", url):
            pass
    await client.aclose()

    # then it was resolved once and nothing was connected to; the detail names no address
    assert len(resolver.asked) == 1
    assert network.attempts == []
    assert "resolves to a forbidden address" in refused.value.detail
    for answers in dns.values():
        assert not any(a in refused.value.detail for a in answers[0])


@pytest.mark.parametrize(
    ("url", "dns", "expected"),
    [
        ("http://93.184.216.34/a.wav", {}, ("93.184.216.34", 80)),
        # http: the stand-in server answers from memory without TLS (https pinning is
        # test_https_is_pinned_and_verified_against_the_host_name, with a real handshake)
        ("http://[2606:2800:220:1::1]:8443/a.wav", {}, ("2606:2800:220:1::1", 8443)),
        (
            "http://media.example/a.wav",
            {"media.example": [["93.184.216.34"]]},
            ("93.184.216.34", 80),
        ),
        ("http://[::ffff:8.8.8.8]/", {}, ("::ffff:808:808", 80)),
        ("http://[2002:808:808::1]/", {}, ("2002:808:808::1", 80)),
    ],
)
async def test_a_public_address_is_reached_at_the_address_that_was_checked(
    url: str, dns: dict[str, list[list[str]]], expected: tuple[str, int]
) -> None:
    # given a public URL (the network answers from memory: nothing leaves this machine)
    network = RecordingNetwork()
    client = egress(network=network, resolver=StubResolver(dns))

    # when it is requested
    async with client.stream("GET", url) as response:
        status = response.status_code
    await client.aclose()

    # then one connection went to the checked address
    assert status == 200
    assert network.attempts == [expected]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "0X7F.0.0.1",
        "017700000001",
        "0177.0.0.1",
        "0177.1",
        "10.1",
        "1.2.3",
        "0xa9fea9fe",
        "169.254.43518",
        "0",
        "4294967295",
    ],
)
def test_ipv4_spellings_are_read_as_the_system_resolver_reads_them(host: str) -> None:
    # given a host in one of the forms getaddrinfo accepts without DNS
    expected = socket.getaddrinfo(host, None, family=socket.AF_INET, flags=socket.AI_NUMERICHOST)

    # when the egress reads it (also with a trailing dot, which it ignores)
    # then it means the very address the resolver connects to
    assert str(literal_address(host)) == expected[0][4][0]
    assert literal_address(host + ".") == literal_address(host)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("fe80::1%25eth0", "fe80::1%eth0"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("example.com", None),
        ("localhost", None),
        ("08.0.0.1", None),
        ("1e1", None),
        ("", None),
    ],
)
def test_ipv6_forms_and_names(host: str, expected: str | None) -> None:
    # given hosts that are IPv6 literals (brackets, zone ids) or names
    # when they are read, then only literals give an address
    found = literal_address(host)
    assert (str(found) if found else None) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local, cloud metadata"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("::ffff:169.254.169.254", "link-local, cloud metadata, IPv4-mapped"),
        ("64:ff9b::a00:1", "private, NAT64"),
        ("2002:c0a8:101::1", "private, 6to4"),
        ("::7f00:1", "loopback, IPv4-compatible"),
        ("::808:808", "IPv4-compatible (deprecated)"),
        ("2001:db8::1", "documentation"),
        ("fec0::1", "site-local"),
    ],
)
def test_each_refusal_has_a_reason(address: str, reason: str | None) -> None:
    # given an address, when it is judged, then the reason names its class (None: public)
    assert refusal(ipaddress.ip_address(address)) == reason


def test_the_allow_list_lets_chosen_networks_and_names_through() -> None:
    # given an allow list with a network, an address and a name
    policy = EgressPolicy.from_entries(["127.0.0.1/32", "fd00::5", "Storage.Internal."])

    # when addresses and names are checked
    policy.check_address(ipaddress.ip_address("127.0.0.1"), host="127.0.0.1")
    policy.check_address(ipaddress.ip_address("::ffff:127.0.0.1"), host="::ffff:127.0.0.1")
    policy.check_address(ipaddress.ip_address("fd00::5"), host="fd00::5")
    policy.check_url("http://127.0.0.1:9000/a.wav")
    policy.check_url("http://storage.internal/a.wav")

    # then those pass, and their neighbours do not
    assert policy.allows_name("storage.internal") and policy.allows_name("STORAGE.internal.")
    assert not policy.allows_name("other.internal")
    for other in ("127.0.0.2", "::1", "fd00::6", "10.0.0.1"):
        with pytest.raises(UrlForbidden):
            policy.check_address(ipaddress.ip_address(other), host=other)
    with pytest.raises(UrlForbidden):
        policy.check_url("http://127.0.0.2/")


def test_egress_allow_is_read_once_from_the_environment_and_travels_to_children() -> None:
    # given STENO_EGRESS_ALLOW with CIDRs of both families and a name
    settings = load_settings({"STENO_EGRESS_ALLOW": "127.0.0.1/32, ::1/128,minio.local"})

    # when it is read, and passed to a child process as variables
    restored = load_settings(settings.as_env())

    # then it is a tuple that round-trips, and the policy built from it allows those
    assert settings.egress_allow == ("127.0.0.1/32", "::1/128", "minio.local")
    assert restored.egress_allow == settings.egress_allow
    policy = EgressPolicy.from_settings(restored)
    assert len(policy.networks) == 2 and policy.allows_name("minio.local")
    assert load_settings({}).egress_allow == ()


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "not a host", "-bad-.example", "a..b"])
def test_an_unusable_egress_allow_entry_stops_startup(entry: str) -> None:
    # given an entry that is neither a CIDR nor a host name
    # when settings are loaded, then they are refused with the variable named
    with pytest.raises(SettingsError, match="STENO_EGRESS_ALLOW"):
        load_settings({"STENO_EGRESS_ALLOW": entry})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://bucket.s3.amazonaws.com/a/b.wav?X-Amz-Signature=secret&X-Amz-Credential=k",
            "https://bucket.s3.amazonaws.com/a/b.wav",
        ),
        ("https://user:secret@host.example:8443/a.wav#secret", "https://host.example:8443/a.wav"),
        ("http://host.example?secret", "http://host.example"),
        ("http://[::1/a?secret", "http://[::1/a"),
        ("not a url?secret", "not a url"),
    ],
)
def test_redact_drops_credentials_query_and_fragment(url: str, shown: str) -> None:
    # given URLs carrying secrets in their query, fragment or credentials
    # when they are redacted, then only scheme, host, port and path remain
    assert redact(url) == shown


async def test_refusal_details_and_logs_never_show_a_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given forbidden presigned URLs
    caplog.set_level("DEBUG")
    client = egress(
        network=RecordingNetwork(), resolver=StubResolver({"in.example": [["10.0.0.9"]]})
    )
    details = []
    for url in (
        "http://169.254.169.254/latest?X-Amz-Signature=secret",
        "http://in.example/a.wav?X-Amz-Signature=secret",
        "ftp://in.example/a.wav?X-Amz-Signature=secret",
        "http://u:secret@in.example/a.wav",
    ):
        # when each is requested
        with pytest.raises(StenoError) as refused:
            async with client.stream("GET", url):
                pass
        details.append(refused.value.detail)
    await client.aclose()

    # then neither the details nor any log line holds the secret
    assert all(details)
    assert not any("secret" in d for d in details), details
    assert "egress refused" in caplog.text
    assert "secret" not in caplog.text
