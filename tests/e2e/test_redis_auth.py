"""Steno end to end against a Redis that wants a user and password, and one that speaks TLS.

Each part starts its own redis-server (the default user behind ``requirepass``, an ACL user
``steno``) and its own worker, beat and API processes on it, beside the session's (which use
the session's Redis); all of them share the session's PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.cli.infra import find_binary, redact_url, redis_problem
from service.cli.infra.host import free_port
from service.core.delivery import celery_app
from service.core.events.stream import stream_key
from service.core.settings import Settings, load_settings
from tests.audio import SENTENCES, speak, word_error_rate
from tests.conftest import WorkerProcess, bearer, start_api, wait_for_job, wait_for_queues
from tests.sse import read_events

# URL-special characters on purpose: in a URL the password is percent-encoded, and every
# client (redis-py, kombu, the arq layer) must decode it to the same thing.
PASSWORD = "pa/ss@w0rd:st3no-7f3a"
ENCODED = quote(PASSWORD, safe="")
DEFAULT_PASSWORD = "default-pw-41c2e9"
SECRETS = (PASSWORD, ENCODED, DEFAULT_PASSWORD)
SPOKEN = " ".join(SENTENCES[:2])
MAX_WER = 0.35


class SecuredRedis:
    """A private redis-server on a free loopback port: ``requirepass`` for the default user,
    an ACL user ``steno``, and with ``tls`` (cert, key, CA files) only a TLS port."""

    def __init__(self, folder: Path, *, tls: tuple[Path, Path, Path] | None = None) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.folder, self.port, self.tls = folder, free_port(), tls is not None
        lines = [
            "bind 127.0.0.1",
            'save ""',
            "appendonly no",
            f"dir {folder}",
            f'requirepass "{DEFAULT_PASSWORD}"',
            f'user steno on ">{PASSWORD}" ~* &* +@all',
        ]
        if tls is None:
            lines.append(f"port {self.port}")
        else:
            cert, key, ca = tls
            lines += ["port 0", f"tls-port {self.port}", "tls-auth-clients no"]
            lines += [f"tls-cert-file {cert}", f"tls-key-file {key}", f"tls-ca-cert-file {ca}"]
        (folder / "redis.conf").write_text("\n".join(lines) + "\n")
        self.log_path = folder / "redis.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, str(folder / "redis.conf")],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def url(self, *, password: str = ENCODED, query: str = "") -> str:
        """The URL of user ``steno`` with ``password`` (percent-encoded) and ``query``."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://steno:{password}@127.0.0.1:{self.port}/0{query}"

    def wait_until_ready(self, url: str, timeout: float = 15.0) -> bool:
        """True once ``url`` answers PING; False when the server exited or never answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
                try:
                    if client.ping():
                        return True
                finally:
                    client.close()
            except redis.RedisError:
                time.sleep(0.1)
        return False

    def log(self) -> str:
        """What the server printed."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop it and wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _loopback_egress(settings: Settings) -> dict[str, Any]:
    # Where this build has an egress allowlist, the workers must be let fetch from 127.0.0.1.
    names = {f.name for f in dataclasses.fields(Settings)}
    if "egress_allow" not in names or getattr(settings, "egress_allow", None):
        return {}
    return {"egress_allow": load_settings({"STENO_EGRESS_ALLOW": "127.0.0.1"}).egress_allow}


def _stack_settings(settings: Settings, redis_url: str, data_dir: Path) -> Settings:
    # Its own data_dir: audio is shared only among this stack's processes, and its beat
    # keeps its schedule apart from the session's.
    return dataclasses.replace(
        settings,
        redis_url=redis_url,
        broker_url="",
        data_dir=data_dir,
        **_loopback_egress(settings),
    )


def _start(names: tuple[str, ...], settings: Settings, log_dir: Path) -> dict[str, WorkerProcess]:
    started = {name: WorkerProcess(name, settings, log_dir) for name in names}
    queues = {"io", "gpu"} if "worker-gpu" in names else {"io"}
    try:
        wait_for_queues(settings, queues, timeout=180)
    except TimeoutError:
        logs = "\n".join(f"--- {n}\n{p.log()[-2000:]}" for n, p in started.items())
        for process in started.values():
            process.stop()
        raise AssertionError(f"the workers did not come up on the private Redis:\n{logs}") from None
    return started


def _assert_no_secret_in(processes: dict[str, WorkerProcess]) -> None:
    for name, process in processes.items():
        text = process.log()
        assert text.strip(), f"{name} logged nothing: the check below would prove nothing"
        for secret in SECRETS:
            assert secret not in text, f"{name}'s log holds a Redis password"


