"""The webhook endpoints and ``webhook_url`` on submit, in process on the test database.

The broker is replaced by a recording publisher (nothing reaches a worker); deliveries are
made in process by the IO pool's ``deliver_webhook``, to a local receiver.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import webhooks
from service.core.db.models import Job, WebhookEvent
from service.core.egress import EgressClient, EgressPolicy
from service.core.errors import InvalidUrl, UrlForbidden
from service.core.routing import DELIVER_WEBHOOK
from service.core.settings import Settings
from service.webhooks.urls import check_webhook_url
from tests.audio import speak
from tests.egress import StubResolver
from tests.integration.test_api_contract import RecordingPublisher, assert_error, steno_client
from tests.webhooks import Receiver
from workers.io.webhooks import deliver_webhook

Client = AsyncTestClient[Any]
Sessions = async_sessionmaker[AsyncSession]
AUDIO_URL = "https://media.example.com/talks/keynote.mp3"


@pytest.fixture(scope="module")
async def quiet(
    settings: Settings, api_key: str
) -> AsyncIterator[tuple[Client, RecordingPublisher]]:
    async with steno_client(settings, api_key) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(quiet: tuple[Client, RecordingPublisher]) -> Client:
    return quiet[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("webhook-api") / "speech.wav"
    return speak("Signed and sealed.", path).read_bytes()


async def _jobs(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


@pytest.mark.parametrize(
    "url,code",
    [
        ("http://169.254.169.254/latest/meta-data/", "url_forbidden"),
        ("http://10.1.2.3/hook", "url_forbidden"),
        ("http://[::ffff:192.168.0.1]/hook", "url_forbidden"),
        ("http://0x7f.1/hook", "url_forbidden"),
        ("https://user:pass@hooks.example.com/", "url_forbidden"),
        ("ftp://hooks.example.com/", "invalid_url"),
        ("not a url", "invalid_url"),
    ],
)
async def test_a_webhook_url_steno_would_not_call_is_refused_at_submit(
    settings: Settings, api_key: str, sessions: Sessions, speech: bytes, url: str, code: str
) -> None:
    # given the API with the production egress (loopback refused too)
    strict = dataclasses.replace(settings, egress_allow=())
    async with steno_client(strict, api_key) as (client, publisher):
        before = await _jobs(sessions)

        # when a job names that webhook_url, as JSON and as a form field
        as_json = await client.post("/v1/jobs", json={"audio_url": AUDIO_URL, "webhook_url": url})
        as_form = await client.post(
            "/v1/jobs", files={"file": ("a.wav", speech, "audio/wav")}, data={"webhook_url": url}
        )

    # then both are 422 with the code, and no job or message exists
    assert_error(as_json, 422, code)
    assert_error(as_form, 422, code)
    assert await _jobs(sessions) == before
    assert publisher.messages == []


async def test_a_webhook_host_resolving_to_a_private_address_is_refused() -> None:
    # given names resolving to a private address, to a mix, and to nothing
    resolver = StubResolver(
        {"hooks.internal": [["10.0.0.7"]], "mixed.example": [["93.184.216.34", "127.0.0.1"]]}
    )
    policy = EgressPolicy()

    # when each is checked at submit, then only the public one passes
    for name in ("hooks.internal", "mixed.example"):
        with pytest.raises(UrlForbidden):
            await check_webhook_url(f"https://{name}/hook", policy, resolver=resolver)
    with pytest.raises(InvalidUrl):
        await check_webhook_url("https://nowhere.example/hook", policy, resolver=resolver)
    public = StubResolver({"hooks.example.com": [["93.184.216.34"]]})
    url = "https://hooks.example.com/hook?token=1"
    assert await check_webhook_url(url, policy, resolver=public) == url
    assert await check_webhook_url("  ", policy, resolver=public) is None


async def test_the_secret_is_made_once_and_rotation_replaces_it(
    settings: Settings, client: Client
) -> None:
    # given the key's secret, asked twice
    first = await client.get("/v1/webhooks/secret")
    again = await client.get("/v1/webhooks/secret")
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and again.json() == {"secret": secret}

    # when it is rotated
    rotated = await client.post("/v1/webhooks/secret/rotate")

    # then a new secret answers from now on; the old one signs until the grace period ends
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != secret
    until = datetime.fromisoformat(body["previous_valid_until"])
    grace = (until - datetime.now(UTC)).total_seconds()
    assert abs(grace - settings.webhook_secret_grace_seconds) < 60
    assert (await client.get("/v1/webhooks/secret")).json() == {"secret": body["secret"]}


async def test_deliveries_are_listed_and_the_last_event_is_redelivered_with_its_id(
    quiet: tuple[Client, RecordingPublisher],
    settings: Settings,
    sessions: Sessions,
    receiver: Receiver,
) -> None:
    client, publisher = quiet
    # given a URL job with a webhook, cancelled, its event delivered once
    submitted = await client.post(
        "/v1/jobs", json={"audio_url": AUDIO_URL, "webhook_url": receiver.url()}
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["webhook_url"] == receiver.url()
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    ctx = await _worker_ctx(settings, sessions)
    try:
        log = (await client.get(f"/v1/jobs/{job['id']}/webhooks")).json()
        [event] = log["events"]
        assert event["type"] == "job.cancelled"
        assert event["state"] in ("pending", "delivered")
        event_id = await _event_id(sessions, event["webhook_id"])
        # the first attempt is made here, unless the session's relay and IO worker (running
        # when an end-to-end module started them) took it first: the claim is fenced, so
        # exactly one of the two makes attempt 1
        assert await deliver_webhook(ctx, event_id, 0) in ("delivered", "skipped")

        # when the owner lists the deliveries, then asks for a redelivery
        listed = await _once_delivered(client, job["id"])
        redelivered = await client.post(f"/v1/jobs/{job['id']}/webhooks/redeliver")

        # then the listing shows the event delivered after one attempt of 204
        assert listed.status_code == 200, listed.text
        [shown] = listed.json()["events"]
        assert (shown["state"], shown["attempts"]) == ("delivered", 1)
        [attempt] = listed.json()["deliveries"]
        assert attempt["webhook_id"] == event["webhook_id"]
        assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 204, None)
        # and the redelivery is accepted, pending, under the same id, and sent as attempt 2
        assert redelivered.status_code == 202, redelivered.text
        assert redelivered.json()["webhook_id"] == event["webhook_id"]
        assert redelivered.json()["state"] == "pending"
        [message] = [m for m in publisher.messages if m.task_name == DELIVER_WEBHOOK.name]
        assert message.args == [event_id, 1]
        assert await deliver_webhook(ctx, *message.args) == "delivered"
        ids = [r.webhook_id for r in receiver.for_job(job["id"])]
        assert ids == [event["webhook_id"]] * 2
        final = (await client.get(f"/v1/jobs/{job['id']}/webhooks")).json()
        assert [d["attempt"] for d in final["deliveries"]] == [1, 2]
    finally:
        await ctx["webhook_http"].aclose()


async def _once_delivered(client: Client, job_id: str) -> httpx.Response:
    """The job's webhook listing once its event is delivered (within 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        listed = await client.get(f"/v1/jobs/{job_id}/webhooks")
        assert listed.status_code == 200, listed.text
        if listed.json()["events"][0]["state"] == "delivered" or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.1)


