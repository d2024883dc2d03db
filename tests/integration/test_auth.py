"""API keys and tenant isolation: every ``/v1`` route needs a key, and a key sees only its
owner's jobs; another owner's job answers exactly like an id that never existed."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from service.app import V1_CONTROLLERS, create_app
from service.core.settings import Settings
from tests.conftest import ROOT, bearer, child_env, make_key
from tests.integration.test_api_contract import RecordingPublisher, assert_error

Client = AsyncTestClient[Any]
AUDIO_URL = "https://media.example.com/talks/keynote.mp3"
KEY_SHAPE = re.compile(r"^stn_[0-9a-f]{10}_[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def keys(settings: Settings) -> dict[str, str]:
    """Two plain keys of different owners and an admin key."""
    return {
        "alice": make_key(settings, "alice"),
        "bob": make_key(settings, "bob"),
        "admin": make_key(settings, "ops", admin=True),
    }


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[Client]:
    """The app with no key set on the client (each request names its own)."""
    offline = dataclasses.replace(settings, url_check_timeout_seconds=0)
    async with AsyncTestClient(create_app(offline), timeout=60) as http:
        http.app.state.publisher = RecordingPublisher()
        yield http


def _v1_routes() -> list[tuple[str, str]]:
    """Every (method, path) the /v1 controllers serve, path parameters filled in."""
    app = create_app()
    found = []
    for route in app.routes:
        if not route.path.startswith("/v1"):
            continue
        path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
        for method in sorted(getattr(route, "methods", set()) - {"OPTIONS", "HEAD"}):
            found.append((method, path))
    return found


V1_ROUTES = _v1_routes()


def test_the_v1_routes_are_all_found() -> None:
    # every controller mounted under the key middleware contributes routes
    assert len(V1_CONTROLLERS) >= 3
    assert {m for m, _ in V1_ROUTES} >= {"GET", "POST", "DELETE"}
    assert len(V1_ROUTES) >= 9, V1_ROUTES


@pytest.mark.parametrize("method,path", V1_ROUTES, ids=[f"{m} {p}" for m, p in V1_ROUTES])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer stn_0123456789_" + "x" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz"],
    ids=["none", "empty", "unknown", "malformed", "basic"],
)
async def test_every_v1_route_refuses_a_missing_or_unknown_key(
    client: Client, method: str, path: str, authorization: str | None
) -> None:
    # given a request without a valid key
    headers = {"Authorization": authorization} if authorization else {}

    # when it is sent
    response = await client.request(method, path, headers=headers)

    # then it is 401 with a code, a detail and how to authenticate (in OpenAI's shape on the
    # OpenAI-compatible routes, whose clients read that)
    if path.startswith("/v1/audio/"):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_api_key"
    else:
        assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_probes_page_and_schema_stay_open(client: Client) -> None:
    for path in ("/healthz", "/", "/schema/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_options_answers_without_a_key_even_on_the_operator_routes(client: Client) -> None:
    # given no key (a browser's preflight sends none)
    # when the methods of a route are asked, on a job route and an admin-only one
    for path in ("/v1/jobs", "/v1/keys"):
        response = await client.options(path)

        # then both answer 204 with Allow (the admin guard once made /v1/keys a 500); Allow
        # lists only some methods in Litestar 2 (litestar-org/litestar#4169)
        assert response.status_code == 204, (path, response.text)
        assert "OPTIONS" in response.headers["allow"], path


async def test_a_method_a_route_does_not_serve_is_405_with_allow(
    client: Client, keys: dict[str, str]
) -> None:
    # given a route that serves GET and POST
    # when it is asked with PUT
    response = await client.put("/v1/jobs", headers=bearer(keys["alice"]))

    # then it is the usual error body, and Allow says what it serves (it was dropped)
    assert_error(response, 405, "method_not_allowed")
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["allow"].split(",")}


async def _submit(client: Client, key: str) -> str:
    response = await client.post("/v1/jobs", json={"audio_url": AUDIO_URL}, headers=bearer(key))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _shape(response: httpx.Response, job_id: str) -> tuple[int, Any]:
    """Status and body with the asked id blanked: what must not tell two ids apart."""
    return response.status_code, response.text.replace(job_id, "<id>")


async def _every_job_answer(client: Client, key: str, job_id: str) -> list[tuple[int, Any]]:
    auth = bearer(key)
    return [
        _shape(await client.get(f"/v1/jobs/{job_id}", headers=auth), job_id),
        _shape(await client.get(f"/v1/jobs/{job_id}/transcript", headers=auth), job_id),
        _shape(await client.get(f"/v1/jobs/{job_id}/events", headers=auth), job_id),
        _shape(await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth), job_id),
        _shape(await client.get(f"/v1/jobs/{job_id}/webhooks", headers=auth), job_id),
        _shape(await client.post(f"/v1/jobs/{job_id}/webhooks/redeliver", headers=auth), job_id),
        _shape(await client.delete(f"/v1/jobs/{job_id}", headers=auth), job_id),
    ]


@pytest.mark.parametrize("owner,other", [("alice", "bob"), ("bob", "alice")])
async def test_another_owners_job_answers_exactly_like_a_random_id(
    client: Client, keys: dict[str, str], owner: str, other: str
) -> None:
    # given a job of one owner
    job_id = await _submit(client, keys[owner])

    # when the other owner asks for it, and for an id that never existed, every way
    theirs = await _every_job_answer(client, keys[other], job_id)
    nobodys = await _every_job_answer(client, keys[other], str(uuid.uuid4()))

    # then both answers are the same 404s, and the listing does not show it
    assert theirs == nobodys
    assert {status for status, _ in theirs} == {404}
    listed = (await client.get("/v1/jobs", headers=bearer(keys[other]))).json()["items"]
    assert job_id not in {job["id"] for job in listed}

    # and the owner still has it, untouched (the other's cancel and delete did nothing)
    mine = await client.get(f"/v1/jobs/{job_id}", headers=bearer(keys[owner]))
    assert mine.status_code == 200 and mine.json()["status"] == "queued"
    listed = (await client.get("/v1/jobs", headers=bearer(keys[owner]))).json()["items"]
    assert job_id in {job["id"] for job in listed}


async def test_a_revoked_key_stops_working_at_once(client: Client, settings: Settings) -> None:
    # given a key that works, and its job (GET /v1/jobs/{id} checks the key in its own query)
    key = await asyncio.to_thread(make_key, settings, "carol")
    assert (await client.get("/v1/jobs", headers=bearer(key))).status_code == 200
    job_id = await _submit(client, key)
    assert (await client.get(f"/v1/jobs/{job_id}", headers=bearer(key))).status_code == 200

    # when an admin revokes it by its prefix
    admin = await asyncio.to_thread(make_key, settings, "ops-2", admin=True)
    prefix = key.split("_")[1]
    revoked = await client.delete(f"/v1/keys/{prefix}", headers=bearer(admin))
    assert revoked.status_code == 204

    # then the very next request is refused, its own job too (and a malformed id is no 404)
    assert_error(await client.get("/v1/jobs", headers=bearer(key)), 401, "unauthorized")
    refused = await client.get(f"/v1/jobs/{job_id}", headers=bearer(key))
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert_error(await client.get("/v1/jobs/not-an-id", headers=bearer(key)), 401, "unauthorized")
    # and revoking it again says there is no such live key
    again = await client.delete(f"/v1/keys/{prefix}", headers=bearer(admin))
    assert_error(again, 404, "key_not_found")


@pytest.mark.parametrize(
    "body",
    [{"name": "   "}, {"name": "a\u0000b"}, {"name": "ok", "owner": "x\u0000"}, {"name": ""}],
    ids=["blank", "nul-in-name", "nul-in-owner", "empty"],
)
async def test_a_key_name_or_owner_postgresql_cant_store_is_a_validation_error(
    client: Client, keys: dict[str, str], body: dict[str, str]
) -> None:
    # given a new key's name or owner that is blank or holds a NUL (once a 500)
    # when an admin asks for it
    made = await client.post("/v1/keys", json=body, headers=bearer(keys["admin"]))

    # then it is refused as invalid
    assert_error(made, 422, "validation_error")


async def test_operator_routes_need_an_admin_key(client: Client, keys: dict[str, str]) -> None:
    # given a plain key, then an admin key
    plain = bearer(keys["alice"])
    admin = bearer(keys["admin"])

    # a plain key is forbidden from the operator routes
    assert_error(await client.get("/v1/keys", headers=plain), 403, "forbidden")
    made = await client.post("/v1/keys", json={"name": "x"}, headers=plain)
    assert_error(made, 403, "forbidden")

    # an admin key makes a key (shown once) and lists keys without secrets
    made = await client.post("/v1/keys", json={"name": "robot"}, headers=admin)
    assert made.status_code == 201, made.text
    new_key = made.json()["key"]
    assert KEY_SHAPE.match(new_key)
    listing = await client.get("/v1/keys", headers=admin)
    assert listing.status_code == 200
    assert new_key not in listing.text
    assert made.json()["prefix"] in {k["prefix"] for k in listing.json()["items"]}
    assert (await client.get("/v1/jobs", headers=bearer(new_key))).status_code == 200


async def test_submissions_past_the_per_minute_limit_get_429_with_retry_after(
    settings: Settings,
) -> None:
    # given an API allowing two submissions a minute per key, and two keys
    limited = dataclasses.replace(settings, url_check_timeout_seconds=0, submits_per_minute=2)
    first = await asyncio.to_thread(make_key, settings, "busy")
    second = await asyncio.to_thread(make_key, settings, "calm")
    async with AsyncTestClient(create_app(limited), timeout=60) as client:
        client.app.state.publisher = RecordingPublisher()
        body = {"audio_url": AUDIO_URL}

        # when one key submits three times
        answers = [
            await client.post("/v1/jobs", json=body, headers=bearer(first)) for _ in range(3)
        ]

        # then the third is refused with a code and a Retry-After, and nothing is created
        assert [a.status_code for a in answers[:2]] == [202, 202]
        assert_error(answers[2], 429, "rate_limited")
        assert 1 <= int(answers[2].headers["retry-after"]) <= 60
        listed = (await client.get("/v1/jobs", headers=bearer(first))).json()["items"]
        assert len(listed) == 2
        # and another key is not held back
        other = await client.post("/v1/jobs", json=body, headers=bearer(second))
        assert other.status_code == 202


def _steno(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv],
        env=child_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


async def test_the_cli_creates_lists_and_revokes_keys(client: Client, settings: Settings) -> None:
    # when a key is created on the command line
    made = await asyncio.to_thread(
        _steno, settings, "keys", "create", "--name", "script", "--admin"
    )
    assert made.returncode == 0, made.stderr

    # then the key is alone on the last line and nowhere else
    lines = made.stdout.strip().splitlines()
    key = lines[-1]
    assert KEY_SHAPE.match(key), made.stdout
    assert all(key not in line for line in lines[:-1]) and key not in made.stderr
    assert (await client.get("/v1/keys", headers=bearer(key))).status_code == 200

    # and the listing shows its prefix, never its secret
    listing = await asyncio.to_thread(_steno, settings, "keys", "ls")
    prefix = key.split("_")[1]
    assert listing.returncode == 0 and prefix in listing.stdout
    assert key.split("_", 2)[2] not in listing.stdout

    # and once revoked it is refused at once
    assert (await asyncio.to_thread(_steno, settings, "keys", "revoke", prefix)).returncode == 0
    assert_error(await client.get("/v1/jobs", headers=bearer(key)), 401, "unauthorized")
    assert (await asyncio.to_thread(_steno, settings, "keys", "revoke", prefix)).returncode == 1