@pytest.fixture(scope="module")
def speech_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTP server (standing in for the internet) serving two spoken sentences."""
    folder = tmp_path_factory.mktemp("auth-speech")
    speak(SPOKEN, folder / "speech.wav")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- A Redis with a password and an ACL user ------------------------------------------------


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRedis]:
    server = SecuredRedis(tmp_path_factory.mktemp("auth-redis"))
    try:
        assert server.wait_until_ready(server.url()), server.log()[-2000:]
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def auth_settings(
    settings: Settings, auth_redis: SecuredRedis, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return _stack_settings(settings, auth_redis.url(), tmp_path_factory.mktemp("auth-data"))


@pytest.fixture(scope="module")
def auth_stack(
    auth_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, WorkerProcess], str]]:
    """worker-io, worker-gpu, beat and a real API process, all on the password-only Redis."""
    log_dir = tmp_path_factory.mktemp("auth-logs")
    processes = _start(("worker-io", "worker-gpu", "beat"), auth_settings, log_dir)
    try:
        api, base = start_api(auth_settings, log_dir)
        processes["api"] = api
        yield processes, base
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture
async def auth_client(
    auth_stack: tuple[dict[str, WorkerProcess], str], api_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_stack[1], timeout=30, headers=bearer(api_key)) as c:
        yield c


async def _submit_and_follow(client: httpx.AsyncClient, **request: Any) -> tuple[str, list[str]]:
    """Submit a job, follow its SSE stream to the end; its id and the events' names."""
    response = await client.post("/v1/jobs", **request)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    messages = await read_events(client, job_id, timeout=240)
    return job_id, [m.event or "" for m in messages]


async def _assert_transcribed(
    client: httpx.AsyncClient, job_id: str, events: list[str], redis_url: str
) -> None:
    # the stream ran to completion through the worker's progress events
    assert events[-1] == "completed", events
    assert {"started", "segment"} <= set(events), events
    job = await wait_for_job(client, job_id, timeout=30)
    assert job["status"] == "completed", job
    text = (await client.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"})).text
    assert word_error_rate(SPOKEN, text) <= MAX_WER, text
    # and those events went through the private Redis (not the session's)
    private = redis.Redis.from_url(redis_url)
    try:
        assert private.xlen(stream_key(job_id)) >= len(events) - 1
    finally:
        private.close()


async def test_the_api_is_ready_on_a_redis_with_a_user_and_password(
    auth_client: httpx.AsyncClient,
) -> None:
    # Given the stack on redis://steno:<password>@..., when a balancer asks /readyz
    response = await auth_client.get("/readyz")

    # then Redis answers and the census (over the same broker) finds both pools
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["redis"] == {"ok": True, "detail": "ok"}
    assert body["workers"]["io"] and body["workers"]["gpu"], body


async def test_an_upload_is_transcribed_through_a_password_protected_redis(
    auth_client: httpx.AsyncClient, auth_settings: Settings, tmp_path: Path
) -> None:
    # Given speech, when it is uploaded to the API on the password-protected Redis
    audio = speak(SPOKEN, tmp_path / "upload.wav")
    with audio.open("rb") as file:
        job_id, events = await _submit_and_follow(
            auth_client, files={"file": ("upload.wav", file, "audio/wav")}
        )

    # then its events stream to the end, and the transcript matches what was said
    await _assert_transcribed(auth_client, job_id, events, auth_settings.redis_url)


async def test_an_audio_url_is_fetched_and_transcribed_through_a_password_protected_redis(
    auth_client: httpx.AsyncClient, auth_settings: Settings, speech_server: str
) -> None:
    # Given audio behind a URL, when its URL is submitted
    job_id, events = await _submit_and_follow(
        auth_client, json={"audio_url": f"{speech_server}/speech.wav"}
    )

    # then the IO pool fetched it (its progress came through), the GPU pool transcribed it
    assert "progress" in events
    await _assert_transcribed(auth_client, job_id, events, auth_settings.redis_url)


async def test_a_wrong_password_is_refused_clearly(
    auth_redis: SecuredRedis,
    auth_settings: Settings,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_url = auth_redis.url(password="not-the-password")

    # Given an API configured with the wrong password, when a balancer asks /readyz
    wrong = dataclasses.replace(auth_settings, redis_url=wrong_url)
    async with AsyncTestClient(create_app(wrong), timeout=30) as client:
        response = await client.get("/readyz")

    # then it is not ready, and says Redis refused the credentials (not merely "down")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["redis"] == {
        "ok": False,
        "detail": "Redis refused the credentials: AuthenticationError",
    }
    assert body["database"]["ok"] is True
    assert "not-the-password" not in response.text

    # and the CLI's probe says the credentials were refused, for both users
    problem = await redis_problem(wrong_url, timeout=2.0)
    assert problem is not None and problem.startswith("AuthenticationError"), problem
    assert "invalid username-password pair" in problem
    default_user = f"redis://:wrong@127.0.0.1:{auth_redis.port}/0"
    assert (await redis_problem(default_user)) is not None
    nobody = f"redis://127.0.0.1:{auth_redis.port}/0"
    problem = await redis_problem(nobody)
    assert problem is not None and problem.startswith("AuthenticationError"), problem
    # while the right ones are let in (the default user with requirepass too)
    assert await redis_problem(auth_redis.url()) is None
    assert await redis_problem(f"redis://:{DEFAULT_PASSWORD}@127.0.0.1:{auth_redis.port}/0") is None

    # and nothing logged in process shows a password; the CLI shows the URL redacted
    assert all(s not in caplog.text for s in (*SECRETS, "not-the-password"))
    assert redact_url(auth_settings.redis_url) == f"redis://steno:***@127.0.0.1:{auth_redis.port}/0"


def test_the_password_never_reaches_a_log(
    auth_stack: tuple[dict[str, WorkerProcess], str],
) -> None:
    # Given the stack ran jobs on the password-protected Redis (the tests above),
    processes = auth_stack[0]

    # then no process logged the password, raw or percent-encoded
    _assert_no_secret_in(processes)
    # while the GPU worker's banner did show the broker URL, masked
    assert "steno:**@127.0.0.1" in processes["worker-gpu"].log()


# --- A Redis behind TLS ------------------------------------------------------------------------


def _throwaway_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (server cert, server key, CA cert)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate for a TLS Redis")

    def run(*argv: str) -> None:
        subprocess.run([openssl, *argv], cwd=folder, check=True, capture_output=True)

    key = ("-newkey", "rsa:2048", "-nodes", "-keyout")
    run("req", "-x509", *key, "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=Steno CA")
    run("req", *key, "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext"),
    )
    return folder / "server.crt", folder / "server.key", folder / "ca.crt"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecuredRedis, str]]:
    """A TLS-only private Redis (user and password too) and the query naming its CA."""
    folder = tmp_path_factory.mktemp("tls-redis")
    cert, key, ca = _throwaway_ca(folder)
    server = SecuredRedis(folder, tls=(cert, key, ca))
    query = f"?ssl_ca_certs={quote(str(ca))}"
    try:
        if not server.wait_until_ready(server.url(query=query)):
            log = server.log()
            if server.process.poll() is not None and "tls" in log.lower():
                pytest.skip(f"this redis-server cannot serve TLS: {log[-800:]}")
            raise AssertionError(f"the TLS Redis did not answer: {log[-2000:]}")
        yield server, query
    finally:
        server.stop()