async def test_redelivering_a_job_without_an_event_is_409(client: Client) -> None:
    # given a queued job (not finished: no event yet)
    job = (await client.post("/v1/jobs", json={"audio_url": AUDIO_URL})).json()

    # when a redelivery is asked for
    response = await client.post(f"/v1/jobs/{job['id']}/webhooks/redeliver")

    # then it is refused: there is nothing to send again
    assert_error(response, 409, "no_webhook_event")
    listing = await client.get(f"/v1/jobs/{job['id']}/webhooks")
    assert listing.json() == {"events": [], "deliveries": []}
    assert_error(await client.get(f"/v1/jobs/{uuid.uuid4()}/webhooks"), 404, "job_not_found")


async def _worker_ctx(settings: Settings, sessions: Sessions) -> dict[str, Any]:
    return {
        "settings": settings,
        "sessions": sessions,
        "secret_box": webhooks.SecretBox.from_settings(settings),
        "webhook_http": EgressClient.from_settings(
            settings, deadline=5.0, timeout=httpx.Timeout(5.0), user_agent="test"
        ),
    }


async def _event_id(sessions: Sessions, webhook_id: str) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(WebhookEvent.id).where(WebhookEvent.webhook_id == webhook_id)
        )
    assert found is not None
    return int(found)
