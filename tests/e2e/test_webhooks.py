"""End to end: a transcribed job's outcome reaches a webhook receiver, signed, through the
real API, the relay sweep (beat), the IO worker's delivery and the egress."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.audio import speak
from tests.conftest import wait_for_job
from tests.webhooks import Received, Receiver, failing_first

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("The webhook arrives once.", tmp_path_factory.mktemp("hooks") / "hook.wav")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


async def _submit(api: AsyncTestClient[Any], clip: Path, webhook_url: str) -> str:
    with clip.open("rb") as audio:
        response = await api.post(
            "/v1/jobs",
            files={"file": ("hook.wav", audio, "audio/wav")},
            data={"webhook_url": webhook_url},
        )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def _received(
    receiver: Receiver, job_id: str, count: int, timeout: float = 60
) -> list[Received]:
    deadline = time.monotonic() + timeout
    while len(got := receiver.for_job(job_id)) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} deliveries: {got}"
        await asyncio.sleep(0.2)
    return got


async def _settled_log(api: AsyncTestClient[Any], job_id: str, timeout: float = 30) -> Any:
    """The job's webhook log once no event is pending: the IO worker records a delivery after
    the receiver has answered, so a log read as the receiver sees the POST may be behind."""
    deadline = time.monotonic() + timeout
    while True:
        log = (await api.get(f"/v1/jobs/{job_id}/webhooks")).json()
        if all(event["state"] != "pending" for event in log["events"]):
            return log
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.1)


async def test_a_completed_job_is_announced_once_signed_with_the_keys_secret(
    api: AsyncTestClient[Any], clip: Path, receiver: Receiver
) -> None:
    # given a job submitted with a webhook_url
    secret = (await api.get("/v1/webhooks/secret")).json()["secret"]
    job_id = await _submit(api, clip, receiver.url())

    # when it completes
    job = await wait_for_job(api, job_id)
    assert job["status"] == "completed", job
    [got] = await _received(receiver, job_id, 1)

    # then the receiver got job.completed, verified by standardwebhooks with the key's secret,
    # whose data is the job as the API shows it
    payload = got.verify(secret)
    assert payload["type"] == "job.completed"
    assert payload["data"] == (await api.get(f"/v1/jobs/{job_id}")).json()
    assert got.headers["user-agent"].startswith("steno-webhooks/")
    # and the listing shows one delivered event after one attempt
    log = await _settled_log(api, job_id)
    assert [(e["type"], e["state"], e["attempts"]) for e in log["events"]] == [
        ("job.completed", "delivered", 1)
    ]
    _keep_sample(got)
    await asyncio.sleep(2.5)  # a few relay sweeps: nothing more is sent
    assert len(receiver.for_job(job_id)) == 1


def _keep_sample(got: Received) -> None:
    """Write the delivery as received where STENO_WEBHOOK_SAMPLE says (for the README)."""
    target = os.environ.get("STENO_WEBHOOK_SAMPLE")
    if target:
        lines = [f"POST {got.path}", *(f"{k}: {v}" for k, v in got.headers.items()), ""]
        body = json.dumps(json.loads(got.body), indent=2)
        Path(target).write_text("\n".join(lines) + "\n" + body + "\n")


async def test_a_receiver_that_fails_then_recovers_gets_the_event_with_one_id(
    api: AsyncTestClient[Any], clip: Path
) -> None:
    # given a receiver that answers 500 to the first two attempts
    receiver = Receiver(answer=failing_first(2))
    try:
        job_id = await _submit(api, clip, receiver.url())

        # when the job completes and the schedule retries (1 s, then 2 s, in tests)
        assert (await wait_for_job(api, job_id))["status"] == "completed"
        got = await _received(receiver, job_id, 3)
    finally:
        receiver.close()

    # then all three attempts carried the same webhook-id, and the third was accepted
    assert len({r.webhook_id for r in got}) == 1
    log = await _settled_log(api, job_id)
    assert [(d["attempt"], d["status_code"]) for d in log["deliveries"]] == [
        (1, 500),
        (2, 500),
        (3, 204),
    ]
    assert log["events"][0]["state"] == "delivered"
    assert got[1].at - got[0].at >= 0.5  # backed off, not hammered


async def test_after_a_rotation_a_redelivery_is_signed_with_both_secrets(
    api: AsyncTestClient[Any], clip: Path, receiver: Receiver
) -> None:
    # given a delivered job, then the key's secret rotated
    old = (await api.get("/v1/webhooks/secret")).json()["secret"]
    job_id = await _submit(api, clip, receiver.url())
    assert (await wait_for_job(api, job_id))["status"] == "completed"
    [first] = await _received(receiver, job_id, 1)
    assert (await _settled_log(api, job_id))["events"][0]["state"] == "delivered"
    new = (await api.post("/v1/webhooks/secret/rotate")).json()["secret"]

    # when the owner asks for the last event again
    answer = await api.post(f"/v1/jobs/{job_id}/webhooks/redeliver")
    assert answer.status_code == 202, answer.text
    again = (await _received(receiver, job_id, 2))[1]

    # then it is the same event (id and body), now signed with both secrets, each verifying
    assert again.webhook_id == first.webhook_id and again.body == first.body
    assert len(again.headers["webhook-signature"].split(" ")) == 2
    assert again.verify(new) == again.verify(old) == json.loads(first.body)