async def test_api_and_io_worker_round_trip_over_tls(
    settings: Settings,
    tls_redis: tuple[SecuredRedis, str],
    speech_server: str,
    api_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server, query = tls_redis
    url = server.url(query=query)
    # Given an API and an IO worker on rediss://steno:<password>@...?ssl_ca_certs=<CA>
    tls_settings = _stack_settings(settings, url, tmp_path_factory.mktemp("tls-data"))
    log_dir = tmp_path_factory.mktemp("tls-logs")
    processes = _start(("worker-io",), tls_settings, log_dir)
    try:
        api, base = start_api(tls_settings, log_dir)
        processes["api"] = api
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer(api_key)) as client:
            # when an audio_url job is submitted and followed over SSE
            response = await client.post(
                "/v1/jobs", json={"audio_url": f"{speech_server}/speech.wav"}
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            reader = asyncio.create_task(read_events(client, job_id, timeout=120))

            # then the IO worker got its task through the broker, fetched the audio and sent
            # the transcription task on (no GPU pool here, so it waits in the gpu queue)
            private = redis.Redis.from_url(url)
            try:
                deadline = time.monotonic() + 60
                while not private.llen("gpu"):
                    assert time.monotonic() < deadline, (
                        await client.get(f"/v1/jobs/{job_id}")
                    ).text
                    await asyncio.sleep(0.2)
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["audio_seconds"] and job["audio_seconds"] > 2, job

                # and once cancelled through the API, the stream ends with that
                cancelled = await client.post(f"/v1/jobs/{job_id}/cancel")
                assert cancelled.status_code == 200, cancelled.text
                events = [m.event for m in await reader]
                assert events[0] == "queued" and events[-1] == "cancelled", events
                assert "progress" in events, events  # the IO worker's, through the TLS Redis
                assert private.xlen(stream_key(job_id)) >= len(events) - 1
            finally:
                reader.cancel()
                private.close()
    finally:
        for process in processes.values():
            process.stop()

    # and no process logged the password
    _assert_no_secret_in(processes)

    # and a client not given the CA is refused, the broker's too (kombu alone would not check)
    no_ca = server.url()
    problem = await redis_problem(no_ca)
    assert problem is not None and "CERTIFICATE_VERIFY_FAILED" in problem, problem
    broker = celery_app("tls-check", no_ca, visibility_timeout=60)
    try:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            with broker.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=5)
    finally:
        broker.close()
