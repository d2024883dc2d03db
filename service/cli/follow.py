"""The ``steno`` command's side of live progress: follow a job's SSE stream in a terminal.

Draws a progress bar (stage, percent, ETA) on a terminal, or prints a line per stage and
per tenth of the way otherwise; prints segments as they arrive when asked; reconnects with
``Last-Event-ID`` when the stream drops, so no event is lost or repeated.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from service.cli.sse import MessageParser
from service.core.events.schemas import TERMINAL

RECONNECT_TRIES = 30
# Longer than a few heartbeats: a silent connection is a dead one.
READ_TIMEOUT = 60.0


class FollowError(Exception):
    """The job can't be followed (unknown job, refused stream, API gone for good)."""


@dataclass
class Outcome:
    """How a followed job ended: ``completed``, ``failed`` or ``cancelled``, with its data."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


class ProgressDisplay:
    """Renders progress events: a redrawn bar on a terminal, sparse lines elsewhere."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last: tuple[str, int] | None = None
        self._drawn = False

    def progress(self, stage: str, percent: float, eta: float | None) -> None:
        """Show a stage and percent (and ETA when known)."""
        eta_text = f"  ETA {_clock(eta)}" if eta is not None else ""
        if self.tty:
            filled = int(self.WIDTH * min(100.0, percent) / 100)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.out.write(f"\r[{bar}] {percent:5.1f}%  {stage:<12}{eta_text}\x1b[K")
            self.out.flush()
            self._drawn = True
            return
        key = (stage, int(percent // 10))
        if key != self._last:
            self._last = key
            print(f"steno: {stage} {percent:.0f}%{eta_text}", file=self.out, flush=True)

    def line(self, text: str, out: TextIO | None = None) -> None:
        """Print a line without garbling the bar."""
        if self._drawn:
            self.out.write("\r\x1b[K")
            self._drawn = False
        print(text, file=out or self.out, flush=True)

    def finish(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


def follow_job(
    client: httpx.Client,
    job_id: str,
    *,
    segments: bool = False,
    display: ProgressDisplay | None = None,
    segment_out: TextIO | None = None,
) -> Outcome:
    """Follow the job's events until its terminal one; reconnects on its own when dropped."""
    display = display or ProgressDisplay(sys.stderr)
    last_id: str | None = None
    failures = 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream(
                "GET",
                f"/v1/jobs/{job_id}/events",
                headers=headers,
                timeout=httpx.Timeout(10.0, read=READ_TIMEOUT),
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise FollowError(_refusal(response))
                parser = MessageParser()
                for line in response.iter_lines():
                    for message in parser.feed(line):
                        if message.comment is not None:
                            continue
                        failures = 0
                        last_id = message.id or last_id
                        data = json.loads(message.data or "{}")
                        if message.event in TERMINAL:
                            display.finish()
                            return Outcome(message.event, data)
                        _show(message.event, data, display, segments, segment_out)
            time.sleep(0.2)  # closed before the terminal event (e.g. fell behind): resume
        except httpx.TransportError as exc:
            failures += 1
            if failures > RECONNECT_TRIES:
                raise FollowError(f"lost the event stream and could not reconnect: {exc}") from exc
            display.line(f"steno: event stream dropped ({type(exc).__name__}); reconnecting")
            time.sleep(min(5.0, 0.2 * 2**failures))


def _show(
    kind: str,
    data: dict[str, Any],
    display: ProgressDisplay,
    segments: bool,
    segment_out: TextIO | None,
) -> None:
    if kind == "queued":
        display.progress("queued", 0.0, None)
    elif kind == "started":
        display.progress("starting", 0.0, None)
    elif kind == "progress":
        display.progress(
            str(data.get("stage")), float(data.get("percent") or 0.0), data.get("eta_seconds")
        )
    elif kind == "segment" and segments:
        when = f"[{_clock(data['start'])} -> {_clock(data['end'])}]"
        display.line(f"{when} {data['text'].strip()}", segment_out or sys.stdout)


def _refusal(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{body['code']}: {body['detail']} (HTTP {response.status_code})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
