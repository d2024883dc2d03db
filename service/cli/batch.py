"""``steno submit`` with many files and URLs: submit them at once, follow every job with one
progress line each and a total, and write each transcript to a file.

Submits run ``--concurrency`` at a time, each with an ``Idempotency-Key`` of its own, so a
submit retried after a dropped connection never makes a second job. Jobs are followed by
polling ``GET /v1/jobs/{id}`` (one SSE stream per job would run into the per-key stream
limit). Each transcript goes next to its input file (``talk.wav`` → ``talk.txt``), or into
``--output-dir`` when given (URLs: there, or the current directory). The exit status is 0
only when every job completed.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from service.cli.client import api_client, json_options

FINAL = ("completed", "failed", "cancelled")
SUFFIX = {"text": ".txt", "json": ".json", "verbose_json": ".json", "srt": ".srt", "vtt": ".vtt"}
SUBMIT_TRIES = 3


@dataclass
class Entry:
    """One source and its job as far as the command knows."""

    source: str
    job_id: str | None = None
    status: str = "waiting"
    stage: str = ""
    percent: float = 0.0
    detail: str = ""
    output: Path | None = None

    @property
    def done(self) -> bool:
        """Nothing more will happen to it: final, or refused at submit."""
        return self.status in (*FINAL, "refused")

    @property
    def name(self) -> str:
        """The source as a line shows it: a file's name or a URL's last segment."""
        if is_url(self.source):
            return urlsplit(self.source).path.rsplit("/", 1)[-1] or self.source
        return Path(self.source).name


def is_url(source: str) -> bool:
    """Whether ``source`` is an http(s) URL rather than a file."""
    return source.startswith(("http://", "https://"))


class Board:
    """One line per job: redrawn in place on a terminal, printed on change elsewhere."""

    def __init__(self, entries: Sequence[Entry], out: TextIO) -> None:
        self.entries = entries
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._shown: dict[int, tuple[str, str, int]] = {}

    def line(self, index: int, entry: Entry) -> str:
        """The progress line of one job."""
        job = (entry.job_id or "-")[:8]
        progress = f"{entry.stage:<12} {entry.percent:5.1f}%" if entry.stage else ""
        tail = f"  -> {entry.output}" if entry.output else ""
        why = f"  {entry.detail}" if entry.detail else ""
        width = len(str(len(self.entries)))
        return (
            f"[{index + 1:>{width}}/{len(self.entries)}] {entry.name[:32]:<32} {job:<8} "
            f"{entry.status:<10} {progress}{why}{tail}"
        ).rstrip()

    def draw(self) -> None:
        """Show what changed (every line, on a terminal)."""
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            for index, entry in enumerate(self.entries):
                self.out.write(self.line(index, entry) + "\x1b[K\n")
            self._drawn = len(self.entries)
            self.out.flush()
            return
        for index, entry in enumerate(self.entries):
            key = (entry.status, entry.stage, int(entry.percent // 25))
            if self._shown.get(index) != key:
                self._shown[index] = key
                print(self.line(index, entry), file=self.out, flush=True)

    def total(self, seconds: float) -> str:
        """The closing line: how many jobs ended how."""
        counts = {s: sum(e.status == s for e in self.entries) for s in (*FINAL, "refused")}
        return (
            f"steno: {counts['completed']} of {len(self.entries)} completed, "
            f"{counts['failed']} failed, {counts['cancelled']} cancelled, "
            f"{counts['refused']} refused, in {seconds:.1f} s"
        )


def run_batch(
    sources: Sequence[str],
    *,
    api: str,
    key: str,
    follow: bool,
    fmt: str,
    options: Mapping[str, str],
    output_dir: Path | None,
    concurrency: int = 4,
    out: TextIO | None = None,
) -> int:
    """Submit every source (``concurrency`` at a time); with ``follow``, track each job to
    its end and write its transcript. 0 when every job was accepted (and completed)."""
    out = out or sys.stderr
    started = time.monotonic()
    entries = [Entry(source) for source in sources]
    board = Board(entries, out)
    board.draw()
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        list(pool.map(lambda e: _submit(api, key, e, options), entries))
    board.draw()
    if follow:
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        with api_client(api, key) as client:
            _follow(client, entries, board, fmt, output_dir)
    else:
        for entry in entries:
            if entry.job_id:
                print(f"{entry.job_id}  {entry.source}", flush=True)
    print(board.total(time.monotonic() - started), file=out, flush=True)
    wanted = ("completed",) if follow else ("queued", "running", *FINAL)
    return 0 if all(entry.status in wanted for entry in entries) else 1


def _submit(api: str, key: str, entry: Entry, options: Mapping[str, str]) -> None:
    """Submit one source; retried on connection errors under the same Idempotency-Key."""
    headers = {"Idempotency-Key": f"steno-cli-{uuid.uuid4()}"}
    entry.status = "submitting"
    with api_client(api, key) as client:
        for attempt in range(1, SUBMIT_TRIES + 1):
            try:
                response = _post(client, entry.source, options, headers)
                break
            except httpx.TransportError as exc:
                if attempt == SUBMIT_TRIES:
                    entry.status, entry.detail = "refused", f"{type(exc).__name__}: {exc}"
                    return
                time.sleep(0.5 * attempt)
            except OSError as exc:  # the file can't be read
                entry.status, entry.detail = "refused", str(exc)
                return
    if response.status_code not in (200, 202):
        entry.status, entry.detail = "refused", _refusal(response)
        return
    _update(entry, response.json())


def _post(
    client: httpx.Client, source: str, options: Mapping[str, str], headers: Mapping[str, str]
) -> httpx.Response:
    if is_url(source):
        body = {"audio_url": source, **json_options(options)}
        return client.post("/v1/jobs", json=body, headers=headers)
    path = Path(source)
    with path.open("rb") as audio:
        files = {"file": (path.name, audio)}
        return client.post("/v1/jobs", files=files, data=dict(options), headers=headers)


def _update(entry: Entry, job: Mapping[str, Any]) -> None:
    entry.job_id = str(job["id"])
    entry.status = str(job["status"])
    progress = job.get("progress") or {}
    entry.stage = str(progress.get("stage") or "")
    entry.percent = float(progress.get("percent") or 0.0)
    error = job.get("error")
    if entry.status == "failed" and error:
        entry.detail = f"{error['code']}: {error['detail']}"


def _follow(
    client: httpx.Client, entries: list[Entry], board: Board, fmt: str, output_dir: Path | None
) -> None:
    taken: set[Path] = set()
    while True:
        for entry in [e for e in entries if not e.done]:
            response = client.get(f"/v1/jobs/{entry.job_id}")
            if response.status_code != 200:
                entry.status, entry.detail = "failed", _refusal(response)
                continue
            _update(entry, response.json())
            if entry.status == "completed":
                _save(client, entry, fmt, output_dir, taken)
        board.draw()
        if all(entry.done for entry in entries):
            return
        time.sleep(max(0.5, 0.02 * len(entries)))


def _save(
    client: httpx.Client, entry: Entry, fmt: str, output_dir: Path | None, taken: set[Path]
) -> None:
    """Write the completed job's transcript; a failure to fetch it fails the entry."""
    response = client.get(f"/v1/jobs/{entry.job_id}/transcript", params={"format": fmt})
    if response.status_code != 200:
        entry.status, entry.detail = "failed", f"transcript unavailable: {_refusal(response)}"
        return
    path = output_path(entry, fmt, output_dir)
    if path in taken:  # two inputs with one stem (talk.wav, talk.mp3): keep both
        path = path.with_name(f"{path.stem}.{(entry.job_id or '')[:8]}{path.suffix}")
    taken.add(path)
    path.write_bytes(response.content)
    entry.output = path


def output_path(entry: Entry, fmt: str, output_dir: Path | None) -> Path:
    """Where a source's transcript goes: beside its file, or in ``output_dir``."""
    suffix = SUFFIX.get(fmt, f".{fmt}")
    if is_url(entry.source):
        stem = Path(entry.name).stem or (entry.job_id or "transcript")
        return (output_dir or Path.cwd()) / f"{stem}{suffix}"
    source = Path(entry.source)
    return (output_dir / source.name if output_dir else source).with_suffix(suffix)


def _refusal(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{body['code']} (HTTP {response.status_code}): {body['detail']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
