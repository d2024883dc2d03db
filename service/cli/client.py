"""The ``steno`` command against a running API: submit audio, watch a job, list jobs."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from service.cli.follow import FollowError, follow_job

__all__ = ["api_client", "json_options", "list_jobs", "submit", "watch"]


def api_client(api: str, key: str) -> httpx.Client:
    """An HTTP client for the API at base URL ``api`` presenting ``key`` (STENO_API_KEY)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api, timeout=60.0, headers=headers)


def json_options(options: Mapping[str, str]) -> dict[str, Any]:
    """Form-field options as a JSON body wants them (flags as booleans, not "true")."""
    return {k: v == "true" if v in ("true", "false") else v for k, v in options.items()}


def submit(
    source: str,
    *,
    api: str,
    key: str,
    wait: bool,
    wait_ready: float,
    fmt: str,
    options: Mapping[str, str],
    segments: bool = False,
    output: Path | None = None,
) -> int:
    """Submit a file or URL; with ``wait``, follow the job live and print its transcript."""
    with api_client(api, key) as client:
        if wait_ready > 0:
            _wait_ready(client, wait_ready)
        if source.startswith(("http://", "https://")):
            response = client.post("/v1/jobs", json={"audio_url": source, **json_options(options)})
        else:
            path = Path(source)
            with path.open("rb") as audio:
                response = client.post(
                    "/v1/jobs", files={"file": (path.name, audio)}, data=dict(options)
                )
        if response.status_code not in (200, 202):
            print(f"steno: submit refused ({response.status_code}): {response.text}")
            if response.status_code == 401:
                print("steno: set STENO_API_KEY (steno keys create --name NAME | tail -1)")
            return 1
        job = response.json()
        seen = " (an existing job)" if response.status_code == 200 else ""
        print(f"steno: job {job['id']} accepted ({job['status']}){seen}", flush=True)
        if not wait:
            print(job["id"], flush=True)
            return 0
        return watch(client, job["id"], fmt=fmt, segments=segments, output=output)


def watch(
    client: httpx.Client, job_id: str, *, fmt: str, segments: bool, output: Path | None
) -> int:
    """Follow a job over SSE (progress bar, segments when asked), then print or save its
    transcript; 1 with a message on stderr when the job fails or is cancelled."""
    started = time.monotonic()
    try:
        outcome = follow_job(client, job_id, segments=segments)
    except FollowError as exc:
        print(f"steno: cannot follow job {job_id}: {exc}", file=sys.stderr)
        return 1
    if outcome.kind == "failed":
        code, detail = outcome.data.get("code"), outcome.data.get("detail")
        print(f"steno: job {job_id} failed: {code}: {detail}", file=sys.stderr)
        return 1
    if outcome.kind != "completed":
        print(f"steno: job {job_id} was {outcome.kind}", file=sys.stderr)
        return 1
    transcript = client.get(f"/v1/jobs/{job_id}/transcript", params={"format": fmt})
    if transcript.status_code != 200:
        print(f"steno: transcript unavailable: {transcript.text}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    if output is not None:
        output.write_bytes(transcript.content)
        print(f"steno: completed in {took:.1f} s; transcript ({fmt}) written to {output}")
        return 0
    print(f"steno: completed in {took:.1f} s; transcript ({fmt}):\n", flush=True)
    print(transcript.text, flush=True)
    return 0


def list_jobs(client: httpx.Client, *, status: str | None, limit: int) -> int:
    """Print the newest jobs as a table."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    response = client.get("/v1/jobs", params=params)
    if response.status_code != 200:
        print(f"steno: listing refused ({response.status_code}): {response.text}", file=sys.stderr)
        return 1
    print(f"{'ID':<36}  {'STATUS':<9}  {'STAGE':<12}  {'%':>5}  {'CREATED':<19}  SOURCE")
    for job in response.json()["items"]:
        progress = job["progress"]
        print(
            f"{job['id']:<36}  {job['status']:<9}  {progress['stage'] or '':<12}  "
            f"{progress['percent']:>5.1f}  {job['created_at'][:19]:<19}  "
            f"{job['filename'] or job['audio_url'] or ''}"
        )
    return 0


def _wait_ready(client: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"steno: the API was not ready within {timeout:.0f} s")
        time.sleep(0.5)
