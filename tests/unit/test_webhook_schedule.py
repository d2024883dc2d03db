"""The webhook retry schedule and payload, without a database: backoff doubling to a cap,
jitter within bounds, about a day in all; signatures that standardwebhooks verifies."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.core.settings import Settings
from service.core.webhooks import event_body, new_secret, retry_delay, signed_headers

DEFAULTS = Settings()


def test_the_default_schedule_doubles_to_six_hours_and_spans_about_a_day() -> None:
    # given the default settings and no jitter
    def exact(low: float, high: float) -> float:
        return 1.0

    # when the delay after each failed attempt but the last is computed
    gaps = [
        retry_delay(n, DEFAULTS, uniform=exact) for n in range(1, DEFAULTS.webhook_max_attempts)
    ]

    # then it doubles from 10 s, stops at 6 h, and all attempts span about a day
    assert gaps[:5] == [10, 20, 40, 80, 160]
    assert gaps[-2:] == [21600, 21600]
    assert max(gaps) == DEFAULTS.webhook_retry_max_seconds
    assert 20 * 3600 < sum(gaps) < 28 * 3600, sum(gaps) / 3600


@pytest.mark.parametrize("attempt", [1, 5, 40, 1000])
def test_jitter_stays_within_a_fifth_of_the_nominal_delay(attempt: int) -> None:
    low = retry_delay(attempt, DEFAULTS, uniform=lambda a, b: a)
    high = retry_delay(attempt, DEFAULTS, uniform=lambda a, b: b)
    nominal = retry_delay(attempt, DEFAULTS, uniform=lambda a, b: 1.0)
    assert low == pytest.approx(0.8 * nominal) and high == pytest.approx(1.2 * nominal)
    assert 0 < retry_delay(attempt, DEFAULTS) <= high


def test_a_signed_body_verifies_with_its_secret_only() -> None:
    # given a body signed with one secret
    secret, other = new_secret(), new_secret()
    job = {"id": "j", "status": "failed", "attempts": 3, "model": "tiny.en", "source": "url"}
    job |= {"word_timestamps": False, "error_code": "url_unreadable", "error_detail": "404"}
    job |= {"created_at": "2026-12-01T10:00:00.5+01:00"}
    body = event_body("job.failed", datetime(2026, 12, 1, 9, 0, 1, tzinfo=UTC), job)
    headers = signed_headers("msg_1", body, [secret], timestamp=int(time.time()))

    # then standardwebhooks verifies it with that secret, and not with another
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "job.failed"
    assert payload["timestamp"] == "2026-12-01T09:00:01Z"
    assert payload["data"]["error"] == {"code": "url_unreadable", "detail": "404"}
    assert payload["data"]["created_at"] == "2026-12-01T09:00:00.500000Z"
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    # and a body changed on the way does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("failed", "completed"), headers)
