"""Redis URLs with credentials and TLS options, as the arq layer and the Celery apps read them."""

from __future__ import annotations

import ssl

import pytest
from redis.asyncio.connection import Connection, SSLConnection

from service.cli.infra import redact_url
from service.core.delivery import broker_use_ssl, celery_app
from workers.arq.connections import RedisSettings, _connection_pool

# A generated password may hold any of these; in a URL they are percent-encoded.
PASSWORD = "pa/ss@w0rd:x"
URL = "redis://steno:pa%2Fss%40w0rd%3Ax@redis.internal:6380/2"


def test_from_dsn_decodes_the_user_and_password_as_redis_py_does() -> None:
    # Given a URL whose password is percent-encoded, when the arq layer reads it
    settings = RedisSettings.from_dsn(URL)

    # then redis-py gets the password itself, not its encoding
    assert (settings.username, settings.password) == ("steno", PASSWORD)
    assert (settings.host, settings.port, settings.database) == ("redis.internal", 6380, 2)
    kwargs = _connection_pool(settings).connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("steno", PASSWORD)
    # and it comes back out as the same URL (Celery's broker is built from it)
    assert settings.to_dsn() == URL
    # and the repr, which a traceback or log line may show, does not hold it
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:secret@h:6379/0", "redis://:secret@h:6379/0"),
        ("redis://steno@h:6379/0", "redis://steno@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_to_dsn_keeps_what_the_url_said(url: str, expected: str) -> None:
    assert RedisSettings.from_dsn(url).to_dsn() == expected


def test_a_rediss_url_carries_its_tls_options_to_redis_py() -> None:
    # Given a rediss:// URL naming its CA and asking for verification
    url = "rediss://steno:pw@redis.internal:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"

    # when the arq layer reads it
    settings = RedisSettings.from_dsn(url)

    # then its pool connects with TLS, that CA, and checks the certificate and host name
    pool = _connection_pool(settings)
    kwargs = pool.connection_kwargs
    assert pool.connection_class is SSLConnection
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    # and the URL it hands Celery still names the CA
    assert RedisSettings.from_dsn(settings.to_dsn()) == settings


def test_ssl_check_hostname_false_survives_the_round_trip() -> None:
    settings = RedisSettings.from_dsn("rediss://h:1/0?ssl_check_hostname=false&ssl_cert_reqs=none")
    assert (settings.ssl_check_hostname, settings.ssl_cert_reqs) == (False, "none")
    assert RedisSettings.from_dsn(settings.to_dsn()) == settings


def test_a_plain_url_gets_no_tls_options() -> None:
    pool = _connection_pool(RedisSettings.from_dsn("redis://h:6379/0?ssl_ca_certs=/x.pem"))
    assert pool.connection_class is Connection
    assert "ssl_ca_certs" not in pool.connection_kwargs


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        # kombu alone would connect to this one without checking the certificate at all
        ("rediss://:pw@h:6380/0", {"ssl_cert_reqs": ssl.CERT_REQUIRED}),
        # the URL says how: kombu reads its options
        ("rediss://:pw@h:6380/0?ssl_ca_certs=/etc/ca.pem", None),
        ("rediss://:pw@h:6380/0?ssl_cert_reqs=none", None),
        ("redis://:pw@h:6379/0", None),
        ("memory://", None),
    ],
)
def test_broker_use_ssl(broker: str, expected: dict[str, object] | None) -> None:
    assert broker_use_ssl(broker) == expected


def test_a_celery_app_on_a_rediss_broker_verifies_the_server() -> None:
    app = celery_app("t", "rediss://:pw@h:6380/0", visibility_timeout=60)
    try:
        with app.connection_for_write() as connection:
            assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    finally:
        app.close()


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "rediss://steno:s3cret@h:6380/0?ssl_ca_certs=/etc/ca.pem",
        "redis://:s3cret@h:6379/0",
    ],
)
def test_redact_url_hides_a_redis_password(url: str) -> None:
    redacted = redact_url(url)
    assert "***" in redacted
    assert "s3cret" not in redacted and "w0rd" not in redacted
