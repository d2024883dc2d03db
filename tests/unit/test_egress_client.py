"""The egress client: connections pinned to checked addresses (DNS rebinding, https), every
redirect re-checked, size and time bounded, loopback reachable only when allowed."""

from __future__ import annotations

import logging
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.core.egress import EgressClient, body_chunks
from service.core.egress.client import Transport
from service.core.errors import PayloadTooLarge, UrlForbidden, UrlUnreadable
from service.core.settings import load_settings
from tests.egress import (
    AUDIO,
    LocalServer,
    RecordingNetwork,
    StubResolver,
    audio,
    egress,
    http_answer,
    redirect,
)

LOOPBACK = ("127.0.0.1/32", "::1/128")


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A loopback server that records every request."""
    local = LocalServer()
    yield local
    local.close()


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_a_changed_dns_answer_never_reaches_the_second_address(transport: Transport) -> None:
    # given a name that answers a public address first and 127.0.0.1 afterwards (rebinding),
    # on either transport
    resolver = StubResolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    close = http_answer(headers={"connection": "close"})
    network = RecordingNetwork({"93.184.216.34": close})
    client = egress(network=network, resolver=resolver, transport=transport)

    # when it is fetched, and fetched again on a new connection
    async with client.stream("GET", "http://rebind.example/a.wav") as response:
        first = response.status_code
    with pytest.raises(UrlForbidden):
        async with client.stream("GET", "http://rebind.example/a.wav"):
            pass
    await client.aclose()

    # then the first connection went to the address that was checked, resolved once for it,
    # and the second answer was refused before any connection
    assert first == 200
    assert resolver.asked == ["rebind.example", "rebind.example"]
    assert network.attempts == [("93.184.216.34", 80)]


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_one_connection_resolves_once_and_connects_to_an_address_not_a_name(
    transport: Transport,
) -> None:
    # given a name with two public addresses, on either transport
    resolver = StubResolver({"two.example": [["93.184.216.34", "93.184.216.35"]]})
    network = RecordingNetwork()
    client = egress(network=network, resolver=resolver, transport=transport)

    # when two requests go to it over one kept-alive connection
    for _ in range(2):
        async with client.stream("GET", "http://two.example/a.wav") as response:
            assert response.status_code == 200
            await response.aread()
    await client.aclose()

    # then the name was resolved once and the connection went to the first checked address
    assert resolver.asked == ["two.example"]
    assert network.attempts == [("93.184.216.34", 80)]


async def test_a_loopback_server_is_reachable_only_when_allowed(server: LocalServer) -> None:
    # given a loopback server with audio
    server.routes["/a.wav"] = audio()

    # when an egress that allows loopback fetches it, and one that does not
    allowed = egress(*LOOPBACK)
    async with allowed.stream("GET", server.url("/a.wav")) as response:
        chunks = [c async for c in body_chunks(response, max_bytes=1000)]
    await allowed.aclose()
    reached = len(server.seen)
    strict = egress()
    with pytest.raises(UrlForbidden):
        async with strict.stream("GET", server.url("/a.wav")):
            pass
    with pytest.raises(UrlForbidden):
        async with strict.stream("GET", server.url("/a.wav", host="localhost")):
            pass
    await strict.aclose()

    # then the first got the audio and the second never reached the server
    assert b"".join(chunks) == AUDIO
    assert reached == 1
    assert len(server.seen) == 1


async def test_steno_egress_allow_configures_the_clients(server: LocalServer) -> None:
    # given settings read from STENO_EGRESS_ALLOW, with and without loopback
    server.routes["/a.wav"] = audio()
    options = {"deadline": 5.0, "timeout": httpx.Timeout(5.0), "user_agent": "t"}
    open_ = EgressClient.from_settings(
        load_settings({"STENO_EGRESS_ALLOW": "127.0.0.0/8,::1/128"}), **options
    )
    closed = EgressClient.from_settings(load_settings({}), **options)

    # when each asks the loopback server
    async with open_.stream("GET", server.url("/a.wav")) as response:
        status = response.status_code
    with pytest.raises(UrlForbidden):
        async with closed.stream("GET", server.url("/a.wav")):
            pass
    await open_.aclose()
    await closed.aclose()

    # then only the allowed one reached it
    assert status == 200
    assert [s.path for s in server.seen] == ["/a.wav"]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.wav",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://internal.example/a.wav",
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_to_a_forbidden_address_is_refused_before_connecting(
    server: LocalServer, target: str
) -> None:
    # given an allowed server that redirects to a forbidden address (a name resolving to one)
    server.routes["/a.wav"] = redirect(target)
    network = RecordingNetwork()
    resolver = StubResolver({"internal.example": [["10.1.2.3"]]})
    client = egress(*LOOPBACK, network=network, resolver=resolver)

    # when the allowed URL is fetched
    with pytest.raises(UrlForbidden):
        async with client.stream("GET", server.url("/a.wav")):
            pass
    await client.aclose()

    # then the only connection was to the allowed server
    assert network.attempts == [("127.0.0.1", server.port)]
    assert [s.path for s in server.seen] == ["/a.wav"]


async def test_a_redirect_to_a_loopback_server_not_allowed_reaches_nothing() -> None:
    # given two loopback servers: one allowed by name only, which redirects to the other
    first, second = LocalServer(), LocalServer()
    second.routes["/secret"] = audio(b"internal")
    first.routes["/a.wav"] = redirect(second.url("/secret"), status=307)
    resolver = StubResolver({"storage.test": [["127.0.0.1"]]})
    client = egress("storage.test", resolver=resolver, network=RecordingNetwork())
    try:
        # when the allowed name is fetched
        with pytest.raises(UrlForbidden):
            async with client.stream("GET", first.url("/a.wav", host="storage.test")):
                pass
    finally:
        await client.aclose()
        first.close()
        second.close()

    # then the second server got no request at all
    assert [s.path for s in first.seen] == ["/a.wav"]
    assert second.seen == []


async def test_allowed_redirects_are_followed_and_bounded(server: LocalServer) -> None:
    # given a server with a short chain of redirects and an endless one
    server.routes["/a"] = redirect("/b", status=301)
    server.routes["/b"] = redirect(server.url("/c", host="[::ffff:127.0.0.1]"), status=308)
    server.routes["/c"] = audio()
    server.routes["/loop"] = redirect("/loop")
    client = egress("127.0.0.1/32")

    # when each is fetched
    async with client.stream("GET", server.url("/a"), headers={"range": "bytes=0-0"}) as response:
        status = response.status_code
    served = [s.path for s in server.seen]
    with pytest.raises(UrlUnreadable, match="redirected more than 5 times"):
        async with client.stream("GET", server.url("/loop")):
            pass
    await client.aclose()

    # then the short chain ends at the audio (headers kept on each hop), the loop after 5 hops
    assert status == 200
    assert served == ["/a", "/b", "/c"]
    assert all(s.headers.get("range") == "bytes=0-0" for s in server.seen[:3])
    assert len(server.seen) == 3 + 6


async def test_no_cookie_from_one_request_reaches_another(server: LocalServer) -> None:
    # given a server that sets a cookie
    server.routes["/login"] = lambda: (200, {"set-cookie": "session=abc; Path=/"}, b"ok")
    server.routes["/a.wav"] = audio()
    client = egress(*LOOPBACK)

    # when two requests follow each other on the shared client
    for path in ("/login", "/a.wav"):
        async with client.stream("GET", server.url(path)):
            pass
    await client.aclose()

    # then the second carried no cookie (one shared client serves every job)
    assert [s.path for s in server.seen] == ["/login", "/a.wav"]
    assert "cookie" not in server.seen[1].headers


async def test_the_body_is_capped_while_it_streams(server: LocalServer) -> None:
    # given a response announcing too much, and one sent in chunks with no length announced
    client = egress(network=RecordingNetwork({"93.184.216.34": http_answer(body=b"x" * 5000)}))
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(8))
        + b"0\r\n\r\n"
    )
    unannounced = egress(network=RecordingNetwork({"93.184.216.34": chunked}))

    # when each is read with a cap of 4000 bytes
    # then both are refused: one before reading, one as soon as the count passes the cap
    for each in (client, unannounced):
        got = 0
        with pytest.raises(PayloadTooLarge, match="4000"):
            async with each.stream("GET", "http://93.184.216.34/a.wav") as response:
                async for chunk in body_chunks(response, max_bytes=4000):
                    got += len(chunk)
        assert got <= 4000
        await each.aclose()


async def test_one_deadline_covers_the_whole_exchange(server: LocalServer) -> None:
    # given a server that trickles its body (each read is quick, the whole is slow)
    server.routes["/slow.wav"] = audio([b"x" * 10] * 20)
    server.pause = 0.2
    client = egress(*LOOPBACK, deadline=0.6)

    # when it is read through the egress
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with client.stream("GET", server.url("/slow.wav")) as response:
            async for _ in body_chunks(response, max_bytes=10_000):
                pass
    elapsed = time.monotonic() - started
    await client.aclose()

    # then the deadline stopped it, long before the body could end
    assert 0.5 < elapsed < 2.0


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName=DNS:{name}"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_https_is_pinned_and_verified_against_the_host_name(tmp_path: Path) -> None:
    # given a TLS server on 127.0.0.1 whose certificate names media.test, and two names
    # resolving to it (allowed by address)
    key, cert = _certificate(tmp_path, "media.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []

    def record_sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = record_sni
    server = LocalServer(tls=server_tls)
    server.routes["/a.wav"] = audio()
    network = RecordingNetwork()
    resolver = StubResolver({"media.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    trust = ssl.create_default_context(cafile=str(cert))
    client = egress("127.0.0.1/32", resolver=resolver, network=network, verify=trust)
    try:
        # when each name is fetched over https
        url = server.url("/a.wav", host="media.test", scheme="https")
        async with client.stream("GET", url) as response:
            status = response.status_code
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            async with client.stream(
                "GET", server.url("/a.wav", host="other.test", scheme="https")
            ):
                pass
    finally:
        await client.aclose()
        server.close()

    # then both connected to the pinned address, the certificate was checked against the
    # name (SNI and Host too): media.test passed, other.test did not
    assert status == 200
    assert network.attempts == [("127.0.0.1", server.port)] * 2
    assert names[:2] == ["media.test", "other.test"]
    assert server.seen[0].headers["host"] == f"media.test:{server.port}"
    assert len(server.seen) == 1


async def test_no_query_reaches_a_log_line_or_an_error(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    # given presigned URLs: one served, one redirecting to a forbidden address
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    server.routes["/a.wav"] = audio()
    server.routes["/moved"] = redirect("http://169.254.169.254/x?X-Amz-Signature=secret")
    client = egress(*LOOPBACK)

    # when they are fetched
    async with client.stream("GET", server.url("/a.wav?X-Amz-Signature=secret")):
        pass
    with pytest.raises(UrlForbidden) as refused:
        async with client.stream("GET", server.url("/moved?X-Amz-Signature=secret")):
            pass
    await client.aclose()

    # then httpx logged the requests, but no log line and no error detail holds the query
    assert "HTTP Request: GET http://127.0.0.1" in caplog.text
    assert "secret" not in caplog.text
    assert "secret" not in refused.value.detail
    assert "169.254.169.254" in refused.value.detail
