"""Scenarios 13 and 14: a webhook receiver that fails then recovers, and the IO worker
SIGKILLed mid-delivery. Every finished job's event must reach the receiver, once per job
(as one ``webhook-id``), whatever happened on the way."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.chaos.conftest import Chaos
from tests.webhooks import Receiver


async def test_a_receiver_that_fails_then_recovers_gets_every_event(chaos: Chaos) -> None:
    """13. A webhook receiver failing (500) for 10 s, then back: every event arrives"""
    # Given a receiver that answers 500 to everything for 10 s from the first request it gets
    await chaos.open(transcribe_delay_seconds=0.3)
    chaos.start_all()
    first_request: list[float] = []

    def down_then_up(_number: int, _path: str) -> tuple[int, dict[str, str]]:
        first_request[:] = first_request or [time.time()]
        return (500 if time.time() < first_request[0] + 10.0 else 204), {}

    receiver = Receiver(answer=down_then_up)
    try:
        # when eight jobs with a webhook finish while it fails, and after
        ids = await chaos.submit(8, webhook_url=receiver.url())
        views = await chaos.audit(ids, receiver=receiver)
    finally:
        receiver.close()

    # then every job's event arrived after the receiver recovered, each under one id
    assert all(view["status"] == "completed" for view in views.values()), views
    secret = await chaos.secret()
    assert all(r.verify(secret)["type"] == "job.completed" for r in receiver.received)
    refused = [r for r in receiver.received if r.at < first_request[0] + 10.0]
    assert refused, "some attempts should have met the 500s"
    for job_id in ids:
        log = (await chaos.api.get(f"/v1/jobs/{job_id}/webhooks")).json()
        assert log["events"][0]["state"] == "delivered", log
        assert log["deliveries"][-1]["status_code"] == 204, log


async def test_io_worker_sigkilled_mid_delivery_loses_no_event(chaos: Chaos) -> None:
    """14. SIGKILL the gevent IO worker mid-delivery: no webhook event lost"""
    # Given a receiver that holds its first four requests for 4 s before answering
    await chaos.open(transcribe_delay_seconds=0.3, webhook_timeout_seconds=6.0)

    def slow_at_first(number: int, _path: str) -> tuple[int, dict[str, str]]:
        if number < 4:
            time.sleep(4.0)
        return 204, {}

    receiver = Receiver(answer=slow_at_first)
    workers = chaos.start_all()
    try:
        ids = await chaos.submit(6, webhook_url=receiver.url())
        await chaos.wait_until(
            lambda: _received(receiver, 2), 120, "deliveries in flight at the receiver"
        )

        # when the IO worker is SIGKILLed while those deliveries wait for their answers
        os.killpg(workers["worker-io"].pid, signal.SIGKILL)
        workers["worker-io"].process.wait()
        await asyncio.sleep(1.0)
        chaos.start("worker-io")

        # then every job's event is delivered in the end, none lost, each under one id
        views = await chaos.audit(ids, receiver=receiver)
    finally:
        receiver.close()
    assert all(view["status"] == "completed" for view in views.values()), views
    # and the deliveries cut off by the kill were made again, under their events' ids
    assert len(receiver.received) > len(ids), receiver.received


async def _received(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) >= count
