"""Checking that a file is audio Steno can transcribe, with ``ffprobe``.

Used by the API on uploads and by the IO worker on fetched audio, so both refuse the same
files with the same codes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.core.audio_header import read_header
from service.core.errors import AudioTooLong, EmptyFile, InvalidAudio

# Container types that may carry audio; anything else is refused before probing.
ACCEPTED_TYPES = ("audio/", "video/")
ACCEPTED_EXACT = frozenset(
    {"application/octet-stream", "application/ogg", "application/x-ogg", "binary/octet-stream"}
)


# ffprobe quiet but for errors, and able to open local files only (no network, no data: URLs).
_FFPROBE = ("ffprobe", "-v", "error", "-protocol_whitelist", "file")

# Runs argv with a timeout and returns (exit code, stdout, stderr); raises TimeoutError.
ProcessRunner = Callable[[Sequence[str], float], Awaitable[tuple[int, bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What ffprobe found: the container, the first audio stream's codec, and the duration."""

    format_name: str
    codec: str
    duration: float


def content_type_accepted(content_type: str | None) -> bool:
    """True when a declared content type may hold audio (a missing one is judged by probing)."""
    if not content_type:
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return base.startswith(ACCEPTED_TYPES) or base in ACCEPTED_EXACT


async def run_process(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run a program under asyncio; kills it and raises ``TimeoutError`` past ``timeout``."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, out, err


async def probe_audio(
    path: Path, *, max_seconds: float, run: ProcessRunner = run_process, timeout: float = 30.0
) -> AudioInfo:
    """Probe ``path``; raises ``EmptyFile``, ``InvalidAudio`` or ``AudioTooLong`` when unusable.

    ``run`` starts ffprobe; the IO worker passes one that suits its gevent pool. ffprobe
    reads only local files: ``path`` is given as an absolute ``file:`` URL, so no name can
    pass for an option or pick a protocol, and ``-protocol_whitelist file`` keeps anything
    inside the file (a playlist, a reference) from reaching the network.
    """
    if path.stat().st_size == 0:
        raise EmptyFile("the audio file is empty (0 bytes)")
    header = read_header(path)
    if header is not None:
        _check_duration(header.duration, max_seconds)
        return AudioInfo(header.format_name, header.codec, header.duration)
    source = path.absolute()
    argv = [*_FFPROBE, "-print_format", "json", "-show_format", "-show_streams"]
    try:
        async with _probe_slot():
            code, out, err = await run([*argv, f"file:{source}"], timeout)
    except TimeoutError as exc:
        raise InvalidAudio("probing the audio took too long; is it a valid audio file?") from exc
    if code != 0:
        # ffprobe prefixes its message with the file's path, which is ours to keep private.
        reason = (
            err.decode(errors="replace")
            .replace(f"file:{source}", "input")
            .replace(str(source), "input")
            .strip()
            .splitlines()
        )
        raise InvalidAudio(
            "the file is not audio that can be decoded"
            + (f" ({reason[-1][:200]})" if reason else "")
        )
    return _read_probe(json.loads(out or b"{}"), max_seconds)


# At most one ffprobe per core at a time in each event loop: a burst of uploads queues here
# instead of starting 20 processes that share 2 cores (each would finish late).
_PROBE_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _probe_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _PROBE_SLOTS.get(loop)
    if slot is None:
        slot = _PROBE_SLOTS[loop] = asyncio.Semaphore(os.cpu_count() or 2)
    return slot


def _check_duration(duration: float | None, max_seconds: float) -> None:
    if duration is None or duration <= 0:
        raise InvalidAudio("the audio has no measurable duration")
    if duration > max_seconds:
        raise AudioTooLong(
            f"the audio lasts {duration:.1f} s; this service accepts at most {max_seconds:.0f} s"
        )


def _read_probe(report: dict[str, object], max_seconds: float) -> AudioInfo:
    streams = report.get("streams")
    audio = [
        s for s in (streams if isinstance(streams, list) else []) if s.get("codec_type") == "audio"
    ]
    if not audio:
        raise InvalidAudio("the file has no audio stream")
    fmt = report.get("format")
    fmt = fmt if isinstance(fmt, dict) else {}
    duration = _float(fmt.get("duration")) or _float(audio[0].get("duration"))
    _check_duration(duration, max_seconds)
    assert duration is not None  # for mypy: _check_duration refused None
    return AudioInfo(
        format_name=str(fmt.get("format_name", "unknown")),
        codec=str(audio[0].get("codec_name", "unknown")),
        duration=duration,
    )


def _float(value: object) -> float | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None
